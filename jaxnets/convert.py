"""torchvision <-> Flax weight conversion.

Every Flax submodule is named after the torchvision module it mirrors, with the Sequential index
folded into the name (`layer1.0.downsample.0` <-> `layer1_0/downsample_0`), so the mapping is a
rename plus a layout change of the leaf:

  conv weight (O, I, kh, kw)  <-> params .../kernel (kh, kw, I, O)
  linear weight (out, in)     <-> params .../kernel (in, out)
  BatchNorm weight            <-> params .../scale
  bias                        <-> params .../bias
  BatchNorm running_mean/var  <-> batch_stats .../mean, .../var
  BatchNorm num_batches_tracked: dropped (torch only uses it when momentum=None); written as 0.

Nothing is guessed: a key that does not land on a model leaf, a leaf left unfilled and a shape
that differs are all errors naming the key.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets import extras, heads
from jaxnets.names import flax_path, is_within, torch_module, torch_path
from jaxnets.registry import create_model, head_module, list_models, model_info, sample_shape

PathLike = str | os.PathLike
FlatKey = tuple[str, ...]  # (collection, module, ..., leaf)

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class ConversionError(ValueError):
    """Weights that do not fit an architecture, or a file that cannot be read.

    The message is one line; `missing`, `unexpected` and `mismatched` hold the full lists.
    """

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


# ---------------------------------------------------------------------------------------------
# Reading and writing state dicts.


def load_state_dict(source: Mapping[str, Any] | PathLike) -> dict[str, np.ndarray]:
    """Reads a torch state_dict from a mapping or a file into numpy arrays.

    Args:
      source: a state_dict (torch tensors or numpy arrays); a `.pth`/`.pt` file holding one, or a
        training checkpoint holding it under 'model' or 'state_dict' (torchvision's reference
        scripts); or a `.safetensors` file (read without torch).

    Returns:
      An ordered dict from torch key to numpy array. A 'module.' prefix (DistributedDataParallel)
      is removed.

    Raises:
      FileNotFoundError: the path does not exist.
      ConversionError: the file is corrupt, of an unknown format, or holds no state_dict.
    """
    if isinstance(source, Mapping):
        label, obj = "state_dict", source
    else:
        path = Path(source)
        label = str(path)
        if path.is_dir():
            raise ConversionError(
                f"{path}: a directory, not a weights file (an export or a training workdir is "
                "read with `jaxnets convert --from-jax` or jaxnets.export.load_variables)"
            )
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
        if not os.access(path, os.R_OK):
            raise ConversionError(f"{path}: no permission to read this file")
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            obj = _read_safetensors(path)
        elif suffix in TORCH_SUFFIXES:
            obj = _read_torch(path)
        else:
            raise ConversionError(
                f"{path}: unknown weights format {suffix or '(no suffix)'!r}; "
                "expected .pth, .pt or .safetensors"
            )
    obj = _unwrap_checkpoint(obj, label)
    state = {}
    for key, value in obj.items():
        array = _to_numpy(value)
        if array is None:
            kind = type(value).__name__
            raise ConversionError(f"{label}: entry {key!r} is a {kind}, not a tensor")
        state[key] = array
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ConversionError(f"{path}: not a readable safetensors file ({_first_line(e)})") from e


def _read_torch(path: Path) -> Any:
    extras.require("torch", f"{path}: reading a PyTorch file (a .safetensors file needs no torch)")
    import pickle

    import torch

    # torchvision's reference scripts store their argparse.Namespace beside the weights; it is
    # plain data, so allow it. Everything else stays refused by weights_only.
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            # "Detected pickle protocol 4 ...": a warning about files torch did not write; what
            # such a file holds is refused or read below all the same.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch < 2.5: "Unsupported global: GLOBAL x.y"; later: "unsupported GLOBAL x.y whose..."
        unsafe = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", str(e))
        if unsafe and unsafe.group(1).split(".")[0] in ("torch", "torchvision"):
            raise ConversionError(
                f"{path}: holds a pickled {unsafe.group(1)}, not a state_dict; save the "
                "model's state_dict() instead"
            ) from e
        if unsafe:
            raise ConversionError(
                f"{path}: holds pickled code ({unsafe.group(1)}) that jaxnets refuses to run; "
                "only tensors are loaded"
            ) from e
        raise ConversionError(
            f"{path}: not a readable PyTorch file (torch's weights-only unpickler: "
            f"{_unpickler_reason(e)})"
        ) from e
    except Exception as e:
        raise ConversionError(f"{path}: not a readable PyTorch file ({_first_line(e)})") from e


def _unwrap_checkpoint(obj: Any, label: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{label}: holds a {type(obj).__name__}, not a state_dict")
    if any(_to_numpy(v) is not None for v in obj.values()):
        return obj
    for wrapper_key in ("model", "state_dict"):
        if isinstance(obj.get(wrapper_key), Mapping):
            return obj[wrapper_key]
    raise ConversionError(
        f"{label}: no tensors found at the top level nor under 'model' or 'state_dict' "
        f"(keys: {', '.join(map(str, list(obj)[:5]))})"
    )


def _to_numpy(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch.Tensor
        value = value.detach().cpu()
        if not value.dtype.is_floating_point or value.dtype.itemsize >= 4:
            return value.numpy()
        return value.float().numpy()  # numpy has no bfloat16; float16 -> float32 is exact
    if isinstance(value, jax.Array):
        return np.asarray(value)
    return None


def _unpickler_reason(error: BaseException) -> str:
    """The line of torch's weights-only error that says what it met ("Unsupported operand 149",
    "invalid load key"), without the advice around it."""
    boilerplate = ("Weights only", "Please file", "Check the documentation", "In PyTorch")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(boilerplate)]
    return (reasons or lines or [type(error).__name__])[0].removeprefix("WeightsUnpickler error: ")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().split(". ")[0].splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def save_state_dict(state: Mapping[str, np.ndarray], path: PathLike) -> Path:
    """Writes a state_dict to `.pth` (needs torch) or `.safetensors`, atomically.

    The file appears complete or not at all: it is written beside its destination and renamed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (*TORCH_SUFFIXES, ".safetensors"):
        raise ConversionError(f"{path}: unknown output format {suffix!r}; use .pth or .safetensors")
    # np.require, not np.ascontiguousarray: that one makes a 0-d num_batches_tracked 1-d.
    arrays = {k: np.require(v, requirements="C") for k, v in state.items()}
    if suffix == ".safetensors":
        from safetensors.numpy import save_file

        return write_atomically(path, lambda tmp: save_file(arrays, tmp))
    extras.require("torch", f"{path}: writing a PyTorch file (.safetensors needs no torch)")
    import torch

    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return write_atomically(path, lambda tmp: torch.save(tensors, tmp))


