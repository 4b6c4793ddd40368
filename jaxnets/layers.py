"""Building blocks that reproduce torch's numerics where Flax's defaults differ.

See shared/PORTING.md: torch pads stride-2 convolutions symmetrically, its BatchNorm updates the
running variance with the unbiased batch variance, and its AdaptiveAvgPool2d uses overlapping
floor/ceil bins. Each of those is spelled out here rather than left to a Flax default.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Dtype = Any
Initializer = Callable[..., jax.Array]

# torch.nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu"): an untruncated normal with
# std sqrt(2 / fan_out). JAX's fan_out for an HWIO kernel is out_channels * kh * kw, as in torch
# (also for grouped convolutions).
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# torch's default for Conv2d and Linear weights, kaiming_uniform_(a=sqrt(5)), is U(-b, b) with
# b = 1 / sqrt(fan_in); variance_scaling(1/3, fan_in, uniform) has exactly that bound.
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias(fan_in: int) -> Initializer:
    """torch's default bias init for Conv2d/Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_linear(
    x: jax.Array, features: int, name: str, dtype: Dtype | None, param_dtype: Dtype
) -> jax.Array:
    """An nn.Linear at torch's default initialization, applied to x (inside a compact
    method: the Dense is created in the calling module's scope)."""
    return nn.Dense(
        features,
        kernel_init=torch_default_kernel,
        bias_init=torch_default_bias(x.shape[-1]),
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )(x)


