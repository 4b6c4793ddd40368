"""`jaxnets parity train`: the same training run in PyTorch and in JAX, step by step.

Both start from one torchvision initialization (converted to Flax), read the same batches in the
same order (no random augmentation), and take SGD steps with the same momentum, Nesterov flag,
weight decay and learning-rate schedule. torch.optim.SGD applies weight decay to the gradient
before momentum; the optax chain of train/optim.py computes exactly that, and the torch side is
given the optax schedule's learning rate at every step.

The one semantic difference left is dropout (VGG, AlexNet): the two frameworks cannot draw the
same masks, so parity runs use dropout 0 in both.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from train.data import normalize_on_host


@dataclasses.dataclass
class ParitySettings:
    steps: int = 50
    data: str = "digits"
    batch_size: int = 64
    image_size: int = 32
    learning_rate: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 0
    evaluate: bool = False  # also compare test accuracy after training
    data_dir: str = ""
    float64: bool = False  # both frameworks in float64: semantics without rounding noise
    # Also train torch from initial weights 1 ulp up and 1 ulp down: how far torch drifts from
    # itself under rounding-size noise, the floor for any cross-framework match.
    noise_floor: bool = False


def _config(name: str, s: ParitySettings, steps_per_epoch: int):
    from train.config import base_config

    config = base_config().unlock()
    config.update({
        "model": name, "dataset": s.data, "data_dir": s.data_dir, "image_size": s.image_size,
        "batch_size": s.batch_size, "eval_batch_size": s.batch_size, "augment": "none",
        "hflip": False, "learning_rate": s.learning_rate, "momentum": s.momentum,
        "nesterov": s.nesterov, "weight_decay": s.weight_decay, "schedule": s.schedule,
        "warmup_epochs": 0.0, "num_epochs": -(-s.steps // steps_per_epoch), "seed": s.seed,
        "dropout": 0.0,
    })  # fmt: skip
    return config


def run(name: str, settings: ParitySettings) -> dict:
    """Per-step losses of both frameworks and their largest relative difference."""
    import jax

    if settings.float64:
        with jax.enable_x64(True):  # scoped: the rest of the process stays float32
            return _run(name, settings)
    return _run(name, settings)


def _run(name: str, settings: ParitySettings) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    import torch
    import torchvision

    import jaxnets
    from jaxnets.convert import flax_to_torch_key, from_torchvision, to_torchvision
    from train import data as data_lib
    from train.optim import learning_rate_schedule, make_optimizer

    dtype = np.float64 if settings.float64 else np.float32
    probe = _config(name, settings, 1)
    dataset = data_lib.load_dataset(probe)
    steps_per_epoch = dataset.steps_per_epoch(settings.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(f"--batch-size {settings.batch_size} exceeds the training examples")
    config = _config(name, settings, steps_per_epoch)
    num_classes = dataset.num_classes

    kwargs = {"num_classes": num_classes}
    if jaxnets.model_info(name).dropout:
        kwargs["dropout"] = 0.0
    torch.manual_seed(settings.seed)
    torch_model = torchvision.models.get_model(name, **kwargs)  # float32 initialization
    if settings.float64:
        torch_model = torch_model.double()  # the same float32-representable starting point
    variables = from_torchvision(name, torch_model.state_dict(), num_classes=num_classes)
    model = jaxnets.create_model(name, **kwargs, dtype=dtype, param_dtype=dtype)
    variables = jax.tree.map(lambda x: jnp.asarray(x, dtype), variables)

    schedule = learning_rate_schedule(config, steps_per_epoch)
    tx = make_optimizer(config, steps_per_epoch)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    opt_state = tx.init(params)

    def loss_fn(params, batch_stats, images, labels):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, images, train=True,
            mutable=["batch_stats"],
        )  # fmt: skip
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates.get("batch_stats", batch_stats)

    @jax.jit
    def jax_step(params, batch_stats, opt_state, images, labels):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, images, labels
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    def torch_sgd(module):
        return torch.optim.SGD(
            module.parameters(), lr=settings.learning_rate, momentum=settings.momentum,
            weight_decay=settings.weight_decay, nesterov=settings.nesterov,
        )  # fmt: skip

    def torch_step(module, optimizer, batch, labels, lr) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        loss = _torch_loss(module, batch, labels)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    torch_model.train()
    sgd = torch_sgd(torch_model)
    # Two torch runs from weights one ulp up and one ulp down: whether such a nudge moves a
    # ReLU input across zero is chance, so the floor is the larger of two draws.
    nudged = []
    if settings.noise_floor:
        for direction in (float("inf"), float("-inf")):
            module = copy.deepcopy(torch_model)
            with torch.no_grad():
                for p in module.parameters():
                    p.copy_(torch.nextafter(p, torch.full_like(p, direction)))
            nudged.append((module, torch_sgd(module)))

    first_gradient_errors = {}
    if settings.noise_floor and not settings.float64:
        images, labels = next(iter(dataset.train_batches(settings.seed, 0, 0, config.batch_size)))
        batch = normalize_on_host(images, dataset, dtype)
        with jax.default_matmul_precision("highest"):
            jax_gradient, _ = jax.jit(jax.grad(loss_fn, has_aux=True))(
                params, batch_stats, jnp.asarray(batch), jnp.asarray(labels)
            )
        # Gradients share the parameters' tree, so the converter names them as torch does.
        jax_gradient = to_torchvision(name, {"params": jax_gradient, "batch_stats": batch_stats})
        head = flax_to_torch_key(("params", jaxnets.head_module(name), "kernel")).rsplit(".", 1)[0]
        first_gradient_errors = _float32_gradient_errors(
            torch_model, jax_gradient, batch, labels, head
        )

    jax_losses, torch_losses, nudged_losses = [], [], [[] for _ in nudged]
    step = 0
    with jax.default_matmul_precision("highest"):
        for epoch in range(config.num_epochs):
            for images, labels in dataset.train_batches(settings.seed, epoch, 0, config.batch_size):
                if step == settings.steps:
                    break
                batch = normalize_on_host(images, dataset, dtype)
                params, batch_stats, opt_state, loss = jax_step(
                    params, batch_stats, opt_state, jnp.asarray(batch), jnp.asarray(labels)
                )
                jax_losses.append(float(loss))

                lr = float(schedule(step))
                torch_losses.append(torch_step(torch_model, sgd, batch, labels, lr))
                for (module, optimizer), losses in zip(nudged, nudged_losses, strict=True):
                    losses.append(torch_step(module, optimizer, batch, labels, lr))
                step += 1

    jax_losses, torch_losses = np.array(jax_losses), np.array(torch_losses)
    relative = np.abs(jax_losses - torch_losses) / np.abs(torch_losses)
    result = {
        "model": name, "data": settings.data, "steps": step, **dataclasses.asdict(settings),
        "jax_losses": jax_losses.tolist(), "torch_losses": torch_losses.tolist(),
        "max_rel_diff": float(relative.max()), "worst_step": int(relative.argmax()),
        "first_step_over_1pct": int(np.argmax(relative > 0.01)) if (relative > 0.01).any()
        else None,
    }  # fmt: skip
    if nudged:
        floor = np.abs(np.array(nudged_losses) - torch_losses) / np.abs(torch_losses)
        result["torch_losses_nudged"] = nudged_losses  # one list per nudge direction
        result["torch_noise_max_rel_diff"] = float(floor.max())
        result.update(first_gradient_errors)
    if settings.evaluate:
        from train.evaluate import torch_logits

        def test_top1_predictions(logits_of):
            return _test_predictions(logits_of, dataset, settings.batch_size, dtype)

        apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
        variables = {"params": params, "batch_stats": batch_stats}
        with jax.default_matmul_precision("highest"):
            ours, labels = test_top1_predictions(lambda x: apply(variables, x))
        theirs, _ = test_top1_predictions(lambda x: torch_logits(torch_model.eval(), x))
        jax_top1, torch_top1 = float(np.mean(ours == labels)), float(np.mean(theirs == labels))
        result.update({
            "jax_test_top1": jax_top1, "torch_test_top1": torch_top1,
            "test_top1_diff_points": 100 * (jax_top1 - torch_top1),
            "test_agreement": float(np.mean(ours == theirs)),
        })  # fmt: skip
        if nudged:
            module = nudged[0][0].eval()
            nudged_predictions, _ = test_top1_predictions(lambda x: torch_logits(module, x))
            result["torch_nudged_test_top1"] = float(np.mean(nudged_predictions == labels))
    return result


def _torch_loss(module, batch, labels, dtype=None):
    """torch's mean cross-entropy of `module` on an NHWC numpy batch."""
    import torch

    images = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
    return torch.nn.functional.cross_entropy(
        module(images if dtype is None else images.to(dtype)),
        torch.from_numpy(labels.astype(np.int64)),
    )


