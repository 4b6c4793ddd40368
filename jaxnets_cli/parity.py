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
import itertools

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
    import torch  # noqa: F401  (before the data pipeline imports tensorflow: PORTING.md)

    dtype = np.float64 if settings.float64 else np.float32
    dataset, config, steps_per_epoch = _data_and_config(name, settings)
    torch_model = _torch_model(name, settings, dataset.num_classes)
    jax_run = _JaxRun(name, config, torch_model, dataset.num_classes, steps_per_epoch, dtype)
    torch_runs = [_TorchRun(torch_model, settings)]
    if settings.noise_floor:
        # Two torch runs from weights one ulp up and one ulp down: whether such a nudge moves a
        # ReLU input across zero is chance, so the floor is the larger of two draws.
        torch_runs += [_TorchRun(_nudged(torch_model, d), settings) for d in (np.inf, -np.inf)]
    first_gradient_errors = {}
    if settings.noise_floor and not settings.float64:
        first_gradient_errors = jax_run.first_gradient_errors(torch_model, dataset, config)

    jax_losses, torch_losses = [], [[] for _ in torch_runs]
    with jax.default_matmul_precision("highest"):
        for step, (images, labels) in enumerate(_batches(dataset, config, settings.steps)):
            batch = normalize_on_host(images, dataset, dtype)
            jax_losses.append(jax_run.step(batch, labels))
            lr = float(jax_run.schedule(step))  # torch follows the optax schedule
            for run, losses in zip(torch_runs, torch_losses, strict=True):
                losses.append(run.step(batch, labels, lr))

    result = _loss_comparison(name, settings, jax_losses, torch_losses)
    result.update(first_gradient_errors)
    if settings.evaluate:
        modules = [r.module for r in torch_runs]
        result.update(_test_comparison(jax_run, modules, dataset, settings.batch_size, dtype))
    return result


def _data_and_config(name: str, settings: ParitySettings):
    from train import data as data_lib

    dataset = data_lib.load_dataset(_config(name, settings, 1))
    steps_per_epoch = dataset.steps_per_epoch(settings.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(f"--batch-size {settings.batch_size} exceeds the training examples")
    return dataset, _config(name, settings, steps_per_epoch), steps_per_epoch


def _torch_model(name: str, settings: ParitySettings, num_classes: int):
    """torchvision's model, initialized by torchvision in float32 (the shared starting point),
    in float64 for a float64 run; dropout 0 where the family has it."""
    import torch
    import torchvision

    kwargs = _without_dropout(name)
    torch.manual_seed(settings.seed)
    module = torchvision.models.get_model(name, num_classes=num_classes, **kwargs)
    return (module.double() if settings.float64 else module).train()


def _without_dropout(name: str) -> dict:
    """The builder option that turns dropout off, for the families that have it: the two
    frameworks cannot draw the same masks."""
    import jaxnets

    return {"dropout": 0.0} if jaxnets.model_info(name).dropout else {}


def _nudged(module, direction: float):
    """A copy of `module` with every weight moved one ulp towards `direction`."""
    import torch

    module = copy.deepcopy(module)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.nextafter(p, torch.full_like(p, direction)))
    return module


def _batches(dataset, config, steps: int):
    """The first `steps` training batches, epoch after epoch, in the one fixed order."""
    batches = (
        batch
        for epoch in range(config.num_epochs)
        for batch in dataset.train_batches(config.seed, epoch, 0, config.batch_size)
    )
    return itertools.islice(batches, steps)


