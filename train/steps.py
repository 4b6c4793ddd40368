"""The steps: pure functions of (state, batch, key) that training, `jaxnets bench` and
`jaxnets parity train` all run. Sharding and jit are the caller's (train/train.py puts them
over a ('data',) mesh; the benchmark and the parity run use one device)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from train.mixing import BatchAugment, augment_batch


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0):
    return soft_cross_entropy(logits, jax.nn.one_hot(labels, num_classes), label_smoothing)


def soft_cross_entropy(logits, targets, label_smoothing: float = 0.0):
    """torch's CrossEntropyLoss with probability targets: smoothing mixes them with uniform."""
    return optax.softmax_cross_entropy(logits, optax.smooth_labels(targets, label_smoothing))


@dataclasses.dataclass(frozen=True)
class EmaRule:
    """When and how train_step updates the moving averages.

    Attributes:
      decay: of each update; None: no averages (0 is an average that copies the model, as
        torchvision's adjusted decay is when its alpha reaches 1).
      every: update on the batches i % every == 0 of each epoch (torchvision's
        --model-ema-steps).
      steps_per_epoch: to tell the batch of the epoch from the step.
      restart_epochs: torchvision's rule: the first update, and every update before this epoch
        ends, copies the model (its AveragedModel with n_averaged reset during the warmup);
        None averages from the initial weights on.
    """

    decay: float | None = None
    every: int = 1
    steps_per_epoch: int = 1
    restart_epochs: int | None = None

    @classmethod
    def from_config(cls, config, steps_per_epoch: int) -> EmaRule:
        if not config.ema_decay:
            return cls()
        if not config.ema_torchvision:
            return cls(config.ema_decay, config.ema_steps, steps_per_epoch)
        # torchvision's adjustment of --model-ema-decay for the batch and update interval.
        adjust = config.batch_size * config.ema_steps / config.num_epochs
        decay = 1.0 - min(1.0, (1.0 - config.ema_decay) * adjust)
        return cls(decay, config.ema_steps, steps_per_epoch, int(config.warmup_epochs))

    def update(self, step, averages, current):
        """The averages after the optimizer step `step` (counted from 0) gave `current`."""
        epoch, batch = jnp.divmod(step, self.steps_per_epoch)
        due = batch % self.every == 0
        blended = jax.tree.map(lambda a, b: self.decay * a + (1 - self.decay) * b,
                               averages, current)  # fmt: skip
        if self.restart_epochs is not None:
            # n_averaged is 0 at the first update and after every update of a warmup epoch.
            previous_in_warmup = jnp.where(batch > 0, epoch, epoch - 1) < self.restart_epochs
            copies = (step == 0) | previous_in_warmup
            blended = jax.tree.map(lambda b, c: jnp.where(copies, c, b), blended, current)
        return jax.tree.map(lambda b, a: jnp.where(due, b, a), blended, averages)


def normalize(images, mean, std):
    """uint8 batches from the tf.data pipelines are normalized here, on the device: moving
    uint8 costs a quarter of float32's bandwidth. Float batches arrive normalized (mean None)."""
    if mean is None:
        return images
    mean, std = jnp.asarray(mean) * 255.0, jnp.asarray(std) * 255.0
    return (images.astype(jnp.float32) - mean) / std


NO_EMA = EmaRule()
NO_AUGMENT = BatchAugment()


def loss_and_logits(
    apply_fn, params, batch_stats, images, targets, *, label_smoothing=0.0, dropout_key=None,
):  # fmt: skip
    """Mean cross-entropy against probability targets (one-hot, or mixed) of a training-mode
    forward pass, and (logits, updated BatchNorm statistics). The model's frozen layers keep
    their BatchNorm statistics (its `frozen`)."""
    logits, updates = apply_fn(
        {"params": params, "batch_stats": batch_stats}, images, train=True,
        mutable=["batch_stats"], rngs={} if dropout_key is None else {"dropout": dropout_key},
    )  # fmt: skip
    loss = soft_cross_entropy(logits, targets, label_smoothing).mean()
    return loss, (logits, updates.get("batch_stats", batch_stats))


def train_step(
    state, images, labels, key, *, num_classes, schedule, label_smoothing=0.0,
    ema: EmaRule = NO_EMA, augment: BatchAugment = NO_AUGMENT, mean=None, std=None,
):  # fmt: skip
    """One SGD step on a global batch: the device-side augmentations (train/mixing.py), loss,
    gradient, optimizer update, BatchNorm statistics and, with an EMA rule, the moving
    averages. Under a mesh the batch is sharded over 'data' and the parameters replicated, so
    the SPMD partitioner averages the gradients over devices.

    Only the trainable parameters are differentiated: XLA computes no gradient for the frozen
    layers, and no backward pass through a frozen prefix of the network.

    Returns:
      (new state, {'loss', 'top1', 'lr'} of this step, on device).
    """
    dropout_key = jax.random.fold_in(key, state.step)
    augment_key = jax.random.fold_in(dropout_key, 1)
    images, targets = augment_batch(
        augment_key, normalize(images, mean, std), jax.nn.one_hot(labels, num_classes), augment
    )
    loss_fn = lambda trainable: loss_and_logits(
        state.apply_fn, {**state.params, **trainable}, state.batch_stats, images, targets,
        label_smoothing=label_smoothing, dropout_key=dropout_key,
    )  # fmt: skip
    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.trainable()
    )
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    if ema.decay is not None:
        new_state = new_state.replace(
            ema_params=ema.update(state.step, state.ema_params, new_state.params),
            ema_batch_stats=ema.update(state.step, state.ema_batch_stats, new_state.batch_stats),
        )
    metrics = {
        "loss": loss,
        # torchvision's accuracy against mixed targets: their largest class.
        "top1": jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(targets, -1)),
        "lr": schedule(state.step),
    }
    return new_state, metrics


def eval_step(
    params, batch_stats, images, labels, mask, *, apply_fn, num_classes, mean=None, std=None
):
    """Sums over the real (unmasked) examples, and each example's prediction."""
    images = normalize(images, mean, std)
    logits = apply_fn({"params": params, "batch_stats": batch_stats}, images, train=False)
    loss = cross_entropy(logits, labels, num_classes)
    top5 = jax.lax.top_k(logits, min(5, num_classes))[1]
    weights = mask.astype(jnp.float32)
    sums = {
        "loss": jnp.sum(loss * weights),
        "top1": jnp.sum((top5[:, 0] == labels) * weights),
        "top5": jnp.sum(jnp.any(top5 == labels[:, None], -1) * weights),
        "count": jnp.sum(weights),
    }
    return sums, top5[:, 0]