def _float32_gradient_errors(torch_model, jax_gradient, batch, labels, head: str) -> dict:
    """How accurate float32 itself is on this problem: the first batch's gradient at the initial
    weights, from torch in float32 and from jaxnets in float32 (`jax_gradient`, torch keys), each
    against torch's float64 gradient (relative error of the whole gradient vector, and of the
    gradient of the `head` module's parameters alone).

    In float32, a ReLU input within rounding of zero can switch sides; with small feature maps
    one such unit moves the whole gradient measurably (README, Parity). Two float32
    implementations cannot agree more closely than float32 agrees with the exact gradient. The
    head's gradient is the exception: no ReLU lies between it and the loss, so it depends on the
    forward pass only, which is continuous in rounding, and float32 holds it to ~1e-6."""
    import torch

    def torch_gradient(module, dtype):
        module = copy.deepcopy(module).to(dtype).train()  # a copy: its BN statistics move
        _torch_loss(module, batch, labels, dtype).backward()
        return {k: p.grad.double().numpy() for k, p in module.named_parameters()}

    exact = torch_gradient(torch_model, torch.float64)
    theirs = torch_gradient(torch_model, torch.float32)
    ours = {k: np.asarray(jax_gradient[k], np.float64) for k in exact}

    def relative_error(gradient, keys):
        error = sum(float(np.sum((gradient[k] - exact[k]) ** 2)) for k in keys)
        return float(np.sqrt(error / sum(float(np.sum(exact[k] ** 2)) for k in keys)))

    head_keys = [k for k in exact if k.startswith(f"{head}.")]
    return {
        "torch_float32_grad_rel_err": relative_error(theirs, exact),
        "jax_float32_grad_rel_err": relative_error(ours, exact),
        "torch_float32_head_grad_rel_err": relative_error(theirs, head_keys),
        "jax_float32_head_grad_rel_err": relative_error(ours, head_keys),
    }


