"""`jaxnets parity features`: every node of an architecture against torchvision's
create_feature_extractor on the same converted weights.

torchvision's model is random-init with randomized BatchNorm affine parameters and running
statistics (the defaults, 0 and 1, would hide a swapped mapping), its ReLUs made out-of-place:
in place, torchvision's extractor returns a convolution's output already rectified by the ReLU
after it. Each node's difference is max |ours - theirs| over the largest |theirs| of that node.
Eval mode runs in float32 at highest matmul precision; train mode (`--mode train`: batch
statistics, dropout off) in float64, where the frameworks agree to rounding of float64.
"""

from __future__ import annotations

import numpy as np

PRE_LOGITS = {"fc": "flatten", "classifier_6": "classifier.5"}  # by the head's Flax name


def compare(name: str, mode: str = "eval", size: tuple[int, int] = (97, 131)) -> dict:
    """Worst relative differences of `name`'s nodes: at each feature stage, the pre-logits,
    the logits, and over every node (naming it)."""
    import jax
    import jax.numpy as jnp
    import torch

    import jaxnets
    from jaxnets.convert import from_torchvision

    train = mode == "train"
    info = jaxnets.model_info(name)
    options = {"dropout": 0.0} if train and info.dropout else {}
    torch_model = _torch_model(name, options)
    if train:
        size = (max(48, info.min_input_size),) * 2
        size = (size[0], size[1] + 16)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    dtype = torch.float64 if train else torch.float32
    torch_model = torch_model.to(dtype).train(train)
    names = jaxnets.node_names(name)
    theirs = _torch_nodes(torch_model, x.to(dtype), names)

    with jax.enable_x64(train), jax.default_matmul_precision("highest"):
        dtypes = {"dtype": jnp.float64, "param_dtype": jnp.float64} if train else {}
        variables = from_torchvision(name, torch_model.state_dict(), **options, **dtypes)
        extractor = jaxnets.create_feature_extractor(name, names, **options, **dtypes)
        images = jnp.asarray(x.to(dtype).numpy().transpose(0, 2, 3, 1))
        if train:
            apply = lambda v, x: extractor.apply(v, x, train=True, mutable=["batch_stats"])[0]
        else:
            apply = extractor.apply
        ours = jax.device_get(jax.jit(apply)(variables, images))

    errors = {n: _relative(ours[n], theirs[n]) for n in names}
    worst = max(errors, key=errors.get)
    stages = [f.node for f in jaxnets.feature_info(name)]
    return {
        "model": name, "mode": mode, "size": list(size), "nodes": len(names),
        "stages": [errors[n] for n in stages],
        "pre_logits": errors[PRE_LOGITS[info.head]], "logits": errors[names[-1]],
        "worst": errors[worst], "worst_node": worst,
    }  # fmt: skip


def _torch_model(name: str, options: dict):
    import torch
    import torchvision

    torch.manual_seed(0)
    return without_inplace_relu(randomize_batchnorm(torchvision.models.get_model(name, **options)))


def randomize_batchnorm(model, seed: int = 0):
    """Gives every BatchNorm non-trivial affine parameters and running statistics: the default
    0/1 values would hide a swapped or dropped mapping."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
                module.running_mean.normal_(0.0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    return model


def without_inplace_relu(model):
    """torchvision's ReLUs run in place: its create_feature_extractor would return a
    convolution's or BatchNorm's output already rectified by the ReLU after it."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    return model


def _torch_nodes(model, x, names) -> dict[str, np.ndarray]:
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    with torch.no_grad():
        values = create_feature_extractor(model, names)(x)
    return {n: v.numpy().transpose(0, 2, 3, 1) if v.ndim == 4 else v.numpy()
            for n, v in values.items()}  # fmt: skip


def _relative(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


def format_table(rows: list[dict]) -> str:
    lines = [
        "| model | mode | nodes | stage 0 | stage 1 | stage 2 | stage 3 | stage 4 | pre-logits "
        "| logits | worst node |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        stages = [f"{e:.1e}" for e in r["stages"]] + [""] * (5 - len(r["stages"]))
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['nodes']} | {' | '.join(stages)} | "
            f"{r['pre_logits']:.1e} | {r['logits']:.1e} | `{r['worst_node']}` {r['worst']:.1e} |"
        )
    return "\n".join(lines)
