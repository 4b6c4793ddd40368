"""torchvision's automatic augmentation policies in TensorFlow ops, for tf.data.

TrivialAugmentWide ('ta_wide'), RandAugment ('ra') and AutoAugment with its ImageNet, CIFAR-10
and SVHN policies ('imagenet', 'cifar10', 'svhn'), on one uint8 HWC RGB image, as torchvision
0.29's v2 transforms compute them on uint8 tensors with the reference trainer's settings
(bilinear interpolation, fill None: zeros outside the image). Every random choice is a stateless
draw from a per-image seed, so an augmentation is a pure function of (image, seed) and runs
inside Dataset.map.

Each op is a function `op(image, magnitude)` taking the magnitude torchvision's
`_apply_image_or_video_transform` receives (signed; before its int() or 1 + m), with torch's
float32 arithmetic, rounding and uint8 truncation. torch's CPU kernels for AVX2 and AVX-512
compute a * b + c (its blends, grayscale, torch.linspace, grid_sample) as fused multiply-adds,
rounded once; the ops do the same, and so equal torchvision's pixel for pixel there. torch's
DEFAULT kernels (ATEN_CPU_CAPABILITY=default) round twice, which moves a rare pixel by one and a
magnitude by an ulp.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

POLICIES = ("ta_wide", "ra", "imagenet", "cifar10", "svhn")
INTERPOLATIONS = ("bilinear", "nearest")

# CPython's math.radians and math.degrees multiply by these constants.
_RADIANS_PER_DEGREE = math.pi / 180.0
_DEGREES_PER_RADIAN = 180.0 / math.pi


# ----------------------------------------------------------------------------------------------
# torch's float32 arithmetic.
#
# Where a float32 result depends on how an expression is grouped, it is computed here as float64
# operations on float32 operands, rounded once to float32 (_add, _sub, _mul, _div, _fma). For a
# single +, -, * or / that is exactly the float32 operation (rounding twice is harmless when the
# wide format has more than twice the bits); for a * b + c it is torch's fused multiply-add. The
# casts between operations also keep TensorFlow's graph optimizer (Grappler, in tf.function) from
# regrouping chains that hold constants or replacing a division by a constant with a
# multiplication by its reciprocal: rewrites that change float32 results.


def _float64(x):
    """A magnitude as a float64 tensor: Python floats keep their double value (as torchvision
    passes them), float32 tensors widen exactly."""
    return tf.cast(tf.convert_to_tensor(x, dtype_hint=tf.float64), tf.float64)


def _wide(x):
    return tf.cast(tf.convert_to_tensor(x, dtype_hint=tf.float32), tf.float64)


def _narrow(x):
    return tf.cast(x, tf.float32)


def _add(a, b):
    return _narrow(_wide(a) + _wide(b))


def _sub(a, b):
    return _narrow(_wide(a) - _wide(b))


def _mul(a, b):
    return _narrow(_wide(a) * _wide(b))


def _div(a, b):
    return _narrow(_wide(a) / _wide(b))


def _fma(a, b, c):
    """a * b + c rounded once to float32, as torch's vectorized kernels compute add(c, a, b) on
    CPUs with FMA: the product of two float32 values is exact in float64, and so is the sum for
    the pixel-sized operands here."""
    return _narrow(_wide(a) * _wide(b) + _wide(c))


def _to_uint8(x):
    """torchvision's clamp_(0, 255).to(uint8): the cast truncates."""
    return tf.cast(tf.clip_by_value(x, 0.0, 255.0), tf.uint8)


