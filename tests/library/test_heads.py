"""Custom heads: the transfer-learning tutorial's MLP in place of `fc` (or `classifier.6`),
converted both ways against the PyTorch module the tutorial builds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import nhwc, relative_error, torchvision_model
from torch import nn
from torchvision.models.feature_extraction import get_graph_node_names

import jaxnets
from jaxnets.convert import ConversionError, from_torchvision, to_torchvision

SPEC = ("dropout:0.5", "linear:256", "relu", "dropout:0.3", "linear:N")


def tutorial_head(in_features, hidden=256, classes=10):
    return nn.Sequential(nn.Dropout(0.5), nn.Linear(in_features, hidden), nn.ReLU(),
                         nn.Dropout(0.3), nn.Linear(hidden, classes))  # fmt: skip


@pytest.fixture(scope="module")
def tuned_resnet50():
    """A ResNet-50 'fine-tuned' in PyTorch the tutorial's way (random weights stand in)."""
    model = torchvision_model("resnet50")
    model.fc = tutorial_head(2048)
    return model.eval()


def test_a_torch_model_with_the_tutorial_head_converts_and_matches(tuned_resnet50):
    variables = from_torchvision("resnet50", tuned_resnet50.state_dict(), head=SPEC)
    assert {k for k in variables["params"] if k.startswith("fc")} == {"fc_1", "fc_4"}
    model = jaxnets.create_model("resnet50", num_classes=10, head=SPEC)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = tuned_resnet50(x).numpy()
    with jax.default_matmul_precision("highest"):
        actual = jax.jit(model.apply)(variables, jnp.asarray(nhwc(x)))
    assert relative_error(actual, expected) < 1e-4
    assert (
        jaxnets.node_names("resnet50", head=SPEC)[-6:]
        == get_graph_node_names(tuned_resnet50)[1][-6:]
    )


def test_a_jaxnets_model_with_a_head_loads_strictly_into_the_tutorial_module():
    model = jaxnets.create_model("resnet18", num_classes=10, head=",".join(SPEC))
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    state = to_torchvision("resnet18", variables, head=SPEC)
    torch_model = torchvision_model("resnet18")
    torch_model.fc = tutorial_head(512)
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    np.testing.assert_array_equal(
        torch_model.state_dict()["fc.4.weight"].numpy(),
        np.asarray(variables["params"]["fc_4"]["kernel"]).T,
    )


def test_vgg_heads_replace_classifier_6_both_ways():
    """classifier[6] = Sequential(...): keys classifier.6.1.weight .. classifier.6.4.bias, Flax
    modules classifier_6_1 and classifier_6_4; back into the same module strictly, bit for bit."""
    torch_model = torchvision_model("vgg11")
    torch_model.classifier[6] = tutorial_head(4096)
    variables = from_torchvision("vgg11", torch_model.state_dict(), head=SPEC)
    assert variables["params"]["classifier_6_4"]["kernel"].shape == (256, 10)
    state = to_torchvision("vgg11", variables, head=SPEC)
    assert "classifier.6.1.weight" in state and "classifier.6.4.bias" in state
    fresh = torchvision_model("vgg11", seed=1)
    fresh.classifier[6] = tutorial_head(4096)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    for key, value in torch_model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key].numpy(), value.numpy(), err_msg=key)


def test_imagenet_weights_get_a_new_head_of_torch_default_init():
    """Transfer learning: ImageNet's plain fc is dropped and the spec's head starts anew, its
    Linears at nn.Linear's default, U(+-1/sqrt(fan_in))."""
    imagenet = torchvision_model("resnet50").state_dict()
    variables = from_torchvision("resnet50", imagenet, head=SPEC, num_classes=10, reinit_head=True)
    hidden = np.asarray(variables["params"]["fc_1"]["kernel"])
    assert hidden.shape == (2048, 256) and variables["params"]["fc_4"]["kernel"].shape == (256, 10)
    bound = 1 / np.sqrt(2048)
    assert np.abs(hidden).max() <= bound and np.abs(hidden).max() > 0.9 * bound
    np.testing.assert_array_equal(
        variables["params"]["layer4_2"]["conv3"]["kernel"],
        imagenet["layer4.2.conv3.weight"].numpy().transpose(2, 3, 1, 0),
    )


def test_a_head_whose_shapes_differ_from_the_spec_is_one_line(tuned_resnet50):
    state = tuned_resnet50.state_dict()
    wrong = ("dropout:0.5", "linear:512", "relu", "dropout:0.3", "linear:N")
    with pytest.raises(ConversionError, match=r"the weights' head \(fc\.1\.weight \(256, 2048\)"):
        from_torchvision("resnet50", state, head=wrong)
    with pytest.raises(ConversionError, match=r"does not fit torchvision's head \(fc\.weight"):
        from_torchvision("resnet50", state)  # the spec forgotten
    for message in [str(e) for e in _errors(state, wrong)]:
        assert "\n" not in message and "--reinit-head" in message
    variables = from_torchvision("resnet50", state, head=SPEC)
    with pytest.raises(ConversionError, match=r"custom head \(fc_1, fc_4\): pass its spec"):
        to_torchvision("resnet50", variables)


def _errors(state, spec):
    for kwargs in ({"head": spec}, {}):
        try:
            from_torchvision("resnet50", state, **kwargs)
        except ConversionError as e:
            yield e


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "expected layers such as 'linear:256'"),
        ("linear:0", "expected linear:K, K > 0, or linear:N"),
        ("linear:big", "expected linear:K, K > 0, or linear:N"),
        ("dropout:1.5,linear:N", "expected dropout:P with 0 <= P < 1"),
        ("gelu,linear:N", "unknown layer 'gelu'; expected linear:K, relu or dropout:P"),
        ("linear:N,relu", "the last layer must be linear:N"),
        ("relu:3,linear:N", "relu takes no value"),
    ],
)
def test_a_head_spec_that_does_not_parse_is_a_value_error_naming_it(spec, message):
    with pytest.raises(ValueError, match=message) as error:
        jaxnets.create_model("resnet18", head=spec)
    assert f"head spec {spec!r}" in str(error.value)
