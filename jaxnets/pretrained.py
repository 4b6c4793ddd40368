"""torchvision's ImageNet weights: metadata, download, hash check, conversion and its cache.

The table mirrors torchvision 0.29's weight enums (file, accuracy, eval preprocessing). Files are
looked for where torchvision keeps them, `$TORCH_HOME/hub/checkpoints`, so weights downloaded by
either library serve both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxnets.convert import PathLike, flatten_tree, from_torchvision, unflatten_tree
from jaxnets.registry import create_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
URL_ROOT = "https://download.pytorch.org/models/"


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in torchvision's order."""
    with open(Path(__file__).with_name("imagenet_classes.json")) as f:
        return tuple(json.load(f))


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet IDs in torchvision's order: `imagenet_wnids()[i]` is the
    synset of `imagenet_classes()[i]` ('n01440764', tench). ImageNet folders and TFDS's
    imagenet2012 name their classes so. torchvision's order is the sorted WNIDs, as in
    TFDS's imagenet2012/labels.txt, from which the file was written once (no TFDS needed here)."""
    with open(Path(__file__).with_name("imagenet_wnids.json")) as f:
        return tuple(json.load(f))


@dataclasses.dataclass(frozen=True)
class Weights:
    """One torchvision weight set and how to evaluate it.

    Attributes:
      arch: architecture name.
      tag: torchvision's enum member name, e.g. "IMAGENET1K_V2".
      filename: file name in the torch hub cache; its 8 hex digits start the file's sha256.
      acc1, acc5: torchvision's published ImageNet-1k single-crop accuracies (nan if none).
      file_size_mb: the file's size in MB (10**6 bytes), as torchvision's `_file_size` gives it.
      resize: shorter side for evaluation (256 for V1, 232 for V2 recipes).
      crop: center crop size.
      interpolation, antialias: of the resize.
      mean, std: normalization after scaling pixels to [0, 1].
      num_classes: classes of the head (None when the head is untrained).
      url: download location; defaults to torchvision's.
    """

    arch: str
    tag: str
    filename: str
    acc1: float
    acc5: float
    file_size_mb: float
    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"
    antialias: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_classes: int | None = 1000
    url: str = ""

    @property
    def download_url(self) -> str:
        return self.url or URL_ROOT + self.filename

    @property
    def sha256_prefix(self) -> str:
        return hash_prefix(self.filename) or ""

    @property
    def classes(self) -> tuple[str, ...] | None:
        return imagenet_classes() if self.num_classes == 1000 else None


