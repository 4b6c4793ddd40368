"""VGG 11/13/16/19, with and without BatchNorm, as torchvision builds them."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxnets.layers import (
    BatchNorm,
    Dropout,
    adaptive_avg_pool,
    flatten_nchw,
    kaiming_normal_fan_out,
    max_pool,
    pad2,
)
from jaxnets.registry import ModelInfo, register_model

# torchvision's cfgs: output channels of each 3x3 convolution, "M" for a 2x2 max pool.
CFGS: dict[str, tuple[int | str, ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M")
    + (512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}

_linear_init = nn.initializers.normal(stddev=0.01)


class VGG(nn.Module):
    """torchvision.models.VGG on NHWC input.

    Submodules are named after their index in torchvision's `features` and `classifier`
    Sequentials (`features_0`, `features_1`, ..., `classifier_6`), so every torchvision key maps
    to a Flax path by a rename.

    Attributes:
      cfg: channel list, one of CFGS.
      batch_norm: insert BatchNorm after every convolution (the `_bn` variants).
      num_classes: size of the last Linear.
      dropout: dropout rate after the first two Linears.
      dtype: compute dtype; parameters stay in param_dtype, BatchNorm statistics in float32.
      bn_batch_groups: see BatchNorm.batch_groups.
    """

    cfg: tuple[int | str, ...]
    batch_norm: bool = False
    num_classes: int = 1000
    dropout: float = 0.5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    bn_batch_groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.astype(self.dtype)
        index = 0
        for v in self.cfg:
            if v == "M":
                x = max_pool(x, 2, stride=2)
                index += 1
                continue
            x = nn.Conv(
                v,
                (3, 3),
                padding=pad2(1),
                kernel_init=kaiming_normal_fan_out,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"features_{index}",
            )(x)
            if self.batch_norm:
                x = BatchNorm(
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    batch_groups=self.bn_batch_groups,
                    name=f"features_{index + 1}",
                )(x, use_running_average=not train)
                index += 1
            x = nn.relu(x)
            index += 2
        x = flatten_nchw(adaptive_avg_pool(x, (7, 7)))
        dense = lambda n, name: nn.Dense(
            n,
            kernel_init=_linear_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )
        x = nn.relu(dense(4096, "classifier_0")(x))
        x = Dropout(self.dropout)(x, deterministic=not train)
        x = nn.relu(dense(4096, "classifier_3")(x))
        x = Dropout(self.dropout)(x, deterministic=not train)
        x = dense(self.num_classes, "classifier_6")(x)
        return x.astype(jnp.promote_types(jnp.float32, self.dtype))  # logits in >= float32


# Five 2x2 max pools need 32 pixels; dropout in the classifier; the `_bn` variants add BatchNorm.
INFO = ModelInfo(head="classifier_6", stem="features_0", dropout=True, options=("dropout",),
                 min_input_size=32)  # fmt: skip
INFO_BN = dataclasses.replace(INFO, batch_norm=True, options=("dropout", "bn_batch_groups"))


def _vgg(cfg: str, batch_norm: bool, kwargs) -> VGG:
    return VGG(cfg=CFGS[cfg], batch_norm=batch_norm, **kwargs)


@register_model(INFO)
def vgg11(**kwargs) -> VGG:
    """VGG-11 (configuration A)."""
    return _vgg("A", False, kwargs)


@register_model(INFO_BN)
def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 with BatchNorm."""
    return _vgg("A", True, kwargs)


@register_model(INFO)
def vgg13(**kwargs) -> VGG:
    """VGG-13 (configuration B)."""
    return _vgg("B", False, kwargs)


@register_model(INFO_BN)
def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 with BatchNorm."""
    return _vgg("B", True, kwargs)


@register_model(INFO)
def vgg16(**kwargs) -> VGG:
    """VGG-16 (configuration D)."""
    return _vgg("D", False, kwargs)


@register_model(INFO_BN)
def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 with BatchNorm."""
    return _vgg("D", True, kwargs)


@register_model(INFO)
def vgg19(**kwargs) -> VGG:
    """VGG-19 (configuration E)."""
    return _vgg("E", False, kwargs)


@register_model(INFO_BN)
def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 with BatchNorm."""
    return _vgg("E", True, kwargs)
