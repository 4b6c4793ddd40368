"""jaxnets.deploy: every format run back in its own runtime against the JAX model, the ONNX
graph's shape (BatchNorm folded, no Transpose in NCHW), preprocessing inside the artifact,
int8 quantization, and what a failed export leaves behind (nothing)."""

import collections
import json

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from conftest import relative_error, torchvision_model

import jaxnets
from jaxnets import deploy, extras, layers
from jaxnets.deploy import function, runtime
from jaxnets.deploy.onnx_graph import UnsupportedPrimitive

# The bound: an artifact's logits within 1e-5 of the logit scale of JAX's, in float32.
# Measured worst over the 19 architectures: docs/export.md (scripts/export_sweep.py).
TOLERANCE = 1e-5
SUFFIX = {"onnx": ".onnx", "stablehlo": ".stablehlo", "savedmodel": "", "tflite": ".tflite"}
# A smaller input than the architectures' 224 keeps the sweep short; every layer still runs.
SIZES = {"alexnet_paper": 227, "lenet5": 32, "resnet18": 64, "vgg11_bn": 32,
         "resnext50_32x4d": 64, "alexnet": 64}  # fmt: skip


def variables_of(name: str) -> dict:
    """torchvision's random init, BatchNorm statistics randomized (so folding them matters);
    the historic models: Flax's init."""
    if name in ("alexnet_paper", "lenet5"):
        size, channels = SIZES[name], 1 if name == "lenet5" else 3
        model = jaxnets.create_model(name)
        with layers.forms("xla"):
            return model.init(jax.random.key(0), jnp.zeros((1, size, size, channels)), train=False)
    state = {k: v.numpy() for k, v in torchvision_model(name).state_dict().items()}
    return jaxnets.from_torchvision(name, state)


def jax_logits(name, variables, images_nhwc) -> np.ndarray:
    model = jaxnets.create_model(name, num_classes=_classes(name, variables))
    with jax.default_matmul_precision("highest"):
        return np.asarray(jax.jit(lambda x: model.apply(variables, x, train=False))(images_nhwc))


def _classes(name, variables) -> int:
    return variables["params"][jaxnets.model_info(name).head]["kernel"].shape[-1]


def images(name: str, batch: int, seed: int = 0) -> np.ndarray:
    size = SIZES[name]
    channels = 1 if name == "lenet5" else 3
    return (
        np.random.default_rng(seed)
        .standard_normal((batch, size, size, channels))
        .astype(np.float32)
    )


@pytest.fixture(scope="module")
def resnet18_variables():
    return variables_of("resnet18")


# LeNet-5's tanh and average pooling, ResNet-18's BatchNorm and residual additions; the other
# layers the lowering meets, alone below (local response norm, grouped convolutions, adaptive
# pooling). Every architecture at its own size, both layouts, every format:
# scripts/export_sweep.py (docs/export.md).
@pytest.mark.parametrize("name", ["lenet5", "resnet18"])
def test_onnx_matches_jax_at_batch_1_and_3_in_both_layouts(name, tmp_path):
    variables = variables_of(name)
    size = SIZES[name]
    x = images(name, 3)
    expected = jax_logits(name, variables, x)
    for layout in ("nhwc", "nchw"):
        path = jaxnets.export_model(name, variables, "onnx", tmp_path / f"{layout}.onnx",
                                    input_size=(size, size), layout=layout)  # fmt: skip
        onnx.checker.check_model(str(path), full_check=True)
        run = runtime.load_runner(path)
        feed = x if layout == "nhwc" else x.transpose(0, 3, 1, 2)
        for batch in (1, 3):
            actual = run(np.ascontiguousarray(feed[:batch]))
            assert relative_error(actual, expected[:batch]) < TOLERANCE, (layout, batch)


