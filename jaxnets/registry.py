"""The model registry: one builder function per architecture name, as timm and torchvision do,
and the facts about each architecture, declared beside its builder in its family's file."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence

from flax import linen as nn

from jaxnets import heads, nodes


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
      feature_stages: the torchvision modules whose outputs `features_only` returns, shallow to
        deep: the stem and the four stages of a ResNet, each max-pool stage of VGG or AlexNet.
      stage_reductions: the stride of each stage's output relative to the input; empty: input
        size over map size at input_size (exact where every layer pads to size / stride).
      stem_modules: the Flax modules `freeze="stem"` names.
      dense_linears: for dense evaluation (jaxnets.dense), the Linear layers between the last
        feature stage and the head, the first applied as a dense_window x dense_window
        convolution, the others as 1x1 (VGG's classifier.0 and .3 over its 7x7 map); empty:
        the model pools the whole map itself (ResNets) or takes one input size only.
      dense_window: the map size the first of dense_linears was trained on.
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
    feature_stages: tuple[str, ...] = ()
    stage_reductions: tuple[int, ...] = ()
    stem_modules: tuple[str, ...] = ()
    dense_linears: tuple[str, ...] = ()
    dense_window: int = 0


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


def create_model(
    name: str,
    /,
    *,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **kwargs,
) -> nn.Module:
    """Builds the Flax module for a registered architecture.

    Example:
      >>> model = jaxnets.create_model("resnet50", num_classes=10, dtype=jnp.bfloat16)
      >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False)
      >>> backbone = jaxnets.create_model("resnet50", features_only=True, out_indices=(2, 3, 4))
      >>> c3, c4, c5 = backbone.apply(variables, images_nhwc)  # strides 8, 16, 32

    Args:
      name: a name from `list_models()`, e.g. "resnet50".
      features_only: return the model without its head, whose output is the list of its
        feature stages' maps (NHWC), as timm's features_only; `feature_info(name)` describes
        them. It takes the full model's variables.
      out_indices: which stages features_only returns (default: all; negative counts from the
        deepest).
      **kwargs: the builder's options (num_classes, dropout, zero_init_residual, dtype, head,
        ...), and Flax's `name` of the module inside a larger one.

    Returns:
      The (unbound) flax.linen Module.

    Raises:
      ValueError: for an unknown name, naming the closest registered ones; a head spec that
        does not parse; out_indices out of range.
    """
    _check_name(name)
    if kwargs.get("head") is not None:
        kwargs["head"] = heads.canonical(kwargs["head"])
    if "frozen" in kwargs:
        kwargs["frozen"] = tuple(kwargs["frozen"])
    if not features_only:
        if out_indices is not None:
            raise ValueError(f"{name}: out_indices is an option of features_only=True")
        return _BUILDERS[name](**kwargs)
    stages = _INFO[name].feature_stages
    queries = [stages[i] for i in stage_indices(name, out_indices)]
    module_name = kwargs.pop("name", None)  # the extractor's: it holds the model's variables
    model = _BUILDERS[name](**kwargs)
    remat = kwargs.get("remat", False)
    return nodes.extractor(model, name, sample_shape(name), queries, remat=remat, name=module_name)


def stage_indices(name: str, out_indices: Sequence[int] | None) -> list[int]:
    """The feature stages `out_indices` picks (all by default), in their order.

    Raises:
      ValueError: an index out of range, naming the valid ones.
    """
    count = len(model_info(name).feature_stages)
    if out_indices is None:
        return list(range(count))
    if isinstance(out_indices, int) or not len(out_indices):
        raise ValueError(f"{name}: out_indices={out_indices!r}: expected a non-empty sequence")
    wrong = [i for i in out_indices if not -count <= i < count]
    if wrong:
        raise ValueError(
            f"{name}: out_indices {tuple(out_indices)}: index {wrong[0]} is out of range; "
            f"{name} has {count} feature stages, 0..{count - 1} (jaxnets.feature_info lists them)"
        )
    return [i % count for i in out_indices]


def sample_shape(name: str) -> tuple[int, int, int, int]:
    """One RGB image of the architecture's own size (ModelInfo.input_size), NHWC."""
    size = model_info(name).input_size
    return (1, size, size, 3)


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
