"""Fine-tuning: a custom head, frozen layers and a backbone learning-rate scale, step for step
against the PyTorch recipe; weights from a torchvision file or a training workdir; the
recipe's config on a folder; and the bad requests."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import REPO, load_config, nhwc, tiny_config, torchvision_model
from test_train import final_params, run_train
from torch import nn

import jaxnets
from jaxnets.convert import from_torchvision, to_torchvision
from train.config import ConfigError, validate
from train.optim import learning_rate_schedule
from train.state import create_model, create_train_state, frozen_layers, initial_variables
from train.steps import train_step

# Dropout off: the comparison with torch is step for step.
HEAD = "dropout:0.0,linear:32,relu,dropout:0.0,linear:N"


def torch_head(in_features=512, classes=10):
    return nn.Sequential(nn.Dropout(0.0), nn.Linear(in_features, 32), nn.ReLU(), nn.Dropout(0.0),
                         nn.Linear(32, classes))  # fmt: skip


def test_frozen_fine_tuning_steps_match_torch_with_param_groups():
    """Three SGD steps of ResNet-18 with the MLP head, stem and layer1 frozen (requires_grad
    off, BatchNorm in eval mode) and the backbone at a tenth of the head's learning rate
    (torch param groups), in float64: parameters and running statistics agree to 1e-9, the
    frozen ones bit for bit, and the optimizer holds state for the trainable ones only."""
    config = tiny_config(head=HEAD, freeze="stem,layer1", backbone_lr_scale=0.1,
                         learning_rate=0.05, momentum=0.9, weight_decay=1e-3,
                         schedule="constant", label_smoothing=0.0)  # fmt: skip
    torch_model = torchvision_model("resnet18")
    torch_model.fc = torch_head()
    torch_model = torch_model.double()
    initial = {k: v.clone() for k, v in torch_model.state_dict().items()}
    frozen_torch = ("conv1", "bn1", "layer1")
    for module in frozen_torch:
        for parameter in getattr(torch_model, module).parameters():
            parameter.requires_grad_(False)
    named = [(n, p) for n, p in torch_model.named_parameters() if p.requires_grad]
    sgd = torch.optim.SGD(
        [{"params": [p for n, p in named if not n.startswith("fc")], "lr": 0.05 * 0.1},
         {"params": [p for n, p in named if n.startswith("fc")], "lr": 0.05}],
        momentum=0.9, weight_decay=1e-3,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 32, 32, generator=generator, dtype=torch.float64),
                torch.randint(0, 10, (8,), generator=generator)) for _ in range(3)]  # fmt: skip

    with jax.enable_x64(True):
        frozen = frozen_layers(config)
        assert frozen == ("conv1", "bn1", "layer1_0", "layer1_1")
        dtypes = {"dtype": jnp.float64, "param_dtype": jnp.float64}
        model = jaxnets.create_model("resnet18", num_classes=10, head=HEAD, frozen=frozen,
                                     **dtypes)  # fmt: skip
        variables = from_torchvision("resnet18", torch_model.state_dict(), head=HEAD, **dtypes)
        state = create_train_state(config, model, variables, steps_per_epoch=10)
        momentum = sum(leaf.size for leaf in jax.tree.leaves(state.opt_state) if leaf.ndim)
        assert momentum == sum(leaf.size for leaf in jax.tree.leaves(state.trainable()))
        step = jax.jit(functools.partial(
            train_step, num_classes=10, schedule=learning_rate_schedule(config, 10)))  # fmt: skip
        for images, labels in batches:
            state, _ = step(state, jnp.asarray(nhwc(images)), jnp.asarray(labels.numpy()),
                            jax.random.key(0))  # fmt: skip
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        ours = to_torchvision("resnet18", variables, head=HEAD)

    torch_model.train()
    for module in frozen_torch:
        getattr(torch_model, module).eval()
    for images, labels in batches:
        sgd.zero_grad()
        nn.functional.cross_entropy(torch_model(images), labels).backward()
        sgd.step()
    for key, value in torch_model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith(frozen_torch):
            np.testing.assert_array_equal(ours[key], initial[key].numpy(), err_msg=key)
        else:
            assert not np.array_equal(ours[key], initial[key].numpy()), key
            np.testing.assert_allclose(ours[key], value.numpy(), rtol=1e-9, atol=1e-12,
                                       err_msg=key)  # fmt: skip


def test_a_training_run_keeps_frozen_layers_and_its_workdir_starts_another(tmp_path):
    """A run with the MLP head and a frozen backbone leaves the backbone bit for bit; its
    workdir is then init_from for a run with another head: the backbone as trained, the head
    fresh (from a torchvision file: the recipe test below)."""
    from train.train import train_and_evaluate

    config = tiny_config(head=HEAD, freeze="backbone", max_steps=3)
    train_and_evaluate(config, tmp_path / "run")
    _, params = final_params(tmp_path / "run")
    model = create_model(config, num_classes=10, device_count=1)
    start = initial_variables(config, model, (16, 16, 3), num_classes=10)
    for layer, value in start["params"].items():
        same = jax.tree.leaves(jax.tree.map(np.array_equal, params[layer], value))
        assert all(same) == (layer not in ("fc_1", "fc_4")), layer
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["head"] == HEAD and saved["freeze"] == "backbone"

    other = "linear:16,relu,linear:N"
    config = tiny_config(init_from=str(tmp_path / "run"), head=other, freeze="stem")
    model = create_model(config, num_classes=10, device_count=1)
    variables = initial_variables(config, model, (16, 16, 3), num_classes=10)
    np.testing.assert_array_equal(variables["params"]["layer4_1"]["conv2"]["kernel"],
                                  params["layer4_1"]["conv2"]["kernel"])  # fmt: skip
    assert set(variables["params"]) - set(params) == {"fc_0", "fc_2"}
    assert variables["params"]["fc_2"]["kernel"].shape == (16, 10)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"head": "linear:N,relu"}, "config.head: head spec 'linear:N,relu': the last layer"),
        ({"freeze": "layer5"}, "config.freeze: resnet18: no layer 'layer5' to freeze; closest: l"),
        ({"freeze": "layer1.0.conv1"}, "cannot freeze 'layer1.0.conv1' alone"),
        ({"freeze_until": "layr3"}, "config.freeze_until: resnet18: no layer 'layr3' to freeze"),
        ({"freeze": "backbone,fc"}, "freezing backbone,fc leaves nothing to train"),
        ({"backbone_lr_scale": 0.0}, "config.backbone_lr_scale=0.0: expected > 0"),
    ],
)
def test_bad_fine_tuning_configs_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")) as e:
        validate(tiny_config(**overrides), device_count=1)
    assert "\n" not in str(e.value)


@pytest.mark.slow  # a subprocess
def test_a_bad_freeze_on_the_command_line_exits_2_in_one_line(tmp_path):
    result = run_train("--workdir", str(tmp_path / "w"), "--config.freeze=layer9")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("train: error: config.freeze: resnet18: no layer 'layer9' to freeze")
    )
    assert not (tmp_path / "w").exists()


@pytest.mark.slow  # ResNet-50 training steps
def test_the_transfer_recipe_config_runs_on_a_folder(image_folder, tmp_path):
    """configs/transfer_folder.py as its docstring runs it, offline: a random-init torchvision
    ResNet-50 file stands in for IMAGENET1K_V2, on a small folder, for a few steps."""
    from train.train import train_and_evaluate

    torch.save(torchvision_model("resnet50").state_dict(), tmp_path / "resnet50.pth")
    config = load_config(REPO / "configs" / "transfer_folder.py")
    config.update({"dataset": f"folder:{image_folder}", "init_from": str(tmp_path / "resnet50.pth"),
                   "image_size": 32, "eval_resize": 40, "batch_size": 8, "eval_batch_size": 8,
                   "max_steps": 2, "progress_bar": False})  # fmt: skip
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["steps"] == 2
    _, params = final_params(tmp_path / "run")
    start = from_torchvision("resnet50", tmp_path / "resnet50.pth", features_only=True)
    np.testing.assert_array_equal(params["layer4_2"]["conv3"]["kernel"],
                                  start["params"]["layer4_2"]["conv3"]["kernel"])  # fmt: skip
