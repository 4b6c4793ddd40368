"""The learning-rate schedules against torch's own schedulers, composed as torchvision's
reference trainer composes them (references/classification/train.py): every step's rate."""

import numpy as np
import pytest
import torch
from conftest import tiny_config

from train.config import ConfigError, validate
from train.optim import learning_rate_schedule

STEPS_PER_EPOCH = 3


def torchvision_rates(config, iterations: int) -> np.ndarray:
    """The rate of each of `iterations` scheduler periods, built like train.py builds it:
    SequentialLR(warmup, main) with the main schedule starting after the warmup."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.learning_rate)
    periods = iterations // config.num_epochs  # periods an epoch: 1 stepped per epoch
    warmup = int(config.warmup_epochs * periods)
    main = {
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=iterations - warmup, eta_min=config.lr_min
        ),
        "step": lambda: torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=config.lr_step_epochs * periods, gamma=config.lr_gamma
        ),
        "exponential": lambda: torch.optim.lr_scheduler.ExponentialLR(
            optimizer, gamma=config.lr_gamma ** (1 / periods)
        ),
        "multistep": lambda: torch.optim.lr_scheduler.MultiStepLR(
            optimizer, [m * periods for m in config.lr_milestones], gamma=config.lr_gamma
        ),
    }[config.schedule]()
    if warmup:
        kind = {
            "linear": torch.optim.lr_scheduler.LinearLR,
            "constant": torch.optim.lr_scheduler.ConstantLR,
        }[config.lr_warmup_method]
        first = kind(optimizer, config.lr_warmup_decay, total_iters=warmup)  # start factor
        main = torch.optim.lr_scheduler.SequentialLR(optimizer, [first, main], [warmup])
    rates = []
    for _ in range(iterations):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        main.step()
    return np.array(rates)


def jaxnets_rates(config) -> np.ndarray:
    schedule = learning_rate_schedule(config, STEPS_PER_EPOCH)
    return np.asarray(schedule(np.arange(config.num_epochs * STEPS_PER_EPOCH)), np.float64)


# The recipes torchvision documents (references/classification/README.md), and the rest of
# each option.
RECIPES = {
    "v1 resnet50": dict(schedule="step", learning_rate=0.1, num_epochs=90, lr_step_epochs=30),
    "v2 resnet50": dict(
        schedule="cosine", learning_rate=0.5, num_epochs=600, warmup_epochs=5, lr_warmup_decay=0.01
    ),
    "v2 with lr_min": dict(
        schedule="cosine", learning_rate=0.5, num_epochs=60, warmup_epochs=3, lr_min=1e-3
    ),
    "mobilenet-style exponential": dict(
        schedule="exponential", learning_rate=0.064, num_epochs=40, lr_gamma=0.973
    ),
    "constant warmup then step": dict(
        schedule="step",
        learning_rate=0.4,
        num_epochs=20,
        warmup_epochs=2,
        lr_warmup_method="constant",
        lr_warmup_decay=0.25,
        lr_step_epochs=5,
    ),
    "multistep": dict(
        schedule="multistep", learning_rate=0.1, num_epochs=20, lr_milestones=(5, 12), lr_gamma=0.2
    ),
}


@pytest.mark.parametrize("recipe", RECIPES)
def test_epoch_unit_runs_torchvisions_scheduler_stepped_per_epoch(recipe):
    """Every step of an epoch at the rate torchvision's trainer gives that whole epoch."""
    config = tiny_config(schedule_unit="epoch", **RECIPES[recipe])
    expected = np.repeat(torchvision_rates(config, config.num_epochs), STEPS_PER_EPOCH)
    np.testing.assert_allclose(jaxnets_rates(config), expected, rtol=2e-6, atol=0)


@pytest.mark.parametrize("recipe", RECIPES)
def test_step_unit_runs_the_same_schedulers_stepped_per_batch(recipe):
    """The same curves with a batch as the period (the warmup and T_max in steps)."""
    config = tiny_config(schedule_unit="step", **RECIPES[recipe])
    expected = torchvision_rates(config, config.num_epochs * STEPS_PER_EPOCH)
    np.testing.assert_allclose(jaxnets_rates(config), expected, rtol=2e-6, atol=0)


def test_v2_schedule_never_reaches_lr_min_and_starts_at_the_warmup_decay():
    config = tiny_config(schedule_unit="epoch", **RECIPES["v2 resnet50"])
    rates = jaxnets_rates(config)
    assert rates[0] == pytest.approx(0.5 * 0.01) and rates[STEPS_PER_EPOCH] == pytest.approx(
        0.5 * (0.01 + 0.99 / 5)
    )
    assert rates[5 * STEPS_PER_EPOCH] == pytest.approx(0.5)  # the warmup's end: the base rate
    assert 0 < rates[-1] < 1e-5


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(schedule_unit="batch"), "config.schedule_unit='batch': expected one of"),
        (dict(lr_warmup_method="cosine"), "config.lr_warmup_method='cosine': expected one of"),
        (dict(lr_warmup_decay=0.0), "config.lr_warmup_decay=0.0: expected in (0, 1]"),
        (dict(lr_min=1.0, learning_rate=0.1), "config.lr_min=1.0: expected in [0, learning_rate)"),
        (
            dict(schedule_unit="epoch", warmup_epochs=0.5),
            "config.warmup_epochs=0.5: expected a whole number of epochs with schedule_unit=",
        ),
    ],
)
def test_schedule_options_are_checked(overrides, message):
    with pytest.raises(ConfigError) as raised:
        validate(tiny_config(**overrides), device_count=1)
    assert str(raised.value).startswith(message)
