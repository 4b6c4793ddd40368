"""`jaxnets bench`: jaxnets against torchvision, same model, batch, image size and device.

For each model and framework it measures the whole train step (forward, backward, SGD momentum
update, BatchNorm statistics), inference, compile time and peak device memory:

- jaxnets: train/steps.py's train step, jitted as train/train.py jits it, its state donated where
  jaxnets.xla_flags.donates_train_state says (not on CPU); compile time is
  `lower().compile()`; memory is XLA's own accounting of the compiled step (arguments +
  outputs + temporaries - aliases), on every device: the device's peak counter covers the
  whole process and cannot be reset, so a second model would report the first one's peak.
- torch eager and torch.compile (inductor), on GPU with channels_last and bf16 autocast for
  --dtype bfloat16; compile time is the first step's extra time over a steady step; memory is
  the rise of torch.cuda.max_memory_allocated over what was allocated before the framework's
  model was built, read after its warm-up steps (before the next framework runs); not
  measured on CPU.

With freeze (`--freeze backbone`, any value of the training config's `freeze`), every
framework also runs a fine-tuning step with those layers frozen, in the same rounds: jaxnets
as `python -m train --config.freeze=...` runs it (no gradient, no optimizer state, BatchNorm
statistics held), torch with requires_grad off and the frozen modules in eval mode.

Throughput is images per second over timed steps after warm-up steps, each step synchronized.
With rounds > 1 the frameworks take turns (each round times every framework's train and
inference steps once) and rows report the median round, so that a machine whose speed drifts
during the run (shared hosts, thermal limits) penalizes every framework alike; the rounds'
images/sec are in the JSON rows.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass
class BenchSettings:
    models: tuple[str, ...] = ("resnet50",)
    batch_size: int = 16
    image_size: int = 128
    dtype: str = "float32"  # or bfloat16
    steps: int = 10
    warmup: int = 2
    frameworks: tuple[str, ...] = ("jaxnets", "torch", "torch.compile")
    remat: bool = False
    rounds: int = 1
    freeze: str = ""  # also run each framework with these layers frozen


@dataclasses.dataclass
class Runner:
    """One framework's model, ready to time: train() and infer() each run one synchronized
    step; peak_mem() gives the peak memory (bytes or None) of the steps run so far;
    compile_s(train_step_seconds) the compile time once the steps have run."""

    train: Callable[[], None]
    infer: Callable[[], None]
    peak_mem: Callable[[], int | None]
    compile_s: Callable[[float], float]


def _timed(fn, steps: int, warmup: int) -> float:
    """Seconds per call of fn (which must synchronize) after warm-up calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def jaxnets_runner(name: str, s: BenchSettings, freeze: str = "") -> Runner:
    """The train step `python -m train` runs (train/steps.py, the optimizer of train/optim.py
    at the default config, `freeze` as config.freeze), on one device."""
    import functools

    import jax
    import jax.numpy as jnp

    import jaxnets
    from jaxnets.xla_flags import donates_train_state
    from train.config import base_config
    from train.optim import learning_rate_schedule
    from train.state import create_model, create_train_state
    from train.steps import train_step

    config = base_config().unlock()
    config.update(
        model=name,
        dtype=s.dtype,
        remat=s.remat and jaxnets.model_info(name).residual_blocks,
        freeze=freeze,
    )
    model = create_model(config, num_classes=1000, device_count=1)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(s.batch_size, s.image_size, s.image_size, 3)),
                         jnp.float32)  # fmt: skip
    labels = jnp.asarray(rng.integers(0, 1000, s.batch_size), jnp.int32)
    variables = jax.jit(lambda: model.init(jax.random.key(0), images[:1], train=False))()
    variables.setdefault("batch_stats", {})
    steps_per_epoch = 1000  # the schedule's length: any value times the same step
    state = create_train_state(config, model, dict(variables), steps_per_epoch)
    step = functools.partial(
        train_step, num_classes=1000, schedule=learning_rate_schedule(config, steps_per_epoch)
    )
    key = jax.random.key(1)
    start = time.perf_counter()
    donate = 0 if donates_train_state(jax.default_backend()) else ()
    compiled = jax.jit(step, donate_argnums=donate).lower(state, images, labels, key).compile()
    compile_s = time.perf_counter() - start
    holder = {"state": state}

    def train():
        holder["state"], metrics = compiled(holder["state"], images, labels, key)
        metrics["loss"].block_until_ready()

    apply_eval = jax.jit(lambda v, x: model.apply(v, x, train=False))

    def infer():
        state = holder["state"]
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        apply_eval(variables, images).block_until_ready()

    return Runner(train, infer, lambda: _xla_step_memory(compiled), lambda _: compile_s)


