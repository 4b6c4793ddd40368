"""jaxnets.layers.conv2d's matrix-product forms against XLA's convolution, at every convolution
geometry the architectures have and every map small enough for the matrix-product form, and
the grouped convolutions' kernel gradient on larger maps."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import relative_error

import jaxnets
from jaxnets import layers

# One model per convolution geometry: ResNet's basic and bottleneck blocks, ResNeXt's grouped
# 3x3, the dilated ResNet option, VGG's 3x3 and AlexNet's 11x11/4, 5x5 and 3x3 convolutions.
GEOMETRY_MODELS = {
    "resnet18": {},
    "resnet50": {"replace_stride_with_dilation": (False, True, True)},
    "resnext50_32x4d": {},
    "vgg11": {},
    "alexnet": {},
}


@functools.cache
def convolution_geometries() -> list[tuple]:
    """(kernel size, stride, padding, dilation, groups) of every convolution the models above
    run, recorded from conv2d's calls while tracing them."""
    seen = set()
    conv2d = layers.conv2d

    def record(x, kernel, strides, padding, dilation, groups):
        seen.add((kernel.shape[:2], strides, padding, dilation, groups))
        return conv2d(x, kernel, strides, padding, dilation, groups)

    layers.conv2d = record
    try:
        for name, options in GEOMETRY_MODELS.items():
            model = jaxnets.create_model(name, num_classes=10, **options)
            jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    finally:
        layers.conv2d = conv2d
    return sorted(seen)


# The matrix-product forms are tested on output maps up to 4x4, beyond the 2x2 where conv2d
# chooses them (layers.SMALL_MAP_PIXELS).
TESTED_MAP_PIXELS = 16


def small_map_cases():
    """Each geometry at every input size whose output map has at most TESTED_MAP_PIXELS
    pixels, square and not."""
    cases = []
    for kernel, stride, padding, dilation, groups in convolution_geometries():
        if kernel == (1, 1) and padding == layers.pad2(0):
            sizes = [(1, 1), (5, 3)]  # the pointwise form: any size
        else:
            sizes = [
                (h, w)
                for h, w in itertools.product(range(1, 9), repeat=2)
                if (h == w or (h, w) == (2, 3))
                and 0 < _out_pixels((h, w), kernel, stride, padding, dilation) <= TESTED_MAP_PIXELS
            ]
        for size in sizes:
            cases.append((size, kernel, stride, padding, dilation, groups))
    return cases


def grouped_cases():
    """Grouped geometries on maps larger than the matrix-product form takes: XLA's forward
    pass and input gradient, a product per tap for the kernel gradient."""
    return [
        ((size, size), kernel, stride, padding, dilation, groups)
        for kernel, stride, padding, dilation, groups in convolution_geometries()
        for size in (9, 10)  # output maps of 25 pixels and more
        if groups > 1
    ]


def _out_pixels(size, kernel, stride, padding, dilation):
    out = [
        layers._conv_out_size(s, k, stride, p, dilation)
        for s, k, p in zip(size, kernel, padding, strict=True)
    ]
    return out[0] * out[1] if min(out) > 0 else 0


def xla_conv(x, kernel, stride, padding, dilation, groups):
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), padding, rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
    )  # fmt: skip


def forward_and_gradients(conv, x, kernel, cotangent):
    y, vjp = jax.vjp(conv, x, kernel)
    return (y, *vjp(cotangent))


def test_the_geometries_include_every_kind_of_convolution():
    geometries = convolution_geometries()
    kernels = {g[0] for g in geometries}
    assert {(1, 1), (3, 3), (5, 5), (7, 7), (11, 11)} <= kernels
    assert {g[1] for g in geometries} == {1, 2, 4}  # strides
    assert {g[3] for g in geometries} == {1, 2, 4}  # dilations
    assert {g[4] for g in geometries} == {1, 32}  # groups


def matrix_forms(groups: int) -> dict:
    """The matrix-product forms that can compute a convolution of `groups` groups."""
    forms = {"taps": layers._conv_as_matmul}
    if groups == 1:
        forms["dense"] = lambda x, k, stride, padding, dilation, groups: layers._conv_as_dense(
            x, k, stride, padding, dilation
        )
    return forms


