"""The original AlexNet of Krizhevsky, Sutskever and Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks" (NeurIPS 2012), the network trained on two GPUs.

Five convolutions of 96-256-384-384-256 channels, the first 11x11 with stride 4; conv2, conv4
and conv5 connect only to the kernel maps on their own GPU, which is a convolution grouped in
two; local response normalization (k=2, n=5, alpha=1e-4, beta=0.75) after the ReLUs of conv1
and conv2; overlapping 3x3/2 max pooling after both normalizations and after conv5; then
4096-4096-classes with dropout 0.5 on the outputs of the first two. The paper's 224x224 input
does not give its 55x55 first maps: 227x227 does, and is what this module takes. Initialized as
the paper says: weights N(0, 0.01), biases 1 in conv2, conv4, conv5 and the hidden fully
connected layers, 0 elsewhere. 60,965,224 parameters with 1000 classes.

torchvision's `alexnet` is the later single-GPU variant (64-192-384-256-256, no normalization).
There is no torchvision counterpart of this one: submodule names follow the PyTorch reference
module in tests/library/test_alexnet_paper.py, `features.{0,4,8,10,12}` and `classifier.{0,3,6}`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxnets import heads
from jaxnets.layers import Conv, Dropout, flatten_nchw, local_response_norm, max_pool, pad2
from jaxnets.nodes import tap
from jaxnets.registry import ModelInfo, register_model

# (reference features index, out channels, kernel, stride, padding, groups, bias init,
#  response normalization after, max pool after)
_FEATURES = (
    (0, 96, 11, 4, 0, 1, 0.0, True, True),
    (4, 256, 5, 1, 2, 2, 1.0, True, True),
    (8, 384, 3, 1, 1, 1, 0.0, False, False),
    (10, 384, 3, 1, 1, 2, 1.0, False, False),
    (12, 256, 3, 1, 1, 2, 1.0, False, True),
)
_INPUT_SIZE = 227


class AlexNetPaper(nn.Module):
    """The two-GPU AlexNet of 2012 on NHWC input of 227x227 pixels.

    Attributes:
      num_classes: size of the last fully connected layer.
      dropout: dropout rate on the outputs of the first two fully connected layers.
      dtype: compute dtype; parameters stay in param_dtype.
      head: a head spec (jaxnets.heads) replacing `classifier.6`; None: the Linear.
    """

    num_classes: int = 1000
    dropout: float = 0.5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    head: heads.HeadSpec | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.shape[1:3] != (_INPUT_SIZE, _INPUT_SIZE):
            raise ValueError(
                f"alexnet_paper takes {_INPUT_SIZE}x{_INPUT_SIZE} input, not "
                f"{x.shape[1]}x{x.shape[2]}"
            )
        weights = nn.initializers.normal(0.01)
        x = x.astype(self.dtype)
        for index, features, kernel, stride, padding, groups, bias, norm, pool in _FEATURES:
            x = Conv(
                features,
                (kernel, kernel),
                strides=stride,
                padding=pad2(padding),
                feature_group_count=groups,
                kernel_init=weights,
                bias_init=nn.initializers.constant(bias),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"features_{index}",
            )(x)
            x = tap(self, f"features.{index}", x)
            x = tap(self, f"features.{index + 1}", nn.relu(x))
            after = index + 2
            if norm:
                x = tap(self, f"features.{after}", local_response_norm(x))
                after += 1
            if pool:
                x = tap(self, f"features.{after}", max_pool(x, 3, stride=2))
        x = tap(self, "flatten", flatten_nchw(x))  # 256 x 6 x 6, in torch's C, H, W order
        for index, features in ((0, 4096), (3, 4096)):
            x = nn.Dense(
                features,
                kernel_init=weights,
                bias_init=nn.initializers.ones,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"classifier_{index}",
            )(x)
            x = tap(self, f"classifier.{index}", x)
            x = tap(self, f"classifier.{index + 1}", nn.relu(x))
            dropped = Dropout(self.dropout)(x, deterministic=not train)
            x = tap(self, f"classifier.{index + 2}", dropped)
        last = lambda x: nn.Dense(
            self.num_classes,
            kernel_init=weights,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="classifier_6",
        )(x)
        return heads.apply_head(
            self, x, spec=self.head, name="classifier_6", num_classes=self.num_classes,
            train=train, default_head=last, dtype=self.dtype, param_dtype=self.param_dtype,
        )  # fmt: skip


INFO = ModelInfo(
    head="classifier_6",
    stem="features_0",
    dropout=True,
    options=("dropout", "head"),
    input_size=_INPUT_SIZE,
    min_input_size=_INPUT_SIZE,
    fixed_input_size=True,
    feature_stages=("features.3", "features.7", "features.14"),  # the three max pools
    stage_reductions=(8, 16, 32),
)


@register_model(INFO)
def alexnet_paper(**kwargs) -> AlexNetPaper:
    """AlexNet as Krizhevsky et al. (2012) trained it on two GPUs: 60,965,224 parameters."""
    return AlexNetPaper(**kwargs)
