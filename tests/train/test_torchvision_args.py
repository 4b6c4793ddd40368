"""torchvision's reference-trainer command lines as configs (train/torchvision_args.py) and the
shipped recipes (train/recipes.py, configs/torchvision_recipes.py, configs/imagenet_*_v2.py)."""

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from jaxnets.pretrained import get_weights
from train.config import validate, with_device_batches
from train.recipes import RECIPES, recipe_config
from train.torchvision_args import (
    NO_EFFECT,
    TorchvisionArgsError,
    command_from_config,
    config_from_command,
    ignored_flags,
    parse_command,
    reference_parser,
)

ROOT = Path(__file__).parents[2]

# A value other than the default for every flag of train.py, to show each one is used.
SAMPLE_VALUES = {
    "data_path": "/data/imagenet", "model": "resnet50", "device": "cpu", "batch_size": "16",
    "epochs": "7", "workers": "4", "opt": "sgd_nesterov", "lr": "0.3", "momentum": "0.8",
    "weight_decay": "5e-5", "norm_weight_decay": "0.0", "bias_weight_decay": "0.0",
    "transformer_embedding_decay": "0.0", "label_smoothing": "0.1", "mixup_alpha": "0.2",
    "cutmix_alpha": "1.0", "lr_scheduler": "cosineannealinglr", "lr_warmup_epochs": "2",
    "lr_warmup_method": "linear", "lr_warmup_decay": "0.1", "lr_step_size": "10",
    "lr_gamma": "0.5", "lr_min": "1e-5", "print_freq": "50", "output_dir": "out",
    "resume": "x.pth", "start_epoch": "3", "cache_dataset": True, "sync_bn": True,
    "test_only": True, "auto_augment": "ta_wide", "ra_magnitude": "5",
    "augmix_severity": "2", "random_erase": "0.25", "amp": True, "world_size": "8",
    "dist_url": "tcp://h:1", "model_ema": True, "model_ema_steps": "8",
    "model_ema_decay": "0.999", "use_deterministic_algorithms": True,
    "interpolation": "bicubic", "val_resize_size": "232", "val_crop_size": "200",
    "train_crop_size": "176", "clip_grad_norm": "1.0", "ra_sampler": True, "ra_reps": "4",
    "weights": "ResNet50_Weights.IMAGENET1K_V2", "backend": "tensor", "use_v2": True,
}  # fmt: skip
# Flags that only act beside another one in train.py as well.
NEEDS = {"model_ema_steps": "--model-ema", "model_ema_decay": "--model-ema",
         "ra_reps": "--ra-sampler"}  # fmt: skip


def _flag(dest: str, value) -> str:
    name = "--" + dest.replace("_", "-")
    return name if value is True else f"{name} {shlex.quote(value)}"


def test_every_flag_of_train_py_is_used_noted_or_refused():
    """No flag is dropped in silence: each changes the config, is listed as without effect,
    or stops with its name."""
    dests = [a.dest for a in reference_parser()._actions]
    assert set(dests) == set(SAMPLE_VALUES)
    default = config_from_command("train.py")
    for dest, value in SAMPLE_VALUES.items():
        command = f"train.py {NEEDS.get(dest, '')} {_flag(dest, value)}"
        base = config_from_command(f"train.py {NEEDS.get(dest, '')}")
        try:
            config = config_from_command(command)
        except TorchvisionArgsError as e:
            assert str(e).startswith("--" + dest.replace("_", "-")), e
            continue
        if dest in NO_EFFECT:
            assert config == base and ignored_flags(command), dest
        else:
            assert config != base, f"--{dest} changed nothing"
    assert default == config_from_command("")
    assert ignored_flags("train.py --model resnet50 --lr 0.5") == []


