"""Training checkpoints: the one layout `python -m train` writes and the library reads back.

  WORKDIR/checkpoints/STEP/state/  orbax StandardSave of the train state as a state dict:
                                   step, params, batch_stats, opt_state, ema_params, ema_batch_stats
  WORKDIR/checkpoints/STEP/meta/   JSON: model, num_classes, dataset, class_names, image_shape

The training program writes and resumes through `describe`, `save` and `restore`;
`jaxnets convert --from-jax`, `jaxnets eval` and `jaxnets.export.load_variables` read through
`load_weights`. Both sides go through the names below, so neither can drift from the other.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from jaxnets import stderr

CHECKPOINT_DIR = "checkpoints"
STATE_ITEM = "state"
META_ITEM = "meta"
# What a resumed run must agree on with the checkpoint it resumes.
RESUME_KEYS = ("model", "num_classes", "dataset", "image_shape")


def describe(
    model: str, dataset: str, class_names: list[str], image_shape, head: str | None = None
) -> dict[str, Any]:
    """The META_ITEM of a checkpoint: what was trained on what (`head`: the model's head spec,
    None for torchvision's)."""
    return {
        "model": model,
        "num_classes": len(class_names),
        "dataset": dataset,
        "class_names": list(class_names),
        "image_shape": list(image_shape),
        "head": head,
    }


def checkpoint_dir(workdir: os.PathLike | str) -> Path:
    return Path(workdir).absolute() / CHECKPOINT_DIR  # orbax refuses relative paths


def is_workdir(directory: os.PathLike | str) -> bool:
    return checkpoint_dir(directory).is_dir()


def manager(workdir: os.PathLike | str, *, max_to_keep: int | None = None, read_only=False):
    """An orbax CheckpointManager over WORKDIR/checkpoints (created unless read_only)."""
    import orbax.checkpoint as ocp

    # cleanup_tmp_directories: a save cut short (a crash, a kill) leaves STEP.orbax-checkpoint-tmp*,
    # never listed as a checkpoint: removed when a run starts.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        save_interval_steps=0 if read_only else 1, cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=False,
    )  # fmt: skip
    if read_only:  # orbax warns "Given directory is read only" of what was asked for
        logging.getLogger("absl").addFilter(_not_a_read_only_notice)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def _not_a_read_only_notice(record: logging.LogRecord) -> bool:
    return "Given directory is read only" not in record.getMessage()


def save(checkpoints, step: int, state: dict, meta: dict[str, Any]) -> None:
    """Writes the train state (a state dict) and its description as checkpoint `step`, unless
    that step is already saved.

    Raises:
      OSError: in one line naming the directory and the cause (a full disk); the partial
        checkpoint is removed.
    """
    import orbax.checkpoint as ocp

    if step in checkpoints.all_steps():
        return
    items = ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardSave(state), META_ITEM: ocp.args.JsonSave(meta)
    })  # fmt: skip

    def write():
        checkpoints.save(step, args=items)
        checkpoints.wait_until_finished()

    try:
        write_or_explain(write, f"checkpoint {step} in {checkpoints.directory}")
    except OSError as e:  # orbax writes into STEP.orbax-checkpoint-tmp*, renamed when complete
        for partial in Path(checkpoints.directory).glob(f"{step}.orbax-checkpoint-tmp*"):
            shutil.rmtree(partial, ignore_errors=True)
        raise OSError(f"{e}; the partial checkpoint was removed") from e


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
            meta, error = _quietly(read_meta, log)
            if error is None:
                check_meta(meta[META_ITEM])
                found, error = _quietly(functools.partial(restore, checkpoints, like, step), log)
                if error is None:
                    return found
            moved.append(_move_aside(checkpoints, step, error, log, report))
    if moved:
        raise NoGoodCheckpoint(
            f"{checkpoints.directory}: none of its {len(moved)} checkpoints reads back (moved "
            f"aside: {', '.join(moved)}); start afresh with a new --workdir"
        )
    return None


def _quietly(run: Callable[[], Any], log: str) -> tuple[Any, Exception | None]:
    """(run(), None), or (None, the error). A failed read or write leaves orbax's background
    tasks to report the same error dozens of times on stderr, some after it has returned:
    stderr goes to `log` meanwhile (kept beside a damaged checkpoint)."""
    with stderr.redirected(log):
        try:
            return run(), None
        except Exception as e:
            _drop_orbax_leftovers()
            gc.collect()  # "Task exception was never retrieved" is logged when a task is freed
            time.sleep(0.5)  # and the threads still reading report into the log, not the user
            return None, e