def write_atomically(path: PathLike, write: Callable[[str], object]) -> Path:
    """`write(tmp)` to a file beside `path`, then renamed to it: the file appears whole or not
    at all. It gets the mode a plain open() would give (mkstemp's is 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------
# Key mapping.


def torch_to_flax_key(torch_key: str, ndim: int) -> FlatKey | None:
    """Maps a torch key to its (collection, *modules, leaf) Flax path; None if it has none.

    `num_batches_tracked` maps to None too: it is dropped on purpose.
    """
    module, _, leaf = torch_key.rpartition(".")
    if leaf == "weight":
        target = ("params", "kernel" if ndim in (2, 4) else "scale")
    else:
        target = {
            "bias": ("params", "bias"),
            "running_mean": ("batch_stats", "mean"),
            "running_var": ("batch_stats", "var"),
        }.get(leaf)
    if target is None or not module:
        return None
    return (target[0], *flax_path(module), target[1])


def flax_to_torch_key(flat_key: FlatKey) -> str:
    """Maps a (collection, *modules, leaf) Flax path to its torch key."""
    collection, *modules, leaf = flat_key
    torch_leaf = {
        ("params", "kernel"): "weight",
        ("params", "scale"): "weight",
        ("params", "bias"): "bias",
        ("batch_stats", "mean"): "running_mean",
        ("batch_stats", "var"): "running_var",
    }[(collection, leaf)]
    return f"{torch_path(modules)}.{torch_leaf}"


def torch_layout(array: np.ndarray) -> np.ndarray:
    """Flax kernel -> torch weight layout (HWIO -> OIHW, (in, out) -> (out, in))."""
    if array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    return array.T if array.ndim == 2 else array


def flax_layout(array: np.ndarray) -> np.ndarray:
    """torch weight -> Flax kernel layout (OIHW -> HWIO, (out, in) -> (in, out))."""
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    return array.T if array.ndim == 2 else array


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(flax_shape) == 4:
        h, w, i, o = flax_shape
        return (o, i, h, w)
    return tuple(reversed(flax_shape)) if len(flax_shape) == 2 else tuple(flax_shape)


def _sample_input(name: str, in_channels: int) -> jax.Array:
    """An input of the architecture's own size (its ModelInfo.input_size), one image."""
    return jnp.zeros((*sample_shape(name)[:3], in_channels))


