"""The input pipelines: torchvision-equivalent preprocessing, image folders (including broken
ones), TFDS datasets in TFDS's on-disk format, deterministic order, resume and process shards."""

import io
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf  # conftest has imported torchvision first (PORTING.md)
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from conftest import CIFAR_CLASSES, REPO
from PIL import Image

from train import data
from train.config import base_config
from train.data import ProcessShard, preprocess, tfdata


def config_for(dataset, **overrides):
    config = base_config().unlock()
    config.dataset = dataset
    config.update(overrides)
    return config


def take_all(iterator):
    return [tuple(np.copy(a) for a in batch) for batch in iterator]


# ----------------------------------------------------------------------------------------------
# Preprocessing against torchvision.


def test_random_resized_crop_draws_like_torchvision():
    height, width, n = 375, 500, 3000
    windows = np.stack([
        np.array([int(v) for v in preprocess.random_resized_crop_window(
            tf.constant([7, i], tf.int64), height, width)])
        for i in range(n)
    ])  # fmt: skip
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    reference = np.array(
        [T.RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(n)]
    )
    for boxes in (windows, reference):
        top, left, h, w = boxes.T
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + h <= height).all() and (left + w <= width).all()
    area = lambda b: b[:, 2] * b[:, 3] / (height * width)
    log_ratio = lambda b: np.log(b[:, 3] / b[:, 2])
    for statistic in (area, log_ratio):
        ours, theirs = statistic(windows), statistic(reference)
        assert np.quantile(ours, [0.1, 0.5, 0.9]) == pytest.approx(
            np.quantile(theirs, [0.1, 0.5, 0.9]), abs=0.04
        )
    # No draw fits a 10x1000 strip: torchvision's fallback, a centre crop with the ratio clamped.
    strip = torch.zeros(3, 10, 1000)
    expected = T.RandomResizedCrop.get_params(strip, (0.08, 1.0), (3 / 4, 4 / 3))
    got = preprocess.random_resized_crop_window(tf.constant([0, 0], tf.int64), 10, 1000)
    assert tuple(int(v) for v in got) == tuple(expected)


def test_eval_resize_and_center_crop_match_torchvision(image_folder):
    """Resize(256, antialias) + CenterCrop(224) on the same decoded pixels: torchvision on a
    uint8 tensor vs our TF ops. The residual is rounding inside the two resamplers."""
    augmentation = tfdata.Augmentation(image_size=224, eval_resize=256)
    reference = T.Compose([T.Resize(256, antialias=True), T.CenterCrop(224)])
    for path in sorted((image_folder / "val").rglob("*.jpg"))[:4]:
        image_bytes = path.read_bytes()
        decoded = preprocess.decode_image(image_bytes).numpy()
        # libjpeg builds differ in chroma upsampling by a grey level or two: compare resizes
        # on the same decoded pixels.
        pil = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
        assert np.abs(decoded - pil).mean() < 1.0
        ours = augmentation.eval(tf.constant(image_bytes)).numpy().astype(np.int16)
        theirs = reference(torch.from_numpy(decoded).permute(2, 0, 1)).permute(1, 2, 0).numpy()
        diff = np.abs(ours - theirs.astype(np.int16))
        assert ours.shape == (224, 224, 3)
        assert diff.mean() < 0.3 and diff.max() <= 1, (diff.mean(), diff.max())


def test_resize_shorter_side_sizes_like_torchvision():
    for h, w in [(375, 500), (500, 375), (333, 999), (256, 256), (100, 257)]:
        image = tf.zeros((h, w, 3), tf.uint8)
        got = tuple(preprocess.resize_shorter_side(image, 256).shape[:2])
        assert got == tuple(TF.resize(torch.zeros(3, h, w), [256]).shape[1:]), (h, w)
    small = preprocess.center_crop(tf.ones((100, 150, 3), tf.uint8), 224)
    expected = TF.center_crop(torch.ones(3, 100, 150, dtype=torch.uint8), [224])
    assert np.array_equal(small.numpy(), expected.permute(1, 2, 0).numpy())


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation"])
def test_color_adjustments_match_torchvision_uint8(image_folder, name):
    path = next((image_folder / "train").rglob("*.jpg"))
    image = np.array(Image.open(path).convert("RGB"))[:64, :64]
    ours_fn = getattr(preprocess, f"adjust_{name}")
    theirs_fn = getattr(TF, f"adjust_{name}")
    for factor in (0.6, 1.4):
        ours = ours_fn(tf.constant(image, tf.float32), factor).numpy()
        theirs = theirs_fn(torch.from_numpy(image).permute(2, 0, 1), factor).permute(1, 2, 0)
        assert np.abs(ours - theirs.numpy()).max() <= 1


