"""`jaxnets convert --from-jax WORKDIR --format torchvision-checkpoint`: read back the way
torchvision's reference trainer (references/classification/train.py) resumes, then one more
SGD step taken by torch from the file and by jaxnets from its own checkpoint."""

import json
import os
import shutil
import stat

import jax
import numpy as np
import pytest
import torch
import torchvision
from conftest import run_cli, tiny_config
from flax import serialization
from torchvision.ops._utils import split_normalization_params

import jaxnets
from jaxnets import checkpoints
from train.optim import learning_rate_schedule
from train.state import create_model, create_train_state
from train.train import train_and_evaluate

pytestmark = pytest.mark.slow  # a training run (make test runs it, make test-fast does not)

# 32 training images in batches of 16: 2 steps an epoch; the run stops after epoch 2 of 4.
RUN = dict(
    schedule="cosine",
    schedule_unit="epoch",
    warmup_epochs=1,
    num_epochs=4,
    max_steps=4,
    checkpoint_every_steps=0,
    learning_rate=0.05,
    weight_decay=1e-3,
    norm_weight_decay=0.0,
    ema_decay=0.5,
)


@pytest.fixture(scope="module")
def run(image_folder, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = tiny_config(dataset=f"folder:{image_folder}", **RUN)
    train_and_evaluate(config, workdir)
    return config, workdir


def reference_trainer_resume(path):
    """What the trainer builds for `--model resnet18 --lr 0.05 --wd 1e-3 --norm-weight-decay 0
    --lr-scheduler cosineannealinglr --lr-warmup-epochs 1 --lr-warmup-method linear
    --epochs 4 --model-ema`, then its `--resume` lines, with torch.load's weights_only=True."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = torchvision.models.resnet18(num_classes=4)
    norm, other = split_normalization_params(model)
    optimizer = torch.optim.SGD(
        [{"params": other, "weight_decay": 1e-3}, {"params": norm, "weight_decay": 0.0}],
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-3,
    )
    schedulers = torch.optim.lr_scheduler
    scheduler = schedulers.SequentialLR(
        optimizer,
        [
            schedulers.LinearLR(optimizer, start_factor=0.01, total_iters=1),
            schedulers.CosineAnnealingLR(optimizer, T_max=3),
        ],
        milestones=[1],
    )
    ema = torch.optim.swa_utils.AveragedModel(model, use_buffers=True)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["lr_scheduler"])
    ema.load_state_dict(checkpoint["model_ema"])
    return model, optimizer, ema, checkpoint["epoch"] + 1


def jaxnets_state(config, workdir):
    model = create_model(config, 4, 1)
    init = model.init(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32), train=False)
    state = create_train_state(config, model, dict(init), steps_per_epoch=2)
    with checkpoints.manager(workdir, read_only=True) as manager:
        saved, _ = checkpoints.restore(manager, like=serialization.to_state_dict(state))
    return serialization.from_state_dict(state, saved)


def test_the_reference_trainer_resumes_where_the_run_stopped(run, tmp_path, capsys):
    config, workdir = run
    out = tmp_path / "checkpoint.pth"
    code, printed, err = run_cli(
        capsys,
        "convert",
        "resnet18",
        "--from-jax",
        str(workdir),
        "--out",
        str(out),
        "--format",
        "torchvision-checkpoint",
    )
    assert code == 0, err
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    assert "at epoch 1: --resume continues at epoch 2" in printed
    model, optimizer, ema, start_epoch = reference_trainer_resume(out)
    assert start_epoch == 2
    assert model.bn1.num_batches_tracked.shape == ()
    state = jaxnets_state(config, workdir)

    # The rate of epoch 2 in both, and one step from the same gradient: momentum buffers, the
    # weight decay of each group and the rate all have to agree for the parameters to.
    schedule = learning_rate_schedule(config, steps_per_epoch=2)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(float(schedule(4)), rel=1e-6)
    rng = np.random.default_rng(0)
    grads = jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), state.params)
    torch_grads = jaxnets.to_torchvision(
        "resnet18", {"params": grads, "batch_stats": state.batch_stats}
    )
    for key, parameter in model.named_parameters():
        parameter.grad = torch.from_numpy(torch_grads[key])
    optimizer.step()
    stepped = state.apply_gradients(grads=grads)
    ours = jaxnets.to_torchvision(
        "resnet18", {"params": stepped.params, "batch_stats": state.batch_stats}
    )
    for key, parameter in model.named_parameters():
        reference = parameter.detach().numpy()
        scale = np.abs(reference).max()
        assert np.abs(ours[key] - reference).max() <= 1e-6 * scale, key

    ema_state = jaxnets.to_torchvision(
        "resnet18", {"params": state.ema_params, "batch_stats": state.ema_batch_stats}
    )
    for key, value in ema.module.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), ema_state[key], err_msg=key)
    assert int(ema.n_averaged) == 4


def test_what_the_trainer_cannot_express_is_one_line(run, image_folder, tmp_path, capsys):
    _, workdir = run
    args = [
        "convert",
        "resnet18",
        "--out",
        str(tmp_path / "c.pth"),
        "--format",
        "torchvision-checkpoint",
    ]
    frozen = tmp_path / "frozen"  # the same run, as if it had frozen the stem
    shutil.copytree(workdir, frozen)
    saved = json.loads((frozen / "config.json").read_text())
    (frozen / "config.json").write_text(json.dumps({**saved, "freeze": "stem"}))
    cases = [
        (["--from-jax", str(frozen)], "torchvision-checkpoint: frozen layers"),
        (["--weights", str(tmp_path / "x.pth")], "from a training workdir (--from-jax DIR)"),
        (["--from-jax", str(image_folder)], "not a training workdir"),
    ]
    for extra, message in cases:
        code, _, err = run_cli(capsys, *args, *extra)
        assert code == 2 and message in err and err.count("\n") == 1, (extra, err)
    assert not list(tmp_path.glob("*.pth")) and not list(tmp_path.glob(".c.pth*"))
    code, _, err = run_cli(capsys, "convert", "resnet34", "--from-jax", str(workdir), *args[2:])
    assert code == 2 and "the workdir trained resnet18, not resnet34" in err


@pytest.mark.parametrize("warmup_epochs,ema_steps,n_averaged", [(1, 1, 2), (1, 2, 1), (2, 1, 0)])
def test_torchvisions_ema_rule_resumes_averaging_or_copying(
    run, tmp_path, capsys, warmup_epochs, ema_steps, n_averaged
):
    """With ema_torchvision the trainer's AveragedModel count is the updates since the warmup
    ended (2 steps an epoch, 2 epochs done): 0 at the warmup's end, so its next update copies."""
    _, workdir = run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    saved = json.loads((copy / "config.json").read_text())
    saved.update(ema_torchvision=True, ema_steps=ema_steps, warmup_epochs=warmup_epochs)
    (copy / "config.json").write_text(json.dumps(saved))
    out = tmp_path / "c.pth"
    code, _, err = run_cli(capsys, "convert", "resnet18", "--from-jax", str(copy), "--out",
                           str(out), "--format", "torchvision-checkpoint")  # fmt: skip
    assert code == 0, err
    checkpoint = torch.load(out, map_location="cpu", weights_only=True)
    assert int(checkpoint["model_ema"]["n_averaged"]) == n_averaged
