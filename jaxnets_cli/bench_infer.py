"""`jaxnets bench --task infer`: CPU inference of one model in every runtime a user would
deploy it with, in one process on the same CPU.

Runtimes: jaxnets under XLA (jax.jit of the model, as `jaxnets eval` runs it), the ONNX artifact
`jaxnets export` writes (NCHW, float32) in ONNX Runtime, its int8 version (static QDQ), torch
eager, torch.compile (inductor), and torch's `quantize_dynamic` over Linear and Conv2d (the
int8 a PyTorch user reaches for first; it quantizes the Linear layers only, since dynamic
quantization has no Conv2d kernel).

Every runtime gets the same torchvision weights (random, BatchNorm statistics randomized; the
timings do not depend on the values) and the same images. Batch-1 latency is the median and 90th
percentile over `runs` single-image calls after warm-up; throughput is images/sec over whole
batches. The int8 model is calibrated on random normal images: its accuracy cost is measured
on real images by `jaxnets export --quantize int8` (docs/export.md), not here.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

RUNTIMES = ("jaxnets", "onnxruntime", "onnxruntime-int8", "torch", "torch.compile",
            "torch-dynamic-int8")  # fmt: skip


@dataclasses.dataclass
class InferSettings:
    models: tuple[str, ...] = ("resnet18", "resnet50", "vgg16")
    image_size: int = 224
    batch_size: int = 32
    runs: int = 50  # batch-1 calls timed
    batches: int = 3  # whole batches timed
    runtimes: tuple[str, ...] = RUNTIMES
    calibration_images: int = 32


def run(s: InferSettings) -> list[dict]:
    rows = []
    for name in s.models:
        with tempfile.TemporaryDirectory(prefix="jaxnets-bench-") as scratch:
            for runtime, (predict, size) in _runtimes(name, s, Path(scratch)).items():
                rows.append({"model": name, "runtime": runtime, "bytes": size,
                             **_measure(predict, s)})  # fmt: skip
    return rows


def _measure(predict: Callable[[np.ndarray], object], s: InferSettings) -> dict:
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, 3, s.image_size, s.image_size)).astype(np.float32)
    batch = rng.standard_normal((s.batch_size, 3, s.image_size, s.image_size)).astype(np.float32)
    for _ in range(3):
        predict(one)
    latencies = []
    for _ in range(s.runs):
        start = time.perf_counter()
        predict(one)
        latencies.append(time.perf_counter() - start)
    predict(batch)
    start = time.perf_counter()
    for _ in range(s.batches):
        predict(batch)
    seconds = time.perf_counter() - start
    return {
        "latency_ms_median": 1000 * float(np.median(latencies)),
        "latency_ms_p90": 1000 * float(np.percentile(latencies, 90)),
        "images_per_sec": s.batches * s.batch_size / seconds,
    }


def _runtimes(name: str, s: InferSettings, scratch: Path) -> dict:
    """{runtime: (predict(NCHW float32 images), artifact bytes)} for the requested runtimes."""
    import torch
    import torchvision

    from jaxnets_cli.feature_parity import randomize_batchnorm

    torch.manual_seed(0)
    model = randomize_batchnorm(torchvision.models.get_model(name), 0).eval()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    built = {}
    for runtime in s.runtimes:
        built[runtime] = _BUILDERS[runtime](name, model, state, s, scratch)
    return built


def _jaxnets(name, model, state, s, scratch):
    import jax
    import jax.numpy as jnp

    import jaxnets

    variables = jaxnets.from_torchvision(name, state)
    flax_model = jaxnets.create_model(name)
    forward = jax.jit(lambda v, x: flax_model.apply(v, jnp.transpose(x, (0, 2, 3, 1)),
                                                    train=False))  # fmt: skip
    size = sum(np.asarray(a).nbytes for a in jax.tree.leaves(variables))
    return (lambda x: forward(variables, x).block_until_ready()), size


def _onnx(name, model, state, s, scratch, quantize: bool = False):
    import jaxnets
    from jaxnets.deploy import runtime

    variables = jaxnets.from_torchvision(name, state)
    path = scratch / f"{name}{'-int8' if quantize else ''}.onnx"
    calibration = None
    if quantize:
        rng = np.random.default_rng(1)
        shape = (s.calibration_images, 3, s.image_size, s.image_size)
        calibration = rng.standard_normal(shape).astype(np.float32)
    jaxnets.export_model(
        name, variables, "onnx", path, input_size=(s.image_size, s.image_size), layout="nchw",
        quantize="int8" if quantize else None, calibration=calibration,
    )  # fmt: skip
    return runtime.load_runner(path), path.stat().st_size


def _torch(name, model, state, s, scratch, compiled=False, dynamic_int8=False):
    import io

    import torch

    if dynamic_int8:
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear, torch.nn.Conv2d}, dtype=torch.qint8)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    forward = torch.compile(model) if compiled else model

    def predict(x):
        with torch.inference_mode():
            return forward(torch.from_numpy(x))

    return predict, buffer.tell()


_BUILDERS = {
    "jaxnets": _jaxnets,
    "onnxruntime": _onnx,
    "onnxruntime-int8": lambda *a: _onnx(*a, quantize=True),
    "torch": _torch,
    "torch.compile": lambda *a: _torch(*a, compiled=True),
    "torch-dynamic-int8": lambda *a: _torch(*a, dynamic_int8=True),
}


def format_table(rows: list[dict]) -> str:
    """One line per (model, runtime), with batch-1 speed relative to torch eager's."""
    eager = {r["model"]: r for r in rows if r["runtime"] == "torch"}
    lines = [f"{'model':<10} {'runtime':<19} {'b1 median':>10} {'b1 p90':>9} {'vs torch':>8} "
             f"{'batch img/s':>11} {'vs torch':>8} {'MB':>7}"]  # fmt: skip
    for r in rows:
        base = eager.get(r["model"])
        b1 = f"{base['latency_ms_median'] / r['latency_ms_median']:.2f}x" if base else "-"
        bn = f"{r['images_per_sec'] / base['images_per_sec']:.2f}x" if base else "-"
        lines.append(
            f"{r['model']:<10} {r['runtime']:<19} {r['latency_ms_median']:>8.1f}ms "
            f"{r['latency_ms_p90']:>7.1f}ms {b1:>8} {r['images_per_sec']:>11.1f} {bn:>8} "
            f"{r['bytes'] / 1e6:>7.1f}"
        )
    return "\n".join(lines)
