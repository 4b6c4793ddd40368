"""The function an exported artifact computes: the model's inference forward pass at one input
signature (size, batch, layout, dtype), with the weights' preprocessing in front on request.

Every format is made from this one function, traced with XLA's own formulations of the layers
(jaxnets.layers.forms("xla")): the CPU-tuned ones are matrix products of shifted copies, which
would export as such instead of as convolutions and pooling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets import heads, layers, registry

LAYOUTS = ("nhwc", "nchw")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """torchvision's evaluation transform, for uint8 images of one size: Resize(resize) with
    antialias (0: none), CenterCrop(crop), then (x / 255 - mean) / std. The resized image is
    rounded to uint8 as `jaxnets eval`'s input pipeline does."""

    image_size: tuple[int, int]
    resize: int
    crop: int
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Signature:
    """What an artifact takes. input_size is the network's input (the crop, with
    preprocessing); batch None is a dynamic batch dimension."""

    input_size: tuple[int, int]
    batch: int | None = None
    layout: str = "nhwc"
    dtype: str = "float32"
    preprocessing: Preprocessing | None = None

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r}: expected one of {', '.join(LAYOUTS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r}: expected one of {', '.join(DTYPES)}")
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"batch {self.batch}: expected >= 1 (or a dynamic batch)")

    def input_spec(self, channels: int) -> jax.ShapeDtypeStruct:
        """The artifact's input: uint8 (N, H, W, C) images with preprocessing, else the
        network's input in `layout` and `dtype`."""
        batch = self.batch if self.batch is not None else jax.export.symbolic_shape("batch")[0]
        if self.preprocessing is not None:
            h, w = self.preprocessing.image_size
            return jax.ShapeDtypeStruct((batch, h, w, channels), jnp.uint8)
        h, w = self.input_size
        shape = (batch, h, w, channels) if self.layout == "nhwc" else (batch, channels, h, w)
        return jax.ShapeDtypeStruct(shape, jnp.dtype(self.dtype))


def input_channels(name: str, variables: dict) -> int:
    return int(variables["params"][registry.model_info(name).stem]["kernel"].shape[-2])


def check_input_size(name: str, size: tuple[int, int]) -> None:
    """One-line errors for an input the architecture cannot take."""
    info = registry.model_info(name)
    if info.fixed_input_size and tuple(size) != (info.input_size,) * 2:
        raise ValueError(f"{name} takes {info.input_size}x{info.input_size} input only, not "
                         f"{size[0]}x{size[1]}")  # fmt: skip
    if min(size) < info.min_input_size:
        raise ValueError(f"input size {size[0]}x{size[1]} is below {name}'s minimum of "
                         f"{info.min_input_size}x{info.min_input_size}")  # fmt: skip


def inference_function(
    name: str, variables: dict, signature: Signature, head: str | None = None
) -> Callable[[jax.Array], jax.Array]:
    """images -> logits, the variables closed over (constants of the traced program).

    Trace it inside `layers.forms("xla")` (export_model does)."""
    check_input_size(name, signature.input_size)
    spec = heads.canonical(head)
    num_classes = heads.head_classes(variables["params"], registry.model_info(name).head, spec)
    dtype = jnp.dtype(signature.dtype)
    model = registry.create_model(
        name, num_classes=num_classes, dtype=dtype, **({"head": spec} if spec else {})
    )
    # Through the host: variables restored from a checkpoint carry the training mesh's sharding,
    # which would travel into the exported module (TFLite's converter rejects its dialect).
    variables = jax.tree.map(lambda v: jnp.asarray(np.asarray(v), dtype), variables)
    prepare = _preprocess(signature) if signature.preprocessing else None

    def forward(images: jax.Array) -> jax.Array:
        if prepare is not None:
            images = prepare(images)
        elif signature.layout == "nchw":
            images = jnp.transpose(images, (0, 2, 3, 1))
        logits = model.apply(variables, images.astype(dtype), train=False)
        return logits.astype(dtype)

    return forward


def _preprocess(signature: Signature) -> Callable[[jax.Array], jax.Array]:
    """uint8 (N, H, W, C) -> the network's normalized input, as `jaxnets eval` prepares it."""
    p = signature.preprocessing
    h, w = p.image_size
    if p.resize:
        new_h, new_w = resized_size(h, w, p.resize)
    else:
        new_h, new_w = p.crop, p.crop
    rows = jnp.asarray(resize_matrix(h, new_h))
    cols = jnp.asarray(resize_matrix(w, new_w))
    top, left = round((new_h - p.crop) / 2), round((new_w - p.crop) / 2)
    mean = np.asarray(p.mean, np.float32) * 255
    std = np.asarray(p.std, np.float32) * 255
    if signature.input_size != (p.crop, p.crop):
        raise ValueError(f"with preprocessing the input size is the crop, {p.crop}x{p.crop}")
    if min(new_h, new_w) < p.crop:
        raise ValueError(f"images resized to {new_h}x{new_w} are smaller than the crop {p.crop}")

    def prepare(images: jax.Array) -> jax.Array:
        x = images.astype(jnp.float32)
        if (new_h, new_w) != (h, w):
            x = jnp.einsum("oh,nhwc,pw->nopc", rows, x, cols, precision=jax.lax.Precision.HIGHEST)
            x = jnp.clip(jnp.round(x), 0, 255)
        # lax.slice, not indexing, which traces to a gather with a symbolic batch size.
        x = jax.lax.slice_in_dim(x, top, top + p.crop, axis=1)
        x = jax.lax.slice_in_dim(x, left, left + p.crop, axis=2)
        return (x - mean) / std

    return prepare


def resized_size(h: int, w: int, shorter: int) -> tuple[int, int]:
    """torchvision Resize(int): the shorter side becomes `shorter`, the longer one truncated
    (train.data.preprocess.resize_shorter_side in tf.data)."""
    if h <= w:
        return shorter, int(shorter * w / h)
    return int(shorter * h / w), shorter


def resize_matrix(size: int, new_size: int) -> np.ndarray:
    """The (new_size, size) matrix of a bilinear, antialiased resize along one axis: TF's
    tf.image.resize(antialias=True), which `jaxnets eval` uses, and jax.image.resize."""
    identity = jnp.eye(size, dtype=jnp.float32)
    return np.asarray(jax.image.resize(identity, (new_size, size), method="linear", antialias=True))


def traced(function: Callable, spec: jax.ShapeDtypeStruct):
    """The function's closed jaxpr, traced with XLA's formulations of the layers."""
    with layers.forms("xla"):
        return jax.make_jaxpr(function)(spec)
