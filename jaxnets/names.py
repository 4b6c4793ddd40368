"""torchvision module names <-> Flax module names.

A Flax submodule is named after the torchvision module it mirrors, with each Sequential index
folded in after an underscore: `layer1.0` is `layer1_0`, `classifier.6.1` (a Linear in a
Sequential that replaced `classifier.6`) is `classifier_6_1`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_INDEX = re.compile(r"_(\d+)(?=_|$)")


def torch_module(flax_module: str) -> str:
    """One Flax module name -> its torchvision dotted name (`layer1_0` -> `layer1.0`)."""
    return _INDEX.sub(r".\1", flax_module)


def torch_path(flax_path: Sequence[str]) -> str:
    """A Flax module path -> its torchvision name (`('layer1_0', 'conv1')` -> `layer1.0.conv1`)."""
    return ".".join(torch_module(m) for m in flax_path)


def flax_path(torch_name: str) -> tuple[str, ...]:
    """A torchvision module name -> its Flax module path (`layer1.0.conv1` ->
    `('layer1_0', 'conv1')`); an index joins the module before it."""
    merged: list[str] = []
    for part in torch_name.split("."):
        if part.isdigit() and merged:
            merged[-1] = f"{merged[-1]}_{part}"
        else:
            merged.append(part)
    return tuple(merged)


def is_within(node: str, module: str) -> bool:
    """Whether torchvision name `node` is `module` or inside it (`layer1.0.conv1` is within
    `layer1` and `layer1.0`, `layer10` is not within `layer1`): torchvision's rule for a
    return node that names a module."""
    return node == module or node.startswith(module + ".")