def test_color_jitter_of_zero_strength_leaves_that_adjustment_out(image_folder):
    """ColorJitter(0.2, 0.2) has no saturation: a strength of 0 is a factor of exactly 1."""
    path = next((image_folder / "train").rglob("*.jpg"))
    image = tf.constant(np.array(Image.open(path).convert("RGB"))[:32, :32])
    seed = tf.constant([1, 2], tf.int64)
    unchanged = preprocess.color_jitter(image, seed, (0.0, 0.0, 0.0)).numpy()
    np.testing.assert_array_equal(unchanged, image.numpy())
    jittered = preprocess.color_jitter(image, seed, (0.2, 0.2, 0.0)).numpy()
    assert not np.array_equal(jittered, image.numpy())


def test_training_augmentations_are_pure_functions_of_the_seed(image_folder):
    image_bytes = tf.constant(next((image_folder / "train").rglob("*.jpg")).read_bytes())
    for crop, extra in [("random_resized_crop", {}), ("pad_crop", {}), ("none", {})]:
        augmentation = tfdata.Augmentation(
            image_size=48, train_crop=crop, hflip=True, color_jitter=0.4, **extra
        )
        seed = tf.constant([3, 5], tf.int64)
        first = augmentation.train(image_bytes, seed).numpy()
        assert first.shape == (48, 48, 3) and first.dtype == np.uint8
        assert np.array_equal(first, augmentation.train(image_bytes, seed).numpy())
        if crop != "none":
            other = augmentation.train(image_bytes, tf.constant([3, 6], tf.int64)).numpy()
            assert not np.array_equal(first, other)


# ----------------------------------------------------------------------------------------------
# Image folders.


def folder_config(root, **overrides):
    return config_for(f"folder:{root}", image_size=32, augment="random_resized_crop",
                      hflip=True, eval_resize=36, **overrides)  # fmt: skip


def test_folder_order_is_deterministic_resumable_and_sharded(image_folder):
    dataset = data.load_dataset(folder_config(image_folder))
    assert dataset.class_names == ["class_00", "class_01", "class_02", "class_03"]
    assert dataset.num_train_examples == 32 and dataset.steps_per_epoch(8) == 4
    epoch0 = take_all(dataset.train_batches(seed=0, epoch=0, start=0, batch_size=8))
    assert len(epoch0) == 4
    images = epoch0[0][0]
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.uint8
    assert sorted(np.concatenate([b[1] for b in epoch0]).tolist()) == sorted([0, 1, 2, 3] * 8)
    again = take_all(dataset.train_batches(seed=0, epoch=0, start=0, batch_size=8))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(epoch0, again, strict=True))
    resumed = take_all(dataset.train_batches(seed=0, epoch=0, start=2, batch_size=8))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(epoch0[2:], resumed, strict=True))
    epoch1 = take_all(dataset.train_batches(seed=0, epoch=1, start=0, batch_size=8))
    assert not np.array_equal(epoch0[0][0], epoch1[0][0])
    # Two processes read disjoint halves of each global batch, which together are the batch.
    halves = [
        take_all(data.load_dataset(folder_config(image_folder), ProcessShard(p, 2))
                 .train_batches(seed=0, epoch=0, start=0, batch_size=8))
        for p in (0, 1)
    ]  # fmt: skip
    for whole, first, second in zip(epoch0, *halves, strict=True):
        assert np.array_equal(whole[0], np.concatenate([first[0], second[0]]))
        assert np.array_equal(whole[1], np.concatenate([first[1], second[1]]))