def test_the_matrix_product_forms_equal_xla_convolution_in_float64():
    """Forward, input gradient and kernel gradient, to float64 rounding: the same sums of
    products in another order. conv2d (whichever form it picks), and each matrix-product form
    on every geometry and small map; grouped geometries on larger maps too. One jitted program
    (one compilation instead of one per operation and case)."""
    rng = np.random.default_rng(0)
    small, grouped = small_map_cases(), grouped_cases()
    assert len(small) > 40 and len(grouped) == 4
    checks = []  # (case, form name, form, reference), each with its inputs below
    inputs = []
    for case in small + grouped:
        (h, w), kernel, stride, padding, dilation, groups = case
        per_group_in, per_group_out = 3, 2  # the geometry matters, not the width
        options = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
        reference = functools.partial(xla_conv, **options)
        forms = {"conv2d": functools.partial(layers.conv2d, strides=stride, padding=padding,
                                             dilation=dilation, groups=groups)}  # fmt: skip
        if case in small:
            forms.update({name: functools.partial(form, **options)
                          for name, form in matrix_forms(groups).items()})  # fmt: skip
        with jax.enable_x64(True):
            x = rng.normal(size=(2, h, w, per_group_in * groups))
            k = rng.normal(size=(*kernel, per_group_in, per_group_out * groups))
            y = jax.eval_shape(reference, x, k)
            cotangent = rng.normal(size=y.shape)
        for name, form in forms.items():
            checks.append((case, name, form, reference))
            inputs.append((x, k, cotangent))

    def every_check(inputs):
        return [
            (forward_and_gradients(form, *args), forward_and_gradients(reference, *args))
            for (_, _, form, reference), args in zip(checks, inputs, strict=True)
        ]

    with jax.enable_x64(True), layers.forms("cpu"):
        # LLVM's optimizations take half of this large program's compile time and change
        # no float64 result beyond rounding; the forms are chosen before them.
        compiled = (
            jax.jit(every_check)
            .lower(inputs)
            .compile(compiler_options={"xla_backend_optimization_level": 0})
        )
        results = compiled(inputs)
        # No XLA convolution in the matrix-product forms. The grouped form on larger maps
        # keeps its forward pass (printed twice: as the primal and the differentiated
        # forward) and its input gradient; XLA's kernel gradient would be a fourth.
        for (case, name, form, _), args in zip(checks, inputs, strict=True):
            text = str(jax.make_jaxpr(forward_and_gradients, static_argnums=0)(form, *args))
            convolutions = 3 if case in grouped else 0
            if name != "conv2d" or case in grouped:
                assert text.count("conv_general_dilated") == convolutions, (case, name)
    assert {name for _, name, _, _ in checks} == {"conv2d", "taps", "dense"}
    for (case, name, _, _), (ours, theirs) in zip(checks, results, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert a.shape == b.shape, (case, name)
            assert relative_error(a, b) < 1e-12, (case, name)


@pytest.mark.float32
def test_float32_errors_stay_within_the_dot_product_bound():
    """In float32 both forms round; each stays within the worst-case rounding bound of a
    sum of K products, K * eps * (|x| conv |kernel|), against the float64 result. A bound on
    every CPU: it does not depend on the order either one sums in."""
    rng = np.random.default_rng(1)
    x64 = rng.normal(size=(16, 2, 2, 512))
    k64 = rng.normal(size=(3, 3, 512, 512)) / np.sqrt(9 * 512)
    conv = functools.partial(layers.conv2d, padding=layers.pad2(1))
    reference = functools.partial(xla_conv, stride=1, padding=layers.pad2(1), dilation=1, groups=1)
    with jax.enable_x64(True):
        exact = np.asarray(reference(jnp.asarray(x64), jnp.asarray(k64)))
        magnitude = np.asarray(reference(jnp.asarray(np.abs(x64)), jnp.asarray(np.abs(k64))))
    bound = 9 * 512 * np.finfo(np.float32).eps * magnitude
    x32, k32 = jnp.asarray(x64, jnp.float32), jnp.asarray(k64, jnp.float32)
    options = {"stride": 1, "padding": layers.pad2(1), "dilation": 1, "groups": 1}
    forms = {"conv2d": conv, **{name: functools.partial(form, **options)
                                for name, form in matrix_forms(1).items()}}  # fmt: skip
    for name, form in forms.items():
        with layers.forms("cpu"):
            ours = np.asarray(jax.jit(form)(x32, k32))
        assert np.all(np.abs(ours - exact) <= bound), name
        # And the error is rounding's, not a wrong tap's (an O(1) relative error).
        assert relative_error(ours, exact) < 1e-5, name


def test_other_backends_and_large_maps_keep_xla_convolution():
    def jaxpr(x, forms):
        k = jnp.ones((3, 3, 4, 4))
        with layers.forms(forms):  # a new function each time: JAX caches traces by function
            return str(
                jax.make_jaxpr(lambda x, k: layers.conv2d(x, k, padding=layers.pad2(1)))(x, k)
            )

    small, large = jnp.ones((1, 2, 2, 4)), jnp.ones((1, 3, 3, 4))
    assert "conv_general_dilated" in jaxpr(small, "xla")
    assert "conv_general_dilated" not in jaxpr(small, "cpu")
    # A 3x3 output map: XLA's convolution is as fast there alone, and faster in a network.
    assert "conv_general_dilated" in jaxpr(large, "cpu")


def test_small_maps_take_the_whole_map_product_where_the_batch_pays_for_its_matrix():
    def jaxpr(batch, channels):
        x, k = jnp.ones((batch, 2, 2, channels)), jnp.ones((3, 3, channels, channels))
        with layers.forms("cpu"):
            conv = lambda x, k: layers.conv2d(x, k, padding=layers.pad2(1))
            return str(jax.make_jaxpr(conv)(x, k))

    # 4 x 4 blocks of 512 x 512: 4.2M elements, more than one example pays for: the taps,
    # sliced from a padded copy of the map.
    assert " pad[" in jaxpr(1, 512)
    # The same at batch 128 (32,768 elements an example): one product with the whole-map
    # matrix, the activations read as they are.
    whole_map = jaxpr(128, 512)
    assert " pad[" not in whole_map and "dot_general" in whole_map


def test_the_conv_module_checks_its_groups():
    module = layers.Conv(6, (3, 3), feature_group_count=4)
    with pytest.raises(ValueError, match="6 output channels are not both divisible by 4 groups"):
        module.init(jax.random.key(0), jnp.zeros((1, 4, 4, 8)))