def _test_predictions(logits_of, dataset, batch_size: int, dtype):
    """Top-1 predictions of `logits_of` (NHWC float batch -> logits) on the test split, and the
    labels."""
    predictions, labels = [], []
    for images, batch_labels, mask in dataset.eval_batches(batch_size):
        logits = np.asarray(logits_of(normalize_on_host(images, dataset, dtype)))
        predictions.append(logits.argmax(-1)[mask])
        labels.append(batch_labels[mask])
    return np.concatenate(predictions), np.concatenate(labels)


def format_report(r: dict) -> str:
    lines = [f"{r['model']} on {r['data']}: {r['steps']} SGD steps, batch {r['batch_size']}, "
             f"lr {r['learning_rate']} ({r['schedule']}), momentum {r['momentum']}, "
             f"weight decay {r['weight_decay']}",
             "step  jax loss    torch loss  rel diff"]  # fmt: skip
    for i, (a, b) in enumerate(zip(r["jax_losses"], r["torch_losses"], strict=True)):
        lines.append(f"{i:4d}  {a:.6f}  {b:.6f}    {abs(a - b) / abs(b):.2e}")
    lines.append(f"max_rel_diff {r['max_rel_diff']:.2e} (step {r['worst_step']})")
    if "torch_noise_max_rel_diff" in r:
        lines.append(
            f"torch vs torch with weights 1 ulp up or down: max_rel_diff "
            f"{r['torch_noise_max_rel_diff']:.2e} (the float noise floor of this run)"
        )
    if "torch_float32_grad_rel_err" in r:
        lines.append(
            f"first gradient in float32 vs float64 (relative error): torch "
            f"{r['torch_float32_grad_rel_err']:.2e}, jax {r['jax_float32_grad_rel_err']:.2e}; "
            f"head only: torch {r['torch_float32_head_grad_rel_err']:.2e}, "
            f"jax {r['jax_float32_head_grad_rel_err']:.2e}"
        )
    if "jax_test_top1" in r:
        lines.append(
            f"test top-1: jax {r['jax_test_top1']:.4f}, torch {r['torch_test_top1']:.4f} "
            f"({r['test_top1_diff_points']:+.2f} points), agreement {r['test_agreement']:.4f}"
        )
    if "torch_nudged_test_top1" in r:
        lines.append(
            f"test top-1 of torch from weights 1 ulp apart: {r['torch_nudged_test_top1']:.4f}"
        )
    return "\n".join(lines)
