"""ResNet v1.5, ResNeXt and Wide ResNet as torchvision builds them.

Submodule names follow torchvision's state_dict keys: `conv1`, `bn1`, `layer2_0` (torchvision's
`layer2.0`), its `conv1`..`conv3`, `bn1`..`bn3`, `downsample_0` (conv) and `downsample_1` (BN),
and `fc`. Every value torchvision's FX graph names is tapped under that name (jaxnets.nodes).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxnets import heads
from jaxnets.layers import (
    BatchNorm,
    Conv,
    kaiming_normal_fan_out,
    max_pool,
    pad2,
    torch_linear,
)
from jaxnets.names import torch_module
from jaxnets.nodes import tap
from jaxnets.registry import ModelInfo, register_model

ModuleDef = Any


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    planes: int
    conv: ModuleDef
    norm: ModuleDef
    stride: int = 1
    downsample: bool = False
    zero_init_residual: bool = False

    expansion = 1
    output_node = "relu_1"  # tapped by the ResNet (see there)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
        out = tap(
            self, "conv1", self.conv(self.planes, (3, 3), self.stride, pad2(1), name="conv1")(x)
        )
        out = tap(self, "bn1", self.norm(name="bn1")(out, not train))
        out = tap(self, "relu", nn.relu(out))
        out = tap(self, "conv2", self.conv(self.planes, (3, 3), 1, pad2(1), name="conv2")(out))
        out = tap(self, "bn2", self.norm(scale_init=last_scale, name="bn2")(out, not train))
        x = _downsample(self, x, self.planes, train) if self.downsample else x
        return nn.relu(tap(self, "add", out + x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, grouped, dilated) -> 1x1: ResNet v1.5 puts the stride on the 3x3."""

    planes: int
    conv: ModuleDef
    norm: ModuleDef
    stride: int = 1
    downsample: bool = False
    zero_init_residual: bool = False
    groups: int = 1
    base_width: int = 64
    dilation: int = 1

    expansion = 4
    output_node = "relu_2"  # tapped by the ResNet (see there)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
        width = int(self.planes * (self.base_width / 64.0)) * self.groups
        out_features = self.planes * self.expansion
        out = tap(self, "conv1", self.conv(width, (1, 1), 1, pad2(0), name="conv1")(x))
        out = tap(self, "bn1", self.norm(name="bn1")(out, not train))
        out = tap(self, "relu", nn.relu(out))
        out = self.conv(
            width,
            (3, 3),
            self.stride,
            pad2(self.dilation),
            kernel_dilation=self.dilation,
            feature_group_count=self.groups,
            name="conv2",
        )(out)
        out = tap(self, "conv2", out)
        out = tap(self, "bn2", self.norm(name="bn2")(out, not train))
        out = tap(self, "relu_1", nn.relu(out))
        out = tap(self, "conv3", self.conv(out_features, (1, 1), 1, pad2(0), name="conv3")(out))
        out = tap(self, "bn3", self.norm(scale_init=last_scale, name="bn3")(out, not train))
        x = _downsample(self, x, out_features, train) if self.downsample else x
        return nn.relu(tap(self, "add", out + x))


def _downsample(block: nn.Module, x: jax.Array, features: int, train: bool) -> jax.Array:
    """The shortcut's strided 1x1 convolution and BatchNorm (torchvision's `downsample`)."""
    x = block.conv(features, (1, 1), block.stride, pad2(0), name="downsample_0")(x)
    x = tap(block, "downsample.0", x)
    return tap(block, "downsample.1", block.norm(name="downsample_1")(x, not train))


