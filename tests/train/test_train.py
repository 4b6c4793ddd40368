"""The training program: configs, bad-config errors, loss going down, exact resume, and 4
devices against 1 (fine-tuning: test_finetune.py)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from conftest import REPO, load_config, tiny_config, with_file_size_limit

from train.config import ConfigError, base_config, validate
from train.optim import make_optimizer

CONFIGS = sorted((REPO / "configs").glob("*.py"))
CONFIGS_DIGITS = REPO / "configs" / "digits.py"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_parses_and_builds_model_and_optimizer(path):
    import jaxnets
    from train.state import create_model

    # A file of several recipes takes the name of one (the others: test_torchvision_args.py).
    config = load_config(path, "resnet50_v2" if path.stem == "torchvision_recipes" else None)
    how = path.read_text()  # the docstring says how to run it (python -m train or train.sweep)
    assert re.search(rf"python -m train(\.sweep)? --config configs/{path.name}", how)
    validate(config, device_count=1)
    model = create_model(config, num_classes=10, device_count=1)
    shapes = jax.eval_shape(
        lambda: model.init(
            jax.random.key(0), jnp.zeros((1, config.image_size, config.image_size, 3)), train=False
        )
    )
    tx = make_optimizer(config, steps_per_epoch=10)
    opt_state = jax.eval_shape(tx.init, shapes["params"])
    assert jax.tree.leaves(opt_state)
    assert config.model in jaxnets.list_models()


def test_bad_values_are_rejected_with_one_line():
    for overrides, message in [
        ({"model": "resnet5"}, "unknown model 'resnet5'"),
        ({"learning_rate": -0.1}, "learning_rate=-0.1: expected > 0"),
        ({"schedule": "linear"}, "schedule='linear'"),
        ({"dtype": "float16"}, "dtype='float16'"),
        ({"model": "vgg11_bn", "remat": True}, "remat=True: expected False for a model without"),
        ({"eval_tta": "flip,zoom"}, "config.eval_tta 'flip,zoom': unknown protocol 'zoom'"),
        ({"eval_tta": "multi-scale"}, "config.eval_tta 'multi-scale': multi-scale needs"),
        ({"eval_scales": "40"}, "config.eval_scales '40': only with config.eval_tta multi-scale"),
        ({"model": "lenet5", "eval_tta": "dense"}, "dense evaluation: lenet5 takes one input"),
    ]:
        config = base_config()
        config.update(overrides)
        with pytest.raises(ConfigError, match=message) as error:
            validate(config, device_count=1)
        assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="batch_size=64 is not divisible by the 3 devices"):
        validate(base_config(), device_count=3)
    with pytest.raises(AttributeError):
        base_config().batch_sise = 3  # locked: a misspelt key cannot be added


def with_xla_flag(flag: str) -> str:
    """XLA_FLAGS plus `flag`: keeps the flags a CPU-variant run sets (scripts/cpu_variants.sh)."""
    return f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()


def run_train(*args, env=None, config=REPO / "configs" / "digits.py"):
    """`python -m train --config CONFIG ARGS` (config=None: ARGS name it)."""
    config_args = [] if config is None else ["--config", str(config)]
    return subprocess.run(
        [sys.executable, "-m", "train", *config_args, *args],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_command_line_errors(tmp_path):
    result = run_train("--workdir", str(tmp_path / "a"), "--config.batch_sise=3")
    assert result.returncode != 0 and "batch_sise" in result.stderr
    result = run_train("--workdir", str(tmp_path / "b"), "--config.learning_rate=-1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "train: error: config.learning_rate=-1.0: expected > 0"
    )
    assert not (tmp_path / "b").exists()  # rejected before anything is written


def final_params(workdir, step=None):
    """The params of checkpoint `step` (default: the latest), on this process's first device
    whatever devices the run that wrote it had."""
    from jaxnets import checkpoints

    with checkpoints.manager(workdir, read_only=True) as manager:
        step = manager.latest_step() if step is None else step
        state, _ = checkpoints.restore(manager, step=step)
    return step, state["params"]


@pytest.mark.slow  # three training runs
def test_training_lowers_the_loss_and_a_resumed_run_is_bit_identical(tmp_path):
    from train.train import train_and_evaluate

    # With a second final evaluation under a protocol (its scorer is checked against the
    # model in tests/train/test_views.py).
    config = tiny_config(max_steps=8, learning_rate=0.01, eval_tta="multi-scale,flip",
                         eval_scales="16")  # fmt: skip
    summary = train_and_evaluate(config, tmp_path / "full")
    tta = summary["tta"]
    assert tta["protocol"] == "center-crop+flip at 16" and tta["views_per_image"] == 2
    assert 0 <= tta["top1"] <= tta["top5"] <= 1 and tta["images_per_sec"] > 0
    assert json.loads((tmp_path / "full" / "summary.json").read_text())["tta"] == tta
    lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    lines = [json.loads(line) for line in lines]
    losses = [line["loss"] for line in lines if line["split"] == "train"]
    assert len(losses) == 8 and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert summary["steps"] == 8 and set(summary) >= {
        "top1", "top5", "loss", "steps", "epochs", "images_per_sec", "wall_s"
    }  # fmt: skip
    for name in ["summary.json", "confusion_matrix.json", "confusion_matrix.png", "config.json"]:
        assert (tmp_path / "full" / name).is_file()
    # TensorBoard reads the same scalars (float32 in the event file), train and eval.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "full" / "tensorboard"))
    events.Reload()
    for split, name in [("train", "loss"), ("eval", "top1"), ("final", "macro_f1")]:
        logged = [(line["step"], np.float32(line[name])) for line in lines
                  if line["split"] == split]  # fmt: skip
        shown = [(e.step, np.float32(e.value)) for e in events.Scalars(f"{split}/{name}")]
        assert shown == logged and logged, (split, name)

    # Interrupted after step 4 (its checkpoint written), then the same command again.
    train_and_evaluate(tiny_config(max_steps=4, learning_rate=0.01), tmp_path / "resumed")
    train_and_evaluate(tiny_config(max_steps=8, learning_rate=0.01), tmp_path / "resumed")
    step_a, params_a = final_params(tmp_path / "full")
    step_b, params_b = final_params(tmp_path / "resumed")
    assert step_a == step_b == 8
    jax.tree.map(np.testing.assert_array_equal, params_a, params_b)

    # The trained weights go back to PyTorch straight from the workdir.
    import torchvision

    from jaxnets_cli import main as cli

    out = tmp_path / "trained.pth"
    assert cli.main(["convert", "resnet18", "--from-jax", str(tmp_path / "full"), "--out",
                     str(out)]) == 0  # fmt: skip
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    np.testing.assert_array_equal(
        model.fc.weight.detach().numpy(), np.asarray(params_a["fc"]["kernel"]).T
    )


def test_non_finite_loss_stops_and_names_the_step(tmp_path):
    from train.train import NonFiniteLoss, train_and_evaluate

    with pytest.raises(NonFiniteLoss, match=r"loss is (nan|inf) at step \d+"):
        train_and_evaluate(tiny_config(learning_rate=1e12, max_steps=10), tmp_path)


@pytest.mark.float32
@pytest.mark.slow  # subprocess training runs
def test_four_devices_match_one_device_on_the_same_global_batch(tmp_path):
    """The first loss (a forward pass at the same weights) agrees to rounding, and after one step
    the parameters agree to float noise, so gradients are averaged over the global batch and
    BatchNorm statistics are global. Later losses are not compared: after the first update they
    differ by whatever ReLU flips float32 rounding causes on the CPU at hand (~1e-3 each in this
    1x1-map setup, then growing: docs/tolerances.md)."""
    from train.train import train_and_evaluate

    train_and_evaluate(tiny_config(max_steps=2, checkpoint_every_steps=1), tmp_path / "one")
    result = run_train(
        "--workdir", str(tmp_path / "four"), "--config.image_size=16", "--config.batch_size=16",
        "--config.eval_batch_size=64", "--config.num_epochs=1", "--config.max_steps=2",
        "--config.checkpoint_every_steps=1", "--config.log_every_steps=1",
        "--config.progress_bar=False", "--config.augment=none", "--config.warmup_epochs=0",
        env={"XLA_FLAGS": with_xla_flag("--xla_force_host_platform_device_count=4"),
             "JAX_PLATFORMS": "cpu", "PYTHONPROFILEIMPORTTIME": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "four" / "summary.json").read_text())["devices"] == 4
    # A run on the in-memory digits never imports TensorFlow (its TensorBoard file included).
    imported = {line.rpartition("|")[2].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}  # fmt: skip
    assert "jax" in imported and "tensorflow" not in imported
    assert list((tmp_path / "four" / "tensorboard").glob("events.out.tfevents.*"))
    _, one = final_params(tmp_path / "one", step=1)
    _, four = final_params(tmp_path / "four", step=1)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four), strict=True):
        assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()
    first_losses = [
        next(json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").open()
             if '"train"' in line)
        for run in ("one", "four")
    ]  # fmt: skip
    np.testing.assert_allclose(first_losses[0], first_losses[1], rtol=2e-5)


@pytest.mark.float32
@pytest.mark.parametrize("nesterov,clip", [(False, 0.0), (True, 0.0), (False, 2.0)])
def test_optimizer_matches_torch_sgd_with_weight_decay_momentum_and_nesterov(nesterov, clip):
    """Clipping as train.py's --clip-grad-norm: clip_grad_norm_ on the gradients, then the
    step adds weight decay to them."""
    config = base_config()
    config.update({"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 1e-2,
                   "nesterov": nesterov, "schedule": "constant",
                   "grad_clip_norm": clip})  # fmt: skip
    w0 = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    grads = [np.random.default_rng(i).normal(size=(3, 4)).astype(np.float32) for i in range(4)]
    torch_w = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    sgd = torch.optim.SGD([torch_w], lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=nesterov)
    tx = make_optimizer(config, steps_per_epoch=10)
    params = {"kernel": jnp.asarray(w0)}
    opt_state = tx.init(params)
    for g in grads:
        torch_w.grad = torch.from_numpy(g.copy())
        if clip:
            assert torch.nn.utils.clip_grad_norm_([torch_w], clip) > clip  # it clips
        sgd.step()
        updates, opt_state = tx.update({"kernel": jnp.asarray(g)}, opt_state, params)
        params = optax.apply_updates(params, updates)
    want = torch_w.detach().numpy()
    # Relative to the largest weight: torch divides by norm + 1e-6 when it clips (1.5e-7 of
    # this gradient's norm of 7), and the update of a small weight cancels.
    np.testing.assert_allclose(params["kernel"], want, rtol=0, atol=1e-6 * np.abs(want).max())


@pytest.mark.slow  # subprocess training runs
def test_sigterm_checkpoints_the_current_step_and_the_same_command_resumes(tmp_path):
    import signal
    import time

    # A relative --workdir, as `make demo` passes one.
    args = [
        sys.executable, "-m", "train", "--config", str(REPO / "configs" / "digits.py"),
        "--workdir", "run", "--config.image_size=16", "--config.batch_size=16",
        "--config.num_epochs=1", "--config.log_every_steps=1", "--config.progress_bar=False",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [*args, "--config.max_steps=60"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    tmp_path = tmp_path / "run"
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and metrics.read_text().count('"train"') >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "SIGTERM at step" in stderr and "run the same command again to resume" in stderr
    step = int(stderr.split("SIGTERM at step ")[1].split(":")[0])
    assert 2 <= step < 60
    assert (tmp_path / "checkpoints" / str(step)).is_dir()

    resumed = subprocess.run(
        [*args, f"--config.max_steps={step + 2}"], cwd=tmp_path.parent, capture_output=True,
        text=True, env=env,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {tmp_path / 'checkpoints'} at step {step}" in resumed.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == step + 2


@pytest.mark.slow
def test_ema_bfloat16_and_remat_training(tmp_path):
    import orbax.checkpoint as ocp

    from train.state import create_model
    from train.train import train_and_evaluate

    config = tiny_config(
        max_steps=2, ema_decay=0.5, dtype="bfloat16", learning_rate=0.01, remat=True
    )
    assert create_model(config, num_classes=10, device_count=1).remat  # blocks recomputed
    summary = train_and_evaluate(config, tmp_path)
    assert np.isfinite(summary["loss"]) and 0 <= summary["top1"] <= 1
    with ocp.CheckpointManager(tmp_path / "checkpoints") as manager:
        state = manager.restore(manager.latest_step())["state"]
    params, ema = state["params"], state["ema_params"]
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype(np.float32)}
    # Two EMA updates at 0.5 from the initialization: ema = 0.25 init + 0.25 p1 + 0.5 p2.
    kernel, ema_kernel = params["fc"]["kernel"], ema["fc"]["kernel"]
    assert not np.allclose(kernel, ema_kernel)
    assert np.isfinite(ema_kernel).all()


def test_cifar10_config_trains_on_tfds_and_keeps_class_names(cifar10_dir, tmp_path):
    import orbax.checkpoint as ocp
    from conftest import CIFAR_CLASSES

    from train.train import train_and_evaluate

    config = load_config(REPO / "configs" / "cifar10_resnet18.py")
    config.update({"data_dir": str(cifar10_dir), "image_size": 32, "batch_size": 8,
                   "eval_batch_size": 8, "max_steps": 3, "progress_bar": False,
                   "warmup_epochs": 0.0, "log_every_steps": 1})  # fmt: skip
    summary = train_and_evaluate(config, tmp_path)
    assert summary["steps"] == 3 and summary["dataset"] == "tfds:cifar10"
    assert np.isfinite(summary["loss"])
    with ocp.CheckpointManager(tmp_path / "checkpoints") as manager:
        meta = manager.restore(3, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    assert meta["class_names"] == CIFAR_CLASSES
    report = json.loads((tmp_path / "confusion_matrix.json").read_text())
    assert sum(map(sum, report["confusion_matrix"])) == 10  # every test image, once


@pytest.mark.slow  # subprocess training runs
def test_training_on_a_broken_folder_skips_and_lists_files(broken_folder, tmp_path):
    folder_args = [f"--config.dataset=folder:{broken_folder}", "--config.image_size=16",
                   "--config.batch_size=8", "--config.eval_batch_size=8",
                   "--config.num_epochs=1", "--config.progress_bar=False",
                   "--config.augment=random_resized_crop", "--config.eval_resize=18"]  # fmt: skip
    result = run_train("--workdir", str(tmp_path / "skip"), *folder_args)
    assert result.returncode == 0, result.stderr[-2000:]
    listing = tmp_path / "skip" / "skipped_files.0.txt"
    assert f"listed in {listing}" in result.stdout
    listed = listing.read_text()
    assert "zz_truncated.jpg" in listed and "notes.txt" in listed
    summary = json.loads((tmp_path / "skip" / "summary.json").read_text())
    assert summary["skipped_files"] >= 2

    result = run_train("--workdir", str(tmp_path / "missing"), *folder_args[1:],
                       f"--config.dataset=folder:{tmp_path / 'nowhere'}")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"train: error: {tmp_path / 'nowhere'}: no such directory"
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.float32
@pytest.mark.slow  # subprocess training runs
def test_two_processes_train_like_one_and_resume(tmp_path):
    """Two processes (one CPU device each, gloo collectives) against one process with two
    devices, on the same global batches: the same parameters. The two-process run stops after
    step 2 and resumes; checkpoints and reports are written once."""
    common = ["--config.image_size=16", "--config.batch_size=16", "--config.eval_batch_size=64",
              "--config.num_epochs=1", "--config.checkpoint_every_steps=2",
              "--config.log_every_steps=1", "--config.progress_bar=False",
              "--config.augment=pad_crop", "--config.learning_rate=0.01",
              "--config.warmup_epochs=0"]  # fmt: skip
    one = run_train(
        "--workdir", str(tmp_path / "one"), *common, "--config.max_steps=4",
        env={"XLA_FLAGS": with_xla_flag("--xla_force_host_platform_device_count=2"),
             "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]

    def two_processes(max_steps):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_PROCESSES": "2",
               "JAX_COORDINATOR_ADDRESS": f"localhost:{free_port()}"}  # fmt: skip
        command = [sys.executable, "-m", "train", "--config", str(REPO / "configs" / "digits.py"),
                   "--workdir", str(tmp_path / "two"), *common,
                   f"--config.max_steps={max_steps}"]  # fmt: skip
        processes = [
            subprocess.Popen(command, cwd=REPO, env={**env, "JAX_PROCESS_ID": str(i)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(2)
        ]  # fmt: skip
        outputs = [p.communicate(timeout=300) for p in processes]
        for p, (_, stderr) in zip(processes, outputs, strict=True):
            assert p.returncode == 0, stderr[-2000:]
        return outputs

    two_processes(max_steps=2)
    outputs = two_processes(max_steps=4)
    assert "resumed from" in outputs[0][0] and "at step 2" in outputs[0][0]
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["2", "4"]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["devices"] == 2 and summary["steps"] == 4
    _, params_one = final_params(tmp_path / "one")
    _, params_two = final_params(tmp_path / "two")
    for a, b in zip(jax.tree.leaves(params_one), jax.tree.leaves(params_two), strict=True):
        assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()


def test_a_model_with_dropout_trains_on_the_mesh(tmp_path):
    """AlexNet's dropout under the training program's explicitly sharded batch (flax's Dropout
    drew an unsharded mask there), at a size where its max pools' channels split in blocks."""
    from train.train import train_and_evaluate

    config = tiny_config(model="alexnet", image_size=64, batch_size=4, max_steps=2, dropout=0.5)
    summary = train_and_evaluate(config, tmp_path)
    assert summary["steps"] == 2 and np.isfinite(summary["loss"])


