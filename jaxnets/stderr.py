"""File descriptor 2 sent elsewhere for a while: C++ libraries (TensorStore, TensorFlow) and
background threads write there whatever Python's logging levels say."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile


@contextlib.contextmanager
def redirected(path: str):
    """Sends file descriptor 2 (Python's, C++'s and other threads' stderr) to `path`, appended."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def import_quietly(name: str):
    """Imports module `name` with its start-up lines off the terminal (TensorFlow prints
    "oneDNN custom operations are on" before any log level applies); they are shown if the
    import fails."""
    if name in sys.modules:
        return sys.modules[name]
    with tempfile.TemporaryDirectory() as scratch:
        log = os.path.join(scratch, "import.log")
        try:
            with redirected(log):
                return importlib.import_module(name)
        except BaseException:
            with open(log) as f:
                sys.stderr.write(f.read())
            raise
