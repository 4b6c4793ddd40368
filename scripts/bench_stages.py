"""Where a ResNet-18 train step's time goes, stage by stage, and what conv2d's choice of
lowering on small maps does to it: forward + backward (input and parameter gradients) of the
stem, each residual stage and the head, jaxnets against torch eager at the same shapes, under
one or more small-map rules of jaxnets.layers.conv2d (read when a function is traced).

    python scripts/bench_stages.py --image-size 32 --batch-size 64 [--rules 16:0,4:32768]
    python scripts/bench_stages.py --image-size 32 --batch-size 64 --whole-step --repeats 2

A rule is SMALL_MAP_PIXELS:DENSE_ELEMENTS_PER_EXAMPLE; "16:0" is the rule before 2026-12-06
(the taps' product up to 4x4 output maps, no whole-map product), the default the one in
jaxnets.layers. --whole-step times the whole train step of `jaxnets bench` instead, the rules
taking turns `--repeats` times in one process (this machine's speed drifts between minutes).
"""

from __future__ import annotations

import argparse
import functools

import numpy as np

import jaxnets

jaxnets.use_fast_cpu_flags()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from bench_ops import small_map_rule  # noqa: E402  (scripts/, this script's directory)
from flax import linen as nn  # noqa: E402

from jaxnets import layers  # noqa: E402
from jaxnets.resnet import BasicBlock  # noqa: E402
from jaxnets_cli import bench  # noqa: E402

conv = functools.partial(layers.Conv, use_bias=False, kernel_init=layers.kaiming_normal_fan_out)


class Stem(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = conv(64, (7, 7), 2, layers.pad2(3), name="conv1")(x)
        x = nn.relu(layers.BatchNorm(name="bn1")(x, False))
        return layers.max_pool(x, 3, 2, 1)


class Stage(nn.Module):
    planes: int
    stride: int
    in_features: int

    @nn.compact
    def __call__(self, x):
        downsample = self.stride != 1 or self.in_features != self.planes
        x = BasicBlock(self.planes, conv, layers.BatchNorm, self.stride, downsample)(x, True)
        return BasicBlock(self.planes, conv, layers.BatchNorm)(x, True)


class Head(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1000)(jnp.mean(x, (1, 2)))


def stages(image_size: int, batch: int):
    """(name, jaxnets module, torch module, NHWC input shape, input needs a gradient)."""
    model = torchvision.models.resnet18()
    rows = [("stem", Stem(), torch.nn.Sequential(model.conv1, model.bn1, model.relu,
                                                 model.maxpool),
             (batch, image_size, image_size, 3), False)]  # fmt: skip
    size, features = -(-image_size // 4), 64  # after the stride-2 stem and max pool
    stage_modules = (model.layer1, model.layer2, model.layer3, model.layer4)
    for i, (planes, module) in enumerate(zip((64, 128, 256, 512), stage_modules, strict=True)):
        stride = 1 if i == 0 else 2
        label = f"layer{i + 1}, {size}x{size}x{features} in"
        rows.append((label, Stage(planes, stride, features), module,
                     (batch, size, size, features), True))  # fmt: skip
        size, features = -(-size // stride), planes
    head = torch.nn.Sequential(model.avgpool, torch.nn.Flatten(), model.fc)
    return rows + [("head", Head(), head, (batch, size, size, features), True)]


def jax_ms(module, shape, input_gradient: bool, steps: int) -> float:
    x = jnp.asarray(np.random.default_rng(0).random(shape, np.float32))
    variables = module.init(jax.random.key(0), x)

    def loss(params, x):
        y, _ = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
        return jnp.sum(y * y)

    step = jax.jit(jax.grad(loss, argnums=(0, 1) if input_gradient else 0))
    run = lambda: jax.block_until_ready(step(variables["params"], x))
    return 1e3 * bench._timed(run, steps, warmup=2)


def torch_ms(module, shape, input_gradient: bool, steps: int) -> float:
    n, h, w, c = shape
    x = torch.rand(n, c, h, w, requires_grad=input_gradient)
    module.train()

    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        y = module(x)
        (y * y).sum().backward()

    return 1e3 * bench._timed(run, steps, warmup=2)


def with_rule(rule: str, fn, *args):
    """fn(*args) with conv2d's small-map rule "SMALL:DENSE" (bench_ops.small_map_rule)."""
    with small_map_rule(*(int(v) for v in rule.split(":"))):
        return fn(*args)


def stage_table(args, rules: list[str]) -> None:
    print(f"| stage (ResNet-18, {args.image_size}x{args.image_size}, batch {args.batch_size}) | "
          + " | ".join(f"jaxnets {r} ms" for r in rules) + " | torch ms |")  # fmt: skip
    print("|---|" + "---:|" * (len(rules) + 1))
    totals = np.zeros(len(rules) + 1)
    for label, module, torch_module, shape, input_gradient in stages(
        args.image_size, args.batch_size
    ):
        times = [with_rule(r, jax_ms, module, shape, input_gradient, args.steps) for r in rules]
        times.append(torch_ms(torch_module, shape, input_gradient, args.steps))
        totals += times
        print(f"| {label} | " + " | ".join(f"{t:.1f}" for t in times) + " |", flush=True)
    print("| sum | " + " | ".join(f"{t:.1f}" for t in totals) + " |")


def whole_step(args, rules: list[str]) -> None:
    settings = bench.BenchSettings(models=("resnet18",), image_size=args.image_size,
                                   batch_size=args.batch_size, steps=args.steps,
                                   warmup=1)  # fmt: skip

    def ready_runner():
        runner = bench.jaxnets_runner("resnet18", settings)  # compiles its train step
        runner.infer()  # traces and compiles inference, under the same rule
        return runner

    runners = {r: with_rule(r, ready_runner) for r in rules}
    rounds = {r: ([], []) for r in rules}
    for _ in range(args.repeats):
        for rule, runner in runners.items():
            runner.train(), runner.infer()  # warm-up
            rounds[rule][0].append(args.batch_size / bench._timed(runner.train, args.steps, 0))
            rounds[rule][1].append(args.batch_size / bench._timed(runner.infer, args.steps, 0))
    print(f"| rule (ResNet-18, {args.image_size}x{args.image_size}, batch {args.batch_size}) "
          "| train img/s, each round | inference img/s, each round |")  # fmt: skip
    print("|---|---|---|")
    for rule, (train, infer) in rounds.items():
        print(f"| {rule} | " + ", ".join(f"{v:.1f}" for v in train) + " | "
              + ", ".join(f"{v:.1f}" for v in infer) + " |")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    current = f"{layers.SMALL_MAP_PIXELS}:{layers.DENSE_ELEMENTS_PER_EXAMPLE}"
    parser.add_argument("--rules", default=f"16:0,{current}")
    parser.add_argument("--whole-step", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rules = args.rules.split(",")
    (whole_step if args.whole_step else stage_table)(args, rules)


if __name__ == "__main__":
    main()
