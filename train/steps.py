"""The steps: pure functions of (state, batch, key) that training, `jaxnets bench` and
`jaxnets parity train` all run. Sharding and jit are the caller's (train/train.py puts them
over a ('data',) mesh; the benchmark and the parity run use one device)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0):
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def normalize(images, mean, std):
    """uint8 batches from the tf.data pipelines are normalized here, on the device: moving
    uint8 costs a quarter of float32's bandwidth. Float batches arrive normalized (mean None)."""
    if mean is None:
        return images
    mean, std = jnp.asarray(mean) * 255.0, jnp.asarray(std) * 255.0
    return (images.astype(jnp.float32) - mean) / std


def loss_and_logits(
    apply_fn, params, batch_stats, images, labels, *, num_classes, label_smoothing=0.0,
    dropout_key=None,
):  # fmt: skip
    """Mean cross-entropy of a training-mode forward pass, and (logits, updated BatchNorm
    statistics). The model's frozen layers keep their BatchNorm statistics (its `frozen`)."""
    logits, updates = apply_fn(
        {"params": params, "batch_stats": batch_stats}, images, train=True,
        mutable=["batch_stats"], rngs={} if dropout_key is None else {"dropout": dropout_key},
    )  # fmt: skip
    loss = cross_entropy(logits, labels, num_classes, label_smoothing).mean()
    return loss, (logits, updates.get("batch_stats", batch_stats))


def train_step(
    state, images, labels, key, *, num_classes, schedule, label_smoothing=0.0, ema_decay=0.0,
    mean=None, std=None,
):  # fmt: skip
    """One SGD step on a global batch: loss, gradient, optimizer update, BatchNorm statistics
    and, with ema_decay, the moving averages. Under a mesh the batch is sharded over 'data' and
    the parameters replicated, so the SPMD partitioner averages the gradients over devices.

    Only the trainable parameters are differentiated: XLA computes no gradient for the frozen
    layers, and no backward pass through a frozen prefix of the network.

    Returns:
      (new state, {'loss', 'top1', 'lr'} of this step, on device).
    """
    loss_fn = lambda trainable: loss_and_logits(
        state.apply_fn, {**state.params, **trainable}, state.batch_stats,
        normalize(images, mean, std), labels, num_classes=num_classes,
        label_smoothing=label_smoothing, dropout_key=jax.random.fold_in(key, state.step),
    )  # fmt: skip
    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.trainable()
    )
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    if ema_decay:
        ema = lambda old, new: jax.tree.map(lambda a, b: ema_decay * a + (1 - ema_decay) * b,
                                            old, new)  # fmt: skip
        new_state = new_state.replace(
            ema_params=ema(state.ema_params, new_state.params),
            ema_batch_stats=ema(state.ema_batch_stats, new_state.batch_stats),
        )
    metrics = {
        "loss": loss,
        "top1": jnp.mean(jnp.argmax(logits, -1) == labels),
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
