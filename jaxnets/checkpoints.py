"""Training checkpoints: the one layout `python -m train` writes and the library reads back.

  WORKDIR/checkpoints/STEP/state/  orbax StandardSave of the train state as a state dict:
                                   step, params, batch_stats, opt_state, ema_params, ema_batch_stats
  WORKDIR/checkpoints/STEP/meta/   JSON: model, num_classes, dataset, class_names, image_shape

The training program writes and resumes through `describe`, `save` and `restore`;
`jaxnets convert --from-jax`, `jaxnets eval` and `jaxnets.export.load_variables` read through
`load_weights`. Both sides go through the names below, so neither can drift from the other.
"""

from __future__ import annotations

import os
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