def _target_shapes(
    name: str, num_classes: int, model_items: tuple = (), in_channels: int = 3
) -> dict[FlatKey, Any]:
    """Flat {(collection, *path): ShapeDtypeStruct} of the model's variables; nothing allocated."""
    # The dtypes depend on jax_enable_x64, so it is part of the cache key.
    x64 = jax.config.jax_enable_x64
    return _cached_target_shapes(name, num_classes, model_items, in_channels, x64)


@functools.lru_cache(maxsize=64)
def _cached_target_shapes(name, num_classes, model_items, in_channels, x64):
    model = create_model(name, num_classes=num_classes, **dict(model_items))
    x = _sample_input(name, in_channels)  # eval_shape only traces
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    return dict(flatten_tree(variables))


def _stem_torch_key(name: str) -> str:
    return flax_to_torch_key(("params", model_info(name).stem, "kernel"))


def _input_channels(name: str, state: Mapping[str, np.ndarray]) -> int:
    """The input channels of torch weights, read off the first convolution (3 if absent)."""
    weight = state.get(_stem_torch_key(name))
    return int(weight.shape[1]) if weight is not None and weight.ndim == 4 else 3


def torch_shapes(
    name: str, num_classes: int = 1000, in_channels: int = 3
) -> dict[str, tuple[int, ...]]:
    """The torch state_dict keys and shapes of an architecture (num_batches_tracked left out)."""
    return {
        flax_to_torch_key(k): _torch_shape(v.shape)
        for k, v in _target_shapes(name, num_classes, in_channels=in_channels).items()
    }


def flatten_tree(tree: Mapping, prefix: FlatKey = ()) -> list[tuple[FlatKey, Any]]:
    """Nested dicts -> [((key, ..., leaf_key), leaf)]."""
    items = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            items.extend(flatten_tree(value, (*prefix, key)))
        else:
            items.append(((*prefix, key), value))
    return items


def unflatten_tree(flat: Mapping[FlatKey, Any]) -> dict:
    """The inverse of flatten_tree."""
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = value
    return tree


def _head_linears(name: str, spec: heads.HeadSpec | None) -> list[str]:
    """The torch names of the head's Linear layers: `fc`, or those of a spec (`fc.1`, `fc.4`)."""
    head = head_module(name)
    if spec is None:
        return [torch_module(head)]
    return [torch_module(layer) for layer, _ in heads.linear_layers(spec, head)]


def _head_classes(
    name: str, state: Mapping[str, np.ndarray], spec: heads.HeadSpec | None = None
) -> int | None:
    weight = state.get(f"{_head_linears(name, spec)[-1]}.weight")
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def _looks_like(state: Mapping[str, np.ndarray]) -> str | None:
    """The architecture whose keys and shapes (ignoring the head size) match `state`, if any."""
    found = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    for candidate in list_models():
        classes = _head_classes(candidate, state)
        if classes is None:
            continue
        if torch_shapes(candidate, classes, _input_channels(candidate, state)) == found:
            return candidate
    return None


def _examples(keys: list[str], limit: int = 3) -> str:
    shown = "; ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


# ---------------------------------------------------------------------------------------------
# The two directions.


