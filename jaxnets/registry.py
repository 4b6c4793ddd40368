"""The model registry: one builder function per architecture name, as timm and torchvision do,
and the facts about each architecture, declared beside its builder in its family's file."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable

from flax import linen as nn


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the training program, the converter and the tests need to know about an
    architecture, so that none of them tests a name string to learn it.

    Attributes:
      head: Flax name of the classifier layer (torchvision's `fc` is "fc", `classifier.6` is
        "classifier_6"), which the converter may re-initialize for transfer learning.
      stem: Flax name of the first convolution, whose kernel tells the input channels.
      residual_blocks: has residual blocks (the builder takes `remat` and
        `zero_init_residual`).
      batch_norm: has BatchNorm layers (the builder takes `bn_batch_groups`).
      dropout: has dropout layers (the builder takes a `dropout` rate).
      options: the builder's keyword options besides num_classes, dtype and param_dtype.
      input_size: the square input size the architecture is defined at (its shapes are traced
        there).
      min_input_size: the smallest square input it accepts.
      fixed_input_size: it accepts input_size only (no adaptive pooling before its classifier).
    """

    head: str
    stem: str
    residual_blocks: bool = False
    batch_norm: bool = False
    dropout: bool = False
    options: tuple[str, ...] = ()
    input_size: int = 224
    min_input_size: int = 1
    fixed_input_size: bool = False


Builder = Callable[..., nn.Module]
_BUILDERS: dict[str, Builder] = {}
_INFO: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> Callable[[Builder], Builder]:
    """Decorator registering a builder under its function name, with its architecture's facts.

    Raises:
      ValueError: if the name is already registered.
    """

    def decorate(builder: Builder) -> Builder:
        name = builder.__name__
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = builder
        _INFO[name] = info
        return builder

    return decorate


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, _BUILDERS, n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (jaxnets.list_models() lists all)")


def create_model(name: str, **kwargs) -> nn.Module:
    """Builds the Flax module for a registered architecture.

    Example:
      >>> model = jaxnets.create_model("resnet50", num_classes=10, dtype=jnp.bfloat16)
      >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False)

    Args:
      name: a name from `list_models()`, e.g. "resnet50".
      **kwargs: the builder's options (num_classes, dropout, zero_init_residual, dtype, ...).

    Returns:
      The (unbound) flax.linen Module.

    Raises:
      ValueError: for an unknown name, naming the closest registered ones.
    """
    _check_name(name)
    return _BUILDERS[name](**kwargs)


def list_models() -> list[str]:
    """Returns the registered architecture names, sorted.

    Example:
      >>> jaxnets.list_models()[:3]
      ['alexnet', 'resnet101', 'resnet152']
    """
    return sorted(_BUILDERS)


def model_info(name: str) -> ModelInfo:
    """Returns the facts declared for architecture `name`.

    Example:
      >>> jaxnets.model_info("vgg16_bn").batch_norm
      True
    """
    _check_name(name)
    return _INFO[name]


def head_module(name: str) -> str:
    """Returns the Flax name of the classifier layer of architecture `name`."""
    return model_info(name).head
