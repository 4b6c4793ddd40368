"""The model registry: one builder function per architecture name, as timm and torchvision do."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from flax import linen as nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_HEADS: dict[str, str] = {}


def register_model(head: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder under its function name.

    Args:
      head: name of the classifier submodule (torchvision's `fc` or `classifier.6`, as the Flax
        name), which the converter may re-initialize for transfer learning.

    Raises:
      ValueError: if the name is already registered.
    """

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = builder
        _HEADS[name] = head
        return builder

    return decorate


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, _BUILDERS, n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (jaxnets.list_models() lists all)")


def create_model(name: str, **kwargs) -> nn.Module:
    """Builds the Flax module for a registered architecture.

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
    """Returns the registered architecture names, sorted."""
    return sorted(_BUILDERS)


def head_module(name: str) -> str:
    """Returns the Flax name of the classifier layer of architecture `name`."""
    _check_name(name)
    return _HEADS[name]
