"""`jaxnets predict`: what is in these pictures, by the weights' own preprocessing.

Files are read as torchvision's ImageFolder reads them (PIL, converted to RGB: grayscale
replicated, alpha and palettes resolved, CMYK converted, 16-bit modes as PIL converts them),
then resized and cropped by the evaluation pipeline's own ops (train/data/views.py), under any
protocol `jaxnets eval --tta` takes. Python:

    classifier = Classifier.load("resnet50", "IMAGENET1K_V2", tta="flip")
    for path, top in zip(paths, classifier.topk(paths, k=5)): ...
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import numpy as np

# torchvision's IMG_EXTENSIONS, WebP and TIFF included: PIL reads them all.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
                    ".gif")  # fmt: skip


@dataclasses.dataclass
class Prediction:
    path: str
    names: list[str]
    indices: list[int]
    probabilities: list[float]


class Classifier:
    """The compiled network(s), their preprocessing and their class names.

    Build it with Classifier.load; `probabilities(images)` takes decoded uint8 HWC arrays,
    `predict(paths, k)` files."""

    def __init__(self, members, protocols, class_names: list[str], batch_size: int = 16):
        from train.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
        from train.tta import Member, ViewScorer, view_function

        self.class_names, self.protocols = class_names, protocols
        # What normalize_on_host needs of a dataset: uint8 images normalize with ImageNet's
        # mean and std, as evaluation on an image folder does.
        self._statistics = types.SimpleNamespace(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        self._views = [view_function(p) for p in protocols]
        self._scorers = []
        for member, protocol in zip(members, protocols, strict=True):
            scorer_member = Member(member.arch, member.variables, member.spec)
            self._scorers.append(
                ViewScorer(scorer_member, protocol, member.num_classes, batch_size)
            )

    @classmethod
    def load(cls, name: str, weights: str, *, tta: str = "", scales: str = "",
             batch_size: int = 16, head_spec: str | None = None, resize: int | None = None,
             crop: int | None = None) -> Classifier:  # fmt: skip
        """`weights` as `jaxnets eval --weights` takes them (several: an ensemble); resize and
        crop override the weights' own."""
        from jaxnets_cli.protocols import load_members, override_preprocessing
        from train.data.protocol import parse_protocol

        members = override_preprocessing(load_members(name, weights, head_spec), resize, crop)
        protocols = [
            parse_protocol(tta, scales, m.preprocessing.resize, m.preprocessing.crop)
            for m in members
        ]
        head = members[0].head
        size = members[0].num_classes
        names = ([n[-1] for n in head.names] if head is not None
                 else [f"class {i}" for i in range(size)])  # fmt: skip
        return cls(members, protocols, names, batch_size)

    @property
    def compile_seconds(self) -> float:
        """Time spent compiling the networks so far (once per batch shape)."""
        return sum(scorer.compile_seconds for scorer in self._scorers)

    @property
    def views_per_image(self) -> int:
        return sum(p.views_per_image for p in self.protocols)

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        """(len(images), classes): the members' softmax outputs averaged over their views."""
        total = 0.0
        for views, scorer in zip(self._views, self._scorers, strict=True):
            for start in range(0, len(images), scorer.batch_size):
                chunk = images[start : start + scorer.batch_size]
                made = [{k: v.numpy() for k, v in views(image).items()} for image in chunk]
                scores = scorer(made, self._statistics)
                if start == 0:
                    member = np.zeros((len(images), scores.shape[1]), np.float32)
                member[start : start + len(chunk)] = scores
            total = total + member
        return total / len(self._scorers)

    def predict(self, paths: list[str], k: int = 5) -> list[Prediction]:
        """The top k classes of each file (read_image: unreadable files raise)."""
        probabilities = self.probabilities([read_image(p) for p in paths])
        return [self._top(path, p, k) for path, p in zip(paths, probabilities, strict=True)]

    def _top(self, path: str, probabilities: np.ndarray, k: int) -> Prediction:
        order = np.argsort(-probabilities, kind="stable")[:k]
        return Prediction(path, [self.class_names[i] for i in order], [int(i) for i in order],
                          [float(probabilities[i]) for i in order])  # fmt: skip


def read_image(path: str | Path) -> np.ndarray:
    """An image file as torchvision's default loader reads it: PIL, converted to RGB (uint8
    HWC).

    Raises:
      ValueError: the file is not an image PIL can decode (one line naming it).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f, Image.open(f) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise ValueError(f"{path}: cannot be read as an image (not a format PIL knows)") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or damaged data, unreadable
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: cannot be read as an image ({reason})") from None


def image_paths(inputs: list[str]) -> list[Path]:
    """Files named, and the image files (by extension, sorted) of directories named.

    Raises:
      FileNotFoundError: a path that does not exist.
      ValueError: a directory without one image file.
    """
    paths = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ValueError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
            paths.extend(found)
        elif path.exists():
            paths.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return paths


def run(args) -> int:
    """The command: 0 when every image was read, 1 when some were skipped (each named on
    stderr); one line per image's top-k, or one JSON object per image with --json."""
    import json
    import sys
    import time

    paths = image_paths(args.images)  # a missing path fails before anything loads
    classifier = Classifier.load(
        args.name, args.weights, tta=args.tta, scales=args.scales, batch_size=args.batch_size,
        head_spec=args.head, resize=args.resize, crop=args.crop,
    )  # fmt: skip
    k = min(args.topk, len(classifier.class_names))
    skipped, seconds, done = 0, 0.0, 0
    chunk = max(1, args.batch_size)
    for start in range(0, len(paths), chunk):
        readable, images = [], []
        for path in paths[start : start + chunk]:
            try:
                images.append(read_image(path))
                readable.append(path)
            except ValueError as e:
                print(f"jaxnets predict: skipped {e}", file=sys.stderr)
                skipped += 1
        if not images:
            continue
        began, compiled = time.perf_counter(), classifier.compile_seconds
        probabilities = classifier.probabilities(images)
        seconds += time.perf_counter() - began - (classifier.compile_seconds - compiled)
        done += len(images)
        for path, p in zip(readable, probabilities, strict=True):
            top = classifier._top(str(path), p, k)
            print(json.dumps(dataclasses.asdict(top)) if args.json else _format(top), flush=True)
    rate = f"{done / seconds:.1f} img/s" if seconds else "no images"
    summary = (
        f"{done} images, {len(classifier.protocols)} network(s), protocol "
        f"{classifier.protocols[0].name}, {classifier.views_per_image} view(s) per image, {rate}"
    )
    if skipped:
        summary += f"; {skipped} unreadable file(s) skipped"
    print(summary, file=sys.stderr if args.json else sys.stdout)
    return 1 if skipped else 0


def _format(p: Prediction) -> str:
    lines = [p.path]
    for name, index, probability in zip(p.names, p.indices, p.probabilities, strict=True):
        lines.append(f"  {probability:7.4f}  {name} ({index})")
    return "\n".join(lines)
