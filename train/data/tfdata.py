"""tf.data input pipelines for image folders and tensorflow-datasets.

Both sources yield encoded image bytes, a label and the example's position in the epoch; one
shared pipeline decodes and augments them in parallel (AUTOTUNE), batches, and prefetches.
Batches leave as uint8; normalization happens on the device.

Unreadable files (a folder source only: TFDS records are checked when prepared) are dropped
inside tf.data and found afterwards as gaps in the positions that came out, so they can be
reported by path. With `bad_images='error'` the first one stops the run instead, by path.
A class folder none of whose files decode stops it either way, when the dataset is built.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from train.data import autoaugment, preprocess
from train.data.sampler import PLAIN_SHUFFLE, EpochSampler, example_keys, spread_over_devices
from train.data.shard import SINGLE_PROCESS, ProcessShard

# Keep TensorFlow off the accelerators: it is only the input pipeline here.
tf.config.set_visible_devices([], "GPU")

# torchvision's IMG_EXTENSIONS that TensorFlow decodes.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


class DataError(ValueError):
    """A missing, empty or unreadable dataset; the message is one line naming it."""


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """What the training and evaluation pipelines do to each image.

    Attributes:
      image_size: the side of the square model input.
      train_crop: 'random_resized_crop' (ImageNet), 'pad_crop' (CIFAR) or 'none' (resize).
      crop_padding: pad_crop's padding (0: image_size // 8, i.e. 4 at 32 pixels).
      hflip: random horizontal flips in training.
      color_jitter: ColorJitter (brightness, contrast, saturation) strengths, or one for all
        three (0: off).
      auto_augment: torchvision's automatic augmentation after the flip (autoaugment.POLICIES),
        '' for none; ra_magnitude: RandAugment's magnitude.
      eval_resize: 0 resizes evaluation images to the eval crop; N > 0 is torchvision's
        Resize(N) + CenterCrop(eval crop).
      eval_image_size: the evaluation crop (FixRes trains and evaluates at two sizes); 0: the
        training image_size.
      eval_antialias: False resizes evaluation images without antialiasing (to measure it).
    """

    image_size: int
    train_crop: str = "none"
    crop_padding: int = 0
    hflip: bool = False
    color_jitter: float | tuple[float, float, float] = 0.0
    auto_augment: str = ""
    ra_magnitude: int = 9
    eval_resize: int = 0
    eval_image_size: int = 0
    eval_antialias: bool = True

    @property
    def eval_crop(self) -> int:
        return self.eval_image_size or self.image_size

    def train(self, image_bytes, seed):
        crop_seed, flip_seed, jitter_seed, policy_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 4)
        )
        size = self.image_size
        if self.train_crop == "random_resized_crop":
            image = preprocess.decode_random_resized_crop(image_bytes, crop_seed, size)
        elif self.train_crop == "pad_crop":
            padding = self.crop_padding or size // 8
            image = preprocess.decode_image(image_bytes)
            image = preprocess.pad_and_random_crop(image, crop_seed, size, padding)
        else:
            image = preprocess.resize_to(preprocess.decode_image(image_bytes), size)
        if self.hflip:
            image = preprocess.random_flip(image, flip_seed)
        strengths = self.color_jitter
        if isinstance(strengths, int | float):
            strengths = (strengths,) * 3
        if any(strengths):
            image = preprocess.color_jitter(image, jitter_seed, tuple(strengths))
        if self.auto_augment:
            image = autoaugment.apply_policy(
                image, policy_seed, self.auto_augment, magnitude=self.ra_magnitude
            )
        image.set_shape([size, size, 3])
        return image

    def eval_unseeded(self, image_bytes, seed):
        """eval() in the pipelines' transform(bytes, seed) form: evaluation draws nothing."""
        del seed
        return self.eval(image_bytes)

    def eval(self, image_bytes):
        image = preprocess.decode_image(image_bytes)
        crop = self.eval_crop
        if self.eval_resize:
            image = preprocess.resize_shorter_side(image, self.eval_resize, self.eval_antialias)
            image = preprocess.center_crop(image, crop)
        else:
            image = preprocess.resize_to(image, crop)
        image.set_shape([crop, crop, 3])
        return image


@dataclasses.dataclass
class PipelineOptions:
    bad_images: str = "skip"  # or 'error'
    deterministic: bool = True
    threads: int = 0  # tf.data's thread pool; 0: one per core
    shuffle_buffer: int = 16_384  # TFDS only: folders shuffle their whole file list


