"""Optimizer and learning-rate schedules with torch.optim.SGD's semantics.

torch's SGD adds weight decay to the gradient *before* momentum, and its buffer starts at the
first gradient; optax.add_decayed_weights followed by optax.sgd (trace, then learning rate)
computes exactly that, Nesterov included (g + momentum * buf).
"""

from __future__ import annotations

import jax
import optax
from flax import traverse_util


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
    """Per-step schedule: linear warmup, then cosine to zero, step or multi-step decay, or flat.

    Step decays happen at epoch boundaries, as torch's StepLR/MultiStepLR stepped per epoch do.
    """
    total = config.num_epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)
    base = config.learning_rate
    if config.schedule == "cosine":
        main = optax.cosine_decay_schedule(base, max(total - warmup, 1))
    elif config.schedule == "constant":
        main = optax.constant_schedule(base)
    else:
        if config.schedule == "step":
            epochs = range(config.lr_step_epochs, config.num_epochs, config.lr_step_epochs)
        else:
            epochs = config.lr_milestones
        boundaries = {int(e * steps_per_epoch) - warmup: config.lr_gamma for e in epochs}
        main = optax.piecewise_constant_schedule(base, boundaries)
    if not warmup:
        return main
    ramp = optax.linear_schedule(base / max(warmup, 1), base, warmup)
    return optax.join_schedules([ramp, main], [warmup])


def _decay_groups(params) -> dict[str, object]:
    """Labels each parameter 'norm' (BatchNorm scale/bias), 'bias' or 'weight'."""
    flat = traverse_util.flatten_dict(params)
    labels = {}
    for path in flat:
        if path[-1] == "scale":
            labels[path] = "norm"
        elif path[-1] == "bias":
            # BatchNorm biases sit beside a scale; they are norm parameters in torchvision too.
            labels[path] = "norm" if (*path[:-1], "scale") in flat else "bias"
        else:
            labels[path] = "weight"
    return traverse_util.unflatten_dict(labels)


def make_optimizer(config, steps_per_epoch: int, in_head=None) -> optax.GradientTransformation:
    """clip (optional) -> weight decay per group -> SGD momentum/Nesterov -> learning rate ->
    config.backbone_lr_scale on the layers before the head.

    The scale comes last: torch's SGD keeps its momentum buffer in gradient units and
    multiplies by the learning rate at the end, so a parameter group of learning rate
    lr * scale is exactly the shared update times scale.

    Args:
      config: the training config.
      steps_per_epoch: for the schedule.
      in_head: for backbone_lr_scale, a function telling a top-level module of the head
        (`fc`, `fc_4`) from one of the backbone.
    """
    decay = {
        "weight": config.weight_decay,
        "norm": config.weight_decay if config.norm_weight_decay is None
        else config.norm_weight_decay,
        "bias": config.weight_decay if config.bias_weight_decay is None
        else config.bias_weight_decay,
    }  # fmt: skip
    steps = []
    if config.grad_clip_norm:
        steps.append(optax.clip_by_global_norm(config.grad_clip_norm))
    for group, rate in decay.items():
        if rate:
            mask = lambda p, g=group: jax.tree.map(lambda label: label == g, _decay_groups(p))
            steps.append(optax.add_decayed_weights(rate, mask))
    schedule = learning_rate_schedule(config, steps_per_epoch)
    steps.append(optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov))
    if config.backbone_lr_scale != 1.0:

        def labels(params):
            groups = {}
            for layer, value in params.items():
                group = "head" if in_head(layer) else "backbone"
                groups[layer] = jax.tree.map(lambda _, g=group: g, value)
            return groups

        scales = {"head": optax.identity(), "backbone": optax.scale(config.backbone_lr_scale)}
        steps.append(optax.multi_transform(scales, labels))
    return optax.chain(*steps)
