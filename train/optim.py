"""Optimizer and learning-rate schedules with torch.optim.SGD's semantics.

torch's SGD adds weight decay to the gradient *before* momentum, and its buffer starts at the
first gradient; optax.add_decayed_weights followed by optax.sgd (trace, then learning rate)
computes exactly that, Nesterov included (g + momentum * buf).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate at each step, with the formulas of torchvision's reference trainer:
    `SequentialLR([warmup, main], milestones=[warmup_epochs])`, where the warmup is
    `LinearLR(start_factor=lr_warmup_decay)` or `ConstantLR(factor=lr_warmup_decay)` and the main
    schedule counts its epochs from the warmup's end: `CosineAnnealingLR(T_max=num_epochs -
    warmup_epochs, eta_min=lr_min)`, `StepLR(lr_step_epochs, lr_gamma)`,
    `ExponentialLR(lr_gamma)` or a constant. `multistep` decays by lr_gamma at the absolute
    epochs lr_milestones.

    config.schedule_unit says how often the rate changes. "epoch": once per epoch, as the
    reference trainer steps its scheduler, so each epoch runs at one rate and the cosine never
    reaches lr_min. "step": the same curves evaluated at each step's fractional epoch.
    """
    per_epoch = steps_per_epoch if config.schedule_unit == "step" else 1
    warmup = int(config.warmup_epochs * per_epoch)  # in ticks: steps or whole epochs
    total = config.num_epochs * per_epoch
    base, gamma, decay = config.learning_rate, config.lr_gamma, config.lr_warmup_decay

    def main(t):  # ticks since the warmup ended
        if config.schedule == "cosine":
            # (1 + cos(pi t / T)) / 2 as sin^2(pi (T - t) / 2T): no cancellation near the end,
            # where the float32 cosine is within an ulp of -1.
            remaining = (total - warmup - t) / max(total - warmup, 1)
            return config.lr_min + (base - config.lr_min) * jnp.sin(jnp.pi / 2 * remaining) ** 2
        if config.schedule == "step":
            return base * gamma ** jnp.floor(t / (config.lr_step_epochs * per_epoch))
        if config.schedule == "exponential":
            return base * gamma ** (t / per_epoch)
        if config.schedule == "multistep":
            milestones = jnp.asarray([m * per_epoch for m in config.lr_milestones])
            passed = jnp.sum(jnp.expand_dims(t + warmup, -1) >= milestones, axis=-1)
            return base * gamma**passed
        return base * jnp.ones_like(t)

    def schedule(step):
        tick = step if config.schedule_unit == "step" else step // steps_per_epoch
        tick = jnp.asarray(tick, jnp.result_type(float))  # float64 where x64 is on
        if not warmup:
            return main(tick)
        if config.lr_warmup_method == "linear":
            factor = decay + (1 - decay) * tick / warmup
        else:
            factor = decay
        return jnp.where(tick < warmup, base * factor, main(tick - warmup))

    return schedule


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
