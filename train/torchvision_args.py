"""torchvision's reference trainer's command lines as jaxnets configs, and back.

    python -m train --workdir DIR --torchvision-args "--model resnet50 --batch-size 128 ..."

reads the flags of pytorch/vision references/classification/train.py with that script's own
defaults and gives the config that trains the same recipe. Every flag maps to a config key or is
refused in one line: the recipe flags (optimizer, schedule, augmentations, EMA, sizes) to their
keys; the flags of PyTorch's machinery that do not change what is computed (--device, --workers,
--output-dir, --dist-url, --backend, --use-v2, ...) are accepted and listed as having no effect;
a flag with no equivalent (--opt adamw, --auto-augment augmix, --resume, --weights) or an unknown
one stops with its name.

--batch-size is per process (GPU), as torchvision means it. A command that starts with
`torchrun --nproc_per_node=N [--nnodes=M]` has the global batch N x M x --batch-size and
N x M replicas (a documented recipe, the same whatever the devices at hand): train.py's per-GPU
ingredients (MixUp/CutMix pairs, BatchNorm statistics without --sync-bn, repeated
augmentation's copies) follow those replicas' slices of the batch (config.replicas). Without
it, the batch is --batch-size per device of the run (config.batch_size_per_device) and each
device is a replica. The learning rate is --lr either way, as train.py takes it.

This file is also a config file: `--config train/torchvision_args.py:"--model ..."` is what
--torchvision-args expands to.
"""

from __future__ import annotations

import argparse
import shlex

from train.config import base_config

# jaxnets' name for ImageNet when the command gives no --data-path (torchvision's default is
# a path on its authors' cluster).
DEFAULT_DATASET = "tfds:imagenet2012"
SCHEDULERS = {"steplr": "step", "cosineannealinglr": "cosine", "exponentiallr": "exponential"}
# Flags of PyTorch's machinery: accepted, with what stands for them here.
NO_EFFECT = {
    "device": "JAX runs on its default backend",
    "workers": "tf.data sizes its own thread pool; --config.data_threads sets it",
    "output_dir": "--workdir is where the run writes",
    "world_size": "the processes are JAX's (jax.distributed)",
    "dist_url": "the processes are JAX's (jax.distributed)",
    "cache_dataset": "nothing to cache: tf.data reads the files each epoch",
    "use_deterministic_algorithms": "the input order and augmentations are seeded already",
    "backend": "one implementation of the transforms",
    "use_v2": "one implementation of the transforms",
    "transformer_embedding_decay": "these models have no transformer embeddings",
    "augmix_severity": "used by --auto-augment augmix only",
}


