"""Dense evaluation against the standard forward pass and against torchvision's classifier
slid over its own feature map, in float64 (XLA:CPU's float64 convolutions are slow: the fast
tier takes AlexNet and ResNet-18)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import relative_error, torchvision_model

import jaxnets
from jaxnets.convert import from_torchvision
from jaxnets.dense import dense_logits, supports_dense

F64 = {"dtype": jnp.float64, "param_dtype": jnp.float64}


def _variables(name, torch_model):
    variables = from_torchvision(name, torch_model.state_dict())
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), variables)


def _images(size, n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, size, size, 3))


def test_dense_at_the_crop_size_is_the_standard_forward_pass():
    name = "alexnet"
    torch_model = torchvision_model(name)
    with jax.enable_x64(True):
        variables = _variables(name, torch_model)
        images = jnp.asarray(_images(224))
        model = jaxnets.create_model(name, **F64)
        standard = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
        dense = jax.jit(lambda v, x: dense_logits(name, v, x, **F64))(variables, images)
        assert dense.dtype == jnp.float64
        assert relative_error(dense, standard) < 1e-12
    # The FC-as-conv kernels are the converted Linear weights, reshaped: nothing was added.
    converted = from_torchvision(name, torch_model.state_dict())
    assert set(variables["params"]) == set(converted["params"])


@pytest.mark.slow
def test_vgg_dense_at_the_crop_size_is_the_standard_forward_pass():
    """VGG's 7x7 window in float32 (its float64 convolutions take minutes on XLA:CPU): the
    same products summed in another order, far inside 1e-4 of the logit scale."""
    torch_model = torchvision_model("vgg11")
    variables = from_torchvision("vgg11", torch_model.state_dict())
    images = jnp.asarray(_images(224, n=1), jnp.float32)
    with jax.default_matmul_precision("highest"):
        standard = jaxnets.create_model("vgg11").apply(variables, images, train=False)
        dense = jax.jit(lambda v, x: dense_logits("vgg11", v, x))(variables, images)
    assert relative_error(dense, standard) < 1e-4


def test_dense_on_a_larger_image_averages_torchvisions_classifier_over_every_window():
    """At 256 pixels AlexNet's last map is 7x7: torchvision's classifier applied to each of
    the four 6x6 windows of torchvision's own map, averaged, is the reference."""
    torch_model = torchvision_model("alexnet").double().eval()
    images = _images(256)
    with torch.no_grad():
        feature_map = torch_model.features(torch.from_numpy(images).permute(0, 3, 1, 2))
        assert feature_map.shape[2:] == (7, 7)
        windows = [feature_map[:, :, i : i + 6, j : j + 6] for i in range(2) for j in range(2)]
        scores = [torch_model.classifier(torch.flatten(window, 1)) for window in windows]
        expected = torch.stack(scores).mean(0).numpy()
    with jax.enable_x64(True):
        variables = _variables("alexnet", torch_model)
        images = jnp.asarray(images)
        dense = jax.jit(lambda v, x: dense_logits("alexnet", v, x, **F64))(variables, images)
        assert relative_error(dense, expected) < 1e-12
        # Not the standard forward pass, which pools the map down to the window first.
        model = jaxnets.create_model("alexnet", **F64)
        standard = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
        assert relative_error(dense, standard) > 1e-3


def test_dense_with_a_custom_head_applies_every_head_layer_at_every_pixel():
    spec = "dropout:0.5,linear:16,relu,linear:N"
    model = jaxnets.create_model("alexnet", num_classes=5, head=spec)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    images = jnp.asarray(_images(224), jnp.float32)
    dense = jax.jit(lambda v, x: dense_logits("alexnet", v, x, head=spec))(variables, images)
    standard = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
    assert dense.shape == (2, 5)
    np.testing.assert_allclose(dense, standard, rtol=0, atol=1e-5 * float(jnp.abs(standard).max()))


def test_dense_refuses_a_map_smaller_than_the_window_and_fixed_size_models():
    variables = jax.eval_shape(
        lambda: jaxnets.create_model("vgg11").init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    )
    with pytest.raises(ValueError, match="input 192x192 gives a 6x6 map, smaller than the 7x7"):
        jax.eval_shape(
            lambda v, x: dense_logits("vgg11", v, x), variables, jnp.zeros((1, 192, 192, 3))
        )
    assert not supports_dense("lenet5") and not supports_dense("alexnet_paper")
    assert supports_dense("resnet50") and supports_dense("vgg16_bn")
    with pytest.raises(ValueError, match="lenet5 takes 32x32 inputs only"):
        dense_logits("lenet5", {"params": {}}, jnp.zeros((1, 32, 32, 3)))
