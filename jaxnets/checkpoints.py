"""Training checkpoints: the one layout `python -m train` writes and the library reads back.

  WORKDIR/checkpoints/STEP/state/  orbax StandardSave of the train state as a state dict:
                                   step, params, batch_stats, opt_state, ema_params, ema_batch_stats
  WORKDIR/checkpoints/STEP/meta/   JSON: model, num_classes, dataset, class_names, image_shape

The training program writes and resumes through `describe`, `save` and `restore`;
`jaxnets convert --from-jax`, `jaxnets eval` and `jaxnets.export.load_variables` read through
`load_weights`. Both sides go through the names below, so neither can drift from the other.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

CHECKPOINT_DIR = "checkpoints"
STATE_ITEM = "state"
META_ITEM = "meta"
# What a resumed run must agree on with the checkpoint it resumes.
RESUME_KEYS = ("model", "num_classes", "dataset")


def describe(model: str, dataset: str, class_names: list[str], image_shape) -> dict[str, Any]:
    """The META_ITEM of a checkpoint: what was trained on what."""
    return {
        "model": model,
        "num_classes": len(class_names),
        "dataset": dataset,
        "class_names": list(class_names),
        "image_shape": list(image_shape),
    }


def checkpoint_dir(workdir: os.PathLike | str) -> Path:
    return Path(workdir).absolute() / CHECKPOINT_DIR  # orbax refuses relative paths


def is_workdir(directory: os.PathLike | str) -> bool:
    return checkpoint_dir(directory).is_dir()


def manager(workdir: os.PathLike | str, *, max_to_keep: int | None = None, read_only=False):
    """An orbax CheckpointManager over WORKDIR/checkpoints (created unless read_only)."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=False,
    )  # fmt: skip
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(checkpoints, step: int, state: dict, meta: dict[str, Any]) -> None:
    """Writes the train state (a state dict) and its description as checkpoint `step`, unless
    that step is already saved."""
    import orbax.checkpoint as ocp

    if step in checkpoints.all_steps():
        return
    checkpoints.save(
        step,
        args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardSave(state), META_ITEM: ocp.args.JsonSave(meta)
        }),
    )  # fmt: skip
    checkpoints.wait_until_finished()


def restore(checkpoints, like: dict | None = None, step: int | None = None) -> tuple[dict, dict]:
    """(state dict, meta) of checkpoint `step` (default: the latest).

    like: a state dict whose shapes, dtypes and shardings the restored arrays take; None
    restores onto this process's first device, whatever devices wrote it.
    """
    import orbax.checkpoint as ocp

    step = checkpoints.latest_step() if step is None else step
    if like is None:
        fallback = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        state_args = ocp.args.StandardRestore(None, fallback_sharding=fallback)
    else:
        state_args = ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, like))
    restored = checkpoints.restore(
        step, args=ocp.args.Composite(**{STATE_ITEM: state_args, META_ITEM: ocp.args.JsonRestore()})
    )
    return restored[STATE_ITEM], restored[META_ITEM]


class NoGoodCheckpoint(ValueError):
    """Every checkpoint of a workdir failed to read back; the message says what was found."""


def restore_newest_good(
    checkpoints, like: dict, check_meta: Callable[[dict], None], report: Callable[[str], None]
) -> tuple[dict, dict] | None:
    """(state dict, meta) of the newest checkpoint that reads back whole, or None when there
    is none. A damaged one (its description or any array unreadable) is reported in one line
    naming the step and the error, moved aside to STEP.corrupt-TIME (never deleted), and the
    next older one is tried.

    check_meta: called with each checkpoint's description before its arrays are read; a
      ValueError it raises (a run of another model or dataset) passes through, and the
      checkpoint stays put.

    Raises:
      NoGoodCheckpoint: checkpoints exist and none of them reads back.
    """
    import orbax.checkpoint as ocp

    moved = []
    for step in sorted(checkpoints.all_steps(), reverse=True):
        meta_only = ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()})
        with tempfile.TemporaryDirectory() as scratch:
            log = os.path.join(scratch, "restore-errors.log")
            read_meta = functools.partial(checkpoints.restore, step, args=meta_only)
            meta, error = _try_read(read_meta, log)
            if error is None:
                check_meta(meta[META_ITEM])
                found, error = _try_read(functools.partial(restore, checkpoints, like, step), log)
                if error is None:
                    return found
            moved.append(_move_aside(checkpoints, step, error, log, report))
    if moved:
        raise NoGoodCheckpoint(
            f"{checkpoints.directory}: none of its {len(moved)} checkpoints reads back (moved "
            f"aside: {', '.join(moved)}); start afresh with a new --workdir"
        )
    return None