def test_folder_eval_batches_are_padded_and_equal_across_processes(image_folder):
    dataset = data.load_dataset(folder_config(image_folder))
    batches = take_all(dataset.eval_batches(5))
    assert len(batches) == 3 and [int(m.sum()) for *_, m in batches] == [5, 5, 2]
    labels = np.concatenate([y[m] for _, y, m in batches])
    assert labels.tolist() == sorted([0, 1, 2, 3] * 3)
    shards = [
        take_all(data.load_dataset(folder_config(image_folder), ProcessShard(p, 2))
                 .eval_batches(6))
        for p in (0, 1)
    ]  # fmt: skip
    assert len(shards[0]) == len(shards[1]) == 2  # every process runs the same eval steps
    whole = take_all(dataset.eval_batches(6))
    for i in range(2):
        assert np.array_equal(whole[i][0], np.concatenate([shards[0][i][0], shards[1][i][0]]))


def test_unreadable_files_are_skipped_and_reported_by_path(broken_folder):
    dataset = data.load_dataset(folder_config(broken_folder))
    assert dataset.num_train_examples == 33  # the corrupt .jpg is listed, the .txt is not
    epoch = take_all(dataset.train_batches(seed=0, epoch=0, start=0, batch_size=8))
    assert len(epoch) == 4 and all(len(labels) == 8 for _, labels in epoch)  # refilled
    evaluated = take_all(dataset.eval_batches(8))
    assert sum(int(m.sum()) for *_, m in evaluated) == 12  # 13 files, the truncated one dropped
    skipped = dataset.skipped
    assert str(broken_folder / "train" / "class_02" / "notes.txt") in skipped
    assert str(broken_folder / "val" / "class_00" / "zz_truncated.jpg") in skipped
    corrupt = str(broken_folder / "train" / "class_01" / "zz_corrupt.jpg")
    if corrupt not in skipped:  # the epoch's 32 of 33 files may not have reached it
        take_all(dataset.train_batches(seed=0, epoch=1, start=0, batch_size=8))
        take_all(dataset.train_batches(seed=0, epoch=2, start=0, batch_size=8))
    assert corrupt in skipped


def test_unreadable_files_at_the_end_of_the_split_are_reported(cut_jpeg_folder):
    # The last file of val/ alone makes the last batch of 4: dropped, it leaves no batch behind.
    last = cut_jpeg_folder / "val" / "class_03" / "zz_last.jpg"
    last.write_bytes(b"junk")
    dataset = data.load_dataset(folder_config(cut_jpeg_folder))
    evaluated = take_all(dataset.eval_batches(4))
    assert sum(int(m.sum()) for *_, m in evaluated) == 12  # 14 files, 2 unreadable
    assert str(last) in dataset.skipped
    assert str(cut_jpeg_folder / "val" / "class_00" / "zz_cut_header.jpg") in dataset.skipped


def test_unreadable_file_stops_the_run_by_path_in_error_mode(broken_folder):
    dataset = data.load_dataset(folder_config(broken_folder, bad_images="error"))
    with pytest.raises(tfdata.DataError, match=r"unreadable image .*zz_truncated\.jpg") as error:
        take_all(dataset.eval_batches(8))
    assert "\n" not in str(error.value)


# What TensorFlow's libjpeg prints for a cut-short or damaged JPEG (jerror.h's messages).
LIBJPEG_LINE = re.compile(r"JPEG|Input file read error|marker|Bogus|Premature end")

