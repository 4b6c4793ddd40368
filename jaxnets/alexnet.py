"""AlexNet as torchvision builds it (the "one weird trick" variant: 64-192-384-256-256)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxnets.layers import (
    Dropout,
    adaptive_avg_pool,
    flatten_nchw,
    max_pool,
    pad2,
    torch_default_bias,
    torch_default_kernel,
)
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
    """

    num_classes: int = 1000
    dropout: float = 0.5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _linear(self, x, features, name):
        return nn.Dense(
            features,
            kernel_init=torch_default_kernel,
            bias_init=torch_default_bias(x.shape[-1]),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )(x)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.astype(self.dtype)
        for index, features, kernel, stride, padding, pool in _FEATURES:
            x = nn.Conv(
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
            x = nn.relu(x)
            if pool:
                x = max_pool(x, 3, stride=2)
        x = flatten_nchw(adaptive_avg_pool(x, (6, 6)))
        x = Dropout(self.dropout)(x, deterministic=not train)
        x = nn.relu(self._linear(x, 4096, "classifier_1"))
        x = Dropout(self.dropout)(x, deterministic=not train)
        x = nn.relu(self._linear(x, 4096, "classifier_4"))
        x = self._linear(x, self.num_classes, "classifier_6")
        return x.astype(jnp.promote_types(jnp.float32, self.dtype))  # logits in >= float32


# The 11x11/4 stem and three unpadded 3x3/2 max pools need 63 pixels.
INFO = ModelInfo(head="classifier_6", stem="features_0", dropout=True, options=("dropout",),
                 min_input_size=63)  # fmt: skip


@register_model(INFO)
def alexnet(**kwargs) -> AlexNet:
    """AlexNet (torchvision.models.alexnet): 61.1M parameters."""
    return AlexNet(**kwargs)