def test_the_throughput_timer_counts_steps_only():
    """The first step (compilation) is not counted, and nothing between pause and resume is:
    the summary's images/sec is the steps' alone, evaluation and reports left out."""
    import time

    from train.metrics import ThroughputTimer

    timer, state = ThroughputTimer(), jnp.zeros(())
    timer.stepped(state, 16)  # compiled: waited for, not counted
    timer.stepped(state, 16)
    timer.stepped(state, 16)
    timer.pause(state)
    assert timer.images == 32 and timer.seconds > 0
    rate = timer.images_per_sec()
    time.sleep(0.05)  # an evaluation
    assert timer.images_per_sec() == rate
    timer.resume()
    time.sleep(0.05)
    assert timer.images_per_sec() < rate  # running again: time passes, no images


def _damage(checkpoint: Path, how: str) -> None:
    """Damages one checkpoint directory the way a crash, a full disk or bit rot would."""
    data = max((f for f in (checkpoint / "state").rglob("*") if f.is_file()),
               key=lambda f: f.stat().st_size)  # fmt: skip
    if how == "truncate":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif how == "delete":
        data.unlink()
    elif how == "garble":
        # Over the first zstd frame's header: orbax keeps no checksum of array data, so garbage
        # inside an incompressible (raw) block would read back as other numbers, unnoticed;
        # where it lands at 1/3 of the file depends on the run's layout (a flaky test).
        raw = bytearray(data.read_bytes())
        raw[:64] = bytes(64)
        data.write_bytes(bytes(raw))
    else:  # the description
        for f in (checkpoint / "meta").rglob("*"):
            if f.is_file():
                f.write_text("{not json")