def operators(path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_onnx_graph_is_what_a_runtime_wants(resnet18_variables, tmp_path):
    """Conv as Conv, BatchNorm folded into it (no arithmetic left between Conv and Relu), and
    no Transpose at all with NCHW input (one, the input's, with NHWC)."""
    nchw = jaxnets.export_model("resnet18", resnet18_variables, "onnx", tmp_path / "a.onnx",
                                input_size=(64, 64), layout="nchw")  # fmt: skip
    ops = operators(nchw)
    assert ops["Conv"] == 20 and ops["Relu"] == 17 and ops["MaxPool"] == 1
    assert ops["Transpose"] == 0 and ops["Mul"] == 0 and ops["Sub"] == 0
    assert ops["Add"] == 9  # the 8 residual additions and the Linear layer's bias
    nhwc = jaxnets.export_model("resnet18", resnet18_variables, "onnx", tmp_path / "b.onnx",
                                input_size=(64, 64))  # fmt: skip
    assert operators(nhwc)["Transpose"] == 1
    model = onnx.load(str(nchw))
    (graph_input,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 64, 64]
    description = json.loads({p.key: p.value for p in model.metadata_props}["jaxnets"])
    assert description["arch"] == "resnet18" and description["input"]["layout"] == "nchw"


@pytest.mark.parametrize("fmt, name, layouts", [
    ("stablehlo", "lenet5", ("nhwc", "nchw")), ("savedmodel", "lenet5", ("nhwc", "nchw")),
    ("tflite", "lenet5", ("nhwc",)),
])  # fmt: skip
def test_other_formats_match_jax(fmt, name, layouts, tmp_path):
    """The format's plumbing (dynamic batch, layout, signature) on LeNet-5; every model in
    every format: scripts/export_sweep.py."""
    variables = variables_of(name)
    size = SIZES[name]
    x = images(name, 3, seed=1)
    expected = jax_logits(name, variables, x)
    for layout in layouts:
        out = tmp_path / f"{layout}{SUFFIX[fmt]}"
        jaxnets.export_model(name, variables, fmt, out, input_size=(size, size), layout=layout)
        assert runtime.read_metadata(out)["input"]["layout"] == layout
        run = runtime.load_runner(out)
        feed = x if layout == "nhwc" else x.transpose(0, 3, 1, 2)
        for batch in (1, 3):
            actual = run(np.ascontiguousarray(feed[:batch]))
            assert relative_error(actual, expected[:batch]) < TOLERANCE, (layout, batch)


def test_variables_on_a_mesh_export_as_any_other(tmp_path):
    """Variables restored from a training checkpoint carry the training mesh's sharding; it
    must not reach the artifact (TFLite's converter rejects the sharding dialect)."""
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((1,), ("data",))
    variables = jax.device_put(variables_of("lenet5"), NamedSharding(mesh, PartitionSpec()))
    out = jaxnets.export_model("lenet5", variables, "tflite", tmp_path / "m.tflite")
    x = images("lenet5", 2, seed=8)
    expected = jax_logits("lenet5", variables_of("lenet5"), x)
    assert relative_error(runtime.load_runner(out)(x), expected) < TOLERANCE


def test_fixed_batch_and_bfloat16(tmp_path):
    variables = variables_of("lenet5")
    out = jaxnets.export_model("lenet5", variables, "stablehlo", tmp_path / "b.stablehlo",
                               batch=2, dtype="bfloat16")  # fmt: skip
    exported = jax.export.deserialize(bytearray(out.read_bytes()))
    assert exported.in_avals[0].shape == (2, 32, 32, 1)
    assert exported.in_avals[0].dtype == jnp.bfloat16
    x = images("lenet5", 2, seed=2)
    actual = np.asarray(exported.call(jnp.asarray(x, jnp.bfloat16)), np.float32)
    expected = jax_logits("lenet5", variables, x)
    assert relative_error(actual, expected) < 0.1  # bfloat16's 8 bits of mantissa
    assert np.mean(actual.argmax(-1) == expected.argmax(-1)) == 1.0


def test_preprocessing_inside_the_artifact_is_evals(tmp_path):
    """uint8 photographs in: the artifact's resize, crop and normalization give what
    `jaxnets eval`'s tf.data pipeline gives, and its logits the model's on those images."""
    import tensorflow as tf
    from sklearn.datasets import load_sample_images

    from train.data import preprocess

    photo = load_sample_images().images[0][:300, :400]  # 300x400, a real photograph
    prep = deploy.Preprocessing(image_size=(300, 400), resize=73, crop=64)
    signature = function.Signature((64, 64), preprocessing=prep)
    ours = np.asarray(function._preprocess(signature)(jnp.asarray(photo[None])))[0]
    image = preprocess.center_crop(preprocess.resize_shorter_side(tf.constant(photo), 73), 64)
    mean, std = np.asarray(prep.mean) * 255, np.asarray(prep.std) * 255
    theirs = (image.numpy().astype(np.float32) - mean) / std
    # The same antialiased bilinear weights; float32 sums in another order can put a pixel
    # that lands on .5 on the other side of the rounding: one level, rarely.
    levels = np.abs(ours - theirs) * std
    assert levels.max() < 1 + 1e-3 and np.mean(levels > 1e-3) < 1e-3

    variables = variables_of("resnet18")
    out = jaxnets.export_model("resnet18", variables, "onnx", tmp_path / "p.onnx",
                               preprocessing=prep)  # fmt: skip
    batch = np.stack([photo, photo[::-1]])
    actual = runtime.load_runner(out)(batch)
    expected = jax_logits("resnet18", variables, np.asarray(function._preprocess(signature)(batch)))
    assert relative_error(actual, expected) < TOLERANCE
    assert runtime.read_metadata(out)["preprocessing"]["resize"] == 73


def test_int8_onnx_is_a_quarter_and_agrees(resnet18_variables, tmp_path):
    calibration = images("resnet18", 32, seed=3)
    out = jaxnets.export_model("resnet18", resnet18_variables, "onnx", tmp_path / "q.onnx",
                               input_size=(64, 64), quantize="int8",
                               calibration=calibration)  # fmt: skip
    ops = operators(out)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] >= 2 * ops["Conv"]
    float_bytes = sum(np.asarray(v).nbytes for v in jax.tree.leaves(resnet18_variables["params"]))
    assert out.stat().st_size < 0.26 * float_bytes
    x = images("resnet18", 16, seed=4)
    expected = jax_logits("resnet18", resnet18_variables, x)
    actual = runtime.load_runner(out)(x)
    # int8 rounding moves logits by a few percent of their scale, never by their whole range.
    assert relative_error(actual, expected) < 0.2
    assert (
        json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["jaxnets"])[
            "quantized"
        ]
        == "int8"
    )