class TorchvisionArgsError(ValueError):
    """A flag with no jaxnets equivalent, an unknown flag or a bad value; one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit
        raise TorchvisionArgsError(message.removeprefix("argument "))


def reference_parser() -> argparse.ArgumentParser:
    """references/classification/train.py's get_args_parser: its flags and defaults."""
    p = _Parser(prog="train.py", add_help=False, allow_abbrev=False)
    add = p.add_argument
    flag = lambda name: add(name, action="store_true")
    add("--data-path", default="/datasets01/imagenet_full_size/061417/")
    add("--model", default="resnet18")
    add("--device", default="cuda")
    add("-b", "--batch-size", default=32, type=int)
    add("--epochs", default=90, type=int)
    add("-j", "--workers", default=16, type=int)
    add("--opt", default="sgd")
    add("--lr", default=0.1, type=float)
    add("--momentum", default=0.9, type=float)
    add("--wd", "--weight-decay", default=1e-4, type=float, dest="weight_decay")
    add("--norm-weight-decay", default=None, type=float)
    add("--bias-weight-decay", default=None, type=float)
    add("--transformer-embedding-decay", default=None, type=float)
    add("--label-smoothing", default=0.0, type=float)
    add("--mixup-alpha", default=0.0, type=float)
    add("--cutmix-alpha", default=0.0, type=float)
    add("--lr-scheduler", default="steplr")
    add("--lr-warmup-epochs", default=0, type=int)
    add("--lr-warmup-method", default="constant")
    add("--lr-warmup-decay", default=0.01, type=float)
    add("--lr-step-size", default=30, type=int)
    add("--lr-gamma", default=0.1, type=float)
    add("--lr-min", default=0.0, type=float)
    add("--print-freq", default=10, type=int)
    add("--output-dir", default=".")
    add("--resume", default="")
    add("--start-epoch", default=0, type=int)
    for name in ("--cache-dataset", "--sync-bn", "--test-only", "--amp", "--model-ema"):
        flag(name)
    add("--auto-augment", default=None)
    add("--ra-magnitude", default=9, type=int)
    add("--augmix-severity", default=3, type=int)
    add("--random-erase", default=0.0, type=float)
    add("--world-size", default=1, type=int)
    add("--dist-url", default="env://")
    add("--model-ema-steps", default=32, type=int)
    add("--model-ema-decay", default=0.99998, type=float)
    flag("--use-deterministic-algorithms")
    add("--interpolation", default="bilinear")
    add("--val-resize-size", default=256, type=int)
    add("--val-crop-size", default=224, type=int)
    add("--train-crop-size", default=224, type=int)
    add("--clip-grad-norm", default=None, type=float)
    flag("--ra-sampler")
    add("--ra-reps", default=3, type=int)
    add("--weights", default=None)
    add("--backend", default="PIL", type=str.lower)
    flag("--use-v2")
    return p


def parse_command(command: str) -> tuple[argparse.Namespace, int | None]:
    """The reference trainer's arguments in `command`, and the process count of a leading
    `torchrun --nproc_per_node=N [--nnodes=M] train.py` (None without one)."""
    try:
        tokens = shlex.split(command)
    except ValueError as e:
        raise TorchvisionArgsError(f"cannot split the command: {e}") from None
    processes = None
    if tokens[:1] == ["torchrun"]:
        launcher = _Parser(prog="torchrun", add_help=False, allow_abbrev=False)
        launcher.add_argument("--nproc_per_node", "--nproc-per-node", type=int, default=1)
        launcher.add_argument("--nnodes", type=int, default=1)
        script = next((i for i, t in enumerate(tokens) if t.endswith(".py")), None)
        if script is None:
            raise TorchvisionArgsError("torchrun without a train.py to run")
        known, rest = launcher.parse_known_args(tokens[1:script])
        if rest:
            raise TorchvisionArgsError(f"torchrun option with no jaxnets equivalent: {rest[0]}")
        processes, tokens = known.nproc_per_node * known.nnodes, tokens[script + 1 :]
    elif any(t.endswith(".py") for t in tokens[:3]):  # train.py, python [-u] train.py
        tokens = tokens[next(i for i, t in enumerate(tokens) if t.endswith(".py")) + 1 :]
    known, unknown = reference_parser().parse_known_args(tokens)
    if unknown:
        raise TorchvisionArgsError(f"unrecognized flag of torchvision's train.py: {unknown[0]}")
    return known, processes


# train.py's arguments when no flag is given (argparse applies `type` to string defaults:
# --backend's "PIL" is "pil" here).
DEFAULTS, _ = parse_command("")