def example_seeds(run_seed: int, epoch: int, keys):
    """Stateless seeds, one per example key: functions of (run seed, epoch, key) only."""
    base = run_seed * 1_000_003 + epoch
    if isinstance(keys, np.ndarray):
        return np.stack([np.full(len(keys), base, np.int64), keys.astype(np.int64)], axis=-1)
    return tf.stack([tf.constant(base, tf.int64), tf.cast(keys, tf.int64)])


def _options(options: PipelineOptions) -> tf.data.Options:
    tf_options = tf.data.Options()
    tf_options.deterministic = options.deterministic
    if options.threads:
        tf_options.threading.private_threadpool_size = options.threads
    return tf_options


@functools.cache
def _loader(transform):
    """The per-example map of `transform`, traced once and reused by every epoch's pipeline
    (tracing it again with autograph took 0.2 s an epoch for each split)."""

    @tf.function
    def load(example):
        image = transform(example["bytes"], example["seed"])
        return {"image": image, "label": example["label"], "position": example["position"]}

    return load


def build_pipeline(examples, transform, batch_size, options: PipelineOptions, *, drop_errors):
    """examples: a Dataset of {'bytes', 'label', 'position', 'seed'}; transform(bytes, seed) ->
    uint8 image. Returns a Dataset of {'image', 'label', 'position'} batches, where position
    counts the examples in order (a missing one was dropped as unreadable)."""
    ds = examples.map(_loader(transform), num_parallel_calls=tf.data.AUTOTUNE)
    if drop_errors:
        ds = ds.ignore_errors()
    ds = ds.batch(batch_size, drop_remainder=False)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(options))


class _TfDataset:
    """What folder and TFDS sources share: the epoch iterators and the bad-image bookkeeping."""

    name: str
    class_names: list[str]
    augmentation: Augmentation
    options: PipelineOptions
    shard: ProcessShard
    sampler: EpochSampler = PLAIN_SHUFFLE  # load_dataset sets the config's
    mean = preprocess.IMAGENET_MEAN
    std = preprocess.IMAGENET_STD

    def __init__(self):
        self.skipped: dict[str, str] = {}  # path -> where it was met

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        size = self.augmentation.image_size
        return (size, size, 3)

    @property
    def eval_image_shape(self) -> tuple[int, int, int]:
        size = self.augmentation.eval_crop
        return (size, size, 3)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.sampler.steps_per_epoch(self.num_train_examples, batch_size)

    def _drain(self, batches, batch_size, *, paths=None, count, keep_partial=False, ordered=True):
        """Yields `count` batches ({'image', 'label', 'position'}) of exactly batch_size rows,
        re-chunking batches shortened by dropped files and recording the dropped `paths`;
        keep_partial yields the short remainder at the end (evaluation pads it). Gaps name
        dropped files only when the pipeline keeps its order (`ordered`)."""
        if paths is not None and ordered:
            batches = self._record_gaps(batches, paths)
        produced = 0
        try:
            for batch in _rechunk(batches, batch_size, keep_partial) if count > 0 else ():
                yield batch
                produced += 1
                if produced == count:
                    return  # before reading further: the pipeline may hold more
        except tf.errors.OpError as e:
            if paths is None:
                raise
            raise _unreadable_image_error(e, paths) from None
        if not keep_partial and produced < count:
            raise DataError(
                f"{self.name}: ran out of readable training images ({len(self.skipped)} "
                "unreadable files skipped)"
            )

    def _record_gaps(self, batches, paths):
        """Passes ordered batches through, recording as skipped the files whose positions are
        missing: those tf.data dropped as undecodable."""
        expected = 0
        for batch in batches:
            seen = batch["position"]
            for position in np.setdiff1d(np.arange(expected, seen.max() + 1), seen):
                self.skipped.setdefault(str(paths[position]), "cannot be decoded as an image")
            expected = seen.max() + 1
            yield batch
        # Run to its end: files dropped last have no batch after them to show their gap.
        for position in range(expected, len(paths)):
            self.skipped.setdefault(str(paths[position]), "cannot be decoded as an image")

    def _one_by_one(self, examples, transform, *, paths=None, drop_errors=False):
        """(transform(decoded image), label) per example, in order: for evaluations whose
        per-image outputs differ in shape between images (train/tta.py)."""
        batches = build_pipeline(
            examples, lambda image_bytes, seed: transform(preprocess.decode_image(image_bytes)),
            1, dataclasses.replace(self.options, deterministic=True), drop_errors=drop_errors,
        ).as_numpy_iterator()  # fmt: skip
        count = len(paths) if paths is not None else self.num_eval_examples
        for batch in self._drain(batches, 1, paths=paths, count=count, keep_partial=True):
            yield {key: value[0] for key, value in batch["image"].items()}, batch["label"][0]


