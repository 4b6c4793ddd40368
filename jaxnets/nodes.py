"""Intermediate values by torchvision's node names: the taps the model families place, and the
module that returns what they see.

Every family calls `tap(self, NAME, x)` on each value torchvision's FX graph names
(`torchvision.models.feature_extraction.get_graph_node_names`): module outputs (`conv1`,
`layer1.0.bn2`, `classifier.5`) and the functions between them (`layer1.0.add`,
`layer1.0.relu_1`, `flatten`), NAME relative to the calling module. Outside a FeatureExtractor a
tap returns its input and adds nothing to the computation.

Inside one, the taps of the requested nodes keep their values, and the last requested node ends
the forward pass (an exception unwinds the model to the extractor). The layers after it are
neither traced, nor initialized, nor update their BatchNorm statistics in training mode, as with
torchvision's create_feature_extractor, which cuts its graph after the last node.
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxnets.names import is_within, torch_path


@dataclasses.dataclass
class _Collector:
    root: tuple[str, ...]  # Flax path of the extracted model; node names are relative to it
    wanted: frozenset[str] | None  # None: every node (tracing the graph)
    stop: str | None  # the node after which the forward pass ends
    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    depths: dict[str, int] = dataclasses.field(default_factory=dict)


class _Reached(Exception):
    """The last requested node has been computed."""


_active: contextvars.ContextVar[_Collector | None] = contextvars.ContextVar(
    "jaxnets_node_collector", default=None
)


def tap(module: nn.Module, node: str, x: Any) -> Any:
    """Marks `x` as the value of torchvision node `node` of `module` (a name relative to it,
    e.g. "bn1" in block `layer1.0`); returns `x`."""
    collector = _active.get()
    if collector is None:
        return x
    path = module.path
    if path[: len(collector.root)] != collector.root:
        return x  # a model outside the one being extracted from
    relative = path[len(collector.root) :]
    name = f"{torch_path(relative)}.{node}" if relative else node
    if collector.wanted is None or name in collector.wanted:
        if name in collector.values:
            raise RuntimeError(f"node {name!r} is tapped twice")  # a model bug, not user input
        collector.values[name] = x
        collector.depths[name] = len(relative)
    if name == collector.stop:
        raise _Reached
    return x


@dataclasses.dataclass(frozen=True)
class Node:
    """One node of a model's graph, as traced at a sample input.

    Attributes:
      name: torchvision's node name ("layer1.0.relu_1").
      shape: its shape at the sample input (NHWC for feature maps).
      in_block: computed inside a submodule (a residual block) rather than by the model itself;
        such nodes are out of reach of a model whose blocks are rematerialized.
    """

    name: str
    shape: tuple[int, ...]
    in_block: bool


@functools.lru_cache(maxsize=64)
def trace(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[Node, ...]:
    """Every node of `model` in execution order, traced without computing (jax.eval_shape)."""

    collector = _Collector(root=(), wanted=None, stop=None)

    def run():
        token = _active.set(collector)
        try:
            model.init(jax.random.key(0), jnp.zeros(input_shape), train=False)
        finally:
            _active.reset(token)
        return collector.values

    shapes = jax.eval_shape(run)  # a dict comes back sorted; the collector keeps the order
    return tuple(
        Node(name, tuple(shapes[name].shape), collector.depths[name] > 0)
        for name in collector.values
    )


def resolve(query: str, graph: Sequence[Node], model_name: str) -> Node:
    """The node a return-node query names: the node itself, or for a module name (`layer1`,
    `layer1.0.downsample`, `features`) the last node computed inside it, as torchvision does.

    Raises:
      ValueError: no node is or is inside `query`, naming the closest valid names.
    """
    inside = [node for node in graph if is_within(node.name, query)]
    if inside:
        return inside[-1]
    names = valid_names(graph)
    close = difflib.get_close_matches(query, names, n=4, cutoff=0.6)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise ValueError(
        f"{model_name}: unknown node {query!r}{hint} (jaxnets.node_names({model_name!r}) lists all)"
    )


def valid_names(graph: Sequence[Node]) -> list[str]:
    """The graph's nodes and every module that holds some of them (`layer1`, `layer1.0`)."""
    names: dict[str, None] = {}
    for node in graph:
        parts = node.name.split(".")
        for end in range(1, len(parts) + 1):
            names[".".join(parts[:end])] = None
    return list(names)


class FeatureExtractor(nn.Module):
    """A model that returns the values of some of its nodes instead of its logits.

    It shares the model's scope, so it takes the full model's variables as they are
    (`{'params': {'conv1': ...}}`, no extra level) and ignores those of the layers it never
    reaches. Build it with jaxnets.create_feature_extractor or create_model(features_only=True).

    Attributes:
      model: the full model.
      nodes: the graph node of each output.
      keys: the output dict's keys, one per node; empty: a list in the order of `nodes`.
      stop: the last of `nodes` in execution order, where the forward pass ends.
    """

    model: nn.Module
    nodes: tuple[str, ...]
    keys: tuple[str, ...] = ()
    stop: str = ""

    def setup(self):
        nn.share_scope(self, self.model)

    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array] | list:
        collector = _Collector(root=self.path, wanted=frozenset(self.nodes), stop=self.stop)
        token = _active.set(collector)
        try:
            self.model(x, train=train)
        except _Reached:
            pass
        finally:
            _active.reset(token)
        values = [collector.values[node] for node in self.nodes]
        return dict(zip(self.keys, values, strict=True)) if self.keys else values


def extractor(
    model: nn.Module,
    model_name: str,
    input_shape: tuple[int, ...],
    queries: Sequence[str],
    keys: Sequence[str] = (),
    remat: bool = False,
    name: str | None = None,
) -> FeatureExtractor:
    """A FeatureExtractor of `model` returning the nodes `queries` name (see resolve); `name`
    is the extractor's (its variables' key inside a larger module).

    Raises:
      ValueError: an unknown node, no node at all, or with `remat`, a node inside a block.
    """
    if not queries:
        raise ValueError(f"{model_name}: no return nodes asked for")
    # Detached, if built inside a larger module's __call__: the extractor adopts it as its
    # child, which share_scope then gives the extractor's own scope (and variables' key).
    model = model.clone(parent=None)
    graph = trace(model, input_shape)
    nodes = [resolve(q, graph, model_name) for q in queries]
    if remat:
        inner = [q for q, node in zip(queries, nodes, strict=True) if node.in_block]
        if inner:
            raise ValueError(
                f"{model_name}: node {inner[0]!r} lies inside a residual block, which remat=True "
                "recomputes as a whole; ask for block outputs (layer2, layer3.1) or drop remat"
            )
    position = {node.name: i for i, node in enumerate(graph)}
    stop = max(nodes, key=lambda node: position[node.name]).name
    names = tuple(node.name for node in nodes)
    return FeatureExtractor(model, nodes=names, keys=tuple(keys), stop=stop, name=name)