@pytest.mark.slow  # seven short training runs
def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_run_resumes(tmp_path, capfd):
    import shutil

    from train.train import train_and_evaluate

    config = lambda steps: tiny_config(max_steps=steps, learning_rate=0.01,
                                       checkpoint_every_steps=2)  # fmt: skip
    train_and_evaluate(config(8), tmp_path / "uninterrupted")
    train_and_evaluate(config(6), tmp_path / "run")  # checkpoints 2, 4 and 6
    for how in ("truncate", "delete", "garble", "meta"):
        workdir = tmp_path / how
        shutil.copytree(tmp_path / "run", workdir)
        _damage(workdir / "checkpoints" / "6", how)
        capfd.readouterr()
        summary = train_and_evaluate(config(8), workdir)
        err = capfd.readouterr().err
        assert "train: checkpoint 6 is damaged (" in err, (how, err)
        assert err.count("\n") == 1, err  # one line, no traceback
        (moved,) = (workdir / "checkpoints").glob("6.corrupt-*")  # kept, not deleted
        assert (moved / "state").is_dir()
        assert (moved / "restore-errors.log").is_file()  # orbax's full report, off the terminal
        assert summary["steps"] == 8
        # Resumed from step 4, it ends where the uninterrupted run did, bit for bit.
        step, params = final_params(workdir)
        assert step == 8
        jax.tree.map(np.testing.assert_array_equal, params,
                     final_params(tmp_path / "uninterrupted")[1])  # fmt: skip

    # Every checkpoint damaged: one line saying so, all of them kept.
    workdir = tmp_path / "all"
    shutil.copytree(tmp_path / "run", workdir)
    for step in (2, 4, 6):
        _damage(workdir / "checkpoints" / str(step), "truncate")
    with pytest.raises(ValueError, match=r"none of its 3 checkpoints reads back .*new --workdir"):
        train_and_evaluate(config(8), workdir)
    assert len(list((workdir / "checkpoints").glob("*.corrupt-*"))) == 3


