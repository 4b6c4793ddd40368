"""Times torchvision file -> device-ready Flax variables for resnet50 and vgg16.

  python scripts/bench_convert.py [--repeats 5]

Files are random-init torchvision models saved with torch.save (same tensors and sizes as the
published weights). Prints the median of `repeats` runs after one warm-up run, which pays the
one-off model tracing (jax.eval_shape) that every later conversion in a process reuses.
"""

import argparse
import os
import platform
import statistics
import tempfile
import time

import jax
import torch  # before anything imports tensorflow (shared/PORTING.md)
import torchvision
from safetensors.torch import save_file

from jaxnets.convert import from_torchvision


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="resnet50,vgg16")
    args = parser.parse_args()
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}"
    )
    print("| model | file | size MB | first (s) | median (s) |")
    print("|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            state = torchvision.models.get_model(name).state_dict()
            pth, st = os.path.join(tmp, f"{name}.pth"), os.path.join(tmp, f"{name}.safetensors")
            torch.save(state, pth)
            save_file({k: v.contiguous() for k, v in state.items()}, st)
            for path in (pth, st):
                times = []
                for _ in range(args.repeats + 1):
                    start = time.perf_counter()
                    variables = from_torchvision(name, path)
                    jax.block_until_ready(variables)
                    times.append(time.perf_counter() - start)
                size = os.path.getsize(path) / 1e6
                print(f"| {name} | {os.path.splitext(path)[1]} | {size:.0f} | {times[0]:.2f} | "
                      f"{statistics.median(times[1:]):.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