DECODE_IN_A_FRESH_PROCESS = r"""
import sys

import tensorflow as tf

from train import data
from train.config import base_config
from train.data import tfdata

root = sys.argv[1]
print("=== tf.io.decode_image alone", file=sys.stderr, flush=True)
try:
    tf.io.decode_image(open(f"{root}/train/class_01/zz_cut_header.jpg", "rb").read())
except tf.errors.InvalidArgumentError:
    pass
print("=== the pipelines", file=sys.stderr, flush=True)


def config(bad_images):
    config = base_config().unlock()
    config.update(dataset=f"folder:{root}", image_size=32, augment="random_resized_crop",
                  eval_resize=36, bad_images=bad_images)
    return config


dataset = data.load_dataset(config("skip"))
for epoch in range(2):
    list(dataset.train_batches(0, epoch, 0, 8))
list(dataset.eval_batches(8))
augmentation = tfdata.Augmentation(image_size=32, eval_resize=36)
list(data.load_eval_dataset(f"folder:{root}", augmentation).eval_batches(8))  # jaxnets eval
print("skipped:", " ".join(sorted(dataset.skipped)))
try:
    list(data.load_dataset(config("error")).train_batches(0, 0, 0, 8))
except tfdata.DataError as e:
    print("error:", e)
"""