def _table() -> dict[tuple[str, str], Weights]:
    v1, v2 = "IMAGENET1K_V1", "IMAGENET1K_V2"
    rows = [
        Weights("alexnet", v1, "alexnet-owt-7be5be79.pth", 56.522, 79.066, 233.087),
        Weights("vgg11", v1, "vgg11-8a719046.pth", 69.020, 88.628, 506.84),
        Weights("vgg11_bn", v1, "vgg11_bn-6002323d.pth", 70.370, 89.810, 506.881),
        Weights("vgg13", v1, "vgg13-19584684.pth", 69.928, 89.246, 507.545),
        Weights("vgg13_bn", v1, "vgg13_bn-abd245e5.pth", 71.586, 90.374, 507.59),
        Weights("vgg16", v1, "vgg16-397923af.pth", 71.592, 90.382, 527.796),
        # SSD's VGG16 backbone: caffe-style input (BGR means, pixels in 0..255), untrained head.
        Weights(
            "vgg16",
            "IMAGENET1K_FEATURES",
            "vgg16_features-amdegroot-88682ab5.pth",
            float("nan"),
            float("nan"),
            527.802,
            mean=(0.48235, 0.45882, 0.40784),
            std=(1 / 255, 1 / 255, 1 / 255),
            num_classes=None,
        ),
        Weights("vgg16_bn", v1, "vgg16_bn-6c64b313.pth", 73.360, 91.516, 527.866),
        Weights("vgg19", v1, "vgg19-dcbb9e9d.pth", 72.376, 90.876, 548.051),
        Weights("vgg19_bn", v1, "vgg19_bn-c79401a0.pth", 74.218, 91.842, 548.143),
        Weights("resnet18", v1, "resnet18-f37072fd.pth", 69.758, 89.078, 44.661),
        Weights("resnet34", v1, "resnet34-b627a593.pth", 73.314, 91.420, 83.275),
        Weights("resnet50", v1, "resnet50-0676ba61.pth", 76.130, 92.862, 97.781),
        Weights("resnet50", v2, "resnet50-11ad3fa6.pth", 80.858, 95.434, 97.79, resize=232),
        Weights("resnet101", v1, "resnet101-63fe2227.pth", 77.374, 93.546, 170.511),
        Weights("resnet101", v2, "resnet101-cd907fc2.pth", 81.886, 95.780, 170.53, resize=232),
        Weights("resnet152", v1, "resnet152-394f9c45.pth", 78.312, 94.046, 230.434),
        Weights("resnet152", v2, "resnet152-f82ba261.pth", 82.284, 96.002, 230.474, resize=232),
        Weights("resnext50_32x4d", v1, "resnext50_32x4d-7cdf4587.pth", 77.618, 93.698, 95.789),
        Weights(
            "resnext50_32x4d",
            v2,
            "resnext50_32x4d-1a0047aa.pth",
            81.198,
            95.340,
            95.833,
            resize=232,
        ),
        Weights("resnext101_32x8d", v1, "resnext101_32x8d-8ba56ff5.pth", 79.312, 94.526, 339.586),
        Weights(
            "resnext101_32x8d",
            v2,
            "resnext101_32x8d-110c445d.pth",
            82.834,
            96.228,
            339.673,
            resize=232,
        ),
        Weights(
            "resnext101_64x4d",
            v1,
            "resnext101_64x4d-173b62eb.pth",
            83.246,
            96.454,
            319.318,
            resize=232,
        ),
        Weights("wide_resnet50_2", v1, "wide_resnet50_2-95faca4d.pth", 78.468, 94.086, 131.82),
        Weights(
            "wide_resnet50_2",
            v2,
            "wide_resnet50_2-9ba9bcbe.pth",
            81.602,
            95.758,
            263.124,
            resize=232,
        ),
        Weights("wide_resnet101_2", v1, "wide_resnet101_2-32ee1156.pth", 78.848, 94.284, 242.896),
        Weights(
            "wide_resnet101_2",
            v2,
            "wide_resnet101_2-d733dc28.pth",
            82.510,
            96.020,
            484.747,
            resize=232,
        ),
    ]
    return {(w.arch, w.tag): w for w in rows}


WEIGHTS: dict[tuple[str, str], Weights] = _table()


def list_weights(arch: str | None = None) -> list[Weights]:
    """All known weight sets, or those of one architecture.

    Example:
      >>> [w.tag for w in jaxnets.list_weights("resnet50")]
      ['IMAGENET1K_V1', 'IMAGENET1K_V2']
    """
    return [w for (a, _), w in WEIGHTS.items() if arch is None or a == arch]


def get_weights(arch: str, tag: str = "IMAGENET1K_V1") -> Weights:
    """Metadata of one weight set; tag "DEFAULT" picks the best (V2 where it exists).

    Raises:
      ValueError: naming the tags that exist for `arch`.
    """
    create_model(arch)  # raises with close names for an unknown architecture
    tags = [w.tag for w in list_weights(arch)]
    if tag == "DEFAULT":
        tag = "IMAGENET1K_V2" if "IMAGENET1K_V2" in tags else "IMAGENET1K_V1"
    if (arch, tag) not in WEIGHTS:
        raise ValueError(f"{arch} has no weights {tag!r}; known: {', '.join(tags)}")
    return WEIGHTS[(arch, tag)]


def torch_hub_dir() -> Path:
    """torchvision's download folder: $TORCH_HOME/hub/checkpoints (as torch.hub computes it)."""
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.environ.get("TORCH_HOME", os.path.join(xdg, "torch"))
    return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"


def cache_dir() -> Path:
    """Where converted trees are cached: $JAXNETS_CACHE, default ~/.cache/jaxnets."""
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.environ.get("JAXNETS_CACHE", os.path.join(xdg, "jaxnets"))))


def hash_prefix(filename: str) -> str | None:
    """The sha256 prefix torch hub file names carry ('resnet18-f37072fd.pth' -> 'f37072fd')."""
    match = re.search(r"-([a-f0-9]{6,})\.", os.path.basename(filename))
    return match.group(1) if match else None


