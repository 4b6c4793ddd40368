"""LeNet-5 against a PyTorch module written from the paper (torchvision has no LeNet): parameter
count, forward pass and gradients in float64, conversion both ways, and training on the digits."""

import jax
import jax.numpy as jnp
import pytest
import torch
from conftest import REPO, assert_matches_reference_module, load_config, nhwc, relative_error

import jaxnets


class TorchLeNet5(torch.nn.Module):
    """LeNet-5 as jaxnets.lenet describes it: C1 6@5x5, 2x2 average, C3 16@5x5, 2x2 average,
    120, 84, num_classes."""

    def __init__(self, num_classes=10, in_channels=1, activation="tanh"):
        super().__init__()
        act = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[activation]
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, 6, 5), act(), torch.nn.AvgPool2d(2),
            torch.nn.Conv2d(6, 16, 5), act(), torch.nn.AvgPool2d(2),
        )  # fmt: skip
        self.classifier = torch.nn.Sequential(
            torch.nn.Linear(400, 120), act(), torch.nn.Linear(120, 84), act(),
            torch.nn.Linear(84, num_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


@pytest.mark.parametrize("activation, in_channels", [("tanh", 1), ("relu", 3)])
def test_lenet5_matches_its_torch_module(activation, in_channels):
    torch.manual_seed(0)
    reference = TorchLeNet5(10, in_channels, activation).double()
    assert sum(p.numel() for p in reference.parameters()) == 61_706 + 300 * (in_channels - 1) // 2
    x = torch.randn(4, in_channels, 32, 32, generator=torch.Generator().manual_seed(1)).double()
    labels = torch.tensor([0, 3, 7, 9])
    expected = reference(x)
    torch.nn.functional.cross_entropy(expected, labels).backward()

    with jax.enable_x64(True):
        options = {"activation": activation, "dtype": jnp.float64, "param_dtype": jnp.float64}
        variables = jaxnets.from_torchvision("lenet5", reference.state_dict(), **options)
        model = jaxnets.create_model("lenet5", **options)

        def loss(params):
            logits = model.apply({"params": params}, jnp.asarray(nhwc(x)))
            log_p = jax.nn.log_softmax(logits)
            return -jnp.take_along_axis(log_p, jnp.asarray(labels)[:, None], 1).mean(), logits

        (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    assert relative_error(logits, expected.detach().numpy()) < 1e-12
    flax_count = sum(v.size for v in jax.tree.leaves(variables["params"]))
    assert flax_count == sum(p.numel() for p in reference.parameters())
    fresh = TorchLeNet5(10, in_channels, activation).double()
    assert_matches_reference_module("lenet5", variables, grads, reference, fresh, 1e-10)


def test_lenet5_rejects_other_sizes_and_activations():
    model = jaxnets.create_model("lenet5")
    with pytest.raises(ValueError, match="lenet5 takes 32x32 input, not 28x28"):
        model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    with pytest.raises(ValueError, match="activation 'gelu': expected tanh or relu"):
        jaxnets.create_model("lenet5", activation="gelu").init(
            jax.random.key(0), jnp.zeros((1, 32, 32, 1))
        )


def test_lenet5_trains_on_the_digits_and_goes_back_to_torch(tmp_path):
    from jaxnets_cli import main as cli
    from train.train import train_and_evaluate

    config = load_config(REPO / "configs" / "digits_lenet5.py")
    config.update({"num_epochs": 2, "progress_bar": False, "log_every_steps": 5})
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["model"] == "lenet5" and summary["top1"] > 0.5  # chance: 0.1

    out = tmp_path / "lenet5.pth"
    assert cli.main(["convert", "lenet5", "--from-jax", str(tmp_path / "run"), "--out",
                     str(out)]) == 0  # fmt: skip
    reference = TorchLeNet5(10, in_channels=3)  # the digits are replicated to RGB
    reference.load_state_dict(torch.load(out, weights_only=True), strict=True)