def _rechunk(batches, batch_size: int, keep_partial: bool):
    """Batches of exactly batch_size rows out of batches that dropped files left short, and
    with keep_partial the short remainder last."""
    buffer = []
    for batch in batches:
        if not buffer and len(batch["label"]) == batch_size:
            yield batch  # the common case: no copy
            continue
        buffer.append(batch)
        merged = {k: np.concatenate([b[k] for b in buffer]) for k in batch}
        while len(merged["label"]) >= batch_size:
            yield {k: v[:batch_size] for k, v in merged.items()}
            merged = {k: v[batch_size:] for k, v in merged.items()}
        buffer = [merged] if len(merged["label"]) else []
    if keep_partial and buffer:
        yield buffer[0]


def _unreadable_image_error(error, paths) -> DataError:
    """The pipeline stopped (bad_images='error'): find the first file that fails to decode."""
    bad = find_unreadable(paths)
    if not bad:
        return DataError(f"input pipeline failed: {str(error).splitlines()[0]}")
    path, reason = next(iter(bad.items()))
    return DataError(
        f"unreadable image {path} ({reason}); {len(bad)} such file(s) in this shard: remove "
        "them or set config.bad_images='skip'"
    )


def find_unreadable(paths, threads: int = 0) -> dict[str, str]:
    """Fully decodes every file; returns {path: reason} for those that fail, in order."""
    ds = tf.data.Dataset.from_tensor_slices({"path": [str(p) for p in paths],
                                             "position": np.arange(len(paths))})  # fmt: skip
    ds = ds.map(
        lambda e: {"ok": tf.size(preprocess.decode_image(tf.io.read_file(e["path"]))) > 0,
                   "position": e["position"]},
        num_parallel_calls=tf.data.AUTOTUNE,
    )  # fmt: skip
    ds = ds.ignore_errors().batch(1024).with_options(_options(PipelineOptions(threads=threads)))
    seen = np.concatenate([b["position"] for b in ds.as_numpy_iterator()] or [np.zeros(0, int)])
    bad = np.setdiff1d(np.arange(len(paths)), seen)
    return {str(paths[i]): "cannot be decoded as an image" for i in bad}


def find_unreadable_classes(classes: dict, threads: int = 0) -> tuple[dict, dict[str, str]]:
    """Decodes each class folder's files in order until one decodes: every class in the same
    pass, in rounds of 1, 2, 4, ... files per class still without a readable one. About one
    decode per class when the files are sound, all of them only in a class that has none.

    Args:
      classes: {class folder: its file paths}.

    Returns:
      ({class folder: number of files} for the classes none of whose files decode, in the
       order of `classes`; {path: reason} for the unreadable files met on the way).
    """
    unreadable, hopeless = {}, {}
    pending, start, width = dict(classes), 0, 1
    while pending:
        probe = {folder: list(paths[start : start + width]) for folder, paths in pending.items()}
        found = find_unreadable([p for paths in probe.values() for p in paths], threads)
        unreadable.update(found)
        start, width = start + width, 2 * width
        for folder, paths in probe.items():
            if any(str(p) not in found for p in paths):
                del pending[folder]  # one readable file is enough
            elif start >= len(pending[folder]):
                hopeless[folder] = len(pending.pop(folder))
    return {folder: hopeless[folder] for folder in classes if folder in hopeless}, unreadable


# ----------------------------------------------------------------------------------------------
# Image folders: torchvision's ImageFolder layout.