def test_bad_input_leaves_nothing(resnet18_variables, tmp_path):
    v = resnet18_variables
    cases = [
        (dict(format="pdf"), ValueError, "format 'pdf'"),
        (dict(input_size=(0, 0)), ValueError, "below resnet18.s minimum"),
        (dict(dtype="bfloat16"), ValueError, "onnx artifacts are float32"),
        (dict(quantize="int8"), ValueError, "needs calibration images"),
        (dict(format="stablehlo", quantize="int8", calibration=np.zeros((1, 64, 64, 3))),
         ValueError, "stablehlo is not quantized"),
        (dict(opset=9), ValueError, "--opset 9"),
        (dict(layout="chw"), ValueError, "layout 'chw'"),
        # Calibration images of another size: ONNX Runtime fails mid-export.
        (dict(quantize="int8", calibration=np.zeros((2, 32, 32, 3), np.float32)), Exception, ""),
    ]  # fmt: skip
    for options, error, message in cases:
        options = {"format": "onnx", "input_size": (64, 64), **options}
        fmt = options.pop("format")
        with pytest.raises(error, match=message):
            jaxnets.export_model("resnet18", v, fmt, tmp_path / "out.onnx", **options)
        assert list(tmp_path.iterdir()) == [], options
    with pytest.raises(ValueError, match="takes 227x227 input only"):
        jaxnets.export_model("alexnet_paper", variables_of("alexnet_paper"), "onnx",
                             tmp_path / "a.onnx", input_size=(224, 224))  # fmt: skip
    (tmp_path / "taken.onnx").write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        jaxnets.export_model("resnet18", v, "onnx", tmp_path / "taken.onnx", input_size=(64, 64))
    assert (tmp_path / "taken.onnx").read_bytes() == b"mine"
    with pytest.raises(OSError):  # a destination below a file: cannot be created
        jaxnets.export_model("resnet18", v, "onnx", tmp_path / "taken.onnx" / "x.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.onnx"]