def _refuse(args: argparse.Namespace) -> None:
    """The flags with no equivalent, each with what to do instead."""
    refusals = [
        (args.opt.lower() not in ("sgd", "sgd_nesterov"),
         f"--opt {args.opt}: jaxnets trains with SGD (sgd, sgd_nesterov)"),
        (args.lr_scheduler.lower() not in SCHEDULERS,
         f"--lr-scheduler {args.lr_scheduler}: expected one of {', '.join(SCHEDULERS)}"),
        (args.lr_warmup_method not in ("linear", "constant"),
         f"--lr-warmup-method {args.lr_warmup_method}: expected linear or constant"),
        (args.auto_augment == "augmix",
         "--auto-augment augmix: no jaxnets equivalent (ta_wide, ra, imagenet, cifar10, svhn)"),
        (args.interpolation != "bilinear",
         f"--interpolation {args.interpolation}: jaxnets resizes bilinearly"),
        (bool(args.resume),
         "--resume: jaxnets resumes the run in --workdir; weights to start from are "
         "--config.init_from=FILE.pth"),
        (args.start_epoch != 0, "--start-epoch: jaxnets resumes the run in --workdir"),
        (args.test_only, "--test-only: evaluate with `jaxnets eval`"),
        (args.weights is not None,
         f"--weights {args.weights}: fine-tune from a file with --config.init_from=FILE.pth"),
    ]  # fmt: skip
    for refused, message in refusals:
        if refused:
            raise TorchvisionArgsError(message)


def config_from_command(command: str):
    """The jaxnets config of a reference-trainer command line (module docstring)."""
    args, processes = parse_command(command)
    _refuse(args)
    c = base_config()
    c.model = args.model
    c.dataset = (
        DEFAULT_DATASET if args.data_path == DEFAULTS.data_path else f"folder:{args.data_path}"
    )
    if processes is None:
        c.batch_size_per_device, c.batch_size, c.eval_batch_size = args.batch_size, 0, 0
    else:
        c.batch_size = c.eval_batch_size = args.batch_size * processes
        c.replicas = processes  # train.py's per-GPU mixing, BatchNorm and RA copies
    c.num_epochs = args.epochs
    c.nesterov = args.opt.lower() == "sgd_nesterov"
    c.learning_rate, c.momentum, c.weight_decay = args.lr, args.momentum, args.weight_decay
    c.norm_weight_decay, c.bias_weight_decay = args.norm_weight_decay, args.bias_weight_decay
    c.label_smoothing = args.label_smoothing
    c.mixup_alpha, c.cutmix_alpha = args.mixup_alpha, args.cutmix_alpha
    c.schedule, c.schedule_unit = SCHEDULERS[args.lr_scheduler.lower()], "epoch"
    c.warmup_epochs = float(args.lr_warmup_epochs)
    c.lr_warmup_method, c.lr_warmup_decay = args.lr_warmup_method, args.lr_warmup_decay
    c.lr_step_epochs, c.lr_gamma, c.lr_min = args.lr_step_size, args.lr_gamma, args.lr_min
    c.log_every_steps = args.print_freq
    c.bn_sync = args.sync_bn  # torchvision's BatchNorm is per GPU without --sync-bn
    c.dtype = "bfloat16" if args.amp else "float32"
    c.augment, c.hflip = "random_resized_crop", True  # ClassificationPresetTrain
    c.auto_augment, c.ra_magnitude = args.auto_augment or "", args.ra_magnitude
    c.random_erase = args.random_erase
    c.ra_reps = args.ra_reps if args.ra_sampler else 0
    if args.model_ema:
        c.ema_decay, c.ema_steps, c.ema_torchvision = (
            args.model_ema_decay,
            args.model_ema_steps,
            True,
        )
    c.image_size = args.train_crop_size
    c.eval_resize = args.val_resize_size
    c.eval_image_size = 0 if args.val_crop_size == args.train_crop_size else args.val_crop_size
    c.grad_clip_norm = args.clip_grad_norm or 0.0
    return c


def ignored_flags(command: str) -> list[str]:
    """The flags given that have no effect here, each with the reason (NO_EFFECT)."""
    args, _ = parse_command(command)
    return [
        f"--{key.replace('_', '-')} ({reason})"
        for key, reason in NO_EFFECT.items()
        if getattr(args, key) != getattr(DEFAULTS, key)
    ]


