"""Numerical parity with torchvision itself, for all 19 architectures (fp32, CPU, highest
matmul precision): random-init torchvision models with randomized BatchNorm, converted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import (
    ONE_DEPTH_A_KIND,
    TORCHVISION_MODELS,
    nhwc,
    relative_error,
    sweep,
    torchvision_model,
    without_inplace_relu,
)
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import jaxnets
from jaxnets.convert import from_torchvision, to_torchvision
from jaxnets.layers import adaptive_avg_pool, max_pool

TOLERANCE = 1e-4  # max |diff| relative to the largest |logit|


def dropout_free(name):
    return {"dropout": 0.0} if jaxnets.model_info(name).dropout else {}


def torch_nodes(torch_model, x, names) -> dict[str, np.ndarray]:
    """torchvision's create_feature_extractor on the same model: every node, NHWC."""
    extractor = create_feature_extractor(without_inplace_relu(torch_model), names)
    with torch.no_grad():
        values = extractor(x)
    return {n: nhwc(v) if v.ndim == 4 else v.numpy() for n, v in values.items()}


@pytest.mark.float32
@pytest.mark.parametrize("name", sweep(TORCHVISION_MODELS))
def test_eval_logits_and_every_node_match_torchvision(name, highest_precision):
    """Logits at 224x224; at 97x131 (odd, non-square, and below VGG's 7x7 and AlexNet's 6x6
    pooling grids), every node of torchvision's graph, through create_feature_extractor on
    both sides, each within TOLERANCE of its own largest value."""
    torch_model = torchvision_model(name, num_classes=10).eval()
    variables = from_torchvision(name, torch_model.state_dict())
    model = jaxnets.create_model(name, num_classes=10)
    # Compiled, as users run it (and 2-8x faster here than op-by-op dispatch).
    apply = jax.jit(lambda variables, x: model.apply(variables, x, train=False))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch_model(x).numpy()
    assert relative_error(apply(variables, jnp.asarray(nhwc(x))), expected) < TOLERANCE

    names = jaxnets.node_names(name, num_classes=10)
    # torchvision's graph, node for node and in order (the input placeholder `x` aside).
    assert names == get_graph_node_names(torch_model)[1][1:]
    extractor = jaxnets.create_feature_extractor(name, names, num_classes=10)
    x = torch.randn(2, 3, 97, 131, generator=torch.Generator().manual_seed(1))
    expected = torch_nodes(torch_model, x, names)
    actual = jax.jit(extractor.apply)(variables, jnp.asarray(nhwc(x)))
    errors = {n: relative_error(actual[n], expected[n]) for n in names}
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, (worst, errors[worst])


# float64 at 48x64: the fast tier checks train-mode BatchNorm on ResNet-18 alone; the full
# tier one depth of each layer stack (the eval test above covers all 19).
@pytest.mark.parametrize(
    "name", sweep([n for n in TORCHVISION_MODELS if n in ONE_DEPTH_A_KIND], fast=("resnet18",))
)
def test_train_mode_nodes_and_running_statistics_match_torchvision(name):
    """One train-mode forward: every node (the logits among them) and the updated
    running_mean/running_var, through create_feature_extractor on both sides.

    Compared in float64: in float32, train-mode BatchNorm divides by statistics of few samples
    and amplifies summation-order noise with depth (up to ~5e-4 of the logit scale after 150
    layers), which would hide a real semantic difference behind a loose tolerance. In float64
    the two frameworks agree to ~1e-12.
    """
    torch_model = torchvision_model(name, num_classes=10, **dropout_free(name)).double().train()
    with jax.enable_x64(True):
        dtypes = {"dtype": jnp.float64, "param_dtype": jnp.float64, **dropout_free(name)}
        variables = from_torchvision(name, torch_model.state_dict(), **dtypes)
        names = jaxnets.node_names(name, num_classes=10)
        extractor = jaxnets.create_feature_extractor(name, names, num_classes=10, **dtypes)
        # Small: XLA:CPU's float64 convolutions are slow. ResNets end on 2x2 maps here, VGG
        # on 1x2, which its adaptive pooling spreads over 7x7; AlexNet needs 63 pixels.
        height = max(48, jaxnets.model_info(name).min_input_size)
        size = (height, height + 16)
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2)).double()
        expected = torch_nodes(torch_model, x, names)  # updates torch's running statistics
        actual, state = jax.jit(
            lambda v, x: extractor.apply(v, x, train=True, mutable=["batch_stats"])
        )(variables, jnp.asarray(nhwc(x)))
        assert actual["fc" if "fc" in names else "classifier.6"].dtype == jnp.float64
        for n in names:
            assert relative_error(actual[n], expected[n]) < 1e-9, n
        updated = to_torchvision(name, {**variables, **state})
    for key, value in torch_model.state_dict().items():
        if key.endswith(("running_mean", "running_var")):
            np.testing.assert_allclose(
                updated[key], value.numpy(), rtol=1e-9, atol=1e-12, err_msg=key
            )


