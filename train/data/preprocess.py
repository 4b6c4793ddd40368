"""Image preprocessing in TensorFlow ops, with torchvision's semantics.

Every random choice uses stateless ops keyed by a per-example seed, so an example's augmentation
is a pure function of (run seed, epoch, position): the same on every host, with any amount of
parallelism, before and after a resume.

The images leave as uint8 HWC: a quarter of the float32 bytes to move to the device, where
`normalize` runs inside the compiled step.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_resized_crop_window(seed, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params: up to 10 draws of (area, log-ratio), the
    first that fits wins; else a centre crop with the ratio clamped. Returns (top, left, h, w)."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    area = tf.cast(height * width, tf.float32)
    target_area = area * tf.random.stateless_uniform([10], seeds[0], scale[0], scale[1])
    log_ratio = tf.random.stateless_uniform([10], seeds[1], math.log(ratio[0]), math.log(ratio[1]))
    aspect = tf.exp(log_ratio)
    # Python's round() is half-to-even, as is tf.round.
    w = tf.cast(tf.round(tf.sqrt(target_area * aspect)), tf.int32)
    h = tf.cast(tf.round(tf.sqrt(target_area / aspect)), tf.int32)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)

    def sampled():
        ch, cw = h[first], w[first]
        top = tf.random.stateless_uniform([], seeds[2], 0, height - ch + 1, dtype=tf.int32)
        left = tf.random.stateless_uniform([], seeds[3], 0, width - cw + 1, dtype=tf.int32)
        return top, left, ch, cw

    def fallback():
        fw, fh = tf.cast(width, tf.float32), tf.cast(height, tf.float32)
        in_ratio = fw / fh
        clamped_w = tf.cast(tf.round(fh * ratio[1]), tf.int32)
        clamped_h = tf.cast(tf.round(fw / ratio[0]), tf.int32)
        cw = tf.where(in_ratio > ratio[1], clamped_w, tf.cast(width, tf.int32))
        ch = tf.where(in_ratio < ratio[0], clamped_h, tf.cast(height, tf.int32))
        return (height - ch) // 2, (width - cw) // 2, ch, cw

    return tf.cond(tf.reduce_any(fits), sampled, fallback)


def decode_random_resized_crop(image_bytes, seed, size: int):
    """Decodes only the sampled window of a JPEG (decode_and_crop_jpeg), or the whole image
    for other formats, and resizes the window to size x size (bilinear, antialiased)."""
    image_bytes = refuse_incomplete_jpeg(image_bytes)

    def jpeg():
        shape = tf.image.extract_jpeg_shape(image_bytes)
        top, left, h, w = random_resized_crop_window(seed, shape[0], shape[1])
        return tf.image.decode_and_crop_jpeg(image_bytes, tf.stack([top, left, h, w]), channels=3)

    def other():
        image = decode_image(image_bytes)
        shape = tf.shape(image)
        top, left, h, w = random_resized_crop_window(seed, shape[0], shape[1])
        return image[top : top + h, left : left + w]

    crop = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
    return resize(crop, (size, size))


def decode_image(image_bytes):
    """Any JPEG/PNG/GIF/BMP as uint8 HxWx3 (grayscale replicated, alpha dropped)."""
    image_bytes = refuse_incomplete_jpeg(image_bytes)
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


# TensorFlow's libjpeg wrapper prints every libjpeg error to file descriptor 2 before returning
# its own, from tf.data's threads and without a file name: "Improper call to JPEG library in
# state 201" for a file that ends inside its header, "Input file read error" for one that ends
# at some points of its image data. So a JPEG that libjpeg would refuse for being cut short or
# for a broken header is refused here first, without libjpeg, by an error that tf.data drops
# (bad_images='skip') or that stops the pipeline ('error') as libjpeg's own would.

# Markers libjpeg reads before the first scan (jdmarker.c read_markers) that carry a length:
# SOF0-15 (less DHT, JPG, DAC), DHT, DAC, SOS, DQT, DNL, DRI, APP0-15, COM. RST0-7 and TEM
# stand alone; any other code, a second SOI or an EOI before the first scan is an error.
_SOF_MARKERS = frozenset(m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC))
_SEGMENT_MARKERS = _SOF_MARKERS | {0xC4, 0xCC, 0xDA, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)}
_SOS = 0xDA
_EOI = b"\xff\xd9"


def jpeg_is_complete(image_bytes):
    """Whether the bytes of a JPEG (tf.io.is_jpeg) can be whole, as a scalar bool tensor: see
    jpeg_bytes_are_complete. One that ends with EOI, nearly every sound file, passes at once;
    only the others (cut short, or followed by other data as motion photos are) are walked, in
    Python: a walk in TensorFlow ops costs about a decode per file, even in the branch not
    taken (tf.data still steps through its nodes)."""
    length = tf.strings.length(image_bytes)
    tail = tf.strings.substr(image_bytes, tf.maximum(length - 2, 0), 2)

    def complete(data):  # bytes in tf.data and tf.function, a 0-d object array eagerly
        return jpeg_bytes_are_complete(data.item() if isinstance(data, np.ndarray) else data)

    def walk():
        ok = tf.numpy_function(complete, [image_bytes], tf.bool, stateful=False)
        return tf.reshape(ok, [])

    return tf.cond(tf.equal(tail, _EOI), lambda: tf.constant(True), walk)


def jpeg_bytes_are_complete(data: bytes) -> bool:
    """False for JPEG bytes that end inside the header, hold a malformed or unknown marker
    segment before the first scan (or a scan before the frame header), or have no EOI marker
    after the first scan's header: a file cut short, or with garbage in its header, which
    libjpeg refuses. True for anything it is unsure of (stray bytes between segments, which
    libjpeg skips with a warning), for libjpeg to decide."""
    n, pos, seen_sof = len(data), 2, False
    for _ in range(1000):  # segments and fill bytes: far more than any real header holds
        if pos + 1 >= n:
            return False  # ends where a marker is due
        if data[pos] != 0xFF:
            break  # stray bytes: libjpeg skips them with a warning; it decides
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker not in _SEGMENT_MARKERS or pos + 3 >= n or end < pos + 4 or end > n:
            return False  # unknown marker, or a segment cut short or shorter than its header
        if marker == _SOS:
            if not seen_sof:
                return False
            pos = end
            break
        seen_sof |= marker in _SOF_MARKERS
        pos = end
    return data.find(_EOI, pos) >= 0


def refuse_incomplete_jpeg(image_bytes):
    """image_bytes, or an InvalidArgumentError for a JPEG that jpeg_is_complete refuses, raised
    before libjpeg sees it; other formats pass unchecked."""
    ok = tf.cond(
        tf.io.is_jpeg(image_bytes), lambda: jpeg_is_complete(image_bytes), lambda: tf.constant(True)
    )
    check = tf.debugging.Assert(ok, ["JPEG data cut short or with a broken header"])
    with tf.control_dependencies([check]):
        return tf.identity(image_bytes)


def resize(image, size, antialias: bool = True):
    """Bilinear with antialias (torchvision's Resize on PIL images and, since 0.17, tensors),
    rounded back to uint8. antialias=False is TF's (and old torchvision tensors') plain
    bilinear, kept to measure what it costs."""
    resized = tf.image.resize(image, size, method="bilinear", antialias=antialias)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def resize_to(image, size: int):
    """size x size, leaving images already of that size untouched (no resampling blur)."""
    shape = tf.shape(image)
    same = (shape[0] == size) & (shape[1] == size)
    image = tf.cond(same, lambda: image, lambda: resize(image, (size, size)))
    image.set_shape([size, size, 3])
    return image


def resize_shorter_side(image, shorter: int, antialias: bool = True):
    """torchvision Resize(int): the shorter side becomes `shorter`, the longer one
    int(shorter * long / short) (truncated, as torchvision computes it)."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    short, long = tf.minimum(h, w), tf.maximum(h, w)
    new_long = tf.cast(
        tf.cast(shorter, tf.float64) * tf.cast(long, tf.float64) / tf.cast(short, tf.float64),
        tf.int32,
    )
    new_h = tf.where(h <= w, shorter, new_long)
    new_w = tf.where(h <= w, new_long, shorter)
    return resize(image, tf.stack([new_h, new_w]), antialias)