def pad2(p: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Symmetric (torch-style) spatial padding of p pixels on every side."""
    return ((p, p), (p, p))


# Three formulations here were tuned on XLA:CPU and measured there only: BatchNorm's written-out
# backward pass, max pooling's written-out backward pass, and 1x1 convolutions as matrix
# products. On other backends XLA's own forms (autodiff of the forward pass, reduce_window with
# select_and_scatter, a 1x1 convolution) are the reference until a GPU/TPU measurement says
# otherwise. The choice is made when a function is traced, from the backend it will run on.
_FORMS = ("cpu", "xla")
_forced_forms: list[str] = []


def uses_cpu_forms() -> bool:
    """Whether code traced now uses the formulations tuned on XLA:CPU (see above)."""
    if _forced_forms:
        return _forced_forms[-1] == "cpu"
    return jax.default_backend() == "cpu"


@contextlib.contextmanager
def forms(kind: str) -> Iterator[None]:
    """Traces inside use the "cpu" or the "xla" formulations whatever the backend, to compare
    them (jit caches a trace: build the jitted function inside the block)."""
    if kind not in _FORMS:
        raise ValueError(f"forms {kind!r}: expected one of {', '.join(_FORMS)}")
    _forced_forms.append(kind)
    try:
        yield
    finally:
        _forced_forms.pop()


class BatchNorm(nn.Module):
    """BatchNorm2d with torch's semantics on NHWC input.

    Training mode normalizes with the biased batch variance and updates the running variance with
    the unbiased one (n / (n - 1)), as torch does; Flax's BatchNorm uses the biased variance for
    both. Statistics are computed and stored in float32 (float64 with float64 parameters)
    whatever the compute dtype. The training-mode gradient is torch's formula, written out
    (see _batch_norm_train_backward).

    Attributes:
      momentum: weight of the old running statistic (Flax convention); torch's momentum 0.1 is 0.9.
      epsilon: added to the variance; 1e-5 in torch.
      dtype: dtype of the output (the compute dtype).
      param_dtype: dtype of scale and bias.
      scale_init: init of the affine scale (torch: ones; zero_init_residual: zeros).
      batch_groups: if > 1, the batch is split into this many equal groups, each normalized with
        its own statistics (per-device BatchNorm when it equals the data-parallel device count);
        running statistics are updated with the mean over groups.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    scale_init: Initializer = nn.initializers.ones
    batch_groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
        features = x.shape[-1]
        stats_dtype = jnp.promote_types(jnp.float32, self.param_dtype)
        scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), stats_dtype)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), stats_dtype)
        dtype = self.dtype or x.dtype

        if use_running_average:
            mean, var = running_mean.value, running_var.value
            inv = scale.astype(stats_dtype) * jax.lax.rsqrt(var + self.epsilon)
            shift = bias.astype(stats_dtype) - mean * inv
            return (x * inv.astype(dtype) + shift.astype(dtype)).astype(dtype)

        groups = self.batch_groups
        if x.shape[0] % groups:
            raise ValueError(f"BatchNorm: batch {x.shape[0]} is not divisible by {groups} groups")
        xg = x.reshape((groups, x.shape[0] // groups, *x.shape[1:]))
        batch_norm = _batch_norm_train if uses_cpu_forms() else _batch_norm_train_autodiff
        y, mean, var = batch_norm(
            xg, scale.astype(stats_dtype), bias.astype(stats_dtype), self.epsilon
        )
        n = math.prod(xg.shape[1:-1])

        if not self.is_initializing():
            batch_mean = mean.reshape(groups, features).mean(0)
            batch_var = var.reshape(groups, features).mean(0) * (n / max(n - 1, 1))
            m = self.momentum
            running_mean.value = m * running_mean.value + (1 - m) * batch_mean
            running_var.value = m * running_var.value + (1 - m) * batch_var
        return y.reshape(x.shape).astype(dtype)


def _batch_norm_train_autodiff(xg, scale, bias, epsilon):
    """Train-mode BatchNorm of grouped input xg (groups, n, ..., C): (y, mean, var), as JAX
    differentiates it (the form for backends other than CPU; _batch_norm_train below is the
    same forward pass with torch's backward formula).

    Statistics are reduced over every axis but the first (group) and last (channel), in the
    dtype of scale; mean and var keep those axes as size 1.
    """
    return _batch_norm_train_forward(xg, scale, bias, epsilon)[0]


_batch_norm_train = jax.custom_vjp(_batch_norm_train_autodiff, nondiff_argnums=(3,))


def _batch_norm_train_forward(xg, scale, bias, epsilon):
    axes = tuple(range(1, xg.ndim - 1))
    x = xg.astype(scale.dtype)
    mean = x.mean(axes, keepdims=True)
    # Two-pass variance: E[(x - mean)^2] keeps float32 accuracy where E[x^2] - E[x]^2 would not.
    var = jnp.square(x - mean).mean(axes, keepdims=True)
    inv_std = jax.lax.rsqrt(var + epsilon)
    multiplier = scale * inv_std
    y = x * multiplier + (bias - mean * multiplier)  # torch's CPU kernel: x * alpha + beta
    return (y, mean, var), (xg, mean, inv_std, multiplier)


def _batch_norm_train_backward(epsilon, residuals, cotangents):
    # torch's native_batch_norm_backward, written out: JAX's derivative of the forward pass
    # stored x - mean and took several more passes over the activations, and BatchNorm was then
    # the largest difference between this train step and torch's (270 ms against 122 ms of
    # ResNet-50's at batch 16, 128x128, on this project's 2-core CPU; about 170 ms with this).
    del epsilon
    xg, mean, inv_std, multiplier = residuals  # multiplier: scale * inv_std
    dy, dmean, dvar = cotangents
    axes = tuple(range(1, xg.ndim - 1))
    n = math.prod(xg.shape[1:-1])
    dy = dy.astype(mean.dtype)
    centered = xg.astype(mean.dtype) - mean
    sum_dy = dy.sum(axes, keepdims=True)
    sum_dy_normalized = (dy * centered).sum(axes, keepdims=True) * inv_std
    dx = multiplier * (dy - sum_dy / n - centered * (inv_std * sum_dy_normalized / n))
    # The statistics' own cotangents (zero when only y reaches the loss).
    dx = dx + dmean / n + centered * (dvar * (2.0 / n))
    per_channel = (-1, xg.shape[-1])
    dscale = sum_dy_normalized.reshape(per_channel).sum(0)
    dbias = sum_dy.reshape(per_channel).sum(0)
    return dx.astype(xg.dtype), dscale, dbias


_batch_norm_train.defvjp(_batch_norm_train_forward, _batch_norm_train_backward)


# On XLA:CPU (see conv2d), output maps of at most this many pixels (a 2x2 map) are computed as
# matrix products instead of XLA's convolution...
SMALL_MAP_PIXELS = 4
# ...as one product with a whole-map matrix where that matrix has at most this many elements
# per example in the batch (building it, and reducing its gradient to the kernel's, is paid
# once per batch), else as one product of each output pixel's taps.
DENSE_ELEMENTS_PER_EXAMPLE = 32768


class Conv(nn.Module):
    """nn.Conv's parameters ("kernel" (kh, kw, in / groups, out) and "bias") and arithmetic, with
    torch-style explicit padding, computed by conv2d (whose lowering depends on the shapes).

    Attributes:
      features: output channels.
      kernel_size: (kh, kw).
      strides: one stride for both axes.
      padding: ((top, bottom), (left, right)).
      kernel_dilation: one dilation for both axes.
      feature_group_count: torch's `groups`.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    padding: tuple[tuple[int, int], tuple[int, int]] = pad2(0)
    kernel_dilation: int = 1
    feature_group_count: int = 1
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        groups = self.feature_group_count
        if x.shape[-1] % groups or self.features % groups:
            raise ValueError(
                f"convolution: {x.shape[-1]} input and {self.features} output channels are not "
                f"both divisible by {groups} groups"
            )
        shape = (*self.kernel_size, x.shape[-1] // groups, self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d(x, kernel, self.strides, self.padding, self.kernel_dilation, groups)
        return y if bias is None else y + bias


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    strides: int = 1,
    padding: tuple[tuple[int, int], tuple[int, int]] = pad2(0),
    dilation: int = 1,
    groups: int = 1,
) -> jax.Array:
    """torch's Conv2d (without bias) on NHWC input and an HWIO kernel.

    XLA:CPU's convolutions are fast on large maps and slow on small ones, forward or backward:
    on this project's 2-core CPU a 3x3 convolution 512->512 at batch 16 takes 292 ms forward +
    backward on a 2x2 map against 21 ms on a 3x3 one, and the backward pass of a stride-2
    convolution onto a 2x2 map takes 171 ms (batch 64, 256->512). So on CPU (see
    uses_cpu_forms), from the static shapes:
    - a 1x1 kernel without padding is one matrix product over the pixels it reads (its weight
      gradient would otherwise take a slow generic convolution: 54 ms against 7 ms for
      16x32x32x256 -> 64);
    - an output map of at most SMALL_MAP_PIXELS pixels (2x2, 1x1) is a matrix product, 12-24x
      faster than XLA's convolution there. Where the batch is large enough to pay for building
      it (DENSE_ELEMENTS_PER_EXAMPLE), the product is with a dense matrix of the whole map
      (_conv_as_dense), which reads the activations in place: no padded copy, and an input
      gradient that is one more product; else it is the product of each output pixel's taps
      side by side (_conv_as_matmul). Alone, the taps' product is as fast as XLA's
      convolution at 3x3 and 4x4 and the whole-map product no faster than the taps' at 2x2;
      inside the network XLA copies the BatchNorm and ReLU that produce the taps into each of
      them (and re-adds the taps' padded gradients inside BatchNorm's backward reductions):
      ResNet-18 at 32x32, batch 64, forward + backward, took 50 ms in layer2 (4x4 maps) with
      the taps' product against 20 ms with XLA's convolution, and 43 ms in layer3 (2x2 maps)
      against 30 ms with the whole-map product (scripts/bench_stages.py);
    - a grouped convolution (ResNeXt's 3x3, AlexNet-paper's) on a larger map is XLA's
      convolution forward and for the input gradient, and its kernel gradient that of the
      matrix product: XLA:CPU's grouped kernel gradient takes 5.9 s for ResNeXt-50's first
      3x3 at batch 16, 32x32 (32 groups of 4 channels), the matrix product's 0.18 s.
    Elsewhere it is XLA's convolution. Every form computes the same sums of products (equal to
    XLA's convolution within rounding, tested in float64).
    """
    h, w = x.shape[1:3]
    kh, kw = kernel.shape[:2]
    if uses_cpu_forms():
        if (kh, kw) == (1, 1) and padding == pad2(0) and groups == 1:
            x = x[:, ::strides, ::strides, :]  # the pixels a strided 1x1 convolution reads
            y = jnp.dot(x.reshape(-1, x.shape[-1]), kernel.reshape(kernel.shape[2:]))
            return y.reshape(*x.shape[:3], kernel.shape[-1])
        out_h, out_w = _output_map(x, kernel, strides, padding, dilation)
        if 0 < out_h * out_w <= SMALL_MAP_PIXELS:
            dense_elements = h * w * out_h * out_w * math.prod(kernel.shape[2:])
            if groups == 1 and dense_elements <= x.shape[0] * DENSE_ELEMENTS_PER_EXAMPLE:
                return _conv_as_dense(x, kernel, strides, padding, dilation)
            return _conv_as_matmul(x, kernel, strides, padding, dilation, groups)
        if groups > 1:
            return _grouped_conv(x, kernel, strides, padding, dilation, groups)
    return _xla_conv(x, kernel, strides, padding, dilation, groups)


def _conv_out_size(size: int, kernel: int, stride: int, pads: tuple[int, int], dilation: int):
    return (size + sum(pads) - dilation * (kernel - 1) - 1) // stride + 1


def _output_map(x, kernel, stride, padding, dilation) -> tuple[int, int]:
    """The (height, width) of the convolution's output map."""
    return tuple(
        _conv_out_size(size, k, stride, pads, dilation)
        for size, k, pads in zip(x.shape[1:3], kernel.shape[:2], padding, strict=True)
    )


def _tap_rows(size: int, out_size: int, offset: int, stride: int, before: int) -> bool:
    """Whether a tap at `offset` in the padded input reads any real (unpadded) row."""
    return any(0 <= offset + stride * r - before < size for r in range(out_size))


def _taps(x, kernel_hw, stride, padding, dilation):
    """((i, j), tap) for each kernel tap that reads real pixels: the (N, OH, OW, C) input
    pixels tap (i, j) meets at each output position. Taps that read only padding (all but the
    centre of a 3x3 kernel on a 1x1 map) are left out: their products are zeros."""
    n, h, w, c = x.shape
    out_h = _conv_out_size(h, kernel_hw[0], stride, padding[0], dilation)
    out_w = _conv_out_size(w, kernel_hw[1], stride, padding[1], dilation)
    padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    for i, j in itertools.product(*map(range, kernel_hw)):
        top, left = i * dilation, j * dilation
        if not (_tap_rows(h, out_h, top, stride, padding[0][0])
                and _tap_rows(w, out_w, left, stride, padding[1][0])):  # fmt: skip
            continue
        end = (n, top + stride * (out_h - 1) + 1, left + stride * (out_w - 1) + 1, c)
        yield (i, j), jax.lax.slice(padded, (0, top, left, 0), end, (1, stride, stride, 1))


def _conv_as_matmul(x, kernel, stride, padding, dilation, groups):
    """The convolution as one matrix product: each output pixel's taps side by side
    (im2col) against the kernel's taps stacked."""
    kh, kw, group_in, out = kernel.shape
    indices, taps = zip(*_taps(x, (kh, kw), stride, padding, dilation), strict=True)
    weights = [kernel[i, j] for i, j in indices]
    # Only the channel axis is split or merged: under explicit sharding (the batch over
    # 'data') a reshape that merges the batch axis with others is refused.
    n, out_h, out_w, _ = taps[0].shape
    if groups == 1:
        columns = jnp.concatenate(taps, axis=-1)
        y = jnp.dot(columns, jnp.concatenate(weights, axis=0))
    else:  # channels of group g meet only kernel columns of group g
        columns = jnp.stack(taps, axis=-2).reshape(n, out_h, out_w, len(taps), groups, group_in)
        stacked = jnp.stack(weights).reshape(len(taps), group_in, groups, out // groups)
        y = jnp.einsum("nhwtgc,tcgo->nhwgo", columns, stacked)
    return y.reshape(n, out_h, out_w, out)


def _conv_as_dense(x, kernel, stride, padding, dilation):
    """The convolution as one product of each flattened (H * W * C_in) input map with a dense
    (H * W * C_in, OH * OW * C_out) matrix: block (input pixel, output pixel) is the kernel tap
    that joins them, or zeros. Built from slices and concatenations only, so that its gradient
    is slices and sums (a gather's would be a scatter)."""
    n, h, w, c = x.shape
    kh, kw, _, out = kernel.shape
    out_h, out_w = _output_map(x, kernel, stride, padding, dilation)
    zero = jnp.zeros(kernel.shape[2:], kernel.dtype)

    def tap(in_row, in_col, out_row, out_col):
        i, di = divmod(in_row - out_row * stride + padding[0][0], dilation)
        j, dj = divmod(in_col - out_col * stride + padding[1][0], dilation)
        return kernel[i, j] if not (di or dj) and 0 <= i < kh and 0 <= j < kw else zero

    rows = [
        jnp.concatenate([tap(r, q, o, p) for o in range(out_h) for p in range(out_w)], axis=1)
        for r in range(h)
        for q in range(w)
    ]
    y = jnp.dot(x.reshape(n, h * w * c), jnp.concatenate(rows, axis=0))
    return y.reshape(n, out_h, out_w, out)


def _xla_conv(x, kernel, stride, padding, dilation, groups):
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), padding, rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
    )  # fmt: skip


# A grouped convolution whose kernel gradient is the matrix-product form's (see conv2d):
# XLA:CPU's forward pass and input gradient are fast, its grouped kernel gradient is not.
_grouped_conv = jax.custom_vjp(_xla_conv, nondiff_argnums=(2, 3, 4, 5))


def _grouped_conv_forward(x, kernel, stride, padding, dilation, groups):
    return _xla_conv(x, kernel, stride, padding, dilation, groups), (x, kernel)


def _grouped_conv_backward(stride, padding, dilation, groups, residuals, dy):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x: _xla_conv(x, kernel, stride, padding, dilation, groups), x)
    # The matrix-product form's kernel gradient: its forward product is never computed (XLA
    # drops it), and JAX's transpose of the product places the sum over the sharded batch.
    _, kernel_vjp = jax.vjp(
        lambda k: _conv_as_matmul(x, k, stride, padding, dilation, groups), kernel
    )
    return input_vjp(dy)[0], kernel_vjp(dy)[0]


