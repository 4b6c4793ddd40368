"""The run directory: which files are a run's, whether a new run may continue the one there,
and starting afresh in it (config.resume=False) without losing the old one.

  WORKDIR/config.json        the config of the latest invocation
  WORKDIR/checkpoints/       jaxnets/checkpoints.py
  WORKDIR/metrics.jsonl, tensorboard/, summary.json, confusion_matrix.*, skipped_files.*.txt
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jax
from jax.experimental import multihost_utils

from jaxnets import checkpoints

CONFIG_FILE = "config.json"
# What the config alone decides about a run's checkpoints; the class count, known once the
# dataset is read, is checked on the checkpoint itself (train.restore_or_keep).
# What a resumed run must share with the saved one (its checkpoints' shapes and meaning).
RUN_IDENTITY = ("model", "dataset", "image_size", "head", "freeze", "freeze_until")
_RUN_FILES = (CONFIG_FILE, checkpoints.CHECKPOINT_DIR, "metrics.jsonl", "tensorboard",
              "summary.json", "confusion_matrix.json", "confusion_matrix.png")  # fmt: skip
WAY_OUT = (
    "pass --config.resume=False to start afresh there (the old run is kept) or use a new --workdir"
)


def run_files(workdir: Path) -> list[Path]:
    """The files and folders of a run in `workdir` (skipped_files.N.txt: one per process)."""
    found = [workdir / name for name in _RUN_FILES if (workdir / name).exists()]
    return found + sorted(workdir.glob("skipped_files.*.txt"))


def check_same_run(config, workdir: Path) -> None:
    """Refuses, in one line naming both values, a config of another model, dataset or image size
    than the run whose checkpoints `workdir` holds, before anything is read or written."""
    saved_file = workdir / CONFIG_FILE
    if not checkpoints.is_workdir(workdir) or not saved_file.is_file():
        return
    try:
        saved = json.loads(saved_file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{saved_file}: not the JSON a run writes ({e}); {WAY_OUT}") from None
    for key in RUN_IDENTITY:
        if key in saved and saved[key] != config[key]:  # a key the saved run predates: not compared
            raise ValueError(
                f"{workdir} holds a run of {key}={saved.get(key)!r}, this config has "
                f"{key}={config[key]!r}; {WAY_OUT}"
            )


def set_aside_previous_run(workdir: Path) -> None:
    """Moves the run in `workdir` into WORKDIR/previous-TIME/ (never deleting it), so that a
    fresh run starts there. Process 0 moves; every process waits for it."""
    files = run_files(workdir) if jax.process_index() == 0 else []
    if files:
        target = workdir / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
        target.mkdir()
        for path in files:
            os.replace(path, target / path.name)
        print(f"train: config.resume=False: the previous run moved to {target}", file=sys.stderr)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("jaxnets: previous run set aside")


def write_config(config, workdir: Path) -> None:
    (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2) + "\n")
