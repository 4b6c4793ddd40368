"""The two-GPU AlexNet of 2012 against a PyTorch module written from the paper (torchvision's
alexnet is the later single-GPU variant): parameter count, forward pass and gradients in float64,
local response normalization against torch's, conversion both ways, and a training run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import assert_matches_reference_module, nhwc, relative_error, tiny_config

import jaxnets
from jaxnets.layers import local_response_norm


def torch_lrn():
    # torch divides alpha by the window size; the paper does not.
    return torch.nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)


class TorchAlexNetPaper(torch.nn.Module):
    """Krizhevsky et al. (2012), section 3.5: grouped conv2/4/5 for the two GPUs, response
    normalization after the first two ReLUs, overlapping max pools, dropout on fc6/fc7."""

    def __init__(self, num_classes=1000, dropout=0.5):
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), torch_lrn(), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), torch_lrn(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def test_local_response_norm_matches_torch():
    x = torch.randn(2, 7, 4, 3, generator=torch.Generator().manual_seed(0)).double() * 30
    with jax.enable_x64(True):
        ours = local_response_norm(jnp.asarray(nhwc(x)))
    assert relative_error(ours, nhwc(torch_lrn()(x))) < 1e-13
    assert relative_error(ours, nhwc(x)) > 1e-3  # at this scale it does normalize


@pytest.mark.slow  # float64 at 227x227
def test_alexnet_paper_matches_its_torch_module():
    torch.manual_seed(0)
    reference = TorchAlexNetPaper(num_classes=10, dropout=0.0).double().train()
    x = torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(1)).double()
    labels = torch.tensor([1, 8])
    expected = reference(x)
    torch.nn.functional.cross_entropy(expected, labels).backward()

    with jax.enable_x64(True):
        options = {"dropout": 0.0, "dtype": jnp.float64, "param_dtype": jnp.float64}
        variables = jaxnets.from_torchvision("alexnet_paper", reference.state_dict(), **options)
        model = jaxnets.create_model("alexnet_paper", num_classes=10, **options)

        @jax.jit
        def loss(params):
            logits = model.apply({"params": params}, jnp.asarray(nhwc(x)), train=True)
            log_p = jax.nn.log_softmax(logits)
            return -jnp.take_along_axis(log_p, jnp.asarray(labels)[:, None], 1).mean(), logits

        (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    assert relative_error(logits, expected.detach().numpy()) < 1e-10
    fresh = TorchAlexNetPaper(num_classes=10).double()
    assert_matches_reference_module("alexnet_paper", variables, grads, reference, fresh, 1e-9)


def test_alexnet_paper_parameters_and_initialization():
    model = jaxnets.create_model("alexnet_paper")
    x = jnp.zeros((1, 227, 227, 3))
    params = jax.jit(lambda: model.init(jax.random.key(0), x))()["params"]
    count = sum(v.size for v in jax.tree.leaves(params))
    assert count == sum(p.numel() for p in TorchAlexNetPaper().parameters()) == 60_965_224
    # The paper's init: N(0, 0.01) weights; biases 1 in conv2, conv4, conv5 and fc6, fc7.
    assert np.asarray(params["classifier_0"]["kernel"]).std() == pytest.approx(0.01, rel=0.01)
    ones = ["features_4", "features_10", "features_12", "classifier_0", "classifier_3"]
    for name, layer in params.items():
        assert np.all(np.asarray(layer["bias"]) == (1.0 if name in ones else 0.0)), name
    with pytest.raises(ValueError, match="alexnet_paper takes 227x227 input, not 224x224"):
        model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))


@pytest.mark.slow  # a 227x227 training run
def test_alexnet_paper_trains_with_the_training_program(image_folder, tmp_path):
    from train.train import train_and_evaluate

    # The photo folder (12 validation images) keeps the 227x227 evaluation short.
    config = tiny_config(
        model="alexnet_paper", dataset=f"folder:{image_folder}", image_size=227, batch_size=4,
        eval_batch_size=4, max_steps=2, learning_rate=0.001,
    )  # fmt: skip
    summary = train_and_evaluate(config, tmp_path)
    assert summary["steps"] == 2 and np.isfinite(summary["loss"])
    assert 0 <= summary["top1"] <= 1