class ResNet(nn.Module):
    """torchvision.models.ResNet on NHWC input.

    Attributes:
      block: BasicBlock or Bottleneck.
      layers: number of blocks in each of the four stages.
      num_classes: size of `fc`.
      zero_init_residual: start each block's last BatchNorm scale at zero.
      groups: grouped-convolution groups of the bottleneck 3x3 (ResNeXt).
      width_per_group: bottleneck width per group (64 plain, 128 for Wide ResNet).
      replace_stride_with_dilation: for stages 2-4, dilate instead of striding.
      dtype: compute dtype; parameters stay in param_dtype, BatchNorm statistics in float32.
      bn_batch_groups: see BatchNorm.batch_groups.
      remat: recompute each residual block's activations in the backward pass instead of
        keeping them (jax.checkpoint): less memory for large batches, about a third more
        compute. Parameter names and numerics are unchanged.
      head: a head spec (jaxnets.heads) replacing `fc` with an MLP; None: torchvision's `fc`.
      frozen: top-level submodules (`bn1`, `layer1_0`, ...) whose BatchNorm layers keep their
        running statistics in training mode, as the frozen part of a fine-tuned model should
        (jaxnets.frozen_modules resolves torchvision names to these).
    """

    block: type[nn.Module]
    layers: tuple[int, int, int, int]
    num_classes: int = 1000
    zero_init_residual: bool = False
    groups: int = 1
    width_per_group: int = 64
    replace_stride_with_dilation: tuple[bool, bool, bool] = (False, False, False)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    bn_batch_groups: int = 1
    remat: bool = False
    head: heads.HeadSpec | None = None
    frozen: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.block is BasicBlock and (self.groups != 1 or self.width_per_group != 64):
            raise ValueError("BasicBlock only supports groups=1 and width_per_group=64")
        if self.block is BasicBlock and any(self.replace_stride_with_dilation):
            raise ValueError("dilation > 1 is not supported in BasicBlock")
        conv = functools.partial(
            Conv, use_bias=False, kernel_init=kaiming_normal_fan_out,
            dtype=self.dtype, param_dtype=self.param_dtype,
        )  # fmt: skip
        norm = functools.partial(
            BatchNorm, dtype=self.dtype, param_dtype=self.param_dtype,
            batch_groups=self.bn_batch_groups,
        )  # fmt: skip
        bottleneck_options = {}
        if self.block is Bottleneck:
            bottleneck_options = {"groups": self.groups, "base_width": self.width_per_group}

        x = x.astype(self.dtype)
        x = tap(self, "conv1", conv(64, (7, 7), 2, pad2(3), name="conv1")(x))
        x = tap(self, "bn1", norm(name="bn1")(x, not self._trains("bn1", train)))
        x = tap(self, "relu", nn.relu(x))
        x = tap(self, "maxpool", max_pool(x, 3, stride=2, padding=1))

        # static_argnums counts self: `train` (argument 2) selects the BatchNorm mode.
        block = nn.remat(self.block, static_argnums=(2,)) if self.remat else self.block
        in_features, dilation = 64, 1
        stages = zip((64, 128, 256, 512), self.layers, strict=True)
        for stage, (planes, blocks) in enumerate(stages):
            stride = 1 if stage == 0 else 2
            previous_dilation = dilation
            if stage > 0 and self.replace_stride_with_dilation[stage - 1]:
                dilation, stride = dilation * stride, 1
            out_features = planes * self.block.expansion
            for i in range(blocks):
                if self.block is Bottleneck:
                    # torchvision gives the first block of a stage the previous dilation.
                    bottleneck_options["dilation"] = previous_dilation if i == 0 else dilation
                name = f"layer{stage + 1}_{i}"
                x = block(
                    planes,
                    conv=conv,
                    norm=norm,
                    stride=stride if i == 0 else 1,
                    downsample=i == 0 and (stride != 1 or in_features != out_features),
                    zero_init_residual=self.zero_init_residual,
                    name=name,
                    **bottleneck_options,
                )(x, self._trains(name, train))
                # The block's last node is tapped here, outside it: a value kept from inside
                # a rematerialized block would be a tracer of jax.checkpoint's inner trace.
                x = tap(self, f"{torch_module(name)}.{self.block.output_node}", x)
                in_features = out_features

        x = tap(self, "avgpool", jnp.mean(x, axis=(1, 2), keepdims=True))
        x = tap(self, "flatten", x.reshape(x.shape[0], -1))
        fc = lambda x: torch_linear(x, self.num_classes, "fc", self.dtype, self.param_dtype)
        x = heads.apply_head(
            self, x, spec=self.head, name="fc", num_classes=self.num_classes, train=train,
            default_head=fc, dtype=self.dtype, param_dtype=self.param_dtype,
        )  # fmt: skip
        return x.astype(jnp.promote_types(jnp.float32, self.dtype))  # logits in >= float32

    def _trains(self, module: str, train: bool) -> bool:
        """Training-mode BatchNorm for `module`: unless it is frozen."""
        return train and module not in self.frozen


# ResNet, ResNeXt and Wide ResNet: residual blocks, BatchNorm, no dropout; any input of at least
# one pixel (the stem and the max pool pad).
INFO = ModelInfo(
    head="fc",
    stem="conv1",
    residual_blocks=True,
    batch_norm=True,
    options=("zero_init_residual", "groups", "width_per_group", "replace_stride_with_dilation",
             "bn_batch_groups", "remat", "head", "frozen"),
    feature_stages=("relu", "layer1", "layer2", "layer3", "layer4"),
    stem_modules=("conv1", "bn1"),
)  # fmt: skip


def _resnet(block, layers, kwargs, **defaults) -> ResNet:
    return ResNet(block=block, layers=layers, **{**defaults, **kwargs})


@register_model(INFO)
def resnet18(**kwargs) -> ResNet:
    """ResNet-18."""
    return _resnet(BasicBlock, (2, 2, 2, 2), kwargs)


@register_model(INFO)
def resnet34(**kwargs) -> ResNet:
    """ResNet-34."""
    return _resnet(BasicBlock, (3, 4, 6, 3), kwargs)


@register_model(INFO)
def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (v1.5)."""
    return _resnet(Bottleneck, (3, 4, 6, 3), kwargs)


@register_model(INFO)
def resnet101(**kwargs) -> ResNet:
    """ResNet-101 (v1.5)."""
    return _resnet(Bottleneck, (3, 4, 23, 3), kwargs)


@register_model(INFO)
def resnet152(**kwargs) -> ResNet:
    """ResNet-152 (v1.5)."""
    return _resnet(Bottleneck, (3, 8, 36, 3), kwargs)


@register_model(INFO)
def resnext50_32x4d(**kwargs) -> ResNet:
    """ResNeXt-50 32x4d."""
    return _resnet(Bottleneck, (3, 4, 6, 3), kwargs, groups=32, width_per_group=4)


@register_model(INFO)
def resnext101_32x8d(**kwargs) -> ResNet:
    """ResNeXt-101 32x8d."""
    return _resnet(Bottleneck, (3, 4, 23, 3), kwargs, groups=32, width_per_group=8)


@register_model(INFO)
def resnext101_64x4d(**kwargs) -> ResNet:
    """ResNeXt-101 64x4d."""
    return _resnet(Bottleneck, (3, 4, 23, 3), kwargs, groups=64, width_per_group=4)


@register_model(INFO)
def wide_resnet50_2(**kwargs) -> ResNet:
    """Wide ResNet-50-2: bottleneck twice as wide."""
    return _resnet(Bottleneck, (3, 4, 6, 3), kwargs, width_per_group=128)


@register_model(INFO)
def wide_resnet101_2(**kwargs) -> ResNet:
    """Wide ResNet-101-2."""
    return _resnet(Bottleneck, (3, 4, 23, 3), kwargs, width_per_group=128)
