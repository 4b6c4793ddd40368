"""Backbones: node names as torchvision's graph has them, feature stages, truncation, the
extractor inside a larger model, converted weights without their head, and the bad requests.
Every node's values against torchvision are in test_parity.py (eval and train mode, all 19)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import (
    nhwc,
    relative_error,
    torchvision_model,
    without_inplace_relu,
)
from flax import linen as nn
from test_alexnet_paper import TorchAlexNetPaper
from test_lenet5 import TorchLeNet5
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import jaxnets
from jaxnets import layers
from jaxnets.convert import ConversionError, from_torchvision

REFERENCE_MODULES = {"alexnet_paper": TorchAlexNetPaper, "lenet5": TorchLeNet5}


def reference_module(name):
    if name in REFERENCE_MODULES:
        torch.manual_seed(0)
        return REFERENCE_MODULES[name]()
    return torchvision_model(name)


# All 19 torchvision models are also checked in test_parity.py's every-node test.
@pytest.mark.parametrize("name", ["alexnet", "alexnet_paper", "lenet5", "resnet18", "resnet50",
                                  "resnext50_32x4d", "vgg11", "vgg11_bn"])  # fmt: skip
def test_node_names_are_torchvision_graph_nodes_in_order(name):
    """The same names, in the same order, as torchvision's get_graph_node_names (both modes;
    the input placeholder `x` aside); for the historic models, of their reference modules."""
    train_nodes, eval_nodes = get_graph_node_names(reference_module(name))
    assert train_nodes == eval_nodes
    assert jaxnets.node_names(name) == eval_nodes[1:]


@pytest.mark.parametrize("name", ["lenet5", "alexnet_paper"])
def test_historic_models_nodes_match_their_reference_modules(name, highest_precision):
    torch_model = without_inplace_relu(reference_module(name)).eval()
    info = jaxnets.model_info(name)
    in_channels = 1 if name == "lenet5" else 3
    x = torch.randn(2, in_channels, info.input_size, info.input_size)
    names = jaxnets.node_names(name)
    with torch.no_grad():
        expected = create_feature_extractor(torch_model, names)(x)
    variables = from_torchvision(name, torch_model.state_dict())
    actual = jaxnets.create_feature_extractor(name, names).apply(variables, jnp.asarray(nhwc(x)))
    for n in names:
        value = expected[n]
        value = nhwc(value) if value.ndim == 4 else value.numpy()
        assert relative_error(actual[n], value) < 1e-4, n


@pytest.mark.parametrize("name", ["resnet50", "vgg16_bn", "alexnet", "lenet5"])
def test_features_only_returns_each_stage_as_feature_info_describes(name):
    info = jaxnets.feature_info(name)
    size = jaxnets.model_info(name).input_size
    model = jaxnets.create_model(name, features_only=True)
    in_channels = 1 if name == "lenet5" else 3
    x = jnp.zeros((2, size, size, in_channels))
    variables = jax.eval_shape(lambda: jaxnets.create_model(name).init(jax.random.key(0), x))
    maps = jax.eval_shape(model.apply, variables, x)
    assert isinstance(maps, list) and len(maps) == len(info)
    for stage, feature_map in zip(info, maps, strict=True):
        assert feature_map.shape[0] == 2 and feature_map.shape[-1] == stage.channels
        # Unpadded layers (AlexNet, LeNet) give maps a little smaller than size / reduction.
        assert 0.6 * size / stage.reduction <= feature_map.shape[1] <= size // stage.reduction
    picked = jaxnets.create_model(name, features_only=True, out_indices=(-1, 0))
    last, first = jax.eval_shape(picked.apply, variables, x)
    assert last.shape == maps[-1].shape and first.shape == maps[0].shape


def test_feature_info_of_resnet50_and_vgg16():
    stages = jaxnets.feature_info("resnet50")
    assert [(f.module, f.node, f.channels, f.reduction) for f in stages] == [
        ("relu", "relu", 64, 2),
        ("layer1", "layer1.2.relu_2", 256, 4),
        ("layer2", "layer2.3.relu_2", 512, 8),
        ("layer3", "layer3.5.relu_2", 1024, 16),
        ("layer4", "layer4.2.relu_2", 2048, 32),
    ]  # fmt: skip
    vgg = jaxnets.feature_info("vgg16")
    assert [f.module for f in vgg] == ["features.4", "features.9", "features.16", "features.23",
                                       "features.30"]  # fmt: skip
    assert [f.reduction for f in vgg] == [2, 4, 8, 16, 32]
    dilated = jaxnets.feature_info("resnet50", replace_stride_with_dilation=(False, True, True))
    assert [f.reduction for f in dilated] == [2, 4, 8, 8, 8]


@pytest.fixture(scope="module")
def resnet18_converted():
    torch_model = without_inplace_relu(torchvision_model("resnet18", num_classes=10))
    return torch_model, from_torchvision("resnet18", torch_model.state_dict())


def test_module_names_stand_for_their_last_node_and_dicts_rename(resnet18_converted):
    torch_model, variables = resnet18_converted
    return_nodes = {"layer1": "c2", "layer2.1": "block", "layer2.0.downsample": "shortcut",
                    "flatten": "pooled", "fc": "logits"}  # fmt: skip
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        expected = create_feature_extractor(torch_model.eval(), return_nodes)(x)
    extractor = jaxnets.create_feature_extractor("resnet18", return_nodes, num_classes=10)
    actual = extractor.apply(variables, jnp.asarray(nhwc(x)))
    assert list(actual) == list(return_nodes.values())
    for key, value in expected.items():
        value = nhwc(value) if value.ndim == 4 else value.numpy()
        assert relative_error(actual[key], value) < 1e-4, key
    np.testing.assert_array_equal(
        actual["logits"],
        jaxnets.create_model("resnet18", num_classes=10).apply(variables, jnp.asarray(nhwc(x))),
    )


def test_extractor_stops_after_its_last_node(resnet18_converted):
    """Stopping at layer2 leaves layer3 and layer4 out of the compiled program, of the
    initialized variables and of the BatchNorm updates, as torchvision's cut graph does."""
    _, variables = resnet18_converted
    x = jnp.ones((2, 64, 64, 3))
    model = jaxnets.create_model("resnet18", num_classes=10)
    extractor = jaxnets.create_feature_extractor("resnet18", ["layer2"], num_classes=10)

    def convolutions(fn):
        with layers.forms("xla"):  # every convolution a convolution (see layers.conv2d)
            return len(re.findall(r"stablehlo\.convolution", jax.jit(fn).lower(x).as_text()))

    full = convolutions(lambda x: model.apply(variables, x))
    cut = convolutions(lambda x: extractor.apply(variables, x))
    # stem 1, layer1 4, layer2 4 and its 1x1 shortcut; layer3 and layer4 would add 10.
    assert (cut, full) == (10, 20)
    flops = lambda fn: jax.jit(fn).lower(x).compile().cost_analysis()["flops"]
    # Each ResNet stage costs about as much as another: three of five is about 60%.
    assert flops(lambda x: extractor.apply(variables, x)) < 0.7 * flops(
        lambda x: model.apply(variables, x)
    )

    assert set(extractor.init(jax.random.key(0), x)["params"]) == {
        "conv1", "bn1", "layer1_0", "layer1_1", "layer2_0", "layer2_1"
    }  # fmt: skip
    _, state = extractor.apply(variables, x, train=True, mutable=["batch_stats"])
    _, full_state = model.apply(variables, x, train=True, mutable=["batch_stats"])
    for layer, stats in state["batch_stats"].items():
        reference = full_state if layer.startswith(("bn1", "layer1", "layer2")) else variables
        jax.tree.map(np.testing.assert_array_equal, stats, reference["batch_stats"][layer])