def test_flags_become_the_config_keys_they_mean():
    config = config_from_command(
        "torchrun --nproc_per_node=4 --nnodes=2 train.py --model vgg16_bn --batch-size 16 "
        "--opt sgd_nesterov --lr 0.3 --wd 5e-5 --lr-scheduler steplr --lr-step-size 10 "
        "--lr-warmup-epochs 2 --data-path /data/imagenet --sync-bn --amp --clip-grad-norm 2 "
        "--val-crop-size 256 --train-crop-size 192 --val-resize-size 288"
    )
    assert (config.batch_size, config.eval_batch_size, config.batch_size_per_device) == (
        128,
        128,
        0,
    )
    assert (config.nesterov, config.learning_rate, config.weight_decay) == (True, 0.3, 5e-5)
    assert (config.schedule, config.schedule_unit, config.lr_step_epochs) == ("step", "epoch", 10)
    assert (config.warmup_epochs, config.lr_warmup_method) == (2.0, "constant")  # its default
    assert config.dataset == "folder:/data/imagenet"
    assert (config.bn_sync, config.dtype, config.grad_clip_norm) == (True, "bfloat16", 2.0)
    assert (config.image_size, config.eval_image_size, config.eval_resize) == (192, 256, 288)
    assert (config.augment, config.hflip) == ("random_resized_crop", True)
    # Without torchrun, --batch-size is per device of the run, each device a replica.
    per_device = config_from_command("python -u train.py --batch-size 32 --model resnet18")
    assert (per_device.batch_size_per_device, per_device.replicas) == (32, 0)
    assert with_device_batches(per_device, 4).batch_size == 128
    assert with_device_batches(per_device, 4).eval_batch_size == 128
    assert not per_device.bn_sync and per_device.dataset == "tfds:imagenet2012"
    per_device.eval_batch_size = 500  # an override of the evaluation batch stands
    assert with_device_batches(per_device, 4).eval_batch_size == 500
    per_device.batch_size = 256  # two global batches: refused, not dropped
    with pytest.raises(ValueError, match=r"batch_size=256 and config\.batch_size_per_device=32"):
        with_device_batches(per_device, 4)
    # Each recipe flag lands on its key.
    v2 = config_from_command(
        RECIPES["resnet50_v2"].command + " --lr-min 1e-5 --lr-gamma 0.5 "
        "--bias-weight-decay 0.1 --model-ema-steps 16 --ra-magnitude 7"
    )
    assert (v2.mixup_alpha, v2.cutmix_alpha, v2.random_erase) == (0.2, 1.0, 0.1)
    assert (v2.label_smoothing, v2.lr_min, v2.lr_gamma) == (0.1, 1e-5, 0.5)
    assert (v2.norm_weight_decay, v2.bias_weight_decay, v2.weight_decay) == (0.0, 0.1, 2e-5)
    assert (v2.ema_decay, v2.ema_steps, v2.ema_torchvision) == (0.99998, 16, True)
    assert (v2.auto_augment, v2.ra_magnitude, v2.ra_reps) == ("ta_wide", 7, 4)
    assert (v2.schedule, v2.warmup_epochs, v2.lr_warmup_method) == ("cosine", 5.0, "linear")
    assert (v2.image_size, v2.eval_resize, v2.eval_image_size) == (176, 232, 224)


@pytest.mark.parametrize(
    "command,message",
    [
        ("--model resnet50 --lr-sheduler steplr", "unrecognized flag.*--lr-sheduler"),
        ("--model resnet50 --lr fast", "--lr: invalid float value: 'fast'"),
        ("--opt adamw", "--opt adamw: jaxnets trains with SGD"),
        ("--lr-scheduler onecycle", "--lr-scheduler onecycle: expected one of"),
        ("--auto-augment augmix", "--auto-augment augmix: no jaxnets equivalent"),
        ("--interpolation bicubic", "--interpolation bicubic"),
        ("--resume ckpt.pth", "--resume: jaxnets resumes the run in --workdir"),
        ("--test-only", "--test-only: evaluate with `jaxnets eval`"),
        ("--weights X.IMAGENET1K_V1", "--weights X.IMAGENET1K_V1: fine-tune from a file"),
        ("torchrun --nproc_per_node=8 --rdzv-id 3 train.py", "torchrun option.*--rdzv-id"),
        ("torchrun --nproc_per_node=gpu train.py", "--nproc_per_node.*invalid int value: 'gpu'"),
        ("--lr-warmup-method Linear", "--lr-warmup-method Linear: expected linear or constant"),
        ("--model 'resnet50", "cannot split the command"),
    ],
)
def test_flags_without_an_equivalent_stop_in_one_line(command, message):
    with pytest.raises(TorchvisionArgsError, match=message) as error:
        config_from_command(command)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_recipe_round_trips_and_is_valid(name):
    recipe = RECIPES[name]
    config = recipe_config(name)
    validate(config, device_count=8)
    assert config.model == recipe.arch
    command = command_from_config(config)
    assert config_from_command(command) == config  # config -> flags -> config
    assert parse_command(command) == parse_command(recipe.command)  # flags -> config -> flags
    # The weights' own evaluation transforms are the recipe's (232 or 256, crop 224).
    weights = get_weights(recipe.arch, recipe.tag)
    assert (config.eval_resize, config.eval_image_size or config.image_size) == (
        weights.resize, weights.crop,
    )  # fmt: skip


