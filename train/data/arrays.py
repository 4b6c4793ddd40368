"""Datasets held in host memory as numpy arrays: scikit-learn's digits, and the batching rules
(fixed shapes, padded and masked evaluation batches) every source follows."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from train.data.sampler import PLAIN_SHUFFLE, EpochSampler
from train.data.shard import SINGLE_PROCESS, ProcessShard


def padded_batches(images, labels, batch_size: int, num_batches: int):
    """(images, labels, mask) batches of exactly batch_size, zero-padded and masked at the end,
    and exactly num_batches of them (every process must run the same number of eval steps)."""
    for start in range(0, num_batches * batch_size, batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        pad = batch_size - len(y)
        mask = np.arange(batch_size) < len(y)
        if pad:
            x = np.concatenate([x, np.zeros((pad, *images.shape[1:]), images.dtype)])
            y = np.concatenate([y, np.zeros(pad, labels.dtype)])
        yield x, y, mask


@dataclasses.dataclass
class InMemoryDataset:
    """Normalized float32 NHWC images and int32 labels, held in host memory.

    Attributes:
      name: the config string it came from.
      class_names: one name per class index.
      train_images, train_labels, eval_images, eval_labels: the two splits.
      pad_crop: if > 0, training images are randomly shifted by up to this many pixels
        (zero padding and crop) and nothing else: the augmentation for tiny images.
      shard: this process's slice of each global batch.
    """

    name: str
    class_names: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    eval_images: np.ndarray
    eval_labels: np.ndarray
    pad_crop: int = 0
    shard: ProcessShard = SINGLE_PROCESS
    sampler: EpochSampler = PLAIN_SHUFFLE  # load_dataset sets the config's
    # Batches are already normalized floats: nothing to do on the device.
    mean = None
    std = None
    skipped: dict = dataclasses.field(default_factory=dict)  # no files, none unreadable

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    @property
    def eval_image_shape(self) -> tuple[int, int, int]:
        return tuple(self.eval_images.shape[1:])

    @property
    def num_train_examples(self) -> int:
        return len(self.train_labels)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Full batches per epoch; the incomplete last batch is dropped (fixed shapes for jit)."""
        return self.sampler.steps_per_epoch(len(self.train_labels), batch_size)

    def train_batches(self, seed: int, epoch: int, start: int, batch_size: int):
        """This process's part of batches start, start + 1, ... of the epoch: (images, labels)."""
        order = self.sampler.order(seed, epoch, len(self.train_labels), batch_size)
        for index in range(start, self.steps_per_epoch(batch_size)):
            take = self.shard.rows(order[index * batch_size : (index + 1) * batch_size], batch_size)
            images = self.train_images[take]
            if self.pad_crop:
                # Drawn for the whole global batch, then sliced: the same on any process count.
                rng = np.random.default_rng([seed, epoch, index])
                shifts = rng.integers(0, 2 * self.pad_crop + 1, size=(2, batch_size))
                shifts = shifts[:, self.shard.rows(np.arange(batch_size), batch_size)]
                images = _random_shift(images, self.pad_crop, shifts)
            yield images, self.train_labels[take]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """All evaluation examples in order, the last batch zero-padded: (images, labels, mask)."""
        num_batches = -(-len(self.eval_labels) // batch_size)
        positions = np.arange(num_batches * batch_size)
        rows = self.shard.rows(positions, batch_size)
        rows = rows[rows < len(self.eval_labels)]
        local = self.shard.local_batch(batch_size)
        return padded_batches(self.eval_images[rows], self.eval_labels[rows], local, num_batches)

    def eval_examples(self, transform):
        """transform(image) and the label of each evaluation image (normalized float HWC at
        its stored size), one at a time, transform's tensors as numpy arrays."""
        for image, label in zip(self.eval_images, self.eval_labels, strict=True):
            yield {key: np.asarray(value) for key, value in transform(image).items()}, label


def _random_shift(images: np.ndarray, pad: int, shifts: np.ndarray) -> np.ndarray:
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy, dx = shifts
    return np.stack([padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def load_digits(image_size: int, pad_crop: int = 0, shard: ProcessShard = SINGLE_PROCESS):
    """scikit-learn's handwritten digits: 1,797 real 8x8 grayscale scans, shipped with the
    package (no download). A fixed stratified 80/20 split; images upscaled bilinearly to
    image_size, replicated to 3 channels and normalized with the training split's statistics.
    pad_crop > 0 shifts training images randomly by up to that many pixels."""
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
        pad_crop=pad_crop,
        shard=shard,
    )
