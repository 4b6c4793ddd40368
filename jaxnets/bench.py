"""`jaxnets bench`: jaxnets against torchvision, same model, batch, image size and device.

For each model and framework it measures the whole train step (forward, backward, SGD momentum
update, BatchNorm statistics), inference, compile time and peak device memory:

- jaxnets: one jitted train step with the state donated, as train/train.py runs it; compile
  time is `lower().compile()`; memory is the device's peak where it reports one (GPU/TPU),
  else XLA's own accounting of the compiled step (arguments + outputs + temporaries - aliases).
- torch eager and torch.compile (inductor), on GPU with channels_last and bf16 autocast for
  --dtype bfloat16; compile time is the first step's extra time over a steady step; memory is
  torch.cuda.max_memory_allocated on GPU and not measured on CPU.

Throughput is images per second over timed steps after warm-up steps, each step synchronized.
"""

from __future__ import annotations

import dataclasses
import math
import time

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


def _timed(fn, steps: int, warmup: int) -> float:
    """Seconds per call of fn (which must synchronize) after warm-up calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def bench_jaxnets(name: str, s: BenchSettings) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    import jaxnets

    dtype = jnp.bfloat16 if s.dtype == "bfloat16" else jnp.float32
    options = {"remat": True} if s.remat else {}
    model = jaxnets.create_model(name, num_classes=1000, dtype=dtype, **options)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(s.batch_size, s.image_size, s.image_size, 3)),
                         jnp.float32)  # fmt: skip
    labels = jnp.asarray(rng.integers(0, 1000, s.batch_size), jnp.int32)
    variables = jax.jit(lambda: model.init(jax.random.key(0), images[:1], train=False))()
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
    state = (variables["params"], variables.get("batch_stats", {}), tx.init(variables["params"]))

    def train_step(state, images, labels, key):
        params, batch_stats, opt_state = state

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats}, images, train=True,
                mutable=["batch_stats"], rngs={"dropout": key},
            )  # fmt: skip
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates.get("batch_stats", batch_stats)

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

    key = jax.random.key(1)
    start = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=0).lower(state, images, labels, key).compile()
    compile_s = time.perf_counter() - start
    holder = {"state": state}

    def step():
        holder["state"], loss = compiled(holder["state"], images, labels, key)
        loss.block_until_ready()

    train_s = _timed(step, s.steps, s.warmup)
    infer = jax.jit(lambda v, x: model.apply(v, x, train=False))
    params, batch_stats, _ = holder["state"]
    eval_variables = {"params": params, "batch_stats": batch_stats}
    infer_s = _timed(lambda: infer(eval_variables, images).block_until_ready(), s.steps, s.warmup)
    return {
        "train_img_s": s.batch_size / train_s, "infer_img_s": s.batch_size / infer_s,
        "compile_s": compile_s, "peak_mem": _jax_peak_memory(compiled),
    }  # fmt: skip


def _jax_peak_memory(compiled) -> int | None:
    import jax

    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
               + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)  # fmt: skip


def bench_torch(name: str, s: BenchSettings, compiled: bool) -> dict:
    import torch
    import torchvision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torchvision.models.get_model(name, num_classes=1000).to(device)
    images = torch.from_numpy(
        np.random.default_rng(0).normal(size=(s.batch_size, 3, s.image_size, s.image_size))
    ).float().to(device)  # fmt: skip
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 1000, s.batch_size)).to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats()
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=s.dtype == "bfloat16")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
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
    train_s = _timed(step, s.steps, s.warmup)
    model.eval()
    inference = torch.compile(model) if compiled else model

    def infer():
        with torch.no_grad(), autocast:
            inference(images)
        sync()

    infer_s = _timed(infer, s.steps, s.warmup + (1 if compiled else 0))
    peak = int(torch.cuda.max_memory_allocated()) if device == "cuda" else None
    return {
        "train_img_s": s.batch_size / train_s, "infer_img_s": s.batch_size / infer_s,
        "compile_s": max(first_s - train_s, 0.0) if compiled else 0.0, "peak_mem": peak,
    }  # fmt: skip


def run(settings: BenchSettings) -> list[dict]:
    """One row per (model, framework); failures (e.g. torch.compile without a C++ compiler)
    become a row with an 'error' instead of stopping the others."""
    try:
        import torch  # noqa: F401  (before tensorflow, wherever it gets imported)
    except ImportError:
        settings = dataclasses.replace(
            settings, frameworks=tuple(f for f in settings.frameworks if f == "jaxnets")
        )
    import jax

    device = jax.devices()[0].device_kind
    rows = []
    for name in settings.models:
        for framework in settings.frameworks:
            row = {"framework": framework, "model": name, "batch_size": settings.batch_size,
                   "image_size": settings.image_size, "dtype": settings.dtype,
                   "device": device}  # fmt: skip
            try:
                if framework == "jaxnets":
                    row.update(bench_jaxnets(name, settings))
                else:
                    row.update(bench_torch(name, settings, compiled=framework == "torch.compile"))
            except Exception as e:  # reported in the row, the run goes on
                row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
            rows.append(row)
        ours = next(r for r in rows if r["model"] == name and r["framework"] == "jaxnets")
        for r in rows:
            if r["model"] == name and "train_img_s" in r and "train_img_s" in ours:
                r["jaxnets_train_ratio"] = ours["train_img_s"] / r["train_img_s"]
                r["jaxnets_infer_ratio"] = ours["infer_img_s"] / r["infer_img_s"]
    return rows


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
        lines.append(
            f"| {r['model']} | {r['framework']} | {r['train_img_s']:.1f} | "
            f"{r['infer_img_s']:.1f} | {r['compile_s']:.1f} | {mb(r['peak_mem'])} | "
            f"{r.get('jaxnets_train_ratio', math.nan):.2f}x | "
            f"{r.get('jaxnets_infer_ratio', math.nan):.2f}x |"
        )
    return "\n".join(lines)
