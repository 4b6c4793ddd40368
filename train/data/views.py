"""Test-time views of an image, as TensorFlow ops: the VGG paper's evaluation protocols
(Simonyan & Zisserman 2015, sections 3.2 and 4) and torchvision's FiveCrop/TenCrop, for the
protocols train/data/protocol.py parses.
"""

from __future__ import annotations

import tensorflow as tf

from train.data import preprocess
from train.data.protocol import Protocol


def make_views(image, protocol: Protocol) -> dict[str, tf.Tensor]:
    """The views of one HWC image: {'crops': (crop_views, crop, crop, C)} when the protocol
    crops, and {'dense_I': (1 or 2, H_I, W_I, C)} for scale I when it is dense. uint8 images
    are resized as evaluation resizes them (rounded back to uint8); float images (digits,
    normalized already) in float."""
    views = {}
    crop_views = []
    for index, scale in enumerate(protocol.scales):
        resized = _resize(image, scale, protocol.crop)
        if protocol.crops == 1:
            crop_views.append(preprocess.center_crop(resized, protocol.crop)[None])
        elif protocol.crops:
            crop_views.append(ten_crop(resized, protocol.crop) if protocol.crops == 10
                              else five_crop(resized, protocol.crop))  # fmt: skip
        if protocol.dense:
            views[f"dense_{index}"] = _with_mirrors(resized[None], protocol.flip)
    if crop_views:
        crops = tf.concat(crop_views, axis=0)
        views["crops"] = _with_mirrors(crops, protocol.flip and protocol.crops != 10)
    return views


def _resize(image, scale: int, crop: int):
    if image.dtype == tf.uint8:
        if scale == 0:
            return preprocess.resize_to(image, crop)
        return preprocess.resize_shorter_side(image, scale)
    size = (crop, crop) if scale == 0 else _shorter_side_size(tf.shape(image), scale)
    return tf.image.resize(image, size, method="bilinear", antialias=True)


def _shorter_side_size(shape, shorter: int):
    h, w = shape[0], shape[1]
    long = tf.cast(tf.cast(shorter, tf.float64) * tf.cast(tf.maximum(h, w), tf.float64)
                   / tf.cast(tf.minimum(h, w), tf.float64), tf.int32)  # fmt: skip
    return tf.stack([tf.where(h <= w, shorter, long), tf.where(h <= w, long, shorter)])


def _with_mirrors(views, flip: bool):
    return tf.concat([views, views[:, :, ::-1]], axis=0) if flip else views


def five_crop(image, size: int):
    """torchvision's FiveCrop(size) of an HWC image at least size x size: top-left,
    top-right, bottom-left, bottom-right, centre, stacked."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    corners = [image[:size, :size], image[:size, w - size :], image[h - size :, :size],
               image[h - size :, w - size :]]  # fmt: skip
    return tf.stack([*corners, preprocess.center_crop(image, size)])


def ten_crop(image, size: int):
    """torchvision's TenCrop(size): FiveCrop of the image, then of its horizontal mirror."""
    return tf.concat([five_crop(image, size), five_crop(image[:, ::-1], size)], axis=0)