def _linspace_at(start, end, index, num_bins):
    """torch.linspace(start, end, num_bins)[index] as a float64 tensor holding the float32 value:
    step = (end - start) / (num_bins - 1) in float32, then start + step * index below the
    midpoint and end - step * (num_bins - 1 - index) from it, each rounded once (the FMA that
    torch's AVX2 and AVX-512 builds compile it to). `end` may be a tensor (a fraction of the
    image width)."""
    start32, end32 = _narrow(_float64(start)), _narrow(_float64(end))
    step = _wide(_div(_sub(end32, start32), float(num_bins - 1)))
    index = tf.cast(index, tf.float64)
    from_start = _wide(start32) + step * index
    from_end = _wide(end32) - step * (num_bins - 1 - index)
    return _wide(_narrow(tf.where(index < num_bins // 2, from_start, from_end)))


def _posterize_bits_at(spread, index, num_bins):
    """(8 - (torch.arange(num_bins) / ((num_bins - 1) / spread))).round()[index] in float32
    (round half to even, as torch's)."""
    divisor = np.float32((num_bins - 1) / spread)
    bits = tf.round(_sub(8.0, _div(tf.cast(index, tf.float32), divisor)))
    return _wide(bits)


# ----------------------------------------------------------------------------------------------
# Colour and bit ops.


def identity(image, magnitude=0.0):
    del magnitude
    return image


def _grayscale(image):
    """torchvision's rgb_to_grayscale before its cast, floored (uint8 images): r * 0.2989, then
    g * 0.587 and b * 0.114 added by torch's add(alpha=), each with one rounding."""
    x = tf.cast(image, tf.float32)
    gray = x[..., 0:1] * np.float32(0.2989)
    gray = _fma(x[..., 1:2], np.float32(0.587), gray)
    gray = _fma(x[..., 2:3], np.float32(0.114), gray)
    return tf.floor(gray)


def _blend(image, other, ratio):
    """torchvision's _blend: image * ratio in float32, then other * (1 - ratio) added in one
    rounding; 1 - ratio is taken in float64 from the float64 ratio (not from its float32)."""
    scaled = tf.cast(image, tf.float32) * tf.cast(ratio, tf.float32)
    return _to_uint8(_fma(other, tf.cast(1.0 - ratio, tf.float32), scaled))


def brightness(image, magnitude):
    """adjust_brightness(image, 1 + magnitude)."""
    factor = tf.cast(1.0 + _float64(magnitude), tf.float32)
    return _to_uint8(tf.cast(image, tf.float32) * factor)


def color(image, magnitude):
    """adjust_saturation(image, 1 + magnitude): a blend with the floored grayscale."""
    return _blend(image, _grayscale(image), 1.0 + _float64(magnitude))


def contrast(image, magnitude):
    """adjust_contrast(image, 1 + magnitude): a blend with the mean of the floored grayscale.
    torch sums the grayscale in float32, exact while the sum stays below 2**24 (images up to
    65,793 pixels); the sum here is exact at any size."""
    gray = tf.cast(_grayscale(image), tf.int32)
    mean = _div(tf.cast(tf.reduce_sum(gray), tf.float32), tf.cast(tf.size(gray), tf.float32))
    return _blend(image, mean, 1.0 + _float64(magnitude))


def sharpness(image, magnitude):
    """adjust_sharpness(image, 1 + magnitude): inside a one-pixel border (left as it is), a blend
    with the 3x3 blur [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, rounded; images of 2 pixels or fewer
    on a side are returned as they are."""
    factor = 1.0 + _float64(magnitude)
    shape = tf.shape(image)

    def sharpen():
        x = tf.cast(image, tf.int32)
        rows = x[:, :-2] + x[:, 1:-1] + x[:, 2:]
        window = rows[:-2] + rows[1:-1] + rows[2:]
        centre = x[1:-1, 1:-1]
        weighted = window + 4 * centre
        # round(weighted / 13) in integers: k / 13 is never a tie, and lies at least 1/26 from
        # one, far beyond float32 error, so torch's float convolution rounds to this value too.
        blurred = (2 * weighted + 13) // 26
        centre = tf.cast(centre, tf.float32)
        alpha = tf.cast(1.0 - factor, tf.float32)
        interior = _to_uint8(_fma(tf.cast(blurred, tf.float32) - centre, alpha, centre))
        middle = tf.concat([image[1:-1, :1], interior, image[1:-1, -1:]], axis=1)
        return tf.concat([image[:1], middle, image[-1:]], axis=0)

    return tf.cond((shape[0] > 2) & (shape[1] > 2), sharpen, lambda: image)


def posterize(image, magnitude):
    """posterize(image, int(magnitude)): keeps the top int(magnitude) bits (8: all)."""
    bits = tf.cast(_float64(magnitude), tf.int32)
    mask = tf.bitwise.left_shift(tf.bitwise.left_shift(1, bits) - 1, 8 - bits)
    return tf.bitwise.bitwise_and(image, tf.cast(mask, tf.uint8))


def solarize(image, magnitude):
    """solarize(image, 255.0 * magnitude): inverts pixels at or above the threshold, which torch
    compares in float32 (the float64 product rounded to float32)."""
    threshold = tf.cast(255.0 * _float64(magnitude), tf.float32)
    inverted = tf.cast(tf.cast(image, tf.float32) >= threshold, tf.uint8)
    # image + inverted * (255 - 2 image) in uint8, which wraps modulo 256: 255 - image where
    # inverted, image elsewhere; arithmetic, 4x the speed of TensorFlow's select.
    return image + inverted * (255 - 2 * image)


def autocontrast(image, magnitude=0.0):
    """autocontrast: each channel stretched from [min, max] to [0, 255] (flat channels kept)."""
    del magnitude
    x = tf.cast(image, tf.float32)
    low, high = tf.reduce_min(x, axis=(0, 1)), tf.reduce_max(x, axis=(0, 1))
    flat = tf.equal(low, high)
    inv_scale = tf.where(flat, 1.0, _mul(high - low, np.float32(1.0 / 255)))
    low = tf.where(flat, 0.0, low)
    return _to_uint8(_div(x - low, inv_scale))


def equalize(image, magnitude=0.0):
    """equalize: PIL's histogram equalization per channel, as torchvision computes it. With
    step = (pixels not at the channel's maximum value) // 255, lut[0] = 0 and
    lut[k] = min((cumulative count below k + step // 2) // step, 255); a channel whose step is 0
    stays as it is."""
    del magnitude
    pixels = tf.reshape(tf.cast(image, tf.int32), [-1, 3])
    count = tf.shape(pixels)[0]
    bins = pixels + tf.constant([0, 256, 512])  # one 256-bin histogram per channel
    hist = tf.reshape(tf.math.bincount(bins, minlength=768, maxlength=768), [3, 256])
    top_count = tf.gather(hist, tf.reduce_max(pixels, axis=0), batch_dims=1)
    step = (count - top_count) // 255
    below = tf.cumsum(hist, axis=1)[:, :-1]
    lut = tf.minimum((below + step[:, None] // 2) // tf.maximum(step, 1)[:, None], 255)
    lut = tf.concat([tf.zeros([3, 1], tf.int32), lut], axis=1)
    lut = tf.where(step[:, None] > 0, lut, tf.range(256)[None])  # a flat channel: as it is
    return tf.reshape(tf.cast(tf.gather(tf.reshape(lut, [-1]), bins), tf.uint8), tf.shape(image))


def invert(image, magnitude=0.0):
    del magnitude
    return 255 - image


# ----------------------------------------------------------------------------------------------
# Geometric ops: torchvision's inverse affine matrix, affine grid and grid_sample.


def _radians(degrees):
    """math.radians, as a MulNoNan: a product Grappler does not merge with an earlier one (it
    would fold ShearX's degrees(atan(m)) and this into one constant, rounding differently)."""
    return tf.math.multiply_no_nan(degrees, _RADIANS_PER_DEGREE)


def _inverse_affine_matrix(center, angle, translate, shear):
    """torchvision's _get_inverse_affine_matrix at scale 1, in float64 and in its order of
    operations: output pixel -> input pixel, about `center` (pixels from the image centre),
    angles in degrees."""
    cx, cy, tx, ty = (_float64(v) for v in (*center, *translate))
    rot, sx, sy = (_radians(_float64(v)) for v in (angle, *shear))
    cos_sy = tf.cos(sy)
    tan_sx = tf.tan(sx)
    rot_minus_sy = rot - sy
    cx_plus_tx = cx + tx
    cy_plus_ty = cy + ty
    a = tf.cos(rot_minus_sy) / cos_sy
    b = -(a * tan_sx + tf.sin(rot))
    c = tf.sin(rot_minus_sy) / cos_sy
    d = tf.cos(rot) - c * tan_sx
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = 0.0 + (cx - m0 * cx_plus_tx - m1 * cy_plus_ty)  # torchvision's matrix[2] += ...
    m5 = 0.0 + (cy - m3 * cx_plus_tx - m4 * cy_plus_ty)
    return tf.stack([m0, m1, m2, m3, m4, m5])


def _sample_coordinates(matrix, height, width):
    """The input pixel coordinates each output pixel reads, float32 [2, H, W] (x, then y): the
    matrix in float32, torchvision's _affine_grid (base grid times the matrix normalized by half
    the size, summed in the order of torch's bmm) and grid_sample's unnormalization
    (g + 1) * size / 2 - 0.5 as one fused multiply-add (align_corners=False)."""
    theta = tf.reshape(_narrow(matrix), [2, 3])
    size = tf.cast(tf.stack([width, height]), tf.float32)
    rescaled = _div(theta, 0.5 * size[:, None])[:, :, None, None]
    # torch.linspace((1 - size) / 2, (size - 1) / 2, size): exact half-integers.
    base_x = tf.range(size[0]) - (size[0] - 1.0) * 0.5
    base_y = tf.range(size[1]) - (size[1] - 1.0) * 0.5
    grid = _add(_mul(base_x[None, :], rescaled[:, 0]), _mul(base_y[:, None], rescaled[:, 1]))
    grid = _add(_add(grid, rescaled[:, 2]), 1.0)
    return _fma(grid, size[:, None, None] / 2.0, -0.5)


def _gather_or_zero(pixels, xs, ys):
    """pixels[ys, xs] (integer tensors of one shape), zero outside the image, as grid_sample's
    padding_mode='zeros' reads: coordinates are clamped onto a one-pixel zero frame."""
    shape = tf.shape(pixels)
    framed = tf.reshape(tf.pad(pixels, [[1, 1], [1, 1], [0, 0]]), [-1, 3])
    xs = tf.clip_by_value(xs, -1, shape[1]) + 1
    ys = tf.clip_by_value(ys, -1, shape[0]) + 1
    return tf.gather(framed, ys * (shape[1] + 2) + xs)


def _affine(image, matrix, interpolation):
    """grid_sample(image, affine grid, padding_mode='zeros', align_corners=False), rounded back
    to uint8 (round half to even), as torchvision's _apply_grid_transform with fill None."""
    shape = tf.shape(image)
    if interpolation == "bilinear":
        return _bilinear_affine(image, matrix)
    coordinates = _sample_coordinates(matrix, shape[0], shape[1])
    pixels = tf.cast(image, tf.float32)
    nearest = tf.cast(tf.round(coordinates), tf.int32)
    return tf.cast(_gather_or_zero(pixels, nearest[0], nearest[1]), tf.uint8)


def _bilinear_affine(image, matrix):
    """The bilinear resampling in TensorFlow's own kernel (ImageProjectiveTransformV3, 10x the
    speed of sampling by gathers): the same coordinates up to float32 rounding, zeros outside
    the image as grid_sample's padding, on float32 pixels rounded half to even at the end (the
    kernel would truncate uint8). torch sums the four corners in another order, so a value on
    a .5 boundary can round the other way: within 1 of torchvision's, nearly all equal.

    grid_sample reads output pixel (x, y), centred as (x - (W-1)/2, y - (H-1)/2), at input
    pixel matrix @ (x_c, y_c, 1) + ((W-1)/2, (H-1)/2): an affine map of (x, y) itself."""
    shape = tf.shape(image)
    m = tf.reshape(matrix, [2, 3])
    half = (tf.cast(tf.stack([shape[1], shape[0]]), tf.float64) - 1.0) / 2.0  # (W-1)/2, (H-1)/2
    offset = m[:, 2] + half - m[:, 0] * half[0] - m[:, 1] * half[1]
    transform = tf.stack([m[0, 0], m[0, 1], offset[0], m[1, 0], m[1, 1], offset[1], 0.0, 0.0])

    def resample():
        out = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(image, tf.float32)[None],
            transforms=tf.cast(transform, tf.float32)[None], output_shape=shape[:2],
            fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
        )  # fmt: skip
        return tf.cast(tf.round(out[0]), tf.uint8)

    # A whole-pixel translation (TranslateX/Y) reads every output pixel at an input pixel's
    # centre, where the bilinear weights are 1 and 0: a shift with zeros, at a tenth the cost.
    whole = tf.reduce_all(tf.equal(tf.reshape(m[:, :2], [-1]), [1.0, 0.0, 0.0, 1.0]))
    whole &= tf.reduce_all(tf.equal(offset, tf.round(offset)))
    return tf.cond(whole, lambda: _shift(image, tf.cast(offset, tf.int32)), resample)


def _shift(image, offset):
    """out[y, x] = image[y + offset_y, x + offset_x], zero outside the image."""
    shape = tf.shape(image)
    pad = tf.reduce_max(tf.abs(offset))
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.slice(padded, [pad + offset[1], pad + offset[0], 0], shape)


def _check_interpolation(interpolation):
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r}: expected one of {INTERPOLATIONS}")


def _affine_matrix(shape, angle=0.0, translate=(0.0, 0.0), shear=(0.0, 0.0), corner=False):
    """torchvision's affine_image matrix at scale 1 for an image of float64 `shape` (H, W, C),
    about the image centre, or about the top-left corner (its center=[0, 0])."""
    center = (0.0 - shape[1] * 0.5, 0.0 - shape[0] * 0.5) if corner else (0.0, 0.0)
    return _inverse_affine_matrix(center, angle, translate, shear)


def _whole_pixels(magnitude):
    """int(magnitude), as a float64 tensor: truncated toward zero."""
    return tf.cast(tf.cast(_float64(magnitude), tf.int32), tf.float64)


def _angle(magnitude):
    """rotate_image's angle % 360 (Python's modulo: in [0, 360))."""
    return tf.math.floormod(_float64(magnitude), 360.0)


def _shear_degrees(magnitude):
    """math.degrees(math.atan(magnitude)): the shear angle torchvision asks for."""
    return tf.atan(_float64(magnitude)) * _DEGREES_PER_RADIAN


# Each geometric op's matrix, from (magnitude, float64 image shape).
_MATRICES = {
    "ShearX": lambda m, shape: _affine_matrix(shape, shear=(_shear_degrees(m), 0.0), corner=True),
    "ShearY": lambda m, shape: _affine_matrix(shape, shear=(0.0, _shear_degrees(m)), corner=True),
    "TranslateX": lambda m, shape: _affine_matrix(shape, translate=(_whole_pixels(m), 0.0)),
    "TranslateY": lambda m, shape: _affine_matrix(shape, translate=(0.0, _whole_pixels(m))),
    # rotate_image hands affine the negated angle (the two disagree on direction).
    "Rotate": lambda m, shape: _affine_matrix(shape, angle=-_angle(m)),
}


def _quarter_turns(magnitude, shape):
    """rotate_image's fast paths: at 0 and 180 degrees, and 90 and 270 on a square image, it
    turns the pixels (k counter-clockwise quarter turns) instead of resampling; -1 resamples."""
    angle = _angle(magnitude)
    square = tf.equal(shape[0], shape[1])
    exact = [
        tf.equal(angle, 0.0),
        tf.equal(angle, 180.0),
        square & tf.equal(angle, 90.0),
        square & tf.equal(angle, 270.0),
        tf.constant(True),
    ]
    first = tf.argmax(tf.cast(tf.stack(exact), tf.int32), output_type=tf.int32)
    return tf.gather([0, 2, 1, 3, -1], first)


def _transform(image, matrix, quarter_turns, interpolation):
    """The image resampled through `matrix`, or turned by 0 to 3 `quarter_turns` instead."""
    turns = [functools.partial(tf.image.rot90, image, k) for k in range(4)]
    out = tf.switch_case(quarter_turns + 1, [lambda: _affine(image, matrix, interpolation), *turns])
    out.set_shape(image.shape)
    return out


def _geometric_op(name, image, magnitude, interpolation):
    _check_interpolation(interpolation)
    shape = tf.cast(tf.shape(image), tf.float64)
    matrix = _MATRICES[name](magnitude, shape)
    if name == "Rotate":
        return _transform(image, matrix, _quarter_turns(magnitude, shape), interpolation)
    out = _affine(image, matrix, interpolation)
    out.set_shape(image.shape)
    return out


def shear_x(image, magnitude, interpolation="bilinear"):
    """ShearX: affine with shear (degrees(atan(magnitude)), 0) about the top-left corner."""
    return _geometric_op("ShearX", image, magnitude, interpolation)


def shear_y(image, magnitude, interpolation="bilinear"):
    """ShearY: affine with shear (0, degrees(atan(magnitude))) about the top-left corner."""
    return _geometric_op("ShearY", image, magnitude, interpolation)


def translate_x(image, magnitude, interpolation="bilinear"):
    """TranslateX: affine moving the image int(magnitude) pixels right."""
    return _geometric_op("TranslateX", image, magnitude, interpolation)


def translate_y(image, magnitude, interpolation="bilinear"):
    """TranslateY: affine moving the image int(magnitude) pixels down."""
    return _geometric_op("TranslateY", image, magnitude, interpolation)


def rotate(image, magnitude, interpolation="bilinear"):
    """Rotate: rotate_image(image, magnitude) about the centre, counter-clockwise for positive
    angles, with torchvision's exact quarter turns (_quarter_turns)."""
    return _geometric_op("Rotate", image, magnitude, interpolation)


# torchvision's names for the ops; the geometric ones take `interpolation` as well.
OPS = {
    "Identity": identity,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
    "Rotate": rotate,
    "Brightness": brightness,
    "Color": color,
    "Contrast": contrast,
    "Sharpness": sharpness,
    "Posterize": posterize,
    "Solarize": solarize,
    "AutoContrast": autocontrast,
    "Equalize": equalize,
    "Invert": invert,
}
GEOMETRIC_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


# ----------------------------------------------------------------------------------------------
# Augmentation spaces: torchvision's _AUGMENTATION_SPACE of each class, in its order. An entry is
# (magnitudes(index, num_bins, height, width), the float64 magnitudes of bins `index` (a tensor)
# for an image of (height, width), or None for ops without one; signed).


def _linspace(start, end):
    def magnitude(index, num_bins, height, width):
        stop = end(height, width) if callable(end) else end
        return _linspace_at(start, stop, index, num_bins)

    return magnitude


def _posterize_bits(spread):
    def magnitude(index, num_bins, height, width):
        return _posterize_bits_at(spread, index, num_bins)

    return magnitude


def _fraction_of_width(height, width):
    # AutoAugment's translations reach 150/331 of the side (150 pixels of the paper's 331).
    return 150.0 / 331.0 * tf.cast(width, tf.float64)


def _fraction_of_height(height, width):
    return 150.0 / 331.0 * tf.cast(height, tf.float64)


_NO_MAGNITUDE = (None, False)

_AUTOAUGMENT_SPACE = {
    "ShearX": (_linspace(0.0, 0.3), True),
    "ShearY": (_linspace(0.0, 0.3), True),
    "TranslateX": (_linspace(0.0, _fraction_of_width), True),
    "TranslateY": (_linspace(0.0, _fraction_of_height), True),
    "Rotate": (_linspace(0.0, 30.0), True),
    "Brightness": (_linspace(0.0, 0.9), True),
    "Color": (_linspace(0.0, 0.9), True),
    "Contrast": (_linspace(0.0, 0.9), True),
    "Sharpness": (_linspace(0.0, 0.9), True),
    "Posterize": (_posterize_bits(4), False),
    "Solarize": (_linspace(1.0, 0.0), False),
    "AutoContrast": _NO_MAGNITUDE,
    "Equalize": _NO_MAGNITUDE,
    "Invert": _NO_MAGNITUDE,
}

_RANDAUGMENT_SPACE = {
    "Identity": _NO_MAGNITUDE,
    **{name: entry for name, entry in _AUTOAUGMENT_SPACE.items() if name != "Invert"},
}

_TRIVIALAUGMENT_WIDE_SPACE = {
    "Identity": _NO_MAGNITUDE,
    "ShearX": (_linspace(0.0, 0.99), True),
    "ShearY": (_linspace(0.0, 0.99), True),
    "TranslateX": (_linspace(0.0, 32.0), True),
    "TranslateY": (_linspace(0.0, 32.0), True),
    "Rotate": (_linspace(0.0, 135.0), True),
    "Brightness": (_linspace(0.0, 0.99), True),
    "Color": (_linspace(0.0, 0.99), True),
    "Contrast": (_linspace(0.0, 0.99), True),
    "Sharpness": (_linspace(0.0, 0.99), True),
    "Posterize": (_posterize_bits(6), False),
    "Solarize": (_linspace(1.0, 0.0), False),
    "AutoContrast": _NO_MAGNITUDE,
    "Equalize": _NO_MAGNITUDE,
}

# AutoAugment's sub-policies: two (op, probability, magnitude bin of 10) each.
SUBPOLICIES = {
    "imagenet": [
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
        (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
        (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
        (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
        (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
        (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
        (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
        (("Color", 0.4, 0), ("Equalize", 0.6, None)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    ],
    "cifar10": [
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
        (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
        (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
        (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
        (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
        (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
        (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
        (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
        (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
        (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
        (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
        (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
        (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ],
    "svhn": [
        (("ShearX", 0.9, 4), ("Invert", 0.2, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.6, None), ("Solarize", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("AutoContrast", 0.8, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.4, None)),
        (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
        (("Invert", 0.9, None), ("AutoContrast", 0.8, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)),
        (("ShearY", 0.8, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.9, None), ("TranslateY", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)),
        (("Invert", 0.8, None), ("TranslateY", 0.0, 2)),
        (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)),
        (("Invert", 0.6, None), ("Rotate", 0.8, 4)),
        (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)),
        (("ShearX", 0.1, 6), ("Invert", 0.6, None)),
        (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)),
        (("ShearY", 0.8, 4), ("Invert", 0.8, None)),
        (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)),
        (("ShearY", 0.8, 5), ("AutoContrast", 0.7, None)),
        (("ShearX", 0.7, 2), ("Invert", 0.1, None)),
    ],
}
_AUTOAUGMENT_BINS = 10


def _check_policy(policy):
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r}: unknown; expected one of {', '.join(POLICIES)}")


def augmentation_space(policy: str) -> dict:
    """{op name: (magnitude function or None, signed)} of a policy, in torchvision's order (the
    order `Draw.op` indexes)."""
    _check_policy(policy)
    if policy == "ta_wide":
        return _TRIVIALAUGMENT_WIDE_SPACE
    if policy == "ra":
        return _RANDAUGMENT_SPACE
    return _AUTOAUGMENT_SPACE


def num_bins(policy: str, num_magnitude_bins: int = 31) -> int:
    """The magnitude bins a policy's draws index: AutoAugment's fixed 10, or the option."""
    _check_policy(policy)
    return num_magnitude_bins if policy in ("ta_wide", "ra") else _AUTOAUGMENT_BINS


def magnitude_table(policy: str, height, width, num_magnitude_bins: int = 31):
    """Every op's magnitudes in a policy for an image of (height, width): float64
    [ops, bins], rows in augmentation_space order, torchvision's
    `_AUGMENTATION_SPACE[name][0](bins, height, width)` (zeros for ops without one); bins is
    num_magnitude_bins, or AutoAugment's 10."""
    bins = num_bins(policy, num_magnitude_bins)

    def row(magnitudes):
        if magnitudes is None:
            return tf.zeros([bins], tf.float64)
        return magnitudes(tf.range(bins), bins, height, width)

    return tf.stack([row(magnitudes) for magnitudes, _ in augmentation_space(policy).values()])


# ----------------------------------------------------------------------------------------------
# The random draws and the policy.


class Draw(NamedTuple):
    """One image's random choices, one entry per op applied in turn ([steps] tensors).

    Attributes:
      op: index into the policy's augmentation space (augmentation_space(policy)).
      bin: magnitude bin.
      negate: whether a signed op's magnitude is negated.
      applied: whether the op runs at all (AutoAugment's per-op probabilities; else True).
    """

    op: tf.Tensor
    bin: tf.Tensor
    negate: tf.Tensor
    applied: tf.Tensor


def _negations(seed, steps):
    # torchvision negates when torch.rand(()) <= 0.5.
    return tf.random.stateless_uniform([steps], seed) <= 0.5


def _draw_trivial_augment(seed, num_magnitude_bins):
    """One op uniformly from the 14, one magnitude bin uniformly, a sign."""
    op_seed, bin_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    ops = len(_TRIVIALAUGMENT_WIDE_SPACE)
    op = tf.random.stateless_uniform([1], op_seed, 0, ops, tf.int32)
    bins = tf.random.stateless_uniform([1], bin_seed, 0, num_magnitude_bins, tf.int32)
    return Draw(op, bins, _negations(sign_seed, 1), tf.ones([1], tf.bool))


def _draw_randaugment(seed, num_ops, magnitude_bin):
    """num_ops ops uniformly from the 14 (with repeats), each at the fixed magnitude bin."""
    op_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    ops = len(_RANDAUGMENT_SPACE)
    op = tf.random.stateless_uniform([num_ops], op_seed, 0, ops, tf.int32)
    bins = tf.fill([num_ops], magnitude_bin)
    return Draw(op, bins, _negations(sign_seed, num_ops), tf.ones([num_ops], tf.bool))


def _draw_autoaugment(seed, policy):
    """A sub-policy uniformly from the 25; each of its two ops runs with its probability
    (torch.rand(()) <= p)."""
    subpolicies = SUBPOLICIES[policy]
    names = list(_AUTOAUGMENT_SPACE)
    ops = tf.constant([[names.index(name) for name, _, _ in sub] for sub in subpolicies])
    probabilities = tf.constant([[p for _, p, _ in sub] for sub in subpolicies], tf.float32)
    bins = tf.constant([[b or 0 for _, _, b in sub] for sub in subpolicies])
    pick_seed, apply_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    pick = tf.random.stateless_uniform([], pick_seed, 0, len(subpolicies), tf.int32)
    applied = tf.random.stateless_uniform([2], apply_seed) <= probabilities[pick]
    return Draw(ops[pick], bins[pick], _negations(sign_seed, 2), applied)


def _check_options(magnitude_bin, num_ops, num_magnitude_bins):
    if num_magnitude_bins < 2:
        raise ValueError(f"num_magnitude_bins={num_magnitude_bins}: expected at least 2")
    if not 0 <= magnitude_bin < num_magnitude_bins:
        raise ValueError(
            f"magnitude={magnitude_bin}: expected 0 <= magnitude < num_magnitude_bins "
            f"({num_magnitude_bins})"
        )
    if num_ops < 0:
        raise ValueError(f"num_ops={num_ops}: expected a non-negative integer")


def draw(
    seed, policy: str, *, magnitude: int = 9, num_ops: int = 2, num_magnitude_bins: int = 31
) -> Draw:
    """The random choices `apply_policy` makes for `seed` (a shape [2] integer tensor)."""
    _check_policy(policy)
    _check_options(magnitude, num_ops, num_magnitude_bins)
    if policy == "ta_wide":
        return _draw_trivial_augment(seed, num_magnitude_bins)
    if policy == "ra":
        return _draw_randaugment(seed, num_ops, magnitude)
    return _draw_autoaugment(seed, policy)


def _apply_op(image, names, op, magnitude, interpolation):
    """Op `names[op]` at `magnitude`. The geometric ops share one resampling: a switch picks the
    matrix, another the colour op."""
    geometric = [name for name in names if name in GEOMETRIC_OPS]
    others = [name for name in names if name not in GEOMETRIC_OPS]

    def motion(name):
        shape = tf.cast(tf.shape(image), tf.float64)
        turns = _quarter_turns(magnitude, shape) if name == "Rotate" else tf.constant(-1)
        return _MATRICES[name](magnitude, shape), turns

    def resample():
        index = tf.gather([geometric.index(n) if n in geometric else 0 for n in names], op)
        branches = [functools.partial(motion, name) for name in geometric]
        matrix, turns = tf.switch_case(index, branches)
        return _transform(image, matrix, turns, interpolation)

    def recolour():
        index = tf.gather([others.index(n) if n in others else 0 for n in names], op)
        branches = [functools.partial(OPS[name], image, magnitude) for name in others]
        return tf.switch_case(index, branches)

    return tf.cond(tf.gather([n in geometric for n in names], op), resample, recolour)


def apply_policy(
    image,
    seed,
    policy: str,
    *,
    magnitude: int = 9,
    num_ops: int = 2,
    num_magnitude_bins: int = 31,
    interpolation: str = "bilinear",
):
    """One image through torchvision's TrivialAugmentWide, RandAugment or AutoAugment.

    Args:
      image: uint8 [H, W, 3] tensor.
      seed: shape [2] integer tensor for the stateless draws.
      policy: one of POLICIES: 'ta_wide' (TrivialAugmentWide), 'ra' (RandAugment), or
        AutoAugment's 'imagenet', 'cifar10' or 'svhn' policy.
      magnitude: RandAugment's magnitude bin.
      num_ops: RandAugment's number of ops in a row.
      num_magnitude_bins: TrivialAugmentWide's and RandAugment's number of bins (AutoAugment's
        tables have 10).
      interpolation: 'bilinear' (torchvision's reference trainer) or 'nearest' (the
        transforms' default), for the geometric ops.

    Returns:
      The augmented uint8 image, of the same shape.

    Raises:
      ValueError: an unknown policy or interpolation, or options out of range (one line).
    """
    space = augmentation_space(policy)
    _check_interpolation(interpolation)
    choices = draw(
        seed, policy, magnitude=magnitude, num_ops=num_ops, num_magnitude_bins=num_magnitude_bins
    )
    shape = tf.shape(image)
    table = magnitude_table(policy, shape[0], shape[1], num_magnitude_bins)
    signed = tf.constant([is_signed for _, is_signed in space.values()])

    def step(index, image):
        op = choices.op[index]
        value = table[op, choices.bin[index]]
        # torchvision negates a signed op's magnitude with probability 1/2.
        value = tf.where(signed[op] & choices.negate[index], -value, value)

        def augment():
            return _apply_op(image, list(space), op, value, interpolation)

        out = tf.cond(choices.applied[index], augment, lambda: image)
        out.set_shape(image.shape)
        return index + 1, out

    # A loop rather than one copy of every op for each step keeps the graph small.
    steps = tf.shape(choices.op)[0]
    _, out = tf.while_loop(lambda index, _: index < steps, step, (tf.constant(0), image))
    return out
