"""Exported variables on disk: an orbax checkpoint plus a JSON description of the model.

Layout of an export directory:
  DIR/jaxnets.json   {"arch": ..., "num_classes": ..., "source": ..., "weights": {...}}
  DIR/variables/     orbax StandardCheckpointer tree {'params': ..., 'batch_stats': ...}

Training can fine-tune from such a directory. `load_variables` also reads a training workdir
(`python -m train --workdir DIR`): the latest checkpoint's weights (jaxnets/checkpoints.py).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax

from jaxnets import checkpoints

META_FILE = "jaxnets.json"
VARIABLES_DIR = "variables"


def save_export(directory: os.PathLike | str, variables: dict, meta: dict[str, Any]) -> Path:
    """Writes variables and their description to a new directory, atomically.

    The directory is assembled beside its destination and renamed into place, so a failure
    leaves nothing at `directory`.

    Raises:
      FileExistsError: `directory` exists and is not empty.
      OSError: in one line naming `directory` and the cause (a full disk).
    """
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} exists and is not empty; choose a new --out")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would outlive the rename
        with ocp.StandardCheckpointer() as checkpointer:

            def write():
                checkpointer.save(staging / VARIABLES_DIR, variables)
                checkpointer.wait_until_finished()

            checkpoints.write_or_explain(write, f"{directory}")
        (staging / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if directory.exists():
            directory.rmdir()
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_export(directory: os.PathLike | str) -> bool:
    return (Path(directory) / META_FILE).is_file()


def load_export(directory: os.PathLike | str) -> tuple[dict, dict[str, Any]]:
    """Reads an export directory.

    Returns:
      (variables, meta): variables as jax arrays, and the JSON description.

    Raises:
      FileNotFoundError / ValueError: missing or unreadable directory, naming it.
    """
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    if not is_export(directory):
        raise FileNotFoundError(f"{directory}: not a jaxnets export (no {META_FILE})")
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{directory / META_FILE}: not JSON ({e})") from None
    with ocp.StandardCheckpointer() as checkpointer:
        read = functools.partial(checkpointer.restore, directory / VARIABLES_DIR)
        variables = checkpoints.read_or_explain(read, f"{directory / VARIABLES_DIR}")
    variables = dict(variables)
    variables.setdefault("batch_stats", {})
    return jax.device_put(variables), meta


def load_variables(directory: os.PathLike | str) -> tuple[dict, dict[str, Any]]:
    """Reads an export directory or a training workdir (see the module docstring).

    Raises:
      FileNotFoundError: neither, naming the directory.
    """
    if is_export(directory):
        return load_export(directory)
    if checkpoints.is_workdir(directory):
        return checkpoints.load_weights(directory)
    raise FileNotFoundError(
        f"{Path(directory).absolute()}: not a jaxnets export ({META_FILE}) nor a training "
        f"workdir ({checkpoints.CHECKPOINT_DIR}/)"
    )