def sha256(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, destination: Path, expected_prefix: str | None) -> Path:
    """Downloads `url` to `destination` with a progress bar, verifying the sha256 prefix.

    The file appears only once complete and verified.

    Raises:
      RuntimeError: the download failed (saying where to put the file by hand) or the hash differs.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with _progress_bar(total, destination.name) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
        _verify(Path(tmp), expected_prefix, label=url)
        os.replace(tmp, destination)
    except (urllib.error.URLError, OSError, ValueError) as e:
        Path(tmp).unlink(missing_ok=True)
        raise RuntimeError(
            f"could not download {url} ({e}); without network, copy the file to {destination}"
        ) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return destination


class _Silent(contextlib.AbstractContextManager):
    def __exit__(self, *exc) -> None:
        pass

    def update(self, n: int) -> None:
        pass


def _progress_bar(total: int | None, name: str):
    """tqdm's bar where tqdm is installed (the [train] extra has it); the core install is
    silent."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Silent()
    return tqdm(total=total, unit="B", unit_scale=True, desc=name)


def _verify(path: Path, expected_prefix: str | None, label: str) -> None:
    if not expected_prefix:
        return
    actual = sha256(path)
    if not actual.startswith(expected_prefix):
        raise RuntimeError(
            f"{label}: sha256 starts with {actual[:8]}, expected {expected_prefix}: the file is "
            "corrupt or not the published one (delete it to download again)"
        )


def load_pretrained(
    name: str,
    weights: str | Weights = "IMAGENET1K_V1",
    *,
    path: PathLike | None = None,
    download_missing: bool = True,
    use_cache: bool = True,
) -> tuple[dict[str, Any], Weights]:
    """Loads torchvision's pretrained weights for `name` as Flax variables.

    Example:
      >>> variables, weights = jaxnets.load_pretrained("resnet50", "IMAGENET1K_V2")
      >>> weights.resize, weights.crop  # the preprocessing these weights were evaluated with
      (232, 224)

    Args:
      name: architecture name.
      weights: a tag ("IMAGENET1K_V1", "IMAGENET1K_V2", "DEFAULT") or a Weights entry.
      path: the `.pth` file to use instead of the torch hub cache. Its hash is checked against
        the prefix in its own name when it has one (older re-serialized copies have other names).
      download_missing: download the file when absent from the cache.
      use_cache: reuse the converted tree of an earlier load (keyed by the file's hash prefix,
        size and modification time) instead of converting again.

    Returns:
      (variables, Weights): variables for `create_model(name, num_classes=...)` and the metadata
      with the preprocessing to evaluate them with.

    Raises:
      FileNotFoundError: no file and no download, saying where to put it.
      RuntimeError: hash mismatch or failed download.
    """
    meta = weights if isinstance(weights, Weights) else get_weights(name, weights)
    if meta.arch != name:
        raise ValueError(f"weights {meta.filename} are for {meta.arch}, not {name}")
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"weights file not found: {file}")
    else:
        file = torch_hub_dir() / meta.filename
        if not file.is_file():
            if not download_missing:
                raise FileNotFoundError(
                    f"{meta.filename} is not in {file.parent}; download {meta.download_url} there"
                )
            download(meta.download_url, file, meta.sha256_prefix)

    stat = file.stat()
    cached = cache_dir() / f"{file.stem}-{stat.st_size}-{stat.st_mtime_ns}.safetensors"
    if use_cache and cached.is_file():
        try:
            return _read_cached(cached), meta
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            cached.unlink(missing_ok=True)

    _verify(file, hash_prefix(file.name), label=str(file))
    variables = from_torchvision(name, file)
    if use_cache:
        _write_cached(cached, variables)
    return variables, meta


def _write_cached(path: Path, variables: dict) -> None:
    from safetensors.numpy import save_file

    flat = {"/".join(key): np.asarray(v) for key, v in flatten_tree(variables)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(flat, tmp)
        os.replace(tmp, path)
    except OSError:
        # A read-only cache only costs speed next time.
        Path(tmp).unlink(missing_ok=True)


def _read_cached(path: Path) -> dict:
    from safetensors.numpy import load_file

    flat = {tuple(key.split("/")): value for key, value in load_file(path).items()}
    return jax.device_put({"params": {}, "batch_stats": {}, **unflatten_tree(flat)})


def clear_cache() -> None:
    """Deletes the converted-tree cache."""
    shutil.rmtree(cache_dir(), ignore_errors=True)
