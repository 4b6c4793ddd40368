"""A training workdir as the checkpoint torchvision's reference trainer writes and resumes
(references/classification/train.py): `jaxnets convert NAME --from-jax WORKDIR --out X.pth
--format torchvision-checkpoint`.

The file holds what the trainer's `--resume` reads: "model" (the state_dict), "optimizer"
(torch SGD's state_dict: the momentum buffers are jaxnets' momentum trace, which has the same
units since both apply weight decay before momentum), "lr_scheduler" (the trainer's
SequentialLR/StepLR/CosineAnnealingLR/ExponentialLR, stepped to where the run stopped),
"epoch" (the last finished epoch: the trainer resumes at the next), "model_ema" when the run
kept moving averages, and "args" (the run's config as a plain dict, so that
`torch.load(..., weights_only=True)` reads the file). `--test-only` needs only "model".

The optimizer's parameter groups are built as the trainer's `utils.set_weight_decay` builds
them: "other", then "norm" with --norm-weight-decay, then "bias" with --bias-weight-decay,
each in module order; torch's `Optimizer.load_state_dict` matches parameters by that order.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np


def write(name: str, workdir: str, out: str) -> str:
    """Writes the checkpoint; returns the line the command prints."""
    import torch

    from jaxnets.convert import to_torchvision, write_atomically

    config, state, meta, step = _read_run(workdir)
    _check_translatable(name, config, meta)
    epochs_done, in_epoch = divmod(step, meta["steps_per_epoch"])
    if epochs_done == 0:
        raise ValueError(
            f"{workdir}: step {step} is inside the first epoch; the reference "
            "trainer resumes at epoch boundaries"
        )
    model_state = to_torchvision(name, state)
    model = _torchvision_model(name, meta["num_classes"], model_state)
    optimizer = _optimizer(model, config)
    if config.momentum:  # torch's SGD keeps no buffers without momentum
        _load_momentum(optimizer, model, to_torchvision(name, {**state, "params": _trace(state)}))
    scheduler = _scheduler(optimizer, config, epochs_done)
    checkpoint = {
        "model": _tensors(model_state),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "epoch": epochs_done - 1,
        "args": json.loads(config.to_json()),
    }
    if state.get("ema_params"):
        ema = {"params": state["ema_params"], "batch_stats": state["ema_batch_stats"] or {}}
        # torchvision's ExponentialMovingAverage is an AveragedModel over the whole state_dict.
        checkpoint["model_ema"] = {
            "n_averaged": torch.tensor(_n_averaged(config, step, epochs_done, meta)),
            **{f"module.{k}": v for k, v in _tensors(to_torchvision(name, ema)).items()},
        }
    write_atomically(out, lambda tmp: torch.save(checkpoint, tmp))
    line = (f"wrote {out} ({name}, torchvision reference-trainer checkpoint at epoch "
            f"{epochs_done - 1}: --resume continues at epoch {epochs_done}")  # fmt: skip
    if in_epoch:
        line += (f"; the weights are {in_epoch} steps into epoch {epochs_done}, which the "
                 "trainer runs again from its start")  # fmt: skip
    return line + ")"


def _n_averaged(config, step: int, epochs_done: int, meta: dict) -> int:
    """AveragedModel's count of updates: 0 makes the trainer's next update a copy. With
    torchvision's EMA rule (ema_torchvision) that is the count since the warmup ended, 0 at its
    end, as the trainer resets it. jaxnets' own EMA averages from the first step on: any count
    above 0 says so (the trainer's average ignores the count)."""
    if not config.get("ema_torchvision"):
        return step
    updates_per_epoch = -(-meta["steps_per_epoch"] // config.ema_steps)
    return max(epochs_done - int(config.warmup_epochs), 0) * updates_per_epoch


def _read_run(workdir: str):
    import jax
    import ml_collections

    from jaxnets import checkpoints

    if not checkpoints.is_workdir(workdir):
        raise ValueError(
            f"{workdir}: not a training workdir; --format torchvision-checkpoint "
            "needs one (it holds the optimizer state and the epoch)"
        )
    with checkpoints.manager(workdir, read_only=True) as manager:
        step = manager.latest_step()
        if step is None:
            raise ValueError(f"{checkpoints.checkpoint_dir(workdir)}: no checkpoint")
        read = lambda: checkpoints.restore(manager, step=step)
        state, meta = checkpoints.read_or_explain(read, f"{manager.directory}/{step}")
    if "steps_per_epoch" not in meta:
        raise ValueError(
            f"{workdir}: written by an older jaxnets that did not record "
            "steps_per_epoch; --format torchvision-checkpoint cannot place it"
        )
    config = ml_collections.ConfigDict(json.loads((Path(workdir) / "config.json").read_text()))
    return config, jax.tree.map(np.asarray, state), meta, step


def _check_translatable(name: str, config, meta: dict) -> None:
    """The run's settings the reference trainer has no flag for."""
    from train.torchvision_args import SCHEDULERS  # the trainer's --lr-scheduler values

    problems = [
        (config.model != name, f"the workdir trained {config.model}, not {name}"),
        (meta.get("head"), "a custom head (the trainer builds torchvision's own)"),
        (config.freeze or config.freeze_until, "frozen layers"),
        (config.backbone_lr_scale != 1.0, "backbone_lr_scale"),
        (
            config.schedule not in SCHEDULERS.values(),
            f"schedule={config.schedule!r} (the trainer has {', '.join(SCHEDULERS)})",
        ),
    ]
    for bad, what in problems:
        if bad:
            raise ValueError(f"--format torchvision-checkpoint: {what}")


def _trace(state: dict) -> dict:
    """optax's momentum trace inside the serialized optimizer state (a params-shaped tree)."""
    stack = [state["opt_state"]]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "trace" in node:
                return node["trace"]
            stack.extend(node.values())
    raise ValueError("the checkpoint's optimizer state holds no momentum trace")


def _tensors(state: dict) -> dict:
    import torch

    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


def _torchvision_model(name: str, num_classes: int, state: dict):
    import torchvision

    model = torchvision.models.get_model(name, num_classes=num_classes)
    model.load_state_dict(_tensors(state), strict=True)
    return model


def parameter_groups(model, weight_decay: float, norm_weight_decay=None, bias_weight_decay=None):
    """torchvision's references/classification/utils.set_weight_decay for these models: the
    groups "other", "norm" (BatchNorm/LocalResponseNorm parameters) and "bias" (parameters
    named `bias`, outside norm layers), the last two only when their decay is given."""
    import torch

    norm_classes = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LocalResponseNorm)
    groups = {"other": [], "norm": [], "bias": []}
    for module in model.modules():
        for leaf, parameter in module.named_parameters(recurse=False):
            if bias_weight_decay is not None and leaf == "bias":
                groups["bias"].append(parameter)
            elif norm_weight_decay is not None and isinstance(module, norm_classes):
                groups["norm"].append(parameter)
            else:
                groups["other"].append(parameter)
    decays = {"other": weight_decay, "norm": norm_weight_decay, "bias": bias_weight_decay}
    return [{"params": p, "weight_decay": decays[g]} for g, p in groups.items() if p]


def _optimizer(model, config):
    import torch

    groups = parameter_groups(
        model, config.weight_decay, config.norm_weight_decay, config.bias_weight_decay
    )
    return torch.optim.SGD(
        groups,
        lr=config.learning_rate,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )


def _load_momentum(optimizer, model, buffers: dict) -> None:
    import torch

    for key, parameter in model.named_parameters():
        optimizer.state[parameter] = {"momentum_buffer": torch.from_numpy(np.array(buffers[key]))}


def _scheduler(optimizer, config, epochs_done: int):
    """The trainer's scheduler, stepped once per finished epoch as its loop steps it."""
    import torch

    schedulers = torch.optim.lr_scheduler
    warmup = int(config.warmup_epochs)
    main = {
        "step": lambda: schedulers.StepLR(optimizer, config.lr_step_epochs, config.lr_gamma),
        "cosine": lambda: schedulers.CosineAnnealingLR(
            optimizer, T_max=config.num_epochs - warmup, eta_min=config.lr_min
        ),
        "exponential": lambda: schedulers.ExponentialLR(optimizer, config.lr_gamma),
    }[config.schedule]()
    scheduler = main
    if warmup:
        first = (
            schedulers.LinearLR(optimizer, config.lr_warmup_decay, total_iters=warmup)
            if config.lr_warmup_method == "linear"
            else schedulers.ConstantLR(optimizer, config.lr_warmup_decay, warmup)
        )
        scheduler = schedulers.SequentialLR(optimizer, [first, main], milestones=[warmup])
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()"
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(epochs_done):
            scheduler.step()
    return scheduler