def command_from_config(config) -> str:
    """The reference-trainer command line of a config: `torchrun --nproc_per_node=N train.py
    ...` for a run of N replicas (config.replicas), or `train.py ...` for a per-device batch.
    Only flags that differ from train.py's defaults are written. Raises TorchvisionArgsError
    naming the config keys no flag can express."""
    processes = config.replicas
    values = _flag_values(config)
    words = []
    for dest, value in values.items():
        if value == getattr(DEFAULTS, dest):
            continue
        name = "--" + dest.replace("_", "-")
        words += [name] if value is True else [name, str(value)]
    launcher = f"torchrun --nproc_per_node={processes} train.py" if processes else "train.py"
    command = " ".join([launcher, *map(shlex.quote, words)])
    back = config_from_command(command)
    differ = [key for key in _keys(config) if back[key] != config[key]]
    if differ:
        raise TorchvisionArgsError(
            "no torchvision flag for config " + ", ".join(f"{k}={config[k]!r}" for k in differ)
        )
    return command


def _flag_values(config) -> dict:
    """What each flag of train.py must say for `config` (the inverse of config_from_command)."""
    replicas = config.replicas
    batch = config.batch_size // replicas if replicas else config.batch_size_per_device
    schedulers = {jaxnets_name: flag for flag, jaxnets_name in SCHEDULERS.items()}
    kind, _, where = config.dataset.partition(":")
    values = {
        "data_path": where if kind == "folder" else DEFAULTS.data_path,
        "model": config.model, "batch_size": batch, "epochs": config.num_epochs,
        "opt": "sgd_nesterov" if config.nesterov else "sgd", "lr": config.learning_rate,
        "momentum": config.momentum, "weight_decay": config.weight_decay,
        "norm_weight_decay": config.norm_weight_decay,
        "bias_weight_decay": config.bias_weight_decay,
        "label_smoothing": config.label_smoothing, "mixup_alpha": config.mixup_alpha,
        "cutmix_alpha": config.cutmix_alpha,
        "lr_scheduler": schedulers.get(config.schedule, "steplr"),  # others: named below
        "lr_warmup_epochs": int(config.warmup_epochs),
        "lr_warmup_method": config.lr_warmup_method, "lr_warmup_decay": config.lr_warmup_decay,
        "lr_step_size": config.lr_step_epochs, "lr_gamma": config.lr_gamma,
        "lr_min": config.lr_min, "print_freq": config.log_every_steps,
        "sync_bn": config.bn_sync, "amp": config.dtype == "bfloat16",
        "auto_augment": config.auto_augment or None, "ra_magnitude": config.ra_magnitude,
        "random_erase": config.random_erase,
        "model_ema": bool(config.ema_decay),
        "model_ema_steps": config.ema_steps if config.ema_decay else 32,
        "model_ema_decay": config.ema_decay or 0.99998,
        "val_resize_size": config.eval_resize,
        "val_crop_size": config.eval_image_size or config.image_size,
        "train_crop_size": config.image_size, "clip_grad_norm": config.grad_clip_norm or None,
        "ra_sampler": bool(config.ra_reps), "ra_reps": config.ra_reps or 3,
    }  # fmt: skip
    return values


# Keys of where and how a run goes, not of what it computes: no flag needed.
RUN_KEYS = (
    "data_dir", "manual_dir", "download", "bad_images", "data_deterministic", "data_threads",
    "shuffle_buffer", "coordinator_address", "num_processes", "process_id", "eval_batch_size",
    "seed", "checkpoint_every_steps", "keep_checkpoints", "resume", "max_steps", "progress_bar",
    "eval_tta", "eval_scales", "remat", "sweep",
)  # fmt: skip


def _keys(config) -> list[str]:
    """The config keys a command line decides."""
    return [key for key in config if key not in RUN_KEYS]


def get_config(command: str):
    """A config file's entry point: `--config train/torchvision_args.py:"COMMAND"`."""
    return config_from_command(command)