@pytest.mark.parametrize(
    "in_size", [(1, 1), (3, 5), (6, 6), (7, 7), (8, 9), (13, 14), (15, 20), (224, 223)]
)
def test_adaptive_avg_pool_matches_torch_at_every_size(in_size):
    x = torch.randn(2, 4, *in_size, generator=torch.Generator().manual_seed(3))
    for out in [(7, 7), (6, 6), (1, 1)]:
        expected = torch.nn.functional.adaptive_avg_pool2d(x, out).numpy().transpose(0, 2, 3, 1)
        actual = adaptive_avg_pool(jnp.asarray(nhwc(x)), out)
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.float32
@pytest.mark.parametrize(
    "shape, window, stride, padding",
    [((2, 16, 16, 3), 3, 2, 1), ((2, 15, 17, 3), 3, 2, 1), ((2, 13, 13, 4), 3, 2, 0),
     ((2, 9, 11, 2), 2, 2, 0), ((1, 6, 6, 2), 3, 1, 1), ((2, 11, 10, 2), 2, 3, 0)],
)  # fmt: skip
def test_max_pool_forward_and_gradient_are_bit_identical_to_torch(shape, window, stride, padding):
    """Small integers make ties everywhere (torch gives them to the first maximum in window
    order); a NaN wins its windows; overlapping windows add their gradients in torch's order."""
    generator = torch.Generator().manual_seed(0)
    x = (
        torch.randint(0, 3, shape, generator=generator).float()
        + 0.1 * torch.randn(shape, generator=generator).round()
    )
    x[0, 1, 1, 0] = float("nan")
    x_torch = x.permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    expected = torch.nn.functional.max_pool2d(x_torch, window, stride, padding)
    upstream = torch.randn(expected.shape, generator=generator)
    (expected_grad,) = torch.autograd.grad(expected, x_torch, upstream)

    actual, vjp = jax.vjp(lambda v: max_pool(v, window, stride, padding), jnp.asarray(x.numpy()))
    (actual_grad,) = vjp(jnp.asarray(nhwc(upstream)))
    np.testing.assert_array_equal(actual, nhwc(expected.detach()))
    np.testing.assert_array_equal(actual_grad, nhwc(expected_grad))
    assert np.isnan(actual).any()  # the NaN reached the output, as in torch


def test_max_pool_rejects_what_torch_rejects():
    with pytest.raises(ValueError, match="input 1x1 is smaller than one window"):
        max_pool(jnp.zeros((1, 1, 1, 4)), 3, stride=2)
    with pytest.raises(ValueError, match="padding 2 is over half the 3x3 window"):
        max_pool(jnp.zeros((1, 8, 8, 4)), 3, stride=2, padding=2)


@pytest.mark.float32
def test_batchnorm_groups_normalize_each_group_on_its_own(highest_precision):
    # Per-device BatchNorm: each group of the batch behaves as torch's BN on that group alone.
    from jaxnets.layers import BatchNorm

    x = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(4)) * 2 + 1
    torch_bn = torch.nn.BatchNorm2d(3).train()
    halves = [torch_bn(half).detach().numpy() for half in x.split(4)]
    bn = BatchNorm(batch_groups=2)
    variables = bn.init(jax.random.key(0), jnp.zeros((8, 5, 5, 3)), use_running_average=False)
    y, state = bn.apply(variables, jnp.asarray(nhwc(x)), use_running_average=False,
                        mutable=["batch_stats"])  # fmt: skip
    np.testing.assert_allclose(y, nhwc(torch.from_numpy(np.concatenate(halves))), atol=1e-5)
    unbiased_vars = [half.var(dim=(0, 2, 3), unbiased=True).numpy() for half in x.split(4)]
    np.testing.assert_allclose(
        state["batch_stats"]["var"], 0.9 + 0.1 * np.mean(unbiased_vars, 0), rtol=1e-5
    )