def read_or_explain(read: Callable[[], Any], what: str) -> Any:
    """read(), or a ValueError of one line, "WHAT: unreadable (ROOT CAUSE)", with orbax's and
    TensorStore's own output of the failure kept off the terminal."""
    with tempfile.TemporaryDirectory() as scratch:
        found, error = _quietly(read, os.path.join(scratch, "errors.log"))
    if error is not None:
        raise ValueError(f"{what}: unreadable ({_root_cause(error)})") from error
    return found


def write_or_explain(write: Callable[[], Any], what: str) -> None:
    """write(), or an OSError of one line, "cannot write WHAT (CAUSE)" (a full disk: "No space
    left on device"), with orbax's and TensorStore's reports of it kept off the terminal.
    The caller removes what was half-written."""
    _, error = _quietly(write, os.devnull)  # a full disk may have no room for a log either
    if error is not None:
        raise OSError(f"cannot write {what} ({_write_cause(error)})") from error


def _write_cause(error: BaseException) -> str:
    """TensorStore reports a failed write as ValueError: OUT_OF_RANGE ... [os_error_code='28']:
    the OS's own words are clearer."""
    code = re.search(r"os_error_code='(\d+)'", str(_innermost(error)))
    return os.strerror(int(code.group(1))) if code else _root_cause(error)


def _not_an_orbax_leftover(record: logging.LogRecord) -> bool:
    """asyncio's "Task/Future exception was never retrieved": once orbax has failed, its tasks
    and TensorStore's futures (which do not name orbax) repeat the error reported."""
    return "exception was never retrieved" not in record.getMessage()


def _drop_orbax_leftovers() -> None:
    """After a failed read or write, orbax's unfinished tasks are freed later, each printing the
    error again ("Exception ignored in: <coroutine ...>", asyncio's "Task exception was never
    retrieved"), and its threads still reading find their event loop closed: those alone are
    dropped, the one-line report has said it."""
    previous = sys.unraisablehook
    if getattr(previous, "_jaxnets", False):
        return
    logging.getLogger("asyncio").addFilter(_not_an_orbax_leftover)
    # A failed write leaves orbax's coroutines unawaited, each warned of at exit.
    warnings.filterwarnings("ignore", r"coroutine .* was never awaited", RuntimeWarning)

    def hook(unraisable) -> None:
        code = getattr(unraisable.object, "cr_code", None)
        if code is not None and "orbax" in code.co_filename:
            return
        if str(unraisable.exc_value) == "Event loop is closed":  # its reading threads, late
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


def _innermost(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _root_cause(error: BaseException) -> str:
    """The innermost error's first line: TensorStore's names the file and the array."""
    error = _innermost(error)
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__


def load_weights(workdir: os.PathLike | str) -> tuple[dict, dict[str, Any]]:
    """The weights of a training workdir's latest checkpoint, the EMA weights when the run kept
    them (its evaluation used them too).

    Returns:
      (variables, meta): meta has "arch", "num_classes", "class_names", "head" (the head
      spec, None for torchvision's), "step" and "ema".

    Raises:
      FileNotFoundError: no checkpoint. ValueError: an unreadable one, in one line naming it.
    """
    directory = checkpoint_dir(workdir)
    with manager(workdir, read_only=True) as checkpoints:
        step = checkpoints.latest_step()
        if step is None:
            raise FileNotFoundError(f"{directory}: no checkpoint")
        read = functools.partial(restore, checkpoints, step=step)
        state, saved = read_or_explain(read, f"{directory}/{step}")
    use_ema = bool(state.get("ema_params"))
    variables = {
        "params": state["ema_params"] if use_ema else state["params"],
        "batch_stats": (state["ema_batch_stats"] if use_ema else state["batch_stats"]) or {},
    }
    meta = {
        "arch": saved["model"],
        "num_classes": saved["num_classes"],
        "class_names": saved.get("class_names"),
        "head": saved.get("head"),
        "step": step,
        "ema": use_ema,
    }
    return jax.device_put(variables), meta