def test_extractor_inside_a_larger_model_uses_its_own_scope(resnet18_converted):
    """A backbone as a submodule: its variables nest under its name, and the taps of the
    enclosing model's own jaxnets classifier are not mistaken for the backbone's."""
    _, variables = resnet18_converted

    class TwoTowers(nn.Module):
        @nn.compact
        def __call__(self, x):
            c3, c5 = jaxnets.create_model("resnet18", features_only=True, out_indices=(2, 4),
                                          name="backbone")(x)  # fmt: skip
            logits = jaxnets.create_model("resnet18", num_classes=10, name="classifier")(x)
            return c3.mean() + c5.mean(), logits

    x = jnp.ones((1, 64, 64, 3))
    both = {"params": {"backbone": variables["params"], "classifier": variables["params"]},
            "batch_stats": {"backbone": variables["batch_stats"],
                            "classifier": variables["batch_stats"]}}  # fmt: skip
    pooled, logits = TwoTowers().apply(both, x)
    c3, c5 = jaxnets.create_model("resnet18", features_only=True, out_indices=(2, 4)).apply(
        variables, x
    )
    np.testing.assert_allclose(pooled, c3.mean() + c5.mean(), rtol=1e-6)
    assert logits.shape == (1, 10)
    initialized = TwoTowers().init(jax.random.key(0), x)["params"]
    assert "layer4_1" in initialized["backbone"] and "fc" not in initialized["backbone"]