_grouped_conv.defvjp(_grouped_conv_forward, _grouped_conv_backward)


class Dropout(nn.Module):
    """nn.Dropout, with the mask drawn in the input's sharding.

    Under the training program's mesh the batch is explicitly sharded over devices; flax's
    Dropout draws an unsharded mask, which jnp.where then refuses to pair with the sharded
    input (AlexNet and VGG could not train with dropout).

    Attributes:
      rate: the probability of zeroing an element; kept ones are scaled by 1 / (1 - rate).
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0:
            return x
        if self.rate == 1:
            return jnp.zeros_like(x)
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(
            self.make_rng("dropout"), keep, x.shape, out_sharding=jax.typeof(x).sharding
        )
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """torch.nn.MaxPool2d(window, stride, padding) on NHWC input, forward and backward.

    The forward pass is the same maximum as nn.max_pool. The backward pass is written out
    because XLA:CPU differentiates reduce_window(max) through index arrays the size of the
    padded input and a scatter: 82 ms for ResNet's stem pool at batch 16, 128x128, against
    18 ms here and 22 ms in torch. Here the forward pass keeps which of the window's taps won
    (an int8 per output), and the backward pass places each tap's share of the gradient back
    at its input position. Like torch, the first maximum in window order wins a tie, a NaN wins
    over numbers, and an input that is the maximum of several windows sums their gradients in
    torch's order (output positions in row-major order), so gradients are bit-identical to
    torch's. That is the CPU form; other backends run XLA's reduce_window, whose gradient
    (select_and_scatter) may give a tie to another maximum (see uses_cpu_forms).

    Raises:
      ValueError: where torch's MaxPool2d raises: padding over half the window, or an input
        too small for one window.
    """
    h, w = x.shape[1:3]
    if 2 * padding > window:
        raise ValueError(f"max pool: padding {padding} is over half the {window}x{window} window")
    if min(_pooled_size(h, window, stride, padding), _pooled_size(w, window, stride, padding)) < 1:
        raise ValueError(
            f"max pool {window}x{window}, padding {padding}: input {h}x{w} is smaller than one "
            "window (a larger image is needed)"
        )
    if not uses_cpu_forms():  # XLA's reduce_window; its gradient is a select_and_scatter
        pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
        return jax.lax.reduce_window(
            x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1), pads
        )
    return _max_pool(x, window, stride, padding, (h, w))


def _pooled_size(size: int, window: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - window) // stride + 1  # torch's floor mode


def _max_pool_taps(x, window, stride, padding):
    """The padded input's window taps, in torch's scan order, each a strided (N, OH, OW, C)
    view."""
    n, h, w, c = x.shape
    oh, ow = (_pooled_size(s, window, stride, padding) for s in (h, w))
    edge = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    padded = jnp.pad(x, edge, constant_values=-jnp.inf)
    for i in range(window):
        for j in range(window):
            end = (n, i + stride * (oh - 1) + 1, j + stride * (ow - 1) + 1, c)
            yield jax.lax.slice(padded, (0, i, j, 0), end, (1, stride, stride, 1))


def _max_pool_forward(x, window, stride, padding, input_hw):
    best = winner = None
    for tap_index, tap in enumerate(_max_pool_taps(x, window, stride, padding)):
        if best is None:
            best, winner = tap, jnp.zeros(tap.shape, jnp.int8)
            continue
        takes = (tap > best) | jnp.isnan(tap)  # torch: `val > maxval || isnan(val)`
        best = jnp.where(takes, tap, best)
        winner = jnp.where(takes, jnp.int8(tap_index), winner)
    if window > stride:  # overlapping windows: each winner is read by several taps' shares
        winner = _computed_once(winner)
    return best, winner


def _computed_once(winner: jax.Array) -> jax.Array:
    """winner, as XLA will compute it once and store it.

    XLA copies cheap elementwise producers into every fusion that reads them, so the backward
    pass, which reads each window's winner once per tap, recomputed the window's whole
    compare-and-select chain each time: 81 tap reads per output of a 3x3 window, 30 ms of
    ResNet-18's stem backward at batch 16 on this project's CPU. A product with the identity
    matrix is an operation XLA does not fuse into its consumers, so the winner is stored; the
    product is exact for the small integers a winner holds (lax.optimization_barrier does not
    stop the fusion: XLA:CPU removes barriers before it fuses).
    """
    block = math.gcd(winner.shape[-1], 64)  # identity blocks of up to 64 channels
    identity = jnp.eye(block, dtype=jnp.float32)
    # Only the channel axis is split: a batch sharded over devices stays as it is (merging it
    # with the others and splitting the channels, 96 into 3 x 32, is a reshape that an
    # explicitly sharded batch does not allow).
    blocks = winner.reshape(*winner.shape[:-1], -1, block).astype(jnp.float32)
    stored = jnp.dot(blocks, identity, precision=jax.lax.Precision.HIGHEST)
    return stored.reshape(winner.shape).astype(jnp.int8)


def _max_pool_backward(window, stride, padding, input_hw, winner, gradient):
    (n, oh, ow, c), (h, w) = gradient.shape, input_hw
    # Padded row r = stride * output_row + tap_row, so the padded rows of one residue class
    # (r mod stride) receive gradient only from the taps of that class, each shifted by whole
    # output rows. Summing each class at output resolution and interleaving the classes once
    # gives XLA one array to materialize; placing every tap with a stride-dilated pad at input
    # resolution made it keep window**2 input-sized arrays and re-add them in each of
    # BatchNorm's backward fusions (76 ms instead of 15 in ResNet's stem, forward and backward).
    rows, cols = -(-(h + 2 * padding) // stride), -(-(w + 2 * padding) // stride)
    zero = jnp.zeros((), gradient.dtype)
    classes = []
    for class_row in range(stride):
        for class_col in range(stride):
            # Last tap first: torch adds an input's shares in increasing output position, which
            # is decreasing tap index, and float addition is order-sensitive.
            taps = itertools.product(
                reversed(range(class_row, window, stride)),
                reversed(range(class_col, window, stride)),
            )
            total = jnp.zeros((n, rows, cols, c), gradient.dtype)
            for i, j in taps:
                share = jnp.where(winner == i * window + j, gradient, zero)
                shift_rows, shift_cols = (i - class_row) // stride, (j - class_col) // stride
                edges = (
                    (0, 0, 0),
                    (shift_rows, rows - oh - shift_rows, 0),
                    (shift_cols, cols - ow - shift_cols, 0),
                    (0, 0, 0),
                )
                total = total + jax.lax.pad(share, zero, edges)
            classes.append(total)
    # (class_row, class_col, n, rows, cols, c) -> (n, rows, class_row, cols, class_col, c)
    by_class = jnp.stack(classes).reshape(stride, stride, n, rows, cols, c)
    interleaved = by_class.transpose(2, 3, 0, 4, 1, 5)
    # One merge per reshape: JAX's explicit sharding (a batch sharded over 'data') rejects a
    # reshape that merges two pairs of dimensions at once.
    padded = interleaved.reshape(n, rows * stride, cols, stride, c)
    padded = padded.reshape(n, rows * stride, cols * stride, c)
    return (padded[:, padding : padding + h, padding : padding + w],)


# input_hw, static like the window, gives the backward pass the input's size (several sizes
# pool to the same output).
_max_pool = jax.custom_vjp(
    lambda x, *static: _max_pool_forward(x, *static)[0], nondiff_argnums=(1, 2, 3, 4)
)
_max_pool.defvjp(_max_pool_forward, _max_pool_backward)


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The (out_size, in_size) averaging matrix of torch's AdaptiveAvgPool along one axis.

    Output bin i averages inputs [floor(i * in / out), ceil((i + 1) * in / out)); bins overlap
    when in_size is not a multiple of out_size and repeat pixels when in_size < out_size.
    """
    matrix = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
    """torch.nn.AdaptiveAvgPool2d on NHWC input, exact at every input size."""
    (_, h, w, _), (oh, ow) = x.shape, output_size
    if (h, w) == (oh, ow):
        return x
    if h % oh == 0 and w % ow == 0:
        # Equal, non-overlapping bins: a plain reshape-mean, cheaper than the matrices.
        n, c = x.shape[0], x.shape[-1]
        return x.reshape(n, oh, h // oh, ow, w // ow, c).mean(axis=(2, 4))
    rows = jnp.asarray(adaptive_pool_matrix(h, oh), x.dtype)
    cols = jnp.asarray(adaptive_pool_matrix(w, ow), x.dtype)
    return jnp.einsum("oh,nhwc,pw->nopc", rows, x, cols, precision=jax.lax.Precision.HIGHEST)


def flatten_nchw(x: jax.Array) -> jax.Array:
    """Flatten NHWC features in torch's (C, H, W) order so torch's first Linear applies as is."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def local_response_norm(
    x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0
) -> jax.Array:
    """Local response normalization across channels of NHWC input, as Krizhevsky et al. (2012)
    define it: b_i = a_i / (k + alpha * sum_j a_j^2)^beta, j over the `size` channels centred on
    i (fewer at the edges). The paper uses k=2, n=5, alpha=1e-4, beta=0.75.

    torch.nn.LocalResponseNorm divides alpha by `size`: it computes the same with
    alpha_torch = alpha * size.
    """
    channels = x.shape[-1]
    before = size // 2
    squares = jnp.pad(jnp.square(x), ((0, 0),) * (x.ndim - 1) + ((before, size - 1 - before),))
    # lax.slice, not indexing: with a symbolic batch size (jax.export, jaxnets.deploy)
    # indexing traces to a gather.
    window = sum(jax.lax.slice_in_dim(squares, i, i + channels, axis=-1) for i in range(size))
    return x / (k + alpha * window) ** beta