@pytest.mark.parametrize("groups", [1, 2])
def test_batchnorm_train_gradients_match_torch(groups):
    """Train-mode BatchNorm's hand-written backward pass against torch's autograd, in float64:
    input, scale and bias gradients, per group of the batch."""
    from jaxnets.layers import BatchNorm

    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 2.0, size=(8, 3, 5, 4))
    scale, bias, upstream = rng.normal(size=3), rng.normal(size=3), rng.normal(size=x.shape)
    torch_x = torch.tensor(x, requires_grad=True)
    torch_scale = torch.tensor(scale, requires_grad=True)
    torch_bias = torch.tensor(bias, requires_grad=True)
    outputs = [
        torch.nn.functional.batch_norm(half, None, None, torch_scale, torch_bias, training=True)
        for half in torch_x.split(8 // groups)
    ]
    torch.cat(outputs).backward(torch.tensor(upstream))

    with jax.enable_x64(True):
        bn = BatchNorm(batch_groups=groups, param_dtype=jnp.float64)
        batch_stats = bn.init(jax.random.key(0), jnp.zeros((8, 5, 4, 3)), False)["batch_stats"]

        def output(params, x):
            y, _ = bn.apply({"params": params, "batch_stats": batch_stats}, x, False,
                            mutable=["batch_stats"])  # fmt: skip
            return y

        params = {"scale": jnp.asarray(scale), "bias": jnp.asarray(bias)}
        _, vjp = jax.vjp(output, params, jnp.asarray(nhwc(torch.tensor(x))))
        param_grads, x_grad = vjp(jnp.asarray(nhwc(torch.tensor(upstream))))
    np.testing.assert_allclose(x_grad, nhwc(torch_x.grad), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(param_grads["scale"], torch_scale.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(param_grads["bias"], torch_bias.grad.numpy(), rtol=1e-10)


def test_batchnorm_statistics_gradients_are_exact():
    """The batch mean and variance are outputs too (the running statistics): gradients that
    reach the loss through them are included, checked against finite differences."""
    from jax.test_util import check_grads

    from jaxnets.layers import _batch_norm_train

    rng = np.random.default_rng(6)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(1.0, 2.0, size=(2, 4, 3, 3, 5)))
        scale, bias = jnp.asarray(rng.normal(size=5)), jnp.asarray(rng.normal(size=5))
        weights = [jnp.asarray(rng.normal(size=shape)) for shape in (x.shape, (2, 1, 1, 1, 5))]

        def loss(x, scale, bias):
            y, mean, var = _batch_norm_train(x, scale, bias, 1e-5)
            return jnp.sum(y * weights[0]) + jnp.sum(mean * weights[1]) + jnp.sum(var**2)

        check_grads(loss, (x, scale, bias), order=1, modes=["rev"])


@pytest.mark.slow  # two float64 ResNet-18 compilations
def test_cpu_and_xla_forms_give_the_same_numbers():
    """The formulations tuned on XLA:CPU (BatchNorm's and max pooling's written-out backward
    passes, 1x1 convolutions as matrix products) against XLA's own, which other backends use,
    both run here in float64: ResNet-18 has all three. Train-mode logits, running statistics
    and every gradient agree to rounding."""
    from jaxnets import layers

    assert layers.uses_cpu_forms()  # the default on this backend
    with jax.enable_x64(True):
        model = jaxnets.create_model(
            "resnet18", num_classes=10, dtype=jnp.float64, param_dtype=jnp.float64
        )
        x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3), jnp.float64)
        variables = model.init(jax.random.key(1), x, train=False)
        weights = jax.random.normal(jax.random.key(2), (2, 10), jnp.float64)

        def loss(params):
            logits, state = model.apply(
                {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(logits * weights), (logits, state)

        results, jaxprs = {}, {}
        for kind in ("cpu", "xla"):
            with layers.forms(kind):  # jit inside: a trace is cached with the forms it used
                step = jax.jit(jax.grad(loss, has_aux=True))
                jaxprs[kind] = str(jax.make_jaxpr(step)(variables["params"]))
                # Without LLVM's optimizations: half the compile time, the same float64 sums.
                compiled = step.lower(variables["params"]).compile(
                    compiler_options={"xla_backend_optimization_level": 0}
                )
                results[kind] = compiled(variables["params"])
    assert "select_and_scatter_add" in jaxprs["xla"] and "select_and_scatter" not in jaxprs["cpu"]
    assert jaxprs["xla"].count("conv_general_dilated") > jaxprs["cpu"].count("conv_general_dilated")
    for ours, reference in zip(
        jax.tree.leaves(results["cpu"]), jax.tree.leaves(results["xla"]), strict=True
    ):
        assert relative_error(ours, reference) < 1e-10
    with (
        pytest.raises(ValueError, match="forms 'gpu': expected one of cpu, xla"),
        layers.forms("gpu"),
    ):
        pass