def _train_flags(config) -> list[str]:
    """The command line of `python -m train` that builds tiny_config's overrides of `config`."""
    base = load_config(CONFIGS_DIGITS)
    return [f"--config.{k}={v}" for k, v in config.items() if base[k] != v]


@pytest.mark.slow  # four killed subprocess runs and their resumptions
def test_a_run_killed_while_saving_resumes_bit_identical(tmp_path, capsys):
    from train.train import train_and_evaluate

    config = lambda steps: tiny_config(max_steps=steps, learning_rate=0.01,
                                       checkpoint_every_steps=2)  # fmt: skip
    train_and_evaluate(config(8), tmp_path / "uninterrupted")
    killer = Path(__file__).with_name("killed_while_saving.py")
    # The point of the save of checkpoint 6 where the process dies -> the step it resumes at.
    for point, resumes_at in [("writing", 4), ("before-commit", 4), ("before-rename", 4),
                              ("after-rename", 6)]:  # fmt: skip
        workdir = tmp_path / point
        killed = subprocess.run(
            [sys.executable, str(killer), point, "6", "--config", str(CONFIGS_DIGITS),
             "--workdir", str(workdir), *_train_flags(config(8))],
            capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        assert killed.returncode == -9, (point, killed.stderr[-2000:])
        capsys.readouterr()
        summary = train_and_evaluate(config(8), workdir)
        assert f"at step {resumes_at}\n" in capsys.readouterr().out, point
        assert summary["steps"] == 8
        listed = sorted(p.name for p in (workdir / "checkpoints").iterdir())
        assert listed == ["4", "6", "8"], (point, listed)  # no temporary directory left behind
        step, params = final_params(workdir)
        assert step == 8
        jax.tree.map(np.testing.assert_array_equal, params,
                     final_params(tmp_path / "uninterrupted")[1])  # fmt: skip


@pytest.mark.slow  # two subprocess runs
def test_a_full_disk_while_checkpointing_is_one_line_and_the_next_run_starts_clean(tmp_path):
    workdir = tmp_path / "w"
    flags = ["--workdir", str(workdir), *_train_flags(tiny_config(max_steps=2))]
    command = [sys.executable, "-m", "train", "--config", str(CONFIGS_DIGITS), *flags]
    full = subprocess.run(
        with_file_size_limit(100_000, command), capture_output=True, text=True, cwd=REPO,
        # Without a compilation cache, which JAX would warn is full too.
        env={**{k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"},
             "JAXNETS_COMPILATION_CACHE": "0"},
    )  # fmt: skip
    assert full.returncode == 2
    assert full.stderr == (
        f"train: error: cannot write checkpoint 2 in {workdir / 'checkpoints'} (File too large); "
        "the partial checkpoint was removed\n"
    )
    assert list((workdir / "checkpoints").iterdir()) == []
    again = run_train(*flags)
    assert again.returncode == 0 and "resumed" not in again.stdout, again.stderr[-2000:]
    assert json.loads((workdir / "summary.json").read_text())["steps"] == 2


@pytest.mark.slow  # five short training runs
def test_the_workdir_refuses_another_run_and_resume_false_starts_afresh(image_folder, tmp_path):
    import shutil

    from train.train import train_and_evaluate

    workdir = tmp_path / "w"
    train_and_evaluate(tiny_config(max_steps=2), workdir)
    saved = (workdir / "config.json").read_text()
    refused = [  # (overrides, the values named)
        (dict(model="lenet5", image_size=32), "model='resnet18', this config has model='lenet5'"),
        (dict(dataset="tfds:mnist"), "dataset='digits', this config has dataset='tfds:mnist'"),
        (dict(image_size=24), "image_size=16, this config has image_size=24"),
    ]
    for overrides, message in refused:
        with pytest.raises(ValueError, match=re.escape(f"{workdir} holds a run of {message}; "
                                                       "pass --config.resume=False")):  # fmt: skip
            train_and_evaluate(tiny_config(max_steps=4, **overrides), workdir)
        # Checked before anything is read or written: the run is as it was.
        assert [p.name for p in (workdir / "checkpoints").iterdir()] == ["2"]
        assert (workdir / "config.json").read_text() == saved

    # The same dataset name with another class count: caught on the checkpoint's description.
    folder = tmp_path / "photos"
    shutil.copytree(image_folder, folder)
    config = tiny_config(dataset=f"folder:{folder}", max_steps=1, batch_size=4)
    train_and_evaluate(config, tmp_path / "f")
    for split in ("train", "val"):
        shutil.rmtree(folder / split / "class_03")
    with pytest.raises(ValueError, match="checkpoint is of num_classes=4, this config has 3"):
        train_and_evaluate(config, tmp_path / "f")

    # resume=False: the old run is moved aside whole, the new one starts from step 0.
    summary = train_and_evaluate(tiny_config(max_steps=3, model="lenet5", image_size=32,
                                             resume=False), workdir)  # fmt: skip
    assert summary["steps"] == 3 and summary["model"] == "lenet5"
    (previous,) = workdir.glob("previous-*")
    assert sorted(p.name for p in (previous / "checkpoints").iterdir()) == ["2"]
    assert (previous / "config.json").read_text() == saved
    assert (previous / "metrics.jsonl").is_file() and (previous / "summary.json").is_file()
    assert [p.name for p in (workdir / "checkpoints").iterdir()] == ["3"]
    assert json.loads((workdir / "config.json").read_text())["model"] == "lenet5"


@pytest.mark.slow  # eight subprocesses
def test_config_file_errors_are_one_line(tmp_path):
    no_getter = tmp_path / "no_getter.py"
    no_getter.write_text("x = 1\n")
    wrong_type = tmp_path / "wrong_type.py"
    wrong_type.write_text(
        "from train.config import base_config\n\n"
        "def get_config():\n    c = base_config()\n    c.batch_size = '64'\n    return c\n"
    )
    cases = {
        "configs/no_such_config.py": "--config configs/no_such_config.py: no such file",
        "Makefile": "--config Makefile: not a Python config file (",
        str(no_getter): f"--config {no_getter}: defines no get_config()",
        str(wrong_type): f"--config {wrong_type}: get_config() failed (TypeError: Could not "
        "override field 'batch_size'",
    }
    from train.entry import check_config_file

    for config, message in cases.items():  # the checks, in this process
        with pytest.raises(ValueError, match=re.escape(message)) as error:
            check_config_file(["--workdir", "w", "--config", config])
        assert "\n" not in str(error.value)
    # ... and what the command makes of one: exit 2, one line.
    result = run_train("--config", str(no_getter), "--workdir", str(tmp_path / "w"), config=None)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"train: error: {cases[str(no_getter)]}\n"
    flag_cases = {  # values of the wrong type on the command line
        "--config.batch_size=abc": "flag --config.batch_size=abc: invalid literal for int()",
        "--config.hflip=maybe": "flag --config.hflip=maybe: Non-boolean argument to boolean flag",
    }
    for flag, message in flag_cases.items():
        result = run_train("--workdir", str(tmp_path / "w"), flag)
        assert result.returncode == 2, result.stderr
        assert result.stderr == f"train: error: {message}" + result.stderr.split(message)[1]
        assert result.stderr.count("\n") == 1, result.stderr
    result = run_train("--workdir", str(tmp_path / "w"), "--config.batch_sise=3")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        'train: error: \'batch_sise\' Did you mean "batch_size" instead of "batch_sise"?'
    )
    assert not (tmp_path / "w").exists()
    # A workdir that cannot be created (here: below a file; a read-only parent is the same path).
    (tmp_path / "file").write_text("")
    result = run_train("--workdir", str(tmp_path / "file" / "w"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{tmp_path / 'file'}" in result.stderr
    # A read-only workdir; root writes anywhere, so without the two capabilities that let it.
    (tmp_path / "ro").mkdir(mode=0o555)
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    as_user = drop if os.geteuid() == 0 else []
    result = subprocess.run(
        [*as_user, sys.executable, "-m", "train", "--config", str(CONFIGS_DIGITS), "--workdir",
         str(tmp_path / "ro")], capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr
        == f"train: error: [Errno 13] Permission denied: '{tmp_path / 'ro'}/checkpoints'\n"
    )