def test_a_failing_tflite_conversion_leaves_nothing(tmp_path, monkeypatch):
    """The SavedModel it converts from, the flatbuffer and its .json: none of them remain."""
    from jaxnets.deploy import tensorflow

    def fail(*args):
        raise RuntimeError("converter failed")

    monkeypatch.setattr(tensorflow, "tflite_bytes", fail)
    with pytest.raises(RuntimeError, match="converter failed"):
        jaxnets.export_model("lenet5", variables_of("lenet5"), "tflite", tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_missing_extra_names_it(resnet18_variables, tmp_path, monkeypatch):
    monkeypatch.setattr(extras, "missing", lambda extra: ["onnxruntime"])
    with pytest.raises(extras.MissingExtra, match=r"pip install 'jaxnets\[export\]'"):
        jaxnets.export_model("resnet18", resnet18_variables, "onnx", tmp_path / "m.onnx")


def lowered_matches(function, shape, tmp_path, operator: str, seed: int = 7):
    """`function` of a (batch, ...) float32 input, lowered with a symbolic batch and run in
    ONNX Runtime at batch 2, against JAX; the graph holds `operator`."""
    from jaxnets.deploy.onnx_graph import to_onnx

    spec = jax.ShapeDtypeStruct((jax.export.symbolic_shape("b")[0], *shape), jnp.float32)
    with layers.forms("xla"):
        closed = jax.make_jaxpr(function)(spec)
    model = to_onnx(closed, spec, opset=17, metadata={})
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops[operator] >= 1
    path = tmp_path / "f.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(seed).standard_normal((2, *shape)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        expected = np.asarray(jax.jit(function)(x))
    assert relative_error(runtime.load_runner(path)(x), expected) < TOLERANCE
    return ops


def test_adaptive_pooling_as_einsum(tmp_path):
    """VGG's and AlexNet's adaptive average pooling from a map of another size (overlapping
    bins: a matrix product each way), then torch's flattening order."""
    pool = lambda x: layers.flatten_nchw(layers.adaptive_avg_pool(x, (7, 7)))
    lowered_matches(pool, (5, 4, 3), tmp_path, "Einsum")


def test_local_response_norm(tmp_path):
    """The 2012 AlexNet's normalization across channels: padding, slices, powers."""
    lowered_matches(lambda x: layers.local_response_norm(x * 10), (5, 5, 16), tmp_path, "Pow")


def test_grouped_convolution_with_batchnorm_folded(tmp_path):
    """ResNeXt's grouped 3x3 convolution, its BatchNorm folded into the Conv's weights."""
    conv = jax.random.normal(jax.random.key(0), (3, 3, 4, 16))  # 2 groups of 4 inputs
    scale, shift = jnp.linspace(0.5, 2.0, 16), jnp.linspace(-1.0, 1.0, 16)

    def block(x):
        y = jax.lax.conv_general_dilated(x, conv, (1, 1), ((1, 1), (1, 1)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         feature_group_count=2)  # fmt: skip
        return jax.nn.relu(y * scale + shift)

    ops = lowered_matches(block, (6, 6, 8), tmp_path, "Conv")
    assert ops["Conv"] == 1 and ops["Mul"] == ops["Add"] == 0 and ops["Relu"] == 1


def test_unknown_primitive_is_named():
    from jaxnets.deploy.onnx_graph import to_onnx

    spec = jax.ShapeDtypeStruct((2, 3), jnp.float32)
    closed = jax.make_jaxpr(lambda x: jnp.cumsum(x, axis=1))(spec)
    with pytest.raises(UnsupportedPrimitive, match="no lowering for the JAX primitive 'cumsum'"):
        to_onnx(closed, spec, opset=17, metadata={})


def test_artifact_format_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown artifact"):
        runtime.artifact_format(tmp_path / "model.bin")
    with pytest.raises(ValueError, match="not a SavedModel"):
        runtime.artifact_format(tmp_path)
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        runtime.load_runner(tmp_path / "broken.onnx")
    (tmp_path / "broken.stablehlo").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"not a serialized jax\.export artifact"):
        runtime.load_runner(tmp_path / "broken.stablehlo")