def _xla_step_memory(compiled) -> int | None:
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
               + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)  # fmt: skip


def torch_runner(name: str, s: BenchSettings, compiled: bool, freeze: str = "") -> Runner:
    import torch
    import torchvision

    import jaxnets
    from jaxnets.names import torch_module

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":  # memory held by the frameworks measured before this one
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated()
    model = torchvision.models.get_model(name, num_classes=1000).to(device)
    images = torch.from_numpy(
        np.random.default_rng(0).normal(size=(s.batch_size, 3, s.image_size, s.image_size))
    ).float().to(device)  # fmt: skip
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 1000, s.batch_size)).to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=s.dtype == "bfloat16")
    frozen = [model.get_submodule(torch_module(layer))
              for layer in (jaxnets.frozen_modules(name, freeze) if freeze else ())]  # fmt: skip
    for module in frozen:
        module.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1, momentum=0.9, weight_decay=1e-4)

    def train_mode():
        model.train()
        for module in frozen:  # BatchNorm statistics held
            module.eval()

    train_mode()
    forward = torch.compile(model) if compiled else model

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(forward(images), labels)
        loss.backward()
        optimizer.step()
        sync()

    start = time.perf_counter()
    step()  # first call: compilation for torch.compile
    first_s = time.perf_counter() - start
    inference = torch.compile(model) if compiled else model

    def infer():
        model.eval()
        with torch.no_grad(), autocast:
            inference(images)
        sync()
        train_mode()

    def peak_mem() -> int | None:
        if device != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated() - allocated_before)

    def compile_s(train_s: float) -> float:
        return max(first_s - train_s, 0.0) if compiled else 0.0

    return Runner(step, infer, peak_mem, compile_s)


def run(settings: BenchSettings) -> list[dict]:
    """One row per (model, framework); failures (e.g. torch.compile without a C++ compiler)
    become a row with an 'error' instead of stopping the others."""
    try:
        import torch  # noqa: F401  (before tensorflow, wherever it gets imported)
    except ImportError:
        settings = dataclasses.replace(
            settings, frameworks=tuple(f for f in settings.frameworks if f == "jaxnets")
        )
    # JAX would otherwise take 75% of a GPU's memory up front and leave torch the rest.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    device = jax.devices()[0].device_kind
    rows = []
    for name in settings.models:
        rows.extend(_bench_model(name, settings, device))
    return rows


def _bench_model(name: str, s: BenchSettings, device: str) -> list[dict]:
    rows, runners, peak_mem = {}, {}, {}  # by framework (and freeze)
    variants = [(f, "") for f in s.frameworks]
    if s.freeze:
        variants += [(f, s.freeze) for f in s.frameworks]
    for base, freeze in variants:
        framework = f"{base} freeze={freeze}" if freeze else base
        rows[framework] = {"framework": framework, "model": name, "batch_size": s.batch_size,
                           "image_size": s.image_size, "dtype": s.dtype,
                           "device": device}  # fmt: skip
        try:
            if base == "jaxnets":
                runner = jaxnets_runner(name, s, freeze)
            else:
                runner = torch_runner(name, s, compiled=base == "torch.compile", freeze=freeze)
            for _ in range(s.warmup):
                runner.train()
                runner.infer()
            peak_mem[framework] = runner.peak_mem()  # before the next framework runs
            runners[framework] = runner
        except Exception as e:  # reported in the row, the run goes on
            rows[framework]["error"] = _one_line(e)

    rounds = {framework: ([], []) for framework in runners}  # train, infer img/s per round
    for _ in range(s.rounds):
        for framework, runner in list(runners.items()):
            try:
                rounds[framework][0].append(s.batch_size / _timed(runner.train, s.steps, 0))
                rounds[framework][1].append(s.batch_size / _timed(runner.infer, s.steps, 0))
            except Exception as e:
                rows[framework]["error"] = _one_line(e)
                del runners[framework]

    for framework, runner in runners.items():
        row, (train, infer) = rows[framework], rounds[framework]
        row.update(train_img_s=statistics.median(train), infer_img_s=statistics.median(infer))
        row.update(compile_s=runner.compile_s(s.batch_size / row["train_img_s"]),
                   peak_mem=peak_mem[framework])  # fmt: skip
        if s.rounds > 1:
            row.update(train_img_s_rounds=train, infer_img_s_rounds=infer)
    for framework, row in rows.items():
        # Each row against jaxnets in the same setting (frozen rows against frozen jaxnets).
        ours = rows[f"jaxnets freeze={s.freeze}" if "freeze=" in framework else "jaxnets"]
        if "train_img_s" in row and "train_img_s" in ours:
            row["jaxnets_train_ratio"] = ours["train_img_s"] / row["train_img_s"]
            row["jaxnets_infer_ratio"] = ours["infer_img_s"] / row["infer_img_s"]
    return list(rows.values())


