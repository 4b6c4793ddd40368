"""Dense evaluation (Simonyan & Zisserman 2015, section 3.2): the network applied fully
convolutionally to a whole image, however large, and its class score map averaged spatially.

VGG's and AlexNet's fully connected layers become convolutions: the first Linear, trained on
the last feature stage's 7x7 (AlexNet: 6x6) map flattened in torch's (C, H, W) order, is the
same weights as a 7x7 convolution; the ones after it are 1x1 convolutions. The convolution
kernels are views of the model's own Linear weights, reshaped inside the traced function: the
parameter tree holds nothing new, and converted weights serve as they are. ResNets pool their
whole map before `fc` already, so their dense evaluation is the plain forward pass on the
whole image (averaging `fc` applied at every pixel would give the same, `fc` being linear).
At exactly the training crop size the map is the window and dense evaluation is the standard
forward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnets import heads
from jaxnets.features import create_feature_extractor
from jaxnets.layers import conv2d
from jaxnets.registry import create_model, model_info


def supports_dense(name: str) -> bool:
    """Whether `name` can be evaluated densely: not LeNet-5 or the paper's AlexNet, which take
    one input size only."""
    return not model_info(name).fixed_input_size


def dense_logits(
    name: str, variables: dict, images: jax.Array, *, head: heads.HeadSpec | None = None,
    **model_kwargs,
) -> jax.Array:  # fmt: skip
    """Class scores (N, classes) of NHWC images of any size at least the architecture's
    window: the class score map of the fully convolutional network, averaged over its pixels.

    Args:
      name: architecture.
      variables: the model's variables ({'params', 'batch_stats'} as for model.apply).
      images: normalized NHWC images.
      head: the head spec the variables were built with (jaxnets.heads), if any.
      **model_kwargs: the model's other options (dtype, param_dtype).

    Raises:
      ValueError: an architecture of one input size, or a map smaller than the window.
    """
    info = model_info(name)
    if not supports_dense(name):
        raise ValueError(f"dense evaluation: {name} takes {info.input_size}x{info.input_size} "
                         "inputs only")  # fmt: skip
    params = variables["params"]
    num_classes = heads.head_classes(params, info.head, heads.canonical(head))
    options = {**model_kwargs, **({"head": heads.canonical(head)} if head else {})}
    if not info.dense_linears:  # the model pools the whole map itself
        model = create_model(name, num_classes=num_classes, **options)
        return model.apply(variables, images, train=False)
    extractor = create_feature_extractor(name, {info.feature_stages[-1]: "map"},
                                         num_classes=num_classes, **options)  # fmt: skip
    x = extractor.apply(variables, images)["map"]
    window = info.dense_window
    if min(x.shape[1:3]) < window:
        raise ValueError(
            f"dense evaluation of {name}: input {images.shape[1]}x{images.shape[2]} gives a "
            f"{x.shape[1]}x{x.shape[2]} map, smaller than the {window}x{window} window of "
            f"{info.dense_linears[0]}"
        )
    first, *others = info.dense_linears
    kernel = params[first]["kernel"]  # (C * window * window, out), rows in (C, H, W) order
    kernel = kernel.reshape(x.shape[-1], window, window, -1).transpose(1, 2, 0, 3)
    x = jax.nn.relu(conv2d(x, kernel.astype(x.dtype)) + params[first]["bias"])
    for layer in others:
        x = jax.nn.relu(_linear(x, params[layer]))
    x = _head(x, params, info.head, heads.canonical(head))
    return x.mean(axis=(1, 2))


def _linear(x: jax.Array, params: dict) -> jax.Array:
    """A Linear at every pixel: a 1x1 convolution (dropout is the identity in evaluation)."""
    return jnp.einsum("nhwc,co->nhwo", x, params["kernel"].astype(x.dtype)) + params["bias"]


def _head(x: jax.Array, params: dict, name: str, spec: heads.HeadSpec | None) -> jax.Array:
    if spec is None:
        return _linear(x, params[name])
    for index, (kind, _) in enumerate(heads.parse_head(spec)):
        if kind == "linear":
            x = _linear(x, params[f"{name}_{index}"])
        elif kind == "relu":
            x = jax.nn.relu(x)
    return x
