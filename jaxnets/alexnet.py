"""AlexNet as torchvision builds it (the "one weird trick" variant: 64-192-384-256-256)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxnets import heads
from jaxnets.layers import (
    Conv,
    Dropout,
    adaptive_avg_pool,
    flatten_nchw,
    max_pool,
    pad2,
    torch_default_bias,
    torch_default_kernel,
    torch_linear,
)
from jaxnets.nodes import tap
from jaxnets.registry import ModelInfo, register_model

# (torchvision features index, out channels, kernel, stride, padding, max-pool after)
_FEATURES = (
    (0, 64, 11, 4, 2, True),
    (3, 192, 5, 1, 2, True),
    (6, 384, 3, 1, 1, False),
    (8, 256, 3, 1, 1, False),
    (10, 256, 3, 1, 1, True),
)


class AlexNet(nn.Module):
    """torchvision.models.AlexNet on NHWC input.

    torchvision leaves AlexNet at torch's default init (kaiming_uniform(a=sqrt(5)) weights,
    U(+-1/sqrt(fan_in)) biases) for convolutions and linears alike; so does this module.

    Attributes:
      num_classes: size of the last Linear.
      dropout: dropout rate before the first two Linears.
      dtype: compute dtype; parameters stay in param_dtype.
      head: a head spec (jaxnets.heads) replacing `classifier.6`; None: torchvision's Linear.
    """

    num_classes: int = 1000
    dropout: float = 0.5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    head: heads.HeadSpec | None = None

    def _linear(self, x, features, name):
        return torch_linear(x, features, name, self.dtype, self.param_dtype)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.astype(self.dtype)
        for index, features, kernel, stride, padding, pool in _FEATURES:
            x = Conv(
                features,
                (kernel, kernel),
                strides=stride,
                padding=pad2(padding),
                kernel_init=torch_default_kernel,
                bias_init=torch_default_bias(x.shape[-1] * kernel * kernel),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"features_{index}",
            )(x)
            x = tap(self, f"features.{index}", x)
            x = tap(self, f"features.{index + 1}", nn.relu(x))
            if pool:
                x = tap(self, f"features.{index + 2}", max_pool(x, 3, stride=2))
        x = tap(self, "avgpool", adaptive_avg_pool(x, (6, 6)))
        x = tap(self, "flatten", flatten_nchw(x))
        x = tap(self, "classifier.0", Dropout(self.dropout)(x, deterministic=not train))
        x = tap(self, "classifier.1", self._linear(x, 4096, "classifier_1"))
        x = tap(self, "classifier.2", nn.relu(x))
        x = tap(self, "classifier.3", Dropout(self.dropout)(x, deterministic=not train))
        x = tap(self, "classifier.4", self._linear(x, 4096, "classifier_4"))
        x = tap(self, "classifier.5", nn.relu(x))
        x = heads.apply_head(
            self, x, spec=self.head, name="classifier_6", num_classes=self.num_classes,
            train=train, default_head=lambda x: self._linear(x, self.num_classes, "classifier_6"),
            dtype=self.dtype, param_dtype=self.param_dtype,
        )  # fmt: skip
        return x.astype(jnp.promote_types(jnp.float32, self.dtype))  # logits in >= float32


# The 11x11/4 stem and three unpadded 3x3/2 max pools need 63 pixels; the feature stages are
# the max pools, of strides 8, 16 and 32 (unpadded, their maps are smaller than size / stride).
INFO = ModelInfo(head="classifier_6", stem="features_0", dropout=True,
                 options=("dropout", "head"), min_input_size=63,
                 feature_stages=("features.2", "features.5", "features.12"),
                 stage_reductions=(8, 16, 32),
                 dense_linears=("classifier_1", "classifier_4"), dense_window=6)  # fmt: skip


@register_model(INFO)
def alexnet(**kwargs) -> AlexNet:
    """AlexNet (torchvision.models.alexnet): 61.1M parameters."""
    return AlexNet(**kwargs)
