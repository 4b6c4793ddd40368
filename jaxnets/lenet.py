"""LeNet-5, after LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied to document
recognition" (Proc. IEEE, 1998): C1 6@5x5, S2 2x2 subsampling, C3 16@5x5, S4 2x2 subsampling,
then 120, 84 and one unit per class, on 32x32 input.

As in the usual modern rendering, and unlike the paper in three details: C3 connects every S2
map (the paper wires each C3 map to a subset of them), subsampling is a plain 2x2 average (the
paper gives each map a trainable coefficient and bias), and the output layer is linear (the paper
uses Euclidean RBF units). The activation is tanh (the paper's scaled tanh, without the 1.7159
factor) or ReLU. There is no torchvision LeNet: submodule names follow the layout of the
PyTorch reference module in tests/library/test_lenet5.py, `features.{0,3}` and `classifier.{0,2,4}`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxnets import heads
from jaxnets.layers import (
    Conv,
    flatten_nchw,
    pad2,
    torch_default_bias,
    torch_default_kernel,
    torch_linear,
)
from jaxnets.nodes import tap
from jaxnets.registry import ModelInfo, register_model

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": nn.relu}


class LeNet5(nn.Module):
    """LeNet-5 on NHWC input of 32x32 pixels, with 1 (the paper's) or 3 channels.

    Attributes:
      num_classes: units of the output layer.
      activation: "tanh" or "relu", after every layer but the last.
      dtype: compute dtype; parameters stay in param_dtype.
      head: a head spec (jaxnets.heads) replacing `classifier.4`; None: the Linear.
    """

    num_classes: int = 10
    activation: str = "tanh"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    head: heads.HeadSpec | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"lenet5: activation {self.activation!r}: expected tanh or relu")
        if x.shape[1:3] != (32, 32):
            raise ValueError(f"lenet5 takes 32x32 input, not {x.shape[1]}x{x.shape[2]}")
        act = _ACTIVATIONS[self.activation]
        x = x.astype(self.dtype)
        for index, features in ((0, 6), (3, 16)):
            x = Conv(
                features,
                (5, 5),
                padding=pad2(0),
                kernel_init=torch_default_kernel,
                bias_init=torch_default_bias(x.shape[-1] * 25),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"features_{index}",
            )(x)
            x = tap(self, f"features.{index}", x)
            x = tap(self, f"features.{index + 1}", act(x))
            x = tap(self, f"features.{index + 2}", nn.avg_pool(x, (2, 2), strides=(2, 2)))
        x = tap(self, "flatten", flatten_nchw(x))  # torch's C, H, W order: 16 x 5 x 5
        linear = lambda x, n, name: torch_linear(x, n, name, self.dtype, self.param_dtype)
        for index, features in ((0, 120), (2, 84)):
            x = tap(self, f"classifier.{index}", linear(x, features, f"classifier_{index}"))
            x = tap(self, f"classifier.{index + 1}", act(x))
        return heads.apply_head(
            self, x, spec=self.head, name="classifier_4", num_classes=self.num_classes,
            train=train, default_head=lambda x: linear(x, self.num_classes, "classifier_4"),
            dtype=self.dtype, param_dtype=self.param_dtype,
        )  # fmt: skip


INFO = ModelInfo(
    head="classifier_4",
    stem="features_0",
    options=("activation", "head"),
    input_size=32,
    min_input_size=32,
    fixed_input_size=True,
    feature_stages=("features.2", "features.5"),  # the two subsamplings, S2 and S4
    stage_reductions=(2, 4),
)


@register_model(INFO)
def lenet5(**kwargs) -> LeNet5:
    """LeNet-5 (LeCun et al. 1998): 61,706 parameters with 1 input channel and 10 classes."""
    return LeNet5(**kwargs)