# `jaxnets bench --matrix`: (image size, batch) cells per model, from the CIFAR/demo shape
# (32 pixels) to ImageNet's 224, where XLA:CPU's speed against torch differed most.
MATRIX = {
    "resnet18": ((32, 64), (64, 32), (64, 16), (96, 16), (128, 16), (224, 8)),
    "resnet50": ((64, 32), (224, 8)),
    "vgg16": ((64, 32), (224, 8)),
}


def run_matrix(settings: BenchSettings) -> list[dict]:
    """run() at every (image size, batch) cell of MATRIX for settings.models (those MATRIX
    lists; every MATRIX model when settings.models is empty)."""
    models = settings.models or tuple(MATRIX)
    rows = []
    for name in models:
        for image_size, batch_size in MATRIX[name]:
            cell = dataclasses.replace(
                settings, models=(name,), image_size=image_size, batch_size=batch_size
            )
            rows.extend(run(cell))
    return rows


def format_matrix(rows: list[dict]) -> str:
    """One line per (model, image size, batch): each framework's train and inference img/s,
    and jaxnets' ratio to each other framework."""
    cells: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        key = (row["model"], row["image_size"], row["batch_size"])
        cells.setdefault(key, {})[row["framework"]] = row
    others = [f for f in dict.fromkeys(r["framework"] for r in rows) if f != "jaxnets"]
    header = ["model", "input, batch", "jaxnets train img/s"]
    header += [f"{f} train" for f in others] + [f"jaxnets/{f} train" for f in others]
    header += ["jaxnets infer img/s"] + [f"{f} infer" for f in others]
    header += [f"jaxnets/{f} infer" for f in others]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]

    def img_s(row, kind):
        return (
            row.get("error", "error")
            if f"{kind}_img_s" not in row
            else f"{row[kind + '_img_s']:.1f}"
        )

    for (model, size, batch), by_framework in cells.items():
        ours = by_framework["jaxnets"]
        line = [model, f"{size}x{size}, {batch}"]
        for kind in ("train", "infer"):
            line.append(img_s(ours, kind))
            line += [img_s(by_framework[f], kind) for f in others]
            line += [
                f"{by_framework[f][f'jaxnets_{kind}_ratio']:.2f}x"
                if f"jaxnets_{kind}_ratio" in by_framework[f] else "n/a"
                for f in others
            ]  # fmt: skip
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def _one_line(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"


def format_table(rows: list[dict]) -> str:
    def mb(v):
        return "n/a" if v is None else f"{v / 2**20:,.0f} MiB"

    lines = [
        "| model | framework | train img/s | infer img/s | compile s | peak memory | "
        "jaxnets/this train | jaxnets/this infer |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['framework']} | {r['error']} | | | | | |")
            continue
        rounds = r.get("train_img_s_rounds")
        train = f"{r['train_img_s']:.1f}" + (
            " [" + ", ".join(f"{v:.1f}" for v in rounds) + "]" if rounds else ""
        )
        lines.append(
            f"| {r['model']} | {r['framework']} | {train} | "
            f"{r['infer_img_s']:.1f} | {r['compile_s']:.1f} | {mb(r['peak_mem'])} | "
            f"{r.get('jaxnets_train_ratio', math.nan):.2f}x | "
            f"{r.get('jaxnets_infer_ratio', math.nan):.2f}x |"
        )
    return "\n".join(lines)
