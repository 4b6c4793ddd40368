"""Custom classifier heads: the small MLP that transfer-learning recipes put in place of
torchvision's last Linear.

A head spec is a sequence of layers, as strings (or one comma-separated string):

  ("dropout:0.5", "linear:256", "relu", "dropout:0.3", "linear:N")

`linear:K` is a Linear of K outputs (`linear:N`: one per class), `relu` a ReLU, `dropout:P` a
Dropout of rate P; the last layer is a Linear. The spec stands for the `nn.Sequential` that
replaces the head module (ResNet's `fc`, VGG's and AlexNet's `classifier.6`):

  model.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(2048, 256), nn.ReLU(), nn.Dropout(0.3),
                           nn.Linear(256, 10))

so its Linear layers take the Sequential's indices, `fc.1` and `fc.4`, which are their names in
Flax too (`fc_1`, `fc_4`) and their keys in the state_dict (`fc.1.weight`). Like a freshly built
nn.Linear, each Linear starts at torch's default initialization.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
from flax import linen as nn

from jaxnets.layers import Dropout, torch_linear
from jaxnets.names import torch_module
from jaxnets.nodes import tap

HeadSpec = tuple[str, ...]
Layer = tuple[str, Any]  # ("linear", outputs or None for num_classes), ("relu", None), ...

_KINDS = ("linear", "relu", "dropout")


def parse_head(spec: str | Sequence[str]) -> tuple[Layer, ...]:
    """The layers of a head spec.

    Raises:
      ValueError: the spec does not parse, naming the item and what was expected.
    """
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    if not items or not all(isinstance(item, str) and item for item in items):
        raise ValueError(f"head spec {spec!r}: expected layers such as 'linear:256', 'relu'")
    layers = [_parse_layer(item, spec) for item in items]
    if layers[-1][0] != "linear":
        raise ValueError(f"head spec {spec!r}: the last layer must be linear:N (the logits)")
    return tuple(layers)


def _parse_layer(item: str, spec) -> Layer:
    kind, _, value = item.partition(":")
    if kind not in _KINDS:
        raise ValueError(
            f"head spec {spec!r}: unknown layer {item!r}; expected linear:K, relu or dropout:P"
        )
    if kind == "relu":
        if value:
            raise ValueError(f"head spec {spec!r}: {item!r}: relu takes no value")
        return ("relu", None)
    if kind == "linear":
        if value == "N":
            return ("linear", None)
        if not value.isdigit() or int(value) == 0:
            raise ValueError(f"head spec {spec!r}: {item!r}: expected linear:K, K > 0, or linear:N")
        return ("linear", int(value))
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not 0 <= rate < 1:
        raise ValueError(f"head spec {spec!r}: {item!r}: expected dropout:P with 0 <= P < 1")
    return ("dropout", rate)


def canonical(spec: str | Sequence[str] | None) -> HeadSpec | None:
    """The spec as a tuple of strings (hashable, a Flax module attribute), checked."""
    if spec is None:
        return None
    parse_head(spec)
    items = spec.split(",") if isinstance(spec, str) else spec
    return tuple(s.strip() for s in items)


def linear_layers(spec: Sequence[str], head: str) -> list[tuple[str, int | None]]:
    """(Flax module name, outputs or None for num_classes) of each Linear of a spec'd head
    whose Flax name is `head` (`[("fc_1", 256), ("fc_4", None)]`)."""
    return [
        (f"{head}_{index}", value)
        for index, (kind, value) in enumerate(parse_head(spec))
        if kind == "linear"
    ]


def output_layer(head: str, spec: Sequence[str] | None) -> str:
    """The Flax name of the Linear that gives the logits: `head`, or a spec's last (`fc_4`)."""
    return head if spec is None else linear_layers(spec, head)[-1][0]


def head_classes(params: dict, head: str, spec: Sequence[str] | None = None) -> int:
    """The number of classes of a model's params (its output layer's width)."""
    return int(params[output_layer(head, spec)]["kernel"].shape[-1])


def is_head_layer(layer: str, head: str) -> bool:
    """Whether a top-level Flax module is the head (`fc`) or a layer of a spec'd head
    (`fc_4`)."""
    return layer == head or layer.startswith(head + "_")


def apply_head(
    parent: nn.Module,
    x: jax.Array,
    *,
    spec: Sequence[str] | None,
    name: str,
    num_classes: int,
    train: bool,
    default_head: Callable[[jax.Array], jax.Array],
    dtype: Any,
    param_dtype: Any,
) -> jax.Array:
    """The classifier: the family's own Linear `name` (`default_head`), or the spec's layers,
    named `name_INDEX`, in `parent`'s scope; every layer tapped under torchvision's name."""
    torch_name = torch_module(name)
    if spec is None:
        return tap(parent, torch_name, default_head(x))
    for index, (kind, value) in enumerate(parse_head(spec)):
        if kind == "linear":
            outputs = num_classes if value is None else value
            x = torch_linear(x, outputs, f"{name}_{index}", dtype, param_dtype)
        elif kind == "relu":
            x = nn.relu(x)
        else:
            x = Dropout(value)(x, deterministic=not train)
        x = tap(parent, f"{torch_name}.{index}", x)
    return x
