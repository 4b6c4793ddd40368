"""Why float32 training runs part ways: ReLU inputs within rounding of zero.

On the first batch of `jaxnets parity train` (same data, batch and initialization), runs torch's
forward pass in float32 and in float64 at the same weights, lists the ReLU inputs whose sign
differs, and then, in float64 alone, flips the sign of just those values
(a change of a few 1e-6) to show how far that moves the gradient. Compare with the float32
gradient's own error (`jaxnets parity train NAME --noise-floor`).

    python scripts/relu_flips.py resnet18 [--image-size 32] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
import torchvision

from jaxnets_cli.parity import ParitySettings, _config
from train import data as data_lib
from train.data import normalize_on_host


def relu_inputs(model, images) -> dict[str, torch.Tensor]:
    """Every ReLU input, keyed 'module#call' (torchvision's ResNet blocks call one ReLU twice)."""
    inputs, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ReLU):

            def record(m, args, name=name):
                key = f"{name}#{sum(k.startswith(name + '#') for k in inputs)}"
                inputs[key] = args[0].detach().clone().double()  # before the in-place ReLU

            hooks.append(module.register_forward_pre_hook(record))
    model(images)
    for hook in hooks:
        hook.remove()
    return inputs


def gradient(model, images, labels, flips=None) -> torch.Tensor:
    """The parameters' gradient on one batch; `flips` negates the chosen ReLU inputs."""
    model = copy.deepcopy(model)
    for name, module in model.named_modules():
        if flips and isinstance(module, torch.nn.ReLU):
            calls = iter(range(1_000))

            def flip(m, args, name=name, calls=calls):
                mask = flips.get(f"{name}#{next(calls)}")
                return args if mask is None else (torch.where(mask, -args[0], args[0]),)

            module.register_forward_pre_hook(flip)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    return torch.cat([p.grad.flatten().double() for p in model.parameters()])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    settings = ParitySettings(image_size=args.image_size, batch_size=args.batch_size)
    dataset = data_lib.load_dataset(_config(args.name, settings, 1))
    images, labels = next(iter(dataset.train_batches(settings.seed, 0, 0, args.batch_size)))
    batch = torch.from_numpy(normalize_on_host(images, dataset, np.float32))
    batch = batch.permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(labels.astype(np.int64))
    torch.manual_seed(settings.seed)
    kwargs = {"dropout": 0.0} if args.name.startswith(("vgg", "alexnet")) else {}
    model32 = torchvision.models.get_model(args.name, num_classes=10, **kwargs).train()
    model64 = copy.deepcopy(model32).double()

    single = relu_inputs(copy.deepcopy(model32), batch)
    double = relu_inputs(copy.deepcopy(model64), batch.double())
    flips, total = {}, 0
    for name, exact in double.items():
        total += exact.numel()
        flipped = (single[name] > 0) != (exact > 0)
        if flipped.any():
            flips[name] = flipped
            sizes = ", ".join(f"{v:.1e}" for v in exact[flipped].abs().tolist())
            print(f"{name}: {int(flipped.sum())} of {exact.numel()} ReLU inputs change sign "
                  f"(float64 |value| {sizes})")  # fmt: skip
    print(f"{sum(int(f.sum()) for f in flips.values())} sign changes among {total} ReLU inputs")

    exact_gradient = gradient(model64, batch.double(), labels)
    float32_gradient = gradient(model32, batch, labels)
    flipped_gradient = gradient(model64, batch.double(), labels, flips)

    def relative(g):
        return float((g - exact_gradient).norm() / exact_gradient.norm())

    print(f"float32 gradient vs float64: relative error {relative(float32_gradient):.2e}")
    print(f"float64 gradient, only those inputs' signs flipped: {relative(flipped_gradient):.2e}")


if __name__ == "__main__":
    main()