@pytest.mark.slow  # a subprocess
def test_cut_short_jpegs_are_refused_before_libjpeg_prints(cut_jpeg_folder):
    """libjpeg, inside TensorFlow's decode ops in tf.data's threads, prints a nameless line per
    JPEG cut short in its header; the pipelines refuse such files before libjpeg sees them, so
    the skipped-files list and the one-line error are all the user reads."""
    run = subprocess.run(
        [sys.executable, "-c", DECODE_IN_A_FRESH_PROCESS, str(cut_jpeg_folder)], cwd=REPO,
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    alone, pipelines = run.stderr.split("=== the pipelines\n")
    # The control: this TensorFlow's libjpeg does print, so its absence below means something.
    assert "Improper call to JPEG library in state 201" in alone
    assert not [line for line in pipelines.splitlines() if LIBJPEG_LINE.search(line)], pipelines
    cut = sorted(str(p) for p in cut_jpeg_folder.rglob("zz_cut_header.jpg"))
    assert f"skipped: {' '.join(cut)}\n" in run.stdout
    error = r"error: unreadable image \S+/train/class_0[12]/zz_cut_header\.jpg \(cannot be decoded"
    assert re.search(error + r" as an image\); 2 such file\(s\) in this shard", run.stdout)


def test_jpeg_completeness_check_refuses_cut_files_and_passes_whole_ones(image_folder):
    whole = (image_folder / "train" / "class_00" / "0000.jpg").read_bytes()
    # Every prefix is refused: inside the header, or without the EOI after the first scan.
    assert not any(preprocess.jpeg_bytes_are_complete(whole[:n]) for n in range(3, len(whole)))
    photo = Image.open(io.BytesIO(whole))
    exif = Image.Exif()
    exif[0x010F] = "camera"

    def jpeg(image, **options):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", **options)
        return buffer.getvalue()

    thumbnail = jpeg(photo.resize((16, 12)))
    app1 = b"Exif\x00\x00" + thumbnail  # a JPEG inside the header, with its own SOS and EOI
    with_thumbnail = whole[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + whole[2:]
    sound = [
        whole, jpeg(photo, progressive=True), jpeg(photo.convert("L")), jpeg(photo.convert("CMYK")),
        jpeg(photo, exif=exif.tobytes(), icc_profile=b"\x00" * 150_000),  # 3 APP2 segments
        jpeg(photo, restart_marker_blocks=4), with_thumbnail,
        whole + b"\xff\xda trailing data, as after a motion photo's JPEG",
        whole[:2] + b"\xff\xff" + whole[2:],  # a fill byte before a marker
    ]  # fmt: skip
    cut = [with_thumbnail[: len(thumbnail) + 20], with_thumbnail[: len(with_thumbnail) // 2]]
    garbled = [  # complete files: the walk refuses them, but files ending in EOI skip the walk
        whole[:2] + b"\xff\x1a" + whole[2:],  # an unknown marker
        whole[:2] + b"\xff\xdb\x00\x01" + whole[2:],  # a segment shorter than its length field
        whole[:2] + b"\xff\xda\x00\x08" + bytes(6) + whole[2:],  # a scan before the frame header
    ]
    for image_bytes in sound:
        assert preprocess.jpeg_bytes_are_complete(image_bytes)
        assert bool(preprocess.jpeg_is_complete(tf.constant(image_bytes)))
        assert preprocess.decode_image(tf.constant(image_bytes)).shape[-1] == 3
    for image_bytes in cut:
        assert not bool(preprocess.jpeg_is_complete(tf.constant(image_bytes)))
        with pytest.raises(tf.errors.InvalidArgumentError, match="JPEG data cut short"):
            preprocess.decode_image(tf.constant(image_bytes))
    for image_bytes in cut + garbled:
        assert not preprocess.jpeg_bytes_are_complete(image_bytes)


@pytest.mark.slow  # a training run
def test_a_class_without_one_readable_image_stops_before_anything_trains(image_folder, tmp_path):
    from train.train import train_and_evaluate

    root = tmp_path / "hopeless"
    shutil.copytree(image_folder, root)
    for i, path in enumerate(sorted((root / "train" / "class_02").iterdir())):
        path.write_bytes(path.read_bytes()[: 40 + 50 * i])  # each cut short in its header
    expected = (f"{root}/train/class_02: class 'class_02' has no readable images (all 8 files "
                "cannot be decoded); remove the folder or fix the files")  # fmt: skip
    for bad_images in ("skip", "error"):
        with pytest.raises(tfdata.DataError) as error:
            data.load_dataset(folder_config(root, bad_images=bad_images))
        assert str(error.value) == expected
    workdir = tmp_path / "workdir"
    with pytest.raises(tfdata.DataError, match="class 'class_02' has no readable images"):
        train_and_evaluate(folder_config(root, model="lenet5", batch_size=8), workdir)
    assert list(workdir.iterdir()) == []  # no step, no checkpoint, no config

    # The evaluation split too: a class with nothing to score makes the per-class report
    # meaningless, in training and in `jaxnets eval` (the eval split alone).
    shutil.rmtree(root)
    shutil.copytree(image_folder, root)
    for path in (root / "val" / "class_01").iterdir():
        path.write_bytes(b"\xff\xd8\xff\xe0 not the rest of a JPEG")
    with pytest.raises(tfdata.DataError, match=r"/val/class_01: class 'class_01' has no readable "
                                               r"images \(all 3 files cannot"):  # fmt: skip
        data.load_dataset(folder_config(root))
    with pytest.raises(tfdata.DataError, match=r"/val/class_01: class 'class_01' has no readable"):
        data.load_eval_dataset(f"folder:{root}", tfdata.Augmentation(image_size=32))

    # One readable file is enough; the unreadable ones the check met are listed at once.
    shutil.copy(root / "val" / "class_00" / "0002.jpg", root / "val" / "class_01" / "0002.jpg")
    dataset = data.load_dataset(folder_config(root))
    assert sorted(dataset.skipped) == [
        str(root / "val" / "class_01" / f"000{i}.jpg") for i in (0, 1)
    ]


def test_folder_layout_errors_are_one_line(image_folder, tmp_path):
    def error_of(root):
        with pytest.raises(tfdata.DataError) as error:
            data.load_dataset(folder_config(root))
        assert "\n" not in str(error.value)
        return str(error.value)

    assert "no such directory" in error_of(tmp_path / "missing")
    (tmp_path / "flat" / "train").mkdir(parents=True)
    assert "no val/ subfolder" in error_of(tmp_path / "flat")
    (tmp_path / "flat" / "val").mkdir()
    assert "no class subfolders" in error_of(tmp_path / "flat")
    empty = tmp_path / "empty"
    shutil.copytree(image_folder, empty)
    (empty / "train" / "class_99").mkdir()
    assert "class_99: class folder holds no images" in error_of(empty)
    with pytest.raises(ValueError, match="unknown; expected digits, tfds:NAME"):
        data.load_dataset(config_for("imagenet"))


# ----------------------------------------------------------------------------------------------
# TFDS.


def cifar_config(data_dir, **overrides):
    settings = {"image_size": 32, "augment": "pad_crop", "hflip": True, **overrides}
    return config_for("tfds:cifar10", data_dir=str(data_dir), **settings)


def test_tfds_dataset_reads_trains_resumes_and_shards(cifar10_dir):
    dataset = data.load_dataset(cifar_config(cifar10_dir))
    assert dataset.class_names == CIFAR_CLASSES and dataset.eval_split == "test"
    assert dataset.num_train_examples == 40 and dataset.steps_per_epoch(8) == 5
    epoch = take_all(dataset.train_batches(seed=0, epoch=0, start=0, batch_size=8))
    assert len(epoch) == 5 and epoch[0][0].shape == (8, 32, 32, 3)
    assert sorted(np.concatenate([y for _, y in epoch]).tolist()) == sorted(list(range(10)) * 4)
    resumed = take_all(dataset.train_batches(seed=0, epoch=0, start=3, batch_size=8))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(epoch[3:], resumed, strict=True))
    other_epoch = take_all(dataset.train_batches(seed=0, epoch=1, start=0, batch_size=8))
    assert not np.array_equal(epoch[0][1], other_epoch[0][1])
    evaluated = take_all(dataset.eval_batches(4))
    assert [int(m.sum()) for *_, m in evaluated] == [4, 4, 2]
    # Two processes: disjoint halves of the train split, all of the test split between them.
    plain = cifar_config(cifar10_dir, augment="none", hflip=False)
    shards = [data.load_dataset(plain, ProcessShard(p, 2)) for p in (0, 1)]
    seen = [[x.tobytes() for xs, _ in s.train_batches(0, 0, 0, 8) for x in xs] for s in shards]
    assert len(seen[0]) == len(seen[1]) == 20
    assert len(set(seen[0]) | set(seen[1])) == 40  # disjoint halves of the 40 train images
    evals = [take_all(s.eval_batches(4)) for s in shards]
    assert len(evals[0]) == len(evals[1]) == 3
    assert sum(int(m.sum()) for e in evals for *_, m in e) == 10


class _ShortRepeatedAugmentation(data.EpochSampler):
    """Repeated augmentation on a split smaller than the 256 images RASampler's epoch rounds
    to: two steps an epoch, to see how the copies are laid out."""

    def steps_per_epoch(self, num_examples, batch_size):
        return 2


def test_tfds_repeats_each_example_on_different_devices(cifar10_dir):
    dataset = data.load_dataset(cifar_config(cifar10_dir))
    dataset.sampler = _ShortRepeatedAugmentation(ra_reps=2, replicas=2)
    for images, labels in dataset.train_batches(seed=0, epoch=0, start=0, batch_size=8):
        # Rows 0-3 go to device 0, rows 4-7 to device 1: the copies of an example sit at the
        # same row of each, augmented on their own (crop and flip).
        np.testing.assert_array_equal(labels[:4], labels[4:])
        assert all(not np.array_equal(a, b) for a, b in zip(images[:4], images[4:], strict=True))


def test_fixres_trains_and_evaluates_at_two_sizes(image_folder):
    config = config_for(f"folder:{image_folder}", image_size=24, eval_image_size=32,
                        eval_resize=36, augment="random_resized_crop")  # fmt: skip
    dataset = data.load_dataset(config)
    assert dataset.image_shape == (24, 24, 3) and dataset.eval_image_shape == (32, 32, 3)
    images, _ = next(iter(dataset.train_batches(0, 0, 0, 8)))
    assert images.shape == (8, 24, 24, 3)
    assert next(iter(dataset.eval_batches(4)))[0].shape == (4, 32, 32, 3)


def test_tfds_errors_say_what_to_do(tmp_path):
    def error_of(config):
        with pytest.raises(tfdata.DataError) as error:
            data.load_dataset(config)
        assert "\n" not in str(error.value)
        return str(error.value)

    message = error_of(config_for("tfds:imagenet2012", data_dir=str(tmp_path)))
    assert "ILSVRC2012_img_train.tar" in message
    assert str(tmp_path / "downloads" / "manual") in message
    assert "not prepared" in error_of(config_for("tfds:mnist", data_dir=str(tmp_path),
                                                 download=False))  # fmt: skip
    assert "nosuchset" in error_of(config_for("tfds:nosuchset"))
    assert "9.9.9" in error_of(config_for("tfds:mnist:9.9.9", data_dir=str(tmp_path)))