def center_crop(image, size: int):
    """torchvision CenterCrop: offsets int(round((dim - size) / 2)); images smaller than the
    crop are zero-padded first, as torchvision does."""
    shape = tf.shape(image)
    pad_h, pad_w = tf.maximum(size - shape[0], 0), tf.maximum(size - shape[1], 0)
    padding = [[pad_h // 2, pad_h - pad_h // 2], [pad_w // 2, pad_w - pad_w // 2], [0, 0]]
    image = tf.pad(image, padding)
    shape = tf.shape(image)
    top = tf.cast(tf.round(tf.cast(shape[0] - size, tf.float32) / 2), tf.int32)
    left = tf.cast(tf.round(tf.cast(shape[1] - size, tf.float32) / 2), tf.int32)
    return image[top : top + size, left : left + size]


def pad_and_random_crop(image, seed, size: int, padding: int):
    """CIFAR-style: resize to size (if needed), zero-pad by `padding`, crop size x size."""
    image = resize_to(image, size)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    offsets = tf.random.stateless_uniform([2], seed, 0, 2 * padding + 1, dtype=tf.int32)
    return padded[offsets[0] : offsets[0] + size, offsets[1] : offsets[1] + size]


def random_flip(image, seed):
    """Horizontal flip with probability 1/2."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.cond(flip, lambda: image[:, ::-1], lambda: image)


def color_jitter(image, seed, strengths: tuple[float, float, float]):
    """torchvision ColorJitter(brightness, contrast, saturation) on uint8 tensors: factors
    uniform in [1 - s, 1 + s], applied in a random order, each result clipped to [0, 255] and
    truncated to integers as torchvision's uint8 arithmetic does. A strength of 0 gives a
    factor of 1, which leaves uint8 values as they are: torchvision skips that adjustment."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    strengths = tf.constant(strengths, tf.float32)
    factors = tf.random.stateless_uniform([3], seeds[0]) * 2 * strengths + 1 - strengths
    order = tf.argsort(tf.random.stateless_uniform([3], seeds[1]))
    image = tf.cast(image, tf.float32)
    adjust = [
        functools.partial(adjust_brightness, factor=factors[0]),
        functools.partial(adjust_contrast, factor=factors[1]),
        functools.partial(adjust_saturation, factor=factors[2]),
    ]
    for i in range(3):
        image = tf.switch_case(order[i], [functools.partial(f, image) for f in adjust])
    return tf.cast(image, tf.uint8)


def _grayscale(image):
    # torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma), truncated to uint8 values.
    return tf.floor(image[..., :1] * 0.2989 + image[..., 1:2] * 0.587 + image[..., 2:3] * 0.114)


def _blend(image, other, factor):
    return tf.floor(tf.clip_by_value(factor * image + (1 - factor) * other, 0.0, 255.0))


def adjust_brightness(image, factor):
    return _blend(image, tf.zeros_like(image), factor)


def adjust_contrast(image, factor):
    mean = tf.reduce_mean(_grayscale(image))
    return _blend(image, mean, factor)


def adjust_saturation(image, factor):
    return _blend(image, _grayscale(image), factor)
