"""Training and evaluation data as fixed-shape numpy batches, in a deterministic order.

  arrays.py      in host memory: scikit-learn's digits (no download)
  tfdata.py      tf.data pipelines over image folders and tensorflow-datasets
  preprocess.py  the TensorFlow image operations those pipelines run (torchvision's transforms)
  shard.py       which rows of each global batch a process reads

Every dataset answers the same questions for the training loop: its classes, its image shape,
how many steps make an epoch, and the batches of one epoch from a given step on. Batch b of
epoch e is a pure function of (seed, e, b), so a resumed run reads exactly the batches an
uninterrupted one would.

Each process (one per host in a multi-host run) gets only its own slice of every global batch:
rows [p * local, (p + 1) * local) for process p. Where the order is a global permutation
(digits, folders), N processes therefore train on exactly the batches one process would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from train.config import replicas
from train.data.arrays import InMemoryDataset, load_digits
from train.data.sampler import EpochSampler
from train.data.shard import SINGLE_PROCESS, ProcessShard

__all__ = [
    "SINGLE_PROCESS",
    "Dataset",
    "EpochSampler",
    "InMemoryDataset",
    "ProcessShard",
    "load_dataset",
    "load_digits",
    "load_eval_dataset",
    "normalize_on_host",
]


class Dataset(Protocol):
    """What the training loop, `jaxnets eval` and the parity run ask of a data source.

    Attributes:
      name: the config string it came from.
      class_names: one name per class index.
      image_shape: (height, width, channels) of every training batch's images.
      eval_image_shape: the same of evaluation batches (another size with FixRes).
      sampler: the order of each epoch (a shuffle, or repeated augmentation).
      num_train_examples: size of the training split.
      mean, std: per-channel statistics (0-1 scale) to normalize uint8 batches with, or None
        for sources that deliver normalized floats.
      skipped: {path: reason} of the files left out as unreadable so far.
    """

    name: str
    class_names: list[str]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    skipped: dict[str, str]
    sampler: EpochSampler

    @property
    def num_classes(self) -> int: ...

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    @property
    def eval_image_shape(self) -> tuple[int, int, int]: ...

    @property
    def num_train_examples(self) -> int: ...

    def steps_per_epoch(self, batch_size: int) -> int:
        """Full global batches per epoch (the incomplete last one is dropped)."""
        ...

    def train_batches(
        self, seed: int, epoch: int, start: int, batch_size: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This process's rows of global batches start, start + 1, ... of `epoch`:
        (images, labels), a pure function of (seed, epoch, batch index)."""
        ...

    def eval_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every evaluation example once, in order: (images, labels, mask), the last batch
        zero-padded and masked; the same number of batches on every process."""
        ...


def normalize_on_host(images: np.ndarray, dataset, dtype=np.float32) -> np.ndarray:
    """A dataset's batch as normalized floats on the host: what `jaxnets eval` and `parity`
    feed, identically, to both frameworks (tf.data sources deliver uint8; digits arrive
    normalized). Training normalizes on the device instead (train.steps.normalize)."""
    if dataset.mean is None:
        return images.astype(dtype)
    mean = np.asarray(dataset.mean, np.float32) * 255
    std = np.asarray(dataset.std, np.float32) * 255
    return ((images.astype(np.float32) - mean) / std).astype(dtype)


def needs_tensorflow(config) -> bool:
    """Whether a run of `config` reads its data through tf.data: every dataset but the
    in-memory digits, and a final evaluation under a protocol (its views are TensorFlow ops)."""
    return config.dataset != "digits" or bool(config.eval_tta)


def load_dataset(config, shard: ProcessShard = SINGLE_PROCESS, devices: int = 1):
    """The dataset a config names, reading `shard`'s part of every batch of a run over
    `devices` devices (repeated augmentation deals its copies over config.replicas, else
    over them).

    Raises:
      ValueError: an unknown dataset string, or a missing, empty or unprepared dataset (one
        line naming it).
    """
    kind, _, where = config.dataset.partition(":")
    if config.dataset == "digits":
        if config.augment not in ("none", "pad_crop"):
            raise ValueError(f"config.augment={config.augment!r}: digits supports none, pad_crop")
        if config.auto_augment or config.eval_image_size not in (0, config.image_size):
            key = "auto_augment" if config.auto_augment else "eval_image_size"
            raise ValueError(f"config.{key}: digits are decoded arrays; use its image folder")
        padding = (config.crop_padding or config.image_size // 8) if config.augment != "none" else 0
        dataset = load_digits(config.image_size, padding, shard)
        dataset.sampler = EpochSampler(config.ra_reps, replicas(config, devices))
        return dataset
    if kind not in ("tfds", "folder") or not where:
        raise ValueError(
            f"config.dataset={config.dataset!r}: unknown; expected digits, tfds:NAME[:VERSION] "
            "or folder:PATH"
        )
    from train.data import tfdata

    augmentation = tfdata.Augmentation(
        image_size=config.image_size, train_crop=config.augment,
        crop_padding=config.crop_padding, hflip=config.hflip,
        color_jitter=config.color_jitter, auto_augment=config.auto_augment,
        ra_magnitude=config.ra_magnitude, eval_resize=config.eval_resize,
        eval_image_size=config.eval_image_size,
    )  # fmt: skip
    options = tfdata.PipelineOptions(
        bad_images=config.bad_images, deterministic=config.data_deterministic,
        threads=config.data_threads, shuffle_buffer=config.shuffle_buffer,
    )  # fmt: skip
    if kind == "folder":
        dataset = tfdata.FolderDataset(where, augmentation, options, shard)
    else:
        dataset = tfdata.TfdsDataset(
            where, augmentation, options, shard, data_dir=config.data_dir,
            manual_dir=config.manual_dir, download=config.download,
        )  # fmt: skip
    dataset.sampler = EpochSampler(config.ra_reps, replicas(config, devices))
    return dataset


def load_eval_dataset(spec: str, augmentation, *, data_dir: str = ""):
    """The evaluation split alone of 'folder:PATH' (PATH/val, or PATH itself when it holds the
    class folders), 'tfds:NAME' (validation, else test) or 'digits' (its test split at the
    crop size), for `jaxnets eval`."""
    from train.data import tfdata

    if spec == "digits":
        return load_digits(augmentation.image_size)
    kind, _, where = spec.partition(":")
    options = tfdata.PipelineOptions(bad_images="skip")
    if kind == "folder" and where:
        return tfdata.FolderDataset(where, augmentation, options, eval_only=True)
    if kind == "tfds" and where:
        return tfdata.TfdsDataset(where, augmentation, options, data_dir=data_dir, eval_only=True)
    raise ValueError(f"--data {spec!r}: expected folder:PATH, tfds:NAME[:VERSION] or digits")
