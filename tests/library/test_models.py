"""The model zoo: architecture facts, forward/backward behaviour, BatchNorm and dropout modes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    ALL_MODELS,
    HISTORIC_MODELS,
    ONE_DEPTH_A_KIND,
    TORCHVISION_MODELS,
    TORCHVISION_PARAMS,
    sweep,
)

import jaxnets
from jaxnets import registry


def input_size(name: str) -> int:
    info = jaxnets.model_info(name)
    return info.input_size if info.fixed_input_size else max(32, info.min_input_size)


def init(model, size=(32, 32), batch=2, seed=0):
    x = jax.random.normal(jax.random.key(seed), (batch, *size, 3))
    return model.init(jax.random.key(seed), x, train=False), x


def test_lists_torchvisions_19_architectures_and_the_historic_ones():
    assert jaxnets.list_models() == sorted([*TORCHVISION_PARAMS, *HISTORIC_MODELS])


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_parameter_count_equals_torchvision(name):
    model = jaxnets.create_model(name)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
    count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes["params"]))
    assert count == TORCHVISION_PARAMS[name]


def random_variables(model, size, seed=0):
    """Variables of the model's shapes filled from numpy: a real init of the deep models costs
    ~20 s of XLA compilation here, and these tests are about the forward/backward graph."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *size, 3))))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name in ("scale", "var"):
            return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
        fan_in = math.prod(leaf.shape[:-1]) if name == "kernel" else 1
        return jnp.asarray(rng.normal(0, (2 / fan_in) ** 0.5, leaf.shape), leaf.dtype) * (
            1 if name == "kernel" else 0.1
        )

    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize("name", sweep(ONE_DEPTH_A_KIND))
def test_forward_backward_and_batch_stats(name):
    """One compiled pass per model (XLA compile time dominates here): eval-mode logits at a
    non-square size (square where the architecture takes no other) leave the statistics alone;
    a train-mode step gives every parameter a non-zero gradient and moves every running
    statistic. Logit values are checked against torchvision in test_parity.py."""
    model = jaxnets.create_model(name, num_classes=7)
    s = input_size(name)
    variables = random_variables(model, (s, s))
    square = jax.random.normal(jax.random.key(1), (2, s, s, 3))
    non_square = jax.random.normal(jax.random.key(1), (2, s + 7, 2 * s + 3, 3))
    # Logits at both shapes, against torchvision's: test_parity.py.
    eval_inputs = [square] if jaxnets.model_info(name).fixed_input_size else [non_square]
    x = jax.random.normal(jax.random.key(2), (4, s, s, 3)) * 3 + 1
    labels = jnp.arange(4) % 7

    def loss(params):
        logits, state = model.apply(
            {**variables, "params": params}, x, train=True, mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(3)},
        )  # fmt: skip
        log_p = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(log_p, labels[:, None], 1).mean(), state

    def run(variables):
        evals = [
            model.apply(variables, image, train=False, mutable=["batch_stats"])
            for image in eval_inputs
        ]
        return evals, jax.grad(loss, has_aux=True)(variables["params"])

    # XLA's backend optimizations off: they cost more compile time than they save in one run
    # (ResNet-152: 29 s instead of 36 s here), and this test checks which values are zero.
    lowered = jax.jit(run).lower(variables)
    compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
    evals, (grads, state) = compiled(variables)
    for logits, eval_state in evals:
        assert logits.shape == (2, 7) and logits.dtype == jnp.float32
        assert np.isfinite(np.asarray(logits)).all()
        for a, b in zip(jax.tree.leaves(eval_state), jax.tree.leaves(variables.get(
                "batch_stats", {})), strict=True):  # fmt: skip
            np.testing.assert_array_equal(a, b)
    no_gradient = [
        jax.tree_util.keystr(path)
        for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]
        if not np.any(np.asarray(g) != 0) or not np.isfinite(np.asarray(g)).all()
    ]
    assert not no_gradient, f"no gradient for {no_gradient}"
    if "batch_stats" in variables:
        before = jax.tree.leaves(variables["batch_stats"])
        after = jax.tree.leaves(state["batch_stats"])
        assert len(before) == len(after) > 0
        assert all(not np.allclose(a, b) for a, b in zip(before, after, strict=True))


# The fast tier checks the dropout layer on the cheapest model that has it.
@pytest.mark.parametrize("name", sweep(["alexnet", "vgg11", "vgg11_bn"], fast=("alexnet",)))
def test_dropout_only_in_train_mode(name):
    model = jaxnets.create_model(name, num_classes=10)
    variables, x = init(model, (64, 64))
    out = lambda train, seed: model.apply(
        variables, x, train=train, rngs={"dropout": jax.random.key(seed)}, mutable=["batch_stats"]
    )[0]
    np.testing.assert_array_equal(out(False, 0), out(False, 1))
    assert not np.allclose(out(True, 0), out(True, 1))
    no_dropout = jaxnets.create_model(name, num_classes=10, dropout=0.0)
    a = no_dropout.apply(variables, x, train=True, rngs={"dropout": jax.random.key(0)},
                         mutable=["batch_stats"])[0]  # fmt: skip
    b = no_dropout.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)},
                         mutable=["batch_stats"])[0]  # fmt: skip
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_parameters_and_statistics():
    model = jaxnets.create_model("resnet18", num_classes=4, dtype=jnp.bfloat16)
    variables, x = init(model)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
    assert {leaf.dtype for leaf in jax.tree.leaves(updated)} == {jnp.dtype(jnp.float32)}
    # The convolutions really run in bfloat16.
    hlo = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).as_text()
    assert "bf16" in hlo


