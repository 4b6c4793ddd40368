"""Backbones: a model's intermediate values by torchvision's node names, what its feature stages
are, and which of its layers a freeze list names.

    extractor = jaxnets.create_feature_extractor("resnet50", ["layer2", "layer4", "flatten"])
    features = extractor.apply(variables, images_nhwc)   # {'layer2': ..., 'flatten': ...}

A node is a name of torchvision's FX graph (`get_graph_node_names`: `layer1.0.relu_1`,
`layer3.1.add`, `features.12`, `flatten`) or a module holding some (`layer1`, `layer3.1`,
`layer1.0.downsample`, `classifier`), which stands for the last node computed inside it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Mapping, Sequence

from jaxnets import heads, nodes
from jaxnets.names import flax_path, is_within, torch_module
from jaxnets.registry import create_model, model_info, sample_shape


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """One feature stage of `create_model(name, features_only=True)`.

    Attributes:
      index: its position (an `out_indices` entry).
      module: the torchvision module whose output it is ("layer2", "features.9").
      node: the graph node that output is ("layer2.1.relu_1").
      channels: its channels.
      reduction: its stride relative to the input (2, 4, ..., 32).
    """

    index: int
    module: str
    node: str
    channels: int
    reduction: int


def graph(name: str, **model_kwargs) -> tuple[nodes.Node, ...]:
    """Every node of architecture `name` (built with `model_kwargs`) in execution order."""
    return nodes.trace(create_model(name, **model_kwargs), sample_shape(name))


def node_names(name: str, **model_kwargs) -> list[str]:
    """torchvision's graph node names of `name`, as `get_graph_node_names(model)` lists them
    (without the input placeholder `x`); create_feature_extractor takes these, and the modules
    that hold them.

    Example:
      >>> jaxnets.node_names("resnet18")[:5]
      ['conv1', 'bn1', 'relu', 'maxpool', 'layer1.0.conv1']
    """
    return [node.name for node in graph(name, **model_kwargs)]


def feature_info(name: str, **model_kwargs) -> list[FeatureInfo]:
    """The feature stages `create_model(name, features_only=True)` returns.

    Example:
      >>> [(f.module, f.channels, f.reduction) for f in jaxnets.feature_info("resnet50")]
      [('relu', 64, 2), ('layer1', 256, 4), ('layer2', 512, 8), ('layer3', 1024, 16),
       ('layer4', 2048, 32)]
    """
    info = model_info(name)
    nodes_of = graph(name, **model_kwargs)
    size = sample_shape(name)[1]
    stages = []
    for index, module in enumerate(info.feature_stages):
        node = nodes.resolve(module, nodes_of, name)
        measured = size // node.shape[1]
        reduction = info.stage_reductions[index] if info.stage_reductions else measured
        stages.append(FeatureInfo(index, module, node.name, node.shape[-1], reduction))
    return stages


def create_feature_extractor(
    name: str, return_nodes: Sequence[str] | Mapping[str, str], /, **model_kwargs
) -> nodes.FeatureExtractor:
    """A module returning the values of some nodes of `name`, as torchvision's
    `create_feature_extractor(model, return_nodes)`: feature maps NHWC, vectors as they are.

    It takes the full model's variables (converted ones included), stops computing after its
    last node, and in training mode updates the BatchNorm statistics of the layers it runs
    exactly as the full model does, leaving the others as they are.

    Example:
      >>> extractor = jaxnets.create_feature_extractor(
      ...     "resnet50", {"layer3": "c4", "layer4": "c5"})
      >>> extractor.apply(variables, images_nhwc)["c5"].shape
      (8, 7, 7, 2048)

    Args:
      name: architecture name.
      return_nodes: node names (the output keys), or a dict {node: output key}.
      **model_kwargs: options of the model (num_classes, dtype, head, ...), and Flax's `name`
        of the extractor inside a larger module.

    Raises:
      ValueError: an unknown node (naming the closest valid ones), a repeated output key, or
        with remat=True a node inside a residual block.
    """
    if isinstance(return_nodes, str):
        raise ValueError(f"{name}: return_nodes is a list or a dict, not {return_nodes!r}")
    if isinstance(return_nodes, Mapping):
        queries, keys = list(return_nodes), list(return_nodes.values())
    else:
        queries, keys = list(return_nodes), list(return_nodes)
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"{name}: output key {repeated[0]!r} is asked for twice")
    module_name = model_kwargs.pop("name", None)  # the extractor's: it holds the variables
    model = create_model(name, **model_kwargs)
    remat = model_kwargs.get("remat", False)
    return nodes.extractor(
        model, name, sample_shape(name), queries, keys, remat=remat, name=module_name
    )


def frozen_modules(
    name: str, freeze: str | Sequence[str] = (), until: str | None = None, **model_kwargs
) -> tuple[str, ...]:
    """The top-level Flax modules (`conv1`, `layer2_0`, `features_7`) a freeze request names,
    in execution order: what the training program keeps fixed, with BatchNorm statistics held
    (the model's `frozen` option).

    Args:
      name: architecture name.
      freeze: torchvision module names, a list or comma-separated: a stage or block
        (`layer1`, `layer2.0`, `features.7`, `features`), `stem` (a ResNet's conv1 and bn1),
        or `backbone` (everything but the head).
      until: a torchvision module; every layer computed before it is frozen (`layer3` freezes
        the stem, layer1 and layer2).
      **model_kwargs: options of the model (head, ...).

    Raises:
      ValueError: a name that matches no whole layer, naming the closest valid ones; a request
        that leaves nothing to train.
    """
    info = model_info(name)
    layers = _layers(name, model_kwargs)
    items = [s.strip() for s in freeze.split(",")] if isinstance(freeze, str) else list(freeze)
    chosen: set[str] = set()
    for item in filter(None, items):
        chosen.update(_named_layers(name, item, layers, info))
    if until:
        first = _named_layers(name, until, layers, info)
        chosen.update(layers[: layers.index(first[0])])
    if chosen >= set(layers):
        raise ValueError(f"{name}: freezing {_describe(freeze, until)} leaves nothing to train")
    return tuple(layer for layer in layers if layer in chosen)


def _describe(freeze, until) -> str:
    parts = [freeze if isinstance(freeze, str) else ",".join(freeze)] if freeze else []
    return " and ".join(parts + ([f"everything before {until}"] if until else []))


def _layers(name: str, model_kwargs) -> list[str]:
    """The top-level Flax modules of `name`, in the order the forward pass reaches them."""
    if model_kwargs.get("head") is not None:  # a list would not be hashable
        model_kwargs = {**model_kwargs, "head": heads.canonical(model_kwargs["head"])}
    return list(_cached_layers(name, tuple(sorted(model_kwargs.items()))))


@functools.lru_cache(maxsize=64)
def _cached_layers(name: str, model_items: tuple) -> tuple[str, ...]:
    import jax
    import jax.numpy as jnp

    model = create_model(name, **dict(model_items))
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(sample_shape(name)), train=False)
    )
    variables = {layer for collection in shapes.values() for layer in collection}
    seen: dict[str, None] = {}
    for node in graph(name, **dict(model_items)):
        seen[flax_path(node.name)[0]] = None
    # Only modules: the graph also holds functions (relu, maxpool, flatten) at the top level.
    return tuple(layer for layer in seen if layer in variables)


def _named_layers(name: str, item: str, layers: list[str], info) -> list[str]:
    if item == "stem" and info.stem_modules:
        return list(info.stem_modules)
    if item == "backbone":
        return [layer for layer in layers if not heads.is_head_layer(layer, info.head)]
    matched = [layer for layer in layers if is_within(torch_module(layer), item)]
    if matched:
        return matched
    holder = next((layer for layer in layers if is_within(item, torch_module(layer))), None)
    if holder:
        raise ValueError(
            f"{name}: cannot freeze {item!r} alone: layers freeze whole, and it is inside "
            f"{torch_module(holder)!r}"
        )
    valid = _freeze_names(layers, info)
    close = difflib.get_close_matches(item, valid, n=4, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else f"; valid: {', '.join(valid[:8])}, ..."
    raise ValueError(f"{name}: no layer {item!r} to freeze{hint}")


def _freeze_names(layers: list[str], info) -> list[str]:
    names = ["backbone", *(["stem"] if info.stem_modules else [])]
    for layer in layers:
        parts = torch_module(layer).split(".")
        names.extend(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    return list(dict.fromkeys(names))


def _is_head(layer: str, head: str) -> bool:
    """Whether a top-level Flax module is the head (`fc`) or a layer of a spec'd head (`fc_4`)."""
    return layer == head or layer.startswith(head + "_")