def test_remat_backbones_reach_block_outputs_but_not_inside_blocks():
    x = jnp.ones((1, 32, 32, 3))
    variables = jax.jit(jaxnets.create_model("resnet18").init)(jax.random.key(0), x)
    extractor = jaxnets.create_feature_extractor("resnet18", ["layer2", "layer3.0"], remat=True)
    features = jax.jit(extractor.apply)(variables, x)
    plain = jaxnets.create_feature_extractor("resnet18", ["layer2", "layer3.0"])
    jax.tree.map(np.testing.assert_array_equal, features, jax.jit(plain.apply)(variables, x))
    with pytest.raises(ValueError, match=r"resnet18: node 'layer3\.0\.bn1' lies inside a resid"):
        jaxnets.create_feature_extractor("resnet18", ["layer3.0.bn1"], remat=True)


def test_features_only_weights_drop_the_head_and_check_the_rest(tmp_path):
    torch_model = torchvision_model("resnet18", num_classes=7)
    state = torch_model.state_dict()
    variables = from_torchvision("resnet18", state, features_only=True)
    assert "fc" not in variables["params"]
    x = jnp.ones((1, 64, 64, 3))
    features = jaxnets.create_model("resnet18", features_only=True).apply(variables, x)
    full = from_torchvision("resnet18", state)
    expected = jaxnets.create_model("resnet18", features_only=True).apply(full, x)
    jax.tree.map(np.testing.assert_array_equal, features, expected)

    broken = {k: v for k, v in state.items() if k != "layer3.1.bn2.running_var"}
    with pytest.raises(ConversionError, match=r"1 missing keys \(layer3\.1\.bn2\.running_var\)"):
        from_torchvision("resnet18", broken, features_only=True)


@pytest.mark.parametrize(
    "request_, message",
    [
        (["layer5"], r"resnet18: unknown node 'layer5'; closest: layer4, layer3, layer2, layer1"),
        (["layer1.0.relu_3"], r"unknown node 'layer1\.0\.relu_3'; closest: layer1\.0\.relu_1,"),
        ([], r"resnet18: no return nodes asked for"),
        ("layer1", r"return_nodes is a list or a dict, not 'layer1'"),
        ({"layer1": "a", "layer2": "a"}, r"output key 'a' is asked for twice"),
    ],
)
def test_bad_return_nodes_are_one_line_value_errors(request_, message):
    with pytest.raises(ValueError, match=message) as error:
        jaxnets.create_feature_extractor("resnet18", request_)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("out_indices", [(5,), (-6,), (), 2])
def test_out_indices_out_of_range_are_one_line_value_errors(out_indices):
    with pytest.raises(ValueError, match=r"resnet18: out_indices") as error:
        jaxnets.create_model("resnet18", features_only=True, out_indices=out_indices)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="out_indices is an option of features_only=True"):
        jaxnets.create_model("resnet18", out_indices=(1,))
