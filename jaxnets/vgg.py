"""VGG 11/13/16/19, with and without BatchNorm, as torchvision builds them."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxnets import heads
from jaxnets.layers import (
    BatchNorm,
    Conv,
    Dropout,
    adaptive_avg_pool,
    flatten_nchw,
    kaiming_normal_fan_out,
    max_pool,
    pad2,
)
from jaxnets.nodes import tap
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
    to a Flax path by a rename; every value torchvision's FX graph names is tapped under that
    name (jaxnets.nodes).

    Attributes:
      cfg: channel list, one of CFGS.
      batch_norm: insert BatchNorm after every convolution (the `_bn` variants).
      num_classes: size of the last Linear.
      dropout: dropout rate after the first two Linears.
      dtype: compute dtype; parameters stay in param_dtype, BatchNorm statistics in float32.
      bn_batch_groups: see BatchNorm.batch_groups.
      head: a head spec (jaxnets.heads) replacing `classifier.6`; None: torchvision's Linear.
      frozen: BatchNorm submodules (`features_1`, ...) that keep their running statistics in
        training mode (see ResNet.frozen).
    """

    cfg: tuple[int | str, ...]
    batch_norm: bool = False
    num_classes: int = 1000
    dropout: float = 0.5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    bn_batch_groups: int = 1
    head: heads.HeadSpec | None = None
    frozen: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.astype(self.dtype)
        index = 0
        for v in self.cfg:
            if v == "M":
                x = tap(self, f"features.{index}", max_pool(x, 2, stride=2))
                index += 1
                continue
            x = Conv(
                v,
                (3, 3),
                padding=pad2(1),
                kernel_init=kaiming_normal_fan_out,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"features_{index}",
            )(x)
            x = tap(self, f"features.{index}", x)
            if self.batch_norm:
                index += 1
                name = f"features_{index}"
                x = BatchNorm(
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    batch_groups=self.bn_batch_groups,
                    name=name,
                )(x, use_running_average=not train or name in self.frozen)
                x = tap(self, f"features.{index}", x)
            x = tap(self, f"features.{index + 1}", nn.relu(x))
            index += 2
        x = tap(self, "avgpool", adaptive_avg_pool(x, (7, 7)))
        x = tap(self, "flatten", flatten_nchw(x))
        dense = lambda n, name: nn.Dense(
            n,
            kernel_init=_linear_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )
        x = tap(self, "classifier.0", dense(4096, "classifier_0")(x))
        x = tap(self, "classifier.1", nn.relu(x))
        x = tap(self, "classifier.2", Dropout(self.dropout)(x, deterministic=not train))
        x = tap(self, "classifier.3", dense(4096, "classifier_3")(x))
        x = tap(self, "classifier.4", nn.relu(x))
        x = tap(self, "classifier.5", Dropout(self.dropout)(x, deterministic=not train))
        x = heads.apply_head(
            self, x, spec=self.head, name="classifier_6", num_classes=self.num_classes,
            train=train, default_head=lambda x: dense(self.num_classes, "classifier_6")(x),
            dtype=self.dtype, param_dtype=self.param_dtype,
        )  # fmt: skip
        return x.astype(jnp.promote_types(jnp.float32, self.dtype))  # logits in >= float32


def _info(cfg: str, batch_norm: bool) -> ModelInfo:
    """Five 2x2 max pools need 32 pixels; dropout in the classifier; the `_bn` variants add
    BatchNorm. The feature stages are the max pools, at their torchvision indices."""
    pools, index = [], 0
    for v in CFGS[cfg]:
        if v == "M":
            pools.append(f"features.{index}")
            index += 1
        else:
            index += 3 if batch_norm else 2
    return ModelInfo(
        head="classifier_6",
        stem="features_0",
        batch_norm=batch_norm,
        dropout=True,
        options=("dropout", "head", "bn_batch_groups", "frozen") if batch_norm
        else ("dropout", "head"),
        min_input_size=32,
        feature_stages=tuple(pools),
        dense_linears=("classifier_0", "classifier_3"),
        dense_window=7,
    )  # fmt: skip


def _vgg(cfg: str, batch_norm: bool, kwargs) -> VGG:
    return VGG(cfg=CFGS[cfg], batch_norm=batch_norm, **kwargs)


@register_model(_info("A", False))
def vgg11(**kwargs) -> VGG:
    """VGG-11 (configuration A)."""
    return _vgg("A", False, kwargs)


@register_model(_info("A", True))
def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 with BatchNorm."""
    return _vgg("A", True, kwargs)


@register_model(_info("B", False))
def vgg13(**kwargs) -> VGG:
    """VGG-13 (configuration B)."""
    return _vgg("B", False, kwargs)


@register_model(_info("B", True))
def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 with BatchNorm."""
    return _vgg("B", True, kwargs)


@register_model(_info("D", False))
def vgg16(**kwargs) -> VGG:
    """VGG-16 (configuration D)."""
    return _vgg("D", False, kwargs)


@register_model(_info("D", True))
def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 with BatchNorm."""
    return _vgg("D", True, kwargs)


@register_model(_info("E", False))
def vgg19(**kwargs) -> VGG:
    """VGG-19 (configuration E)."""
    return _vgg("E", False, kwargs)


@register_model(_info("E", True))
def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 with BatchNorm."""
    return _vgg("E", True, kwargs)
