"""Forward+backward time of single ResNet operations: jaxnets (with and without its XLA CPU flags)
against torch eager, on the same shapes. Where `jaxnets bench` says how fast a train step is,
this says where its time goes.

Each row times forward + backward (input and weight gradients; only the weight gradient for the
stem, whose input needs none) of one operation at batch 16 and ResNet's 128x128 shapes. The
"XLA defaults" column runs in a child process with JAXNETS_XLA_FLAGS=0, so that XLA:CPU starts
with jaxlib's own flags (convolutions through YNNPACK), and uses XLA's reduce_window max pool.

    python scripts/bench_ops.py [--steps 20]

With --small-maps it times, forward + backward (input and kernel gradients), XLA's
convolution against jaxnets.layers.conv2d's CPU forms (the product of each output pixel's
taps, the product with a whole-map matrix) on the small maps where they differ
(docs/performance.md, "Small maps" and "Grouped convolutions"):

    python scripts/bench_ops.py --small-maps [--steps 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys

import numpy as np

import jaxnets
from jaxnets_cli.bench import _timed

jaxnets.use_fast_cpu_flags()  # the child, started with JAXNETS_XLA_FLAGS=0, opts out

BATCH = 16
# name: (input NHWC shape, kernel size, stride, padding, output channels, input needs gradient)
CONVOLUTIONS = {
    "stem conv 7x7/2, 3->64 at 128": ((BATCH, 128, 128, 3), 7, 2, 3, 64, False),
    "conv 3x3, 64->64 at 32": ((BATCH, 32, 32, 64), 3, 1, 1, 64, True),
    "conv 3x3/2, 64->128 at 32": ((BATCH, 32, 32, 64), 3, 2, 1, 128, True),
    "conv 3x3, 128->128 at 16": ((BATCH, 16, 16, 128), 3, 1, 1, 128, True),
    "conv 3x3, 256->256 at 8": ((BATCH, 8, 8, 256), 3, 1, 1, 256, True),
    "conv 3x3, 512->512 at 4": ((BATCH, 4, 4, 512), 3, 1, 1, 512, True),
}
POOL = ("max pool 3x3/2 at 64, 64 channels", (BATCH, 64, 64, 64))


def milliseconds(fn, steps: int, *args) -> float:
    """Milliseconds per fn(*args) after one warm-up call (fn must synchronize)."""
    return _timed(lambda: fn(*args), steps, warmup=1) * 1e3


def jax_times(steps: int, library_pool: bool) -> dict[str, float]:
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    from jaxnets.layers import max_pool

    rng = np.random.default_rng(0)
    times = {}
    for name, (shape, k, stride, pad, features, input_gradient) in CONVOLUTIONS.items():
        x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
        w = jnp.asarray(rng.standard_normal((k, k, shape[-1], features)) * 0.05, jnp.float32)

        def conv(x, w, stride=stride, pad=pad):
            return jax.lax.conv_general_dilated(
                x, w, (stride, stride), ((pad, pad), (pad, pad)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )  # fmt: skip

        wrt = (0, 1) if input_gradient else 1
        step = jax.jit(jax.grad(lambda x, w, conv=conv: jnp.sum(conv(x, w) ** 2), argnums=wrt))
        times[name] = milliseconds(lambda *a, f=step: jax.block_until_ready(f(*a)), steps, x, w)

    label, shape = POOL
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    pool = (
        (lambda x: max_pool(x, 3, stride=2, padding=1))
        if library_pool
        else (lambda x: nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1))))
    )
    step = jax.jit(jax.grad(lambda x: jnp.sum(pool(x) ** 2)))
    times[label] = milliseconds(lambda a: jax.block_until_ready(step(a)), steps, x)
    return times


def torch_times(steps: int) -> dict[str, float]:
    import torch

    rng = np.random.default_rng(0)
    times = {}
    for name, (shape, k, stride, pad, features, input_gradient) in CONVOLUTIONS.items():
        n, h, w_, c = shape
        x = torch.tensor(rng.standard_normal((n, c, h, w_)), dtype=torch.float32)
        x.requires_grad_(input_gradient)
        w = torch.tensor(rng.standard_normal((features, c, k, k)) * 0.05, dtype=torch.float32)
        w.requires_grad_(True)
        wrt = (x, w) if input_gradient else (w,)

        def step(x=x, w=w, wrt=wrt, stride=stride, pad=pad):
            y = torch.nn.functional.conv2d(x, w, stride=stride, padding=pad)
            torch.autograd.grad((y**2).sum(), wrt)

        times[name] = milliseconds(step, steps)

    label, (n, h, w_, c) = POOL
    x = torch.tensor(rng.standard_normal((n, c, h, w_)), dtype=torch.float32, requires_grad=True)

    def pool_step():
        y = torch.nn.functional.max_pool2d(x, 3, 2, 1)
        torch.autograd.grad((y**2).sum(), (x,))

    times[label] = milliseconds(pool_step, steps)
    return times


# label: (batch, map size, in channels, out channels, stride, groups), 3x3 kernels, padding 1
SMALL_MAPS = {
    "1x1, 512->512": (16, 1, 512, 512, 1, 1),
    "2x2, 512->512": (16, 2, 512, 512, 1, 1),
    "2x2, 512->512, batch 64": (64, 2, 512, 512, 1, 1),
    "3x3, 512->512": (16, 3, 512, 512, 1, 1),
    "4x4, 512->512": (16, 4, 512, 512, 1, 1),
    "4x4 -> 2x2 stride 2, 256->512, batch 64": (64, 4, 256, 512, 2, 1),
    "5x5, 512->512, batch 32": (32, 5, 512, 512, 1, 1),
    "6x6, 512->512, batch 32": (32, 6, 512, 512, 1, 1),
    "8x8, 256->256, batch 64": (64, 8, 256, 256, 1, 1),
    # ResNet-18's layer3 and layer4 at 32x32, batch 64 (the demo's shape).
    "4x4 -> 2x2 stride 2, 128->256, batch 64": (64, 4, 128, 256, 2, 1),
    "2x2, 256->256, batch 64": (64, 2, 256, 256, 1, 1),
    "32x32, 128->128 in 32 groups": (16, 32, 128, 128, 1, 32),
}


def small_map_times(steps: int) -> None:
    """Prints XLA's convolution against conv2d's CPU forms, forward + backward, in ms."""
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    print("| map, channels (batch 16 unless said) | XLA convolution ms | taps' product ms "
          "| whole-map product ms | jaxnets conv2d ms |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for label, (n, size, cin, cout, stride, groups) in SMALL_MAPS.items():
        x = jnp.asarray(rng.standard_normal((n, size, size, cin)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((3, 3, cin // groups, cout)) * 0.05, jnp.float32)
        row = [
            # The whole-map matrix grows with the map's pixels squared: small maps only.
            "n/a" if form == "dense" and (size > 4 or groups > 1)
            else f"{_conv_step_ms(form, x, w, stride, groups, steps):,.1f}"
            for form in FORMS
        ]  # fmt: skip
        print(f"| {label} | " + " | ".join(row) + " |")


# XLA's convolution; the product of each output pixel's taps and the product with a whole-map
# matrix, at any map size; what conv2d chooses. form: (SMALL_MAP_PIXELS,
# DENSE_ELEMENTS_PER_EXAMPLE) while tracing, None for conv2d's own.
FORMS = {"xla": None, "taps": (10**9, 0), "dense": (10**9, 10**12), "conv2d": None}


def _conv_step_ms(form: str, x, w, stride: int, groups: int, steps: int) -> float:
    import jax
    import jax.numpy as jnp

    from jaxnets import layers

    def loss(x, w):
        return jnp.sum(layers.conv2d(x, w, stride, layers.pad2(1), 1, groups) ** 2)

    rule = FORMS[form] or (layers.SMALL_MAP_PIXELS, layers.DENSE_ELEMENTS_PER_EXAMPLE)
    with small_map_rule(*rule), layers.forms("xla" if form == "xla" else "cpu"):
        step = jax.jit(jax.grad(loss, argnums=(0, 1)))
        step(x, w)  # traced (and the rule read) here
    return milliseconds(lambda: jax.block_until_ready(step(x, w)), steps)


@contextlib.contextmanager
def small_map_rule(small_map_pixels: int, dense_elements_per_example: int):
    """jaxnets.layers.conv2d's small-map rule for the functions traced inside (see there)."""
    from jaxnets import layers

    saved = layers.SMALL_MAP_PIXELS, layers.DENSE_ELEMENTS_PER_EXAMPLE
    layers.SMALL_MAP_PIXELS = small_map_pixels
    layers.DENSE_ELEMENTS_PER_EXAMPLE = dense_elements_per_example
    try:
        yield
    finally:
        layers.SMALL_MAP_PIXELS, layers.DENSE_ELEMENTS_PER_EXAMPLE = saved


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--small-maps", action="store_true", help="conv2d's CPU forms vs XLA's")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.small_maps:
        small_map_times(args.steps)
        return
    if args.child:  # XLA's defaults: started with JAXNETS_XLA_FLAGS=0
        print(json.dumps(jax_times(args.steps, library_pool=False)))
        return

    env = {**os.environ, "JAXNETS_XLA_FLAGS": "0"}
    env.pop("XLA_FLAGS", None)
    child = subprocess.run(
        [sys.executable, __file__, "--child", "--steps", str(args.steps)], env=env,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    defaults = json.loads(child.stdout.strip().splitlines()[-1])
    import torch  # before jaxnets' JAX work, as elsewhere (PORTING.md)

    torch.set_num_threads(os.cpu_count() or 1)
    theirs = torch_times(args.steps)
    ours = jax_times(args.steps, library_pool=True)
    print("| operation, batch 16 (forward + backward) | XLA defaults ms | jaxnets ms | torch ms "
          "| torch / jaxnets |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for name in ours:
        print(f"| {name} | {defaults[name]:.1f} | {ours[name]:.1f} | {theirs[name]:.1f} "
              f"| {theirs[name] / ours[name]:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