class _JaxRun:
    """jaxnets training from torch's initial weights: the train step of `python -m train`
    (train/steps.py) with its optimizer, on one device."""

    def __init__(self, name, config, torch_model, num_classes, steps_per_epoch, dtype):
        import functools

        import jax
        import jax.numpy as jnp

        import jaxnets
        from jaxnets.convert import from_torchvision
        from train.optim import learning_rate_schedule
        from train.state import create_train_state
        from train.steps import train_step

        self.name, self.num_classes = name, num_classes
        kwargs = _without_dropout(name)
        self.model = jaxnets.create_model(name, num_classes=num_classes, dtype=dtype,
                                          param_dtype=dtype, **kwargs)  # fmt: skip
        variables = from_torchvision(name, torch_model.state_dict(), num_classes=num_classes)
        variables = jax.tree.map(lambda x: jnp.asarray(x, dtype), variables)
        variables.setdefault("batch_stats", {})
        self.state = create_train_state(config, self.model, variables, steps_per_epoch)
        self.schedule = learning_rate_schedule(config, steps_per_epoch)
        self._step = jax.jit(
            functools.partial(train_step, num_classes=num_classes, schedule=self.schedule)
        )
        self._key = jax.random.key(config.seed)

    def step(self, batch: np.ndarray, labels: np.ndarray) -> float:
        self.state, metrics = self._step(self.state, batch, labels, self._key)
        return float(metrics["loss"])

    def variables(self) -> dict:
        return {"params": self.state.params, "batch_stats": self.state.batch_stats}

    def first_gradient_errors(self, torch_model, dataset, config) -> dict:
        """float32's own accuracy on the first batch (see _float32_gradient_errors)."""
        import jax

        import jaxnets
        from jaxnets.convert import flax_to_torch_key, to_torchvision
        from train.steps import loss_and_logits

        images, labels = next(_batches(dataset, config, 1))
        batch = normalize_on_host(images, dataset, np.float32)
        loss = lambda params: loss_and_logits(
            self.model.apply, params, self.state.batch_stats, batch,
            jax.nn.one_hot(labels, self.num_classes),
        )  # fmt: skip
        with jax.default_matmul_precision("highest"):
            gradient, _ = jax.jit(jax.grad(loss, has_aux=True))(self.state.params)
        # Gradients share the parameters' tree, so the converter names them as torch does.
        gradient = to_torchvision(
            self.name, {"params": gradient, "batch_stats": self.state.batch_stats}
        )
        head_kernel = ("params", jaxnets.head_module(self.name), "kernel")
        head = flax_to_torch_key(head_kernel).rsplit(".", 1)[0]
        return _float32_gradient_errors(torch_model, gradient, batch, labels, head)


class _TorchRun:
    """torch.optim.SGD on a torchvision module, given the learning rate of every step."""

    def __init__(self, module, s: ParitySettings):
        import torch

        self.module = module
        self._sgd = torch.optim.SGD(
            module.parameters(), lr=s.learning_rate, momentum=s.momentum,
            weight_decay=s.weight_decay, nesterov=s.nesterov,
        )  # fmt: skip

    def step(self, batch: np.ndarray, labels: np.ndarray, lr: float) -> float:
        for group in self._sgd.param_groups:
            group["lr"] = lr
        self._sgd.zero_grad()
        loss = _torch_loss(self.module, batch, labels)
        loss.backward()
        self._sgd.step()
        return float(loss.detach())


def _loss_comparison(name, settings: ParitySettings, jax_losses, torch_losses) -> dict:
    """Per-step losses, their largest relative difference and, with nudged torch runs, the
    same measure of torch against itself (the noise floor)."""
    jax_losses, (reference, *nudged) = np.array(jax_losses), np.array(torch_losses)
    relative = np.abs(jax_losses - reference) / np.abs(reference)
    over = relative > 0.01
    result = {
        "model": name, "data": settings.data, "steps": len(jax_losses),
        **dataclasses.asdict(settings), "jax_losses": jax_losses.tolist(),
        "torch_losses": reference.tolist(), "max_rel_diff": float(relative.max()),
        "worst_step": int(relative.argmax()),
        "first_step_over_1pct": int(np.argmax(over)) if over.any() else None,
    }  # fmt: skip
    if nudged:
        floor = np.abs(np.array(nudged) - reference) / np.abs(reference)
        result["torch_losses_nudged"] = [n.tolist() for n in nudged]  # one list per direction
        result["torch_noise_max_rel_diff"] = float(floor.max())
    return result


def _test_comparison(jax_run: _JaxRun, torch_modules, dataset, batch_size: int, dtype) -> dict:
    """Test-split top-1 of both trained models and how often they agree (and of the first
    nudged torch run, when there is one)."""
    import jax

    from jaxnets_cli.evaluate import torch_logits

    def predictions(logits_of):
        return _test_predictions(logits_of, dataset, batch_size, dtype)

    apply = jax.jit(lambda v, x: jax_run.model.apply(v, x, train=False))
    with jax.default_matmul_precision("highest"):
        ours, labels = predictions(lambda x: apply(jax_run.variables(), x))
    reference, *nudged = [module.eval() for module in torch_modules]
    theirs, _ = predictions(lambda x: torch_logits(reference, x))
    jax_top1, torch_top1 = float(np.mean(ours == labels)), float(np.mean(theirs == labels))
    result = {
        "jax_test_top1": jax_top1, "torch_test_top1": torch_top1,
        "test_top1_diff_points": 100 * (jax_top1 - torch_top1),
        "test_agreement": float(np.mean(ours == theirs)),
    }  # fmt: skip
    if nudged:
        nudged_predictions, _ = predictions(lambda x: torch_logits(nudged[0], x))
        result["torch_nudged_test_top1"] = float(np.mean(nudged_predictions == labels))
    return result


def _torch_loss(module, batch, labels, dtype=None):
    """torch's mean cross-entropy of `module` on an NHWC numpy batch."""
    import torch

    from jaxnets_cli.evaluate import torch_images

    images = torch_images(batch)
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
    one such unit moves the whole gradient measurably (docs/parity.md). Two float32
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