def from_torchvision(
    name: str,
    source: Mapping[str, Any] | PathLike,
    *,
    num_classes: int | None = None,
    reinit_head: bool = False,
    features_only: bool = False,
    seed: int = 0,
    **model_kwargs,
) -> dict[str, dict]:
    """Converts torchvision weights into Flax variables for `create_model(name, ...)`.

    Example:
      >>> variables = jaxnets.from_torchvision("resnet18", "resnet18-f37072fd.pth")
      >>> jaxnets.create_model("resnet18").apply(variables, images_nhwc, train=False)
      >>> head = ("dropout:0.5", "linear:256", "relu", "dropout:0.3", "linear:N")
      >>> tuned = jaxnets.from_torchvision("resnet50", "tuned.pth", head=head)  # fc.1, fc.4

    Args:
      name: architecture name, e.g. "resnet50".
      source: a state_dict or a `.pth`/`.pt`/`.safetensors` path (see `load_state_dict`).
      num_classes: classes of the model to build; by default, those of the weights' head.
      reinit_head: if the weights' head does not fit the model's (another number of classes,
        or another head spec), drop it and initialize a new one as torchvision would (transfer
        learning). Without it, a head that does not fit is an error.
      features_only: for `create_model(name, features_only=True)`: the weights' head is
        dropped, whatever its shape; every other key is checked as ever.
      seed: PRNG seed of the re-initialized head.
      **model_kwargs: further options of the model (dtype, head, ...); `head` is the spec of a
        custom head (jaxnets.heads) the weights hold or are to get.

    Returns:
      {'params': ..., 'batch_stats': ...} of jax arrays (batch_stats empty for models without
      BatchNorm).

    Raises:
      ConversionError: keys missing, unexpected or of the wrong shape, each named, with the
        architecture the weights look like when it is another one; a head that does not fit.
    """
    state = loaded = load_state_dict(source)
    if model_kwargs.get("head") is not None:
        model_kwargs["head"] = heads.canonical(model_kwargs["head"])
    spec = model_kwargs.get("head")
    head = head_module(name)
    file_head = {k: v for k, v in state.items() if is_within(k, torch_module(head))}
    # The classes of the file's head: its spec's last Linear, else whichever Linear it ends on.
    linears = [v for k, v in file_head.items() if k.endswith(".weight") and v.ndim == 2]
    file_classes = _head_classes(name, state, spec) or (
        int(linears[-1].shape[0]) if linears else None
    )
    num_classes = num_classes or file_classes or 1000
    in_channels = _input_channels(name, state)
    targets = _target_shapes(name, num_classes, tuple(sorted(model_kwargs.items())), in_channels)
    head_targets = {k: v for k, v in targets.items() if heads.is_head_layer(k[1], head)}

    # A head that does not fit is dropped (features_only, reinit_head) or reported, after the
    # rest of the weights: weights of another architecture are better named by their body.
    head_problem, new_head = None, False
    if features_only or not _head_fits(file_head, head_targets):
        if not (features_only or reinit_head):
            head_problem = _head_mismatch(
                name, file_head, head_targets, spec, file_classes, num_classes
            )
        state = {k: v for k, v in state.items() if k not in file_head}
        targets = {k: v for k, v in targets.items() if k not in head_targets}
        new_head = reinit_head and not features_only

    filled: dict[FlatKey, np.ndarray] = {}
    unexpected, mismatched, mismatched_keys = [], [], set()
    for torch_key, array in state.items():
        if torch_key.endswith("num_batches_tracked"):
            continue
        flat_key = torch_to_flax_key(torch_key, array.ndim)
        if flat_key not in targets:
            unexpected.append(torch_key)
            continue
        target = targets[flat_key]
        value = flax_layout(array)
        if value.shape != target.shape:
            expected = _torch_shape(target.shape)
            mismatched.append(f"{torch_key}: expected {expected}, found {tuple(array.shape)}")
            mismatched_keys.add(flat_key)
            continue
        if not np.issubdtype(array.dtype, np.floating):
            # Floats of another width are cast (float16 widens exactly, float64 rounds as
            # torch's .float() does); integers or booleans mean these are not such weights.
            raise ConversionError(
                f"{name}: {torch_key} holds {array.dtype} values where the model has float "
                "weights; integer and boolean tensors are never cast"
            )
        filled[flat_key] = value.astype(target.dtype)

    missing = [
        flax_to_torch_key(k) for k in targets if k not in filled and k not in mismatched_keys
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys ({_examples(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys ({_examples(unexpected)})")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches ({_examples(mismatched, 2)})")
        message = f"{name}: weights do not fit: {'; '.join(problems)}"
        other = _looks_like(loaded)
        if other and other != name:
            message += f"; they look like {other} weights"
        raise ConversionError(message, missing, unexpected, mismatched)

    if head_problem:
        raise ConversionError(head_problem)
    if new_head:
        filled.update(_init_head(name, num_classes, seed, model_kwargs, in_channels))
    variables = unflatten_tree(filled)
    variables.setdefault("batch_stats", {})
    return jax.device_put(variables)


def _head_fits(file_head: Mapping[str, np.ndarray], head_targets: Mapping[FlatKey, Any]) -> bool:
    """Whether the weights' head keys are exactly the model head's, of the same shapes."""
    found = {
        torch_to_flax_key(k, v.ndim): flax_layout(v).shape
        for k, v in file_head.items()
        if not k.endswith("num_batches_tracked")
    }
    return found == {k: v.shape for k, v in head_targets.items()}


def _head_mismatch(name, file_head, head_targets, spec, file_classes, num_classes) -> str:
    ours = {flax_to_torch_key(k): _torch_shape(v.shape) for k, v in head_targets.items()}
    theirs = {k: tuple(v.shape) for k, v in file_head.items() if not k.endswith("tracked")}
    if set(ours) == set(theirs) and file_classes not in (None, num_classes):
        return (
            f"{name}: the weights' head {_head_linears(name, spec)[-1]}.weight has {file_classes} "
            f"classes but num_classes={num_classes} was asked; pass reinit_head=True "
            "(--reinit-head) to drop it and start a new head"
        )
    describe = lambda shapes: (
        ", ".join(f"{k} {v}" for k, v in shapes.items() if k.endswith(".weight")) or "none"
    )
    model = f"head={','.join(spec)}" if spec else "torchvision's head"
    return (
        f"{name}: the weights' head ({describe(theirs)}) does not fit {model} "
        f"({describe(ours)}); pass the head spec the weights were trained with (head=, --head) "
        "or reinit_head=True (--reinit-head) to start a new head"
    )


def _init_head(
    name: str, num_classes: int, seed: int, model_kwargs, in_channels: int
) -> dict[FlatKey, Any]:
    model = create_model(name, num_classes=num_classes, **model_kwargs)
    head = head_module(name)

    # Only the head's leaves are returned, so XLA prunes the rest of the initialization.
    @jax.jit
    def init_head(key):
        params = model.init(key, _sample_input(name, in_channels), train=False)["params"]
        return {layer: v for layer, v in params.items() if heads.is_head_layer(layer, head)}

    layers = init_head(jax.random.key(seed))
    return {
        ("params", layer, leaf): v for layer, leaves in layers.items() for leaf, v in leaves.items()
    }


def to_torchvision(
    name: str, variables: Mapping[str, Any], *, head: str | Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Converts Flax variables of `create_model(name, ...)` into a torchvision state_dict.

    Example:
      >>> state = jaxnets.to_torchvision("resnet18", variables)
      >>> torch.save({k: torch.from_numpy(v) for k, v in state.items()}, "resnet18.pth")

    Args:
      name: architecture name.
      variables: {'params': ..., 'batch_stats': ...} (other collections are ignored).
      head: the head spec the model was built with, if any; its Linear layers become the
        Sequential's keys (`fc.1.weight`, `fc.4.weight`).

    Returns:
      {torch key: numpy array}, accepted by `torchvision.models.<name>(num_classes=...)
      .load_state_dict({k: torch.from_numpy(v) ...}, strict=True)` (with the head spec's
      nn.Sequential in place of the head); num_batches_tracked is 0.

    Raises:
      ConversionError: the variables are not those of `name` (keys or shapes named).
    """
    flat = {
        k: v for k, v in flatten_tree({c: variables.get(c, {}) for c in ("params", "batch_stats")})
    }
    spec = heads.canonical(head)
    head_kernel = flat.get(("params", heads.output_layer(head_module(name), spec), "kernel"))
    num_classes = int(head_kernel.shape[-1]) if head_kernel is not None else 1000
    stem_kernel = flat.get(("params", model_info(name).stem, "kernel"))
    in_channels = int(stem_kernel.shape[2]) if stem_kernel is not None else 3
    model_items = (("head", spec),) if spec else ()
    targets = _target_shapes(name, num_classes, model_items, in_channels)
    missing = [flax_to_torch_key(k) for k in targets if k not in flat]
    unexpected = ["/".join(k) for k in flat if k not in targets]
    mismatched = [
        f"{'/'.join(k)}: expected {targets[k].shape}, found {tuple(np.shape(v))}"
        for k, v in flat.items()
        if k in targets and tuple(np.shape(v)) != targets[k].shape
    ]
    if missing or unexpected or mismatched:
        head_name = head_module(name)
        custom = sorted({k[1] for k in flat if k[1] != head_name
                         and heads.is_head_layer(k[1], head_name)})  # fmt: skip
        hint = ""
        if custom and not spec:
            hint = f"; they have a custom head ({', '.join(custom)}): pass its spec, head="
        raise ConversionError(
            f"{name}: variables do not fit: {len(missing)} missing ({_examples(missing)}), "
            f"{len(unexpected)} unexpected ({_examples(unexpected)}), "
            f"{len(mismatched)} mismatched ({_examples(mismatched, 2)}){hint}",
            missing, unexpected, mismatched,
        )  # fmt: skip

    state: dict[str, np.ndarray] = {}
    for flat_key, value in flat.items():
        array = np.asarray(value)
        if array.dtype.kind == "f" and array.dtype.itemsize < 4:
            array = array.astype(np.float32)  # bfloat16 has no torch.from_numpy route
        # A writable C-ordered copy: torch.from_numpy warns on read-only views.
        state[flax_to_torch_key(flat_key)] = np.array(torch_layout(array), order="C")
        if flat_key[-1] == "var":
            module = flax_to_torch_key(flat_key).removesuffix("running_var")
            state[f"{module}num_batches_tracked"] = np.array(0, np.int64)
    return state