def scan_image_folder(root: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Classes (sorted subfolder names, as torchvision's find_classes), file paths, labels, and
    the files ignored for their extension.

    Raises:
      DataError: a missing folder, no class folders, or a class folder without images.
    """
    if not root.is_dir():
        raise DataError(f"{root}: no such directory")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise DataError(f"{root}: no class subfolders (expected {root}/CLASS/IMAGE.jpg)")
    paths, labels, ignored = [], [], []
    for label, name in enumerate(classes):
        files = sorted(
            os.path.join(dirpath, f)
            for dirpath, _, filenames in os.walk(root / name, followlinks=True)
            for f in filenames
        )
        images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
        ignored += [f for f in files if not f.lower().endswith(IMAGE_EXTENSIONS)]
        if not images:
            raise DataError(
                f"{root / name}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        paths += images
        labels += [label] * len(images)
    return classes, np.array(paths), np.array(labels, np.int32), ignored


class FolderDataset(_TfDataset):
    """`root/train/CLASS/*.jpg` and `root/val/CLASS/*.jpg`, as torchvision's ImageFolder.

    The training order is a permutation of the whole file list per (seed, epoch), so N
    processes read exactly the global batches one process would.
    """

    def __init__(self, root, augmentation, options, shard=SINGLE_PROCESS, eval_only=False):
        super().__init__()
        root = Path(root)
        self.name = f"folder:{root}"
        self.augmentation, self.options, self.shard = augmentation, options, shard
        if not root.is_dir():
            raise DataError(f"{root}: no such directory")
        if eval_only:  # root/val, or root itself when it holds the class folders
            eval_root = root / "val" if (root / "val").is_dir() else root
            self.class_names, self.eval_paths, self.eval_labels, ignored = scan_image_folder(
                eval_root
            )
            self.train_paths, self.train_labels = np.array([], str), np.array([], np.int32)
            self.skipped.update(dict.fromkeys(ignored, "not an image file extension"))
            self._check_every_class_readable([(eval_root, self.eval_paths, self.eval_labels)])
            return
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise DataError(f"{root}: no {split}/ subfolder (expected {root}/{split}/CLASS/*)")
        self.class_names, self.train_paths, self.train_labels, ignored = scan_image_folder(
            root / "train"
        )
        eval_classes, self.eval_paths, self.eval_labels, ignored_eval = scan_image_folder(
            root / "val"
        )
        if eval_classes != self.class_names:
            raise DataError(
                f"{root}: val/ classes differ from train/ classes: "
                f"{sorted(set(eval_classes) ^ set(self.class_names))[:5]}"
            )
        for path in ignored + ignored_eval:
            self.skipped[path] = "not an image file extension"
        self._check_every_class_readable([
            (root / "train", self.train_paths, self.train_labels),
            (root / "val", self.eval_paths, self.eval_labels),
        ])  # fmt: skip

    def _check_every_class_readable(self, splits) -> None:
        """Stops at once, in one line, when a class folder's files all fail to decode: such a
        class would train on nothing (and be scored on nothing), with only the list of skipped
        files at the end to say so. The pipelines learn which files are unreadable only while
        they run an epoch; this probe decodes about one file per class folder before anything
        compiles (2,000 for ImageNet's train/ and val/, about 1.5 s) instead of a pass.

        Args:
          splits: (split folder, paths, labels) of each split.

        Raises:
          DataError: naming the first such class folder and how many files it holds.
        """
        classes = {
            split / name: paths[labels == label]
            for split, paths, labels in splits
            for label, name in enumerate(self.class_names)
        }
        hopeless, unreadable = find_unreadable_classes(classes, self.options.threads)
        if hopeless:
            folder, count = next(iter(hopeless.items()))
            others = len(hopeless) - 1
            more = f"; {others} more class folders have none either" if others else ""
            raise DataError(
                f"{folder}: class '{folder.name}' has no readable images (all {count} files "
                f"cannot be decoded{more}); remove the folder or fix the files"
            )
        if self.options.bad_images == "skip":  # known now: listed even if no epoch reaches them
            self.skipped.update(unreadable)

    @property
    def num_train_examples(self) -> int:
        return len(self.train_labels)

    @staticmethod
    def _examples(paths, labels, seeds):
        ds = tf.data.Dataset.from_tensor_slices(
            {"path": paths, "label": labels, "position": np.arange(len(paths)), "seed": seeds}
        )
        return ds.map(
            lambda e: {**e, "bytes": tf.io.read_file(e["path"])},
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def train_batches(self, seed: int, epoch: int, start: int, batch_size: int):
        steps = self.steps_per_epoch(batch_size)
        n = len(self.train_labels)
        order = self.sampler.order(seed, epoch, n, batch_size)
        # Seeds follow the file (and which copy of it, with repeated augmentation), not the
        # process or position: any process count and a resumed run augment each example of a
        # global batch the same way.
        keys = self.shard.rows(example_keys(order, n), batch_size)
        rows = self.shard.rows(order, batch_size)
        local = self.shard.local_batch(batch_size)
        rows, keys = rows[start * local :], keys[start * local :]
        # Unreadable files are refilled from the rest of the permutation, then from the start.
        shuffled = np.random.default_rng([seed, epoch]).permutation(n)
        spare = np.concatenate([shuffled[steps * batch_size :], shuffled])
        spare = spare[self.shard.index :: self.shard.count]
        rows = np.concatenate([rows, spare])
        seeds = example_seeds(seed, epoch, np.concatenate([keys, spare]))
        batches = build_pipeline(
            self._examples(self.train_paths[rows], self.train_labels[rows], seeds),
            self.augmentation.train, local, self.options,
            drop_errors=self.options.bad_images == "skip",
        ).as_numpy_iterator()  # fmt: skip
        for batch in self._drain(
            batches,
            local,
            paths=self.train_paths[rows],
            count=steps - start,
            ordered=self.options.deterministic,
        ):
            yield batch["image"], batch["label"]

    def eval_batches(self, batch_size: int):
        n = len(self.eval_labels)
        num_batches = -(-n // batch_size)
        rows = self.shard.rows(np.arange(num_batches * batch_size), batch_size)
        rows = rows[rows < n]
        local = self.shard.local_batch(batch_size)
        no_seeds = np.zeros((len(rows), 2), np.int64)  # evaluation is not random
        batches = build_pipeline(
            self._examples(self.eval_paths[rows], self.eval_labels[rows], no_seeds),
            self.augmentation.eval_unseeded, local,
            dataclasses.replace(self.options, deterministic=True),
            drop_errors=self.options.bad_images == "skip",
        ).as_numpy_iterator()  # fmt: skip
        drained = self._drain(
            batches, local, paths=self.eval_paths[rows], count=num_batches, keep_partial=True
        )
        return _pad_eval(drained, local, num_batches, self.eval_image_shape)

    def eval_examples(self, transform):
        """transform(image) and the label of each readable evaluation image, one at a time
        (the image decoded, uint8 HWC, not resized); a single process reads them all."""
        no_seeds = np.zeros((len(self.eval_labels), 2), np.int64)
        examples = self._examples(self.eval_paths, self.eval_labels, no_seeds)
        return self._one_by_one(examples, transform, paths=self.eval_paths,
                                drop_errors=self.options.bad_images == "skip")  # fmt: skip


def _pad_eval(batches, local: int, num_batches: int, image_shape):
    """Exactly num_batches (images, labels, mask) batches of `local` rows on every process."""
    produced = 0
    for batch in batches:
        n = len(batch["label"])
        mask = np.arange(local) < n
        images = np.zeros((local, *image_shape), np.uint8)
        labels = np.zeros(local, np.int32)
        images[:n], labels[:n] = batch["image"], batch["label"]
        produced += 1
        yield images, labels, mask
    for _ in range(num_batches - produced):
        yield (np.zeros((local, *image_shape), np.uint8), np.zeros(local, np.int32),
               np.zeros(local, bool))  # fmt: skip


# ----------------------------------------------------------------------------------------------
# tensorflow-datasets.

MANUAL_DOWNLOAD_HELP = {
    "imagenet2012": (
        "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org into "
        "{manual_dir}, then run again (preparing takes hours and ~150 GB)"
    ),
}


class TfdsDataset(_TfDataset):
    """Any TFDS image-classification dataset: 'tfds:NAME' or 'tfds:NAME:VERSION'.

    Training reads this process's even share of the train split (tfds.even_splits by process
    index), shuffles files and a buffer with seeds from (seed, epoch, process), and skips to the
    resume position before decoding.
    """

    def __init__(self, spec, augmentation, options, shard=SINGLE_PROCESS, *, data_dir=None,
                 manual_dir=None, download=True, eval_only=False):  # fmt: skip
        super().__init__()
        import tensorflow_datasets as tfds

        name, _, version = spec.partition(":")
        self.name = f"tfds:{spec}"
        self.augmentation, self.options, self.shard = augmentation, options, shard
        try:
            self.builder = tfds.builder(f"{name}:{version}" if version else name,
                                        data_dir=data_dir or None)  # fmt: skip
        except Exception as e:  # tfds raises DatasetNotFoundError and others
            raise DataError(f"tfds:{spec}: {str(e).splitlines()[0]}") from None
        if not self.builder.is_prepared():
            self._prepare(spec, name, manual_dir, download)
        info = self.builder.info
        image_key = [k for k, f in info.features.items() if isinstance(f, tfds.features.Image)]
        if "label" not in info.features or not image_key:
            raise DataError(f"tfds:{spec}: not an image classification dataset (image, label)")
        self.image_key = image_key[0]
        self.class_names = list(info.features["label"].names)
        splits = info.splits
        self.eval_split = next((s for s in ("validation", "test") if s in splits), None)
        if self.eval_split is None or ("train" not in splits and not eval_only):
            raise DataError(f"tfds:{spec}: needs a train and a validation or test split")
        self.num_eval_examples = splits[self.eval_split].num_examples
        self.num_train_examples = 0
        if "train" in splits:
            self.train_shard = tfds.even_splits("train", n=shard.count, drop_remainder=True)[
                shard.index
            ]
            self.num_train_examples = splits["train"].num_examples // shard.count * shard.count

    def _prepare(self, spec, name, manual_dir, download):
        import tensorflow_datasets as tfds

        data_dir = self.builder.data_dir
        if not download:
            raise DataError(f"tfds:{spec} is not prepared in {data_dir} (config.download=False)")
        # TFDS's own default: DATA_DIR/downloads/manual (data_dir is DATA_DIR/NAME/VERSION).
        manual_dir = manual_dir or str(Path(data_dir).parents[1] / "downloads" / "manual")
        try:
            self.builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
            )
        except Exception as e:
            hint = MANUAL_DOWNLOAD_HELP.get(name, "check the network or config.data_dir")
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(
                f"tfds:{spec} is not prepared in {data_dir} and preparing it failed "
                f"({first[:200]}): {hint.format(manual_dir=manual_dir)}"
            ) from None

    def _read(self, split, shuffle_seed=None, seed=0, epoch=0, offset=0):
        import tensorflow_datasets as tfds

        read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, options=_options(self.options))
        ds = self.builder.as_dataset(
            split=split, shuffle_files=shuffle_seed is not None, read_config=read_config,
            decoders={self.image_key: tfds.decode.SkipDecoding()},
        )  # fmt: skip
        return ds.enumerate().map(
            lambda i, e: {"bytes": e[self.image_key], "label": tf.cast(e["label"], tf.int32),
                          "position": i, "seed": example_seeds(seed, epoch, i + offset)}
        )  # fmt: skip

    def train_batches(self, seed: int, epoch: int, start: int, batch_size: int):
        steps = self.steps_per_epoch(batch_size)
        local = self.shard.local_batch(batch_size)
        epoch_seed = zlib.crc32(f"{seed}/{epoch}/{self.shard.index}".encode())
        ds = self._read(self.train_shard, epoch_seed, seed, epoch, offset=self.shard.index << 40)
        ds = ds.shuffle(self.options.shuffle_buffer, seed=epoch_seed)
        reps = self.sampler.ra_reps
        if reps:  # each example reps times in a row, each copy with a seed of its own
            ds = ds.flat_map(lambda e: tf.data.Dataset.from_tensors(e).repeat(reps))
            ds = ds.enumerate().map(
                lambda i, e: {
                    **e,
                    "seed": e["seed"] + tf.stack([tf.constant(0, tf.int64), i % reps * 2**48]),
                }
            )
        ds = ds.skip(start * local)  # before decoding: resuming costs reads, not decodes
        batches = build_pipeline(
            ds, self.augmentation.train, local, self.options, drop_errors=False
        ).as_numpy_iterator()
        rows = np.arange(local)
        if reps:  # the copies go to different devices, as RASampler deals them over ranks
            rows = spread_over_devices(local, self.sampler.replicas // self.shard.count)
        for batch in self._drain(batches, local, count=steps - start):
            yield batch["image"][rows], batch["label"][rows]

    def eval_batches(self, batch_size: int):
        import tensorflow_datasets as tfds

        local = self.shard.local_batch(batch_size)
        split = tfds.even_splits(self.eval_split, n=self.shard.count)[self.shard.index]
        largest = -(-self.num_eval_examples // self.shard.count)
        num_batches = -(-largest // local)
        batches = build_pipeline(
            self._read(split), self.augmentation.eval_unseeded, local,
            dataclasses.replace(self.options, deterministic=True), drop_errors=False,
        ).as_numpy_iterator()  # fmt: skip
        return _pad_eval(
            self._drain(batches, local, count=num_batches, keep_partial=True), local, num_batches,
            self.eval_image_shape,
        )  # fmt: skip

    def eval_examples(self, transform):
        """transform(image) and the label of each evaluation example, one at a time (the
        image decoded, uint8 HWC, not resized); a single process reads them all."""
        return self._one_by_one(self._read(self.eval_split), transform)
