"""Training and evaluation data as fixed-shape numpy batches, in a deterministic order.

The order of epoch e is a permutation drawn from (seed, e), and batch b of that epoch is a pure
function of (seed, e, b): a resumed run reads exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np


@dataclasses.dataclass
class InMemoryDataset:
    """Normalized float32 NHWC images and int32 labels, held in host memory.

    Attributes:
      name: the config string it came from.
      class_names: one name per class index.
      train_images, train_labels, eval_images, eval_labels: the two splits.
      pad_crop: if > 0, training images are randomly shifted by up to this many pixels
        (zero padding and crop) and nothing else: the augmentation for tiny images.
    """

    name: str
    class_names: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    eval_images: np.ndarray
    eval_labels: np.ndarray
    pad_crop: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    def steps_per_epoch(self, batch_size: int) -> int:
        """Full batches per epoch; the incomplete last batch is dropped (fixed shapes for jit)."""
        return len(self.train_labels) // batch_size

    def train_batch(self, seed: int, epoch: int, index: int, batch_size: int):
        """Batch `index` of epoch `epoch`: (images, labels)."""
        order = np.random.default_rng([seed, epoch]).permutation(len(self.train_labels))
        take = order[index * batch_size : (index + 1) * batch_size]
        images = self.train_images[take]
        if self.pad_crop:
            images = _random_shift(
                images, self.pad_crop, np.random.default_rng([seed, epoch, index])
            )
        return images, self.train_labels[take]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """All evaluation examples in order, the last batch zero-padded: (images, labels, mask)."""
        n = len(self.eval_labels)
        for start in range(0, n, batch_size):
            images = self.eval_images[start : start + batch_size]
            labels = self.eval_labels[start : start + batch_size]
            mask = np.ones(len(labels), bool)
            pad = batch_size - len(labels)
            if pad:
                images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
                labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
                mask = np.concatenate([mask, np.zeros(pad, bool)])
            yield images, labels, mask


def _random_shift(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
    return np.stack([padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def load_digits(image_size: int, augment: bool) -> InMemoryDataset:
    """scikit-learn's handwritten digits: 1,797 real 8x8 grayscale scans, shipped with the
    package (no download). A fixed stratified 80/20 split; images upscaled bilinearly to
    image_size, replicated to 3 channels and normalized with the training split's statistics."""
    from PIL import Image
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = (digits.images / 16.0 * 255.0).astype(np.uint8)
    resized = (
        np.stack(
            [
                np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BILINEAR))
                for im in images
            ]
        ).astype(np.float32)[..., None]
        / 255.0
    )
    resized = np.repeat(resized, 3, axis=-1)
    labels = digits.target.astype(np.int32)
    train_x, eval_x, train_y, eval_y = train_test_split(
        resized, labels, test_size=0.2, stratify=labels, random_state=0
    )
    mean, std = train_x.mean(), train_x.std()
    return InMemoryDataset(
        name="digits",
        class_names=[str(d) for d in range(10)],
        train_images=(train_x - mean) / std,
        train_labels=train_y,
        eval_images=(eval_x - mean) / std,
        eval_labels=eval_y,
        pad_crop=max(image_size // 16, 1) if augment else 0,
    )


def load_dataset(config) -> InMemoryDataset:
    """The dataset a config names.

    Raises:
      ValueError: an unknown dataset string (one line).
    """
    if config.dataset == "digits":
        return load_digits(config.image_size, config.augment)
    kind = config.dataset.split(":", 1)[0]
    if kind in ("tfds", "folder"):
        raise ValueError(
            f"config.dataset={config.dataset!r}: the {kind} input pipeline is not part of this "
            "release yet (see the README's status); use 'digits'"
        )
    raise ValueError(
        f"config.dataset={config.dataset!r}: unknown; expected digits, tfds:NAME or folder:PATH"
    )