def test_a_config_key_no_flag_expresses_is_named():
    config = recipe_config("resnet50_v1").unlock()
    config.color_jitter = (0.4, 0.4, 0.4)
    config.schedule = "multistep"
    with pytest.raises(TorchvisionArgsError, match=r"config color_jitter=\(0.4.*schedule="):
        command_from_config(config)


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_config_files_name_their_commands_and_torchvisions_accuracy():
    recipes = _module(ROOT / "configs" / "torchvision_recipes.py")
    rows = dict(re.findall(r"^\| (\w+_v[12]) \| ([\d.]+) \|", recipes.__doc__, re.M))
    assert set(rows) == set(RECIPES)
    for name, recipe in RECIPES.items():
        assert float(rows[name]) == get_weights(recipe.arch, recipe.tag).acc1, name
        assert recipes.get_config(name) == recipe_config(name)
    v2 = _module(ROOT / "configs" / "imagenet_resnet50_v2.py")
    quoted = re.search(r"(torchrun .*?)\n\n", v2.__doc__, re.S).group(1).replace("\\\n", " ")
    assert parse_command(quoted) == parse_command(RECIPES["resnet50_v2"].command)
    assert v2.get_config() == recipe_config("resnet50_v2")
    assert "80.858%" in v2.__doc__


def _train(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "train", *args], capture_output=True, text=True, cwd=cwd,
        timeout=600,
    )  # fmt: skip


def test_torchvision_args_errors_are_one_line_before_anything_runs(tmp_path):
    result = _train("--torchvision-args", "--model resnet18 --lr-sheduler x",
                    "--workdir", str(tmp_path / "w"))  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "train: error: --torchvision-args: unrecognized flag of torchvision's train.py: "
        "--lr-sheduler"
    )
    assert not (tmp_path / "w").exists()
    both = _train("--torchvision-args=--model resnet18", "--config", "configs/digits.py",
                  "--workdir", str(tmp_path / "w"))  # fmt: skip
    assert both.returncode == 2 and "give one of them" in both.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_a_torchvision_command_line_trains_with_every_v2_ingredient(digits_folder, tmp_path):
    # Two replicas (train.py's GPUs) on this one device: the batch mixes, normalizes and
    # spreads its repeated copies in two slices of 8.
    flags = (
        f"torchrun --nproc_per_node=2 train.py --data-path {digits_folder} --model resnet18 "
        "--device cpu --batch-size 8 --epochs 1 "
        "--lr 0.05 --lr-scheduler cosineannealinglr --lr-warmup-epochs 1 "
        "--lr-warmup-method linear --auto-augment ta_wide --random-erase 0.1 "
        "--weight-decay 0.00002 --norm-weight-decay 0.0 --label-smoothing 0.1 "
        "--mixup-alpha 0.2 --cutmix-alpha 1.0 --train-crop-size 28 --val-resize-size 36 "
        "--val-crop-size 32 --model-ema --model-ema-steps 4 --ra-sampler --ra-reps 4 "
        "--clip-grad-norm 5 --workers 2"
    )
    workdir = tmp_path / "w"
    result = _train("--torchvision-args", flags, "--workdir", str(workdir),
                    "--config.max_steps=3", "--config.progress_bar=False")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "no effect here: --device (JAX runs on its default backend)" in result.stdout
    assert "--workers" in result.stdout and "done: top1" in result.stdout
    saved = (workdir / "config.json").read_text()
    for fragment in ('"ra_reps": 4', '"replicas": 2', '"batch_size": 16', '"image_size": 28',
                     '"ema_torchvision": true',
                     '"eval_image_size": 32', '"auto_augment": "ta_wide"'):  # fmt: skip
        assert fragment in saved