@pytest.mark.slow
def test_resnet_options():
    model = jaxnets.create_model("resnet50", zero_init_residual=True, num_classes=3)
    variables, _ = init(model)
    params = variables["params"]
    assert not np.any(params["layer1_0"]["bn3"]["scale"])
    assert np.all(params["layer1_0"]["bn2"]["scale"] == 1)
    dilated = jaxnets.create_model(
        "resnet50", num_classes=3, replace_stride_with_dilation=(False, True, True)
    )
    variables, x = init(dilated, (64, 64))
    assert dilated.apply(variables, x).shape == (2, 3)
    with pytest.raises(ValueError, match="BasicBlock only supports"):
        init(jaxnets.create_model("resnet18", groups=2))


@pytest.mark.slow
def test_initialization_matches_torchvision_schemes():
    params = init(jaxnets.create_model("resnet50"))[0]["params"]
    kernel = np.asarray(params["layer1_0"]["conv2"]["kernel"])  # 3x3, 64 -> 64
    assert kernel.std() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)  # kaiming fan_out
    fc = np.asarray(params["fc"]["kernel"])  # torch Linear default: U(+-1/sqrt(2048))
    assert np.abs(fc).max() <= 1 / math.sqrt(2048) and fc.std() > 0.9 / math.sqrt(3 * 2048)
    assert np.any(params["fc"]["bias"]) and np.abs(params["fc"]["bias"]).max() <= 1 / 2048**0.5

    vgg = jaxnets.create_model("vgg11_bn", num_classes=10)
    params = jax.jit(vgg.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    assert np.asarray(params["classifier_3"]["kernel"]).std() == pytest.approx(0.01, rel=0.02)
    assert not np.any(params["classifier_3"]["bias"]) and not np.any(params["features_0"]["bias"])
    assert np.all(params["features_1"]["scale"] == 1)

    alexnet = init(jaxnets.create_model("alexnet"), (64, 64))[0]["params"]
    conv = np.asarray(alexnet["features_3"]["kernel"])  # torch default U(+-1/sqrt(64*25))
    bound = 1 / math.sqrt(64 * 25)
    assert np.abs(conv).max() <= bound and np.abs(conv).max() > 0.95 * bound


def test_registry_errors():
    with pytest.raises(ValueError, match=r"unknown model 'resnet5'.*closest: resnet50"):
        jaxnets.create_model("resnet5")
    with pytest.raises(ValueError, match="'resnet18' is already registered"):

        @registry.register_model(registry.model_info("resnet18"))
        def resnet18(**kwargs):
            return None

    assert jaxnets.list_models() == sorted([*TORCHVISION_PARAMS, *HISTORIC_MODELS])


@pytest.mark.slow
@pytest.mark.float32
def test_remat_keeps_parameters_and_gradients():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    plain = jaxnets.create_model("resnet18", num_classes=10)
    remat = jaxnets.create_model("resnet18", num_classes=10, remat=True)
    variables = plain.init(jax.random.key(0), x, train=False)
    assert jax.tree.structure(variables) == jax.tree.structure(
        jax.eval_shape(lambda: remat.init(jax.random.key(0), x, train=False))
    )

    def grad_fn(model):
        def loss(params):
            logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                    x, train=True, mutable=["batch_stats"])  # fmt: skip
            return logits.sum()

        return jax.jit(jax.grad(loss))

    jaxprs = [str(jax.make_jaxpr(grad_fn(m))(variables["params"])) for m in (plain, remat)]
    assert "remat" not in jaxprs[0] and "remat" in jaxprs[1]  # blocks are checkpointed
    grads = [grad_fn(m)(variables["params"]) for m in (plain, remat)]
    jax.tree.map(np.testing.assert_array_equal, *grads)


def test_top_level_api_shows_a_call_for_each_function():
    from jaxnets import convert, pretrained, registry

    homes = {
        "create_model": registry,
        "list_models": registry,
        "from_torchvision": convert,
        "to_torchvision": convert,
        "load_pretrained": pretrained,
        "list_weights": pretrained,
    }
    for name, module in homes.items():
        function = getattr(jaxnets, name)
        assert function is getattr(module, name) and name in jaxnets.__all__
        assert f"jaxnets.{name}(" in function.__doc__, name  # an example call
    assert "jaxnets.use_fast_cpu_flags()" in jaxnets.use_fast_cpu_flags.__doc__


@pytest.mark.parametrize("name", ALL_MODELS)
def test_declared_facts_match_the_module(name):
    """What each family declares beside its builder (ModelInfo) is what its module is."""
    import dataclasses

    info = jaxnets.model_info(name)
    model = jaxnets.create_model(name, num_classes=7)
    fields = {f.name for f in dataclasses.fields(model)}
    assert set(info.options) <= fields, set(info.options) - fields
    assert ("remat" in fields) == info.residual_blocks
    assert ("dropout" in fields) == info.dropout
    assert ("bn_batch_groups" in info.options) == info.batch_norm

    def shapes(size):
        x = jnp.zeros((1, size, size, 3))
        return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))

    variables = shapes(info.input_size)
    assert bool(variables.get("batch_stats")) == info.batch_norm
    assert variables["params"][info.stem]["kernel"].ndim == 4  # the first convolution
    assert variables["params"][info.head]["kernel"].shape[-1] == 7
    shapes(info.min_input_size)
    if info.min_input_size > 1:
        with pytest.raises(ValueError):
            shapes(info.min_input_size - 1)
    if info.fixed_input_size:
        with pytest.raises(ValueError):
            shapes(info.input_size + 1)
    else:
        shapes(info.input_size + 1)