def _try_read(read: Callable[[], Any], log: str) -> tuple[Any, Exception | None]:
    """(read(), None), or (None, the error). A failed read leaves orbax's background tasks to
    report the same error dozens of times on stderr, some after the read has returned: stderr
    goes to `log` meanwhile, which is kept beside a damaged checkpoint."""
    with _stderr_to(log):
        try:
            return read(), None
        except Exception as e:
            _drop_orbax_leftovers()
            gc.collect()  # "Task exception was never retrieved" is logged when a task is freed
            time.sleep(0.5)  # and the threads still reading report into the log, not the user
            return None, e


def _not_an_orbax_leftover(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not ("never retrieved" in message and "orbax" in message)


def _drop_orbax_leftovers() -> None:
    """After a failed read, orbax's unfinished read tasks are freed later, each printing the
    error again ("Exception ignored in: <coroutine ...>", asyncio's "Task exception was never
    retrieved"): those alone are dropped, the one-line report has said it."""
    previous = sys.unraisablehook
    if getattr(previous, "_jaxnets", False):
        return
    logging.getLogger("asyncio").addFilter(_not_an_orbax_leftover)

    def hook(unraisable) -> None:
        code = getattr(unraisable.object, "cr_code", None)
        if code is not None and "orbax" in code.co_filename:
            return
        previous(unraisable)

    hook._jaxnets = True
    sys.unraisablehook = hook


def _move_aside(checkpoints, step: int, error: Exception, log: str, report) -> str:
    """Renames checkpoint `step` to STEP.corrupt-TIME, which orbax no longer lists, with the
    read's full error output in it (restore-errors.log)."""
    import jax

    source = Path(checkpoints.directory) / str(step)
    target = source.with_name(f"{step}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    if jax.process_index() == 0:  # one process renames; every process stops listing it
        os.replace(source, target)
        shutil.copyfile(log, target / "restore-errors.log")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxnets: checkpoint {step} moved aside")
    checkpoints.reload()
    report(f"checkpoint {step} is damaged ({_root_cause(error)}); moved to {target.name}, "
           "trying the one before")  # fmt: skip
    return target.name


def _root_cause(error: BaseException) -> str:
    """The innermost error's first line: TensorStore's names the file and the array."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__


@contextlib.contextmanager
def _stderr_to(path: str):
    """Sends file descriptor 2 (Python's, C++'s and other threads' stderr) to `path`."""
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


def load_weights(workdir: os.PathLike | str) -> tuple[dict, dict[str, Any]]:
    """The weights of a training workdir's latest checkpoint, the EMA weights when the run kept
    them (its evaluation used them too).

    Returns:
      (variables, meta): meta has "arch", "num_classes", "class_names", "step" and "ema".

    Raises:
      FileNotFoundError: no checkpoint. ValueError: an unreadable one; both name the directory.
    """
    directory = checkpoint_dir(workdir)
    try:
        with manager(workdir, read_only=True) as checkpoints:
            step = checkpoints.latest_step()
            if step is None:
                raise FileNotFoundError(f"{directory}: no checkpoint")
            state, saved = restore(checkpoints, step=step)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{directory}: unreadable checkpoint ({type(e).__name__}: {e})") from e
    use_ema = bool(state.get("ema_params"))
    variables = {
        "params": state["ema_params"] if use_ema else state["params"],
        "batch_stats": (state["ema_batch_stats"] if use_ema else state["batch_stats"]) or {},
    }
    meta = {
        "arch": saved["model"],
        "num_classes": saved["num_classes"],
        "class_names": saved.get("class_names"),
        "step": step,
        "ema": use_ema,
    }
    return jax.device_put(variables), meta
