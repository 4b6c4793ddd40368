"""What the training program's entry points share (`python -m train`, `python -m train.sweep`):
the start-up every one makes before JAX starts, and config-file and flag errors in one line."""

from __future__ import annotations

import os
import sys

RECOVERABLE = (AttributeError, KeyError, ValueError, TypeError)


def start(prog: str, extras_needed: dict[str, str]) -> None:
    """The entry point's global choices, made before JAX starts: quiet TensorFlow, the measured
    CPU flags, and a one-line exit 2 when an extra (name -> purpose) is not installed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import jaxnets
    from jaxnets import extras

    jaxnets.use_fast_cpu_flags()
    try:
        for extra, purpose in extras_needed.items():
            extras.require(extra, purpose)
    except extras.MissingExtra as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)


def run_app(prog: str, main) -> None:
    """absl's app.run(main), with config-file and flag-parsing errors (an unknown key, a bad
    value) in one line and exit status 2."""
    from absl import app, flags

    def parse_flags(argv: list[str]) -> list[str]:
        try:  # absl's own errors take two lines and exit 1
            return flags.FLAGS(argv)
        except flags.Error as e:
            print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
            sys.exit(2)

    try:
        check_config_file(sys.argv[1:])
        app.run(main, flags_parser=parse_flags)
    except SystemExit:
        raise
    except (*RECOVERABLE, flags.Error) as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


def check_config_file(argv: list[str]) -> None:
    """Fails in one line, before flag parsing, for a --config file that is missing, is not
    Python, cannot be imported, has no get_config(), or whose get_config() fails (a value of
    the wrong type for a key)."""
    import importlib.util
    from pathlib import Path

    values = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    values += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    for value in values:
        path, _, argument = value.partition(":")  # config_flags allows FILE:ARGUMENT
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--config {value}: no such file")
        try:
            compile(path.read_bytes(), str(path), "exec")
        except (SyntaxError, ValueError) as e:
            raise ValueError(f"--config {value}: not a Python config file ({e})") from None
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # an import the file cannot make, a name it misspells
            raise ValueError(f"--config {value}: {failure(e)}") from None
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            raise ValueError(f"--config {value}: defines no get_config()")
        try:
            get_config(argument) if argument else get_config()
        except Exception as e:  # a value of the wrong type for a key, above all
            raise ValueError(f"--config {value}: get_config() failed ({failure(e)})") from None


def failure(error: Exception) -> str:
    return f"{type(error).__name__}: {one_line(error)}"


def one_line(error: Exception) -> str:
    """The error's message on one line. An unknown config key arrives as the repr() of a
    two-line KeyError message ("'key'\\nDid you mean ...?"): that one is unquoted and joined."""
    import ast

    text = str(error).strip()
    # absl's boolean flags end their message with a tuple: "...: ('Non-boolean argument ...', 'x')"
    head, _, tail = text.partition(": (")
    if tail.endswith(")"):
        try:
            return f"{head}: " + ": ".join(map(str, ast.literal_eval(f"({tail}")))
        except (ValueError, SyntaxError):
            pass
    if text[:1] in ("'", '"'):
        try:
            return " ".join(str(ast.literal_eval(text)).split("\n"))
        except (ValueError, SyntaxError):
            pass
    return (text.splitlines() or [type(error).__name__])[0]
