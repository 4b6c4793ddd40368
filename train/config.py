"""The training configuration: every key with its default, and the checks run before compiling.

Config files (configs/*.py) start from `base_config()`, which is locked: a misspelt key in a file
or on the command line (--config.batch_sise=64) fails at once instead of being ignored.
"""

from __future__ import annotations

import ml_collections

SCHEDULES = ("cosine", "step", "multistep", "exponential", "constant")
SCHEDULE_UNITS = ("step", "epoch")
WARMUP_METHODS = ("linear", "constant")
AUGMENTATIONS = ("none", "pad_crop", "random_resized_crop")
AUTO_AUGMENT = ("", "ta_wide", "ra", "imagenet", "cifar10", "svhn")  # train/data/autoaugment.py
DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
    """An invalid configuration value; the message is one line naming the key."""


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "resnet18"
    c.dtype = "float32"  # compute dtype; parameters and BatchNorm statistics stay float32
    c.dropout = 0.5  # VGG/AlexNet classifier dropout (torchvision's default)
    c.zero_init_residual = False
    # ResNets: recompute each residual block in the backward pass instead of keeping its
    # activations (jax.checkpoint): less memory for large per-device batches, more compute.
    c.remat = False

    c.dataset = "digits"  # digits | tfds:NAME[:VERSION] | folder:PATH (see README)
    c.data_dir = ""  # TFDS data_dir ('' : TFDS's default, ~/tensorflow_datasets)
    c.manual_dir = ""  # TFDS manual downloads ('' : DATA_DIR/downloads/manual)
    c.download = True  # TFDS: download and prepare a dataset that is not prepared yet
    c.image_size = 32
    # Training augmentation: none | pad_crop (CIFAR: pad, random crop) |
    # random_resized_crop (ImageNet: torchvision's RandomResizedCrop(scale .08-1, ratio 3/4-4/3)).
    c.augment = "none"
    c.crop_padding = 0  # pad_crop's padding; 0: image_size // 8
    c.hflip = False  # random horizontal flips in training
    # ColorJitter(brightness, contrast, saturation) strengths; 0: that one off.
    c.color_jitter = (0.0, 0.0, 0.0)
    # torchvision's automatic augmentation after the crop and flip (--auto-augment): ta_wide
    # (TrivialAugmentWide), ra (RandAugment, ra_magnitude), or AutoAugment's imagenet, cifar10
    # or svhn policy; '': none.
    c.auto_augment = ""
    c.ra_magnitude = 9
    # Per-image RandomErasing probability, applied on the device after normalization (erased
    # pixels become 0, the mean colour) as torchvision's --random-erase; 0: off.
    c.random_erase = 0.0
    # MixUp / CutMix on each device's slice of the batch (torchvision's --mixup-alpha,
    # --cutmix-alpha, mixed per GPU batch): with both on, one is chosen at random per batch.
    c.mixup_alpha = 0.0
    c.cutmix_alpha = 0.0
    # torchvision's repeated-augmentation sampler (--ra-sampler --ra-reps N): each image N times
    # an epoch, its copies on different devices, the epoch cut to len // 256 * 256 images; 0: off.
    c.ra_reps = 0
    c.eval_resize = 0  # 0: resize eval images to the eval crop; N: Resize(N) + CenterCrop
    # The evaluation crop (FixRes: torchvision's --val-crop-size beside --train-crop-size, which
    # is image_size); 0: image_size.
    c.eval_image_size = 0
    # The final evaluation also under a test-time protocol (train/data/protocol.py), e.g.
    # "ten-crop" or "dense,flip,multi-scale" with eval_scales "256,384,512"; "": none.
    c.eval_tta = ""
    c.eval_scales = ""
    c.bad_images = "skip"  # folder: skip unreadable files (listed at the end) or 'error'
    c.data_deterministic = True  # tf.data keeps the order (reproducible, resumable)
    c.data_threads = 0  # tf.data threads; 0: one per core
    c.shuffle_buffer = 16_384  # TFDS examples; folders shuffle the whole file list

    # Multi-host: jax.distributed.initialize. Empty/0/-1 fall back to JAX_COORDINATOR_ADDRESS,
    # JAX_NUM_PROCESSES, JAX_PROCESS_ID or the cluster's auto-detection (TPU pods, SLURM).
    c.coordinator_address = ""
    c.num_processes = 0
    c.process_id = -1

    c.batch_size = 64  # global, over all devices
    # N > 0: the global batch is N per device, times the devices at start (torchvision's
    # --batch-size, per GPU); batch_size is then 0, and so is eval_batch_size unless given.
    c.batch_size_per_device = 0
    # The processes (GPUs) of a torchvision run whose per-GPU ingredients this run reproduces:
    # MixUp/CutMix pairs, per-replica BatchNorm statistics (bn_sync=False) and repeated
    # augmentation's copies follow slices of batch_size / replicas. 0: one replica per device.
    c.replicas = 0
    c.eval_batch_size = 256
    c.num_epochs = 10
    c.seed = 0

    c.learning_rate = 0.1
    c.momentum = 0.9
    c.nesterov = False
    c.weight_decay = 1e-4
    # None: same as weight_decay (torchvision's --norm-weight-decay / --bias-weight-decay)
    c.norm_weight_decay = ml_collections.FieldReference(None, field_type=float)
    c.bias_weight_decay = ml_collections.FieldReference(None, field_type=float)
    # Schedules with torchvision's reference-trainer formulas (train/optim.py): cosine (to
    # lr_min), step (every lr_step_epochs after the warmup), multistep (at the epochs
    # lr_milestones), exponential (lr_gamma per epoch), constant.
    c.schedule = "cosine"
    # "epoch": one rate per epoch, as torchvision's trainer steps its scheduler; "step": the
    # same curve at each step's fractional epoch.
    c.schedule_unit = "step"
    c.warmup_epochs = 0.0  # a whole number with schedule_unit="epoch"
    c.lr_warmup_method = "linear"  # linear (LinearLR) | constant (ConstantLR)
    c.lr_warmup_decay = 0.01  # the warmup's first factor (torchvision's --lr-warmup-decay)
    c.lr_min = 0.0  # cosine's floor (torchvision's --lr-min)
    c.lr_step_epochs = 30  # schedule=step: decay every this many epochs
    c.lr_milestones = ()  # schedule=multistep: epochs at which to decay
    c.lr_gamma = 0.1
    c.label_smoothing = 0.0
    c.grad_clip_norm = 0.0  # 0: off
    c.ema_decay = 0.0  # 0: off; else EMA of params and BatchNorm statistics per update
    c.ema_steps = 1  # update the EMA every this many steps (torchvision's --model-ema-steps)
    # True: torchvision's reference-trainer EMA (--model-ema): ema_decay is its
    # --model-ema-decay, each update uses 1 - min(1, (1 - ema_decay) * batch_size * ema_steps /
    # num_epochs), updates fall on the batches i % ema_steps == 0 of each epoch, and during the
    # warmup epochs every update restarts the average (a copy of the model).
    c.ema_torchvision = False

    c.bn_sync = True  # False: BatchNorm statistics per device, as pmap without axis_name

    c.init_from = ""  # a jaxnets export, a training workdir or a torchvision .pth/.safetensors
    # A head spec replacing torchvision's fc / classifier.6 with an MLP (jaxnets.heads), e.g.
    # "dropout:0.5,linear:256,relu,dropout:0.3,linear:N"; '': torchvision's own head.
    c.head = ""
    # Layers kept fixed, by torchvision name ("stem,layer1", "backbone"); freeze_until="layer3"
    # freezes everything before layer3. Frozen layers get no gradient and no optimizer state,
    # and their BatchNorm layers keep their running statistics.
    c.freeze = ""
    c.freeze_until = ""
    c.backbone_lr_scale = 1.0  # learning rate of the layers before the head, relative

    c.log_every_steps = 20
    c.checkpoint_every_steps = 0  # 0: at the end of every epoch
    c.keep_checkpoints = 3
    # True: continue the run in --workdir (refused if it is of another model, dataset or image
    # size). False: move that run to WORKDIR/previous-TIME/ and start afresh.
    c.resume = True
    c.max_steps = 0  # 0: num_epochs worth; else stop after this many steps (smoke runs)
    c.progress_bar = True

    # python -m train.sweep: the search space and how trials are drawn and pruned (train/sweep/).
    c.sweep = ml_collections.ConfigDict()
    # KEY=SPEC strings: "learning_rate=log:1e-4:1e-1", "label_smoothing=0:0.2",
    # "batch_size=choice:32,64,128"; --space on the command line replaces them.
    c.sweep.space = ()
    c.sweep.baseline = True  # a new study's first trial runs this config's own values
    c.sweep.sampler_startup_trials = 5  # TPE: random draws before it models the results
    c.sweep.pruner_startup_trials = 3  # median: finished trials before any is pruned
    c.sweep.pruner_first_epoch = 1  # median: the first epoch after which a trial may be pruned
    return c.lock()


def eval_crop(config) -> int:
    """The side of evaluation images: eval_image_size (FixRes), else the training image_size."""
    return config.eval_image_size or config.image_size


def with_device_batches(config: ml_collections.ConfigDict, device_count: int):
    """The config with batch_size_per_device made global for `device_count` devices (a copy),
    or the config itself when it gives global batches. Raises ConfigError when it gives both."""
    per_device = config.batch_size_per_device
    if not per_device:
        return config
    if config.batch_size:
        raise ConfigError(
            f"config.batch_size={config.batch_size} and config.batch_size_per_device="
            f"{per_device}: give one of them"
        )
    config = ml_collections.ConfigDict(config.to_dict(), type_safe=True).lock()
    config.batch_size = per_device * device_count
    config.eval_batch_size = config.eval_batch_size or config.batch_size
    return config


def replicas(config, device_count: int) -> int:
    """How many slices of each batch the per-GPU ingredients of torchvision's trainer treat
    apart: config.replicas, else the devices."""
    return config.replicas or device_count


def validate(config: ml_collections.ConfigDict, device_count: int) -> None:
    """Raises ConfigError for the first invalid value, before anything compiles."""
    import jaxnets

    if config.model not in jaxnets.list_models():
        try:
            jaxnets.create_model(config.model)
        except ValueError as e:
            raise ConfigError(f"config.model: {e}") from None
    checks = [
        (config.dtype in DTYPES, "dtype", f"one of {DTYPES}"),
        (config.augment in AUGMENTATIONS, "augment", f"one of {AUGMENTATIONS}"),
        (config.auto_augment in AUTO_AUGMENT, "auto_augment", f"one of {AUTO_AUGMENT}"),
        (0 <= config.ra_magnitude <= 30, "ra_magnitude", "in [0, 30]"),
        (0 <= config.random_erase <= 1, "random_erase", "in [0, 1]"),
        (config.mixup_alpha >= 0, "mixup_alpha", ">= 0"),
        (config.cutmix_alpha >= 0, "cutmix_alpha", ">= 0"),
        (config.ra_reps >= 0, "ra_reps", ">= 0"),
        (
            config.eval_image_size == 0 or config.eval_image_size >= 8,
            "eval_image_size",
            "0 or >= 8",
        ),
        (config.ema_steps >= 1, "ema_steps", ">= 1"),
        (
            not config.ema_torchvision or config.ema_decay > 0,
            "ema_torchvision",
            "used with ema_decay > 0 (torchvision's --model-ema-decay)",
        ),
        (config.bad_images in ("skip", "error"), "bad_images", "'skip' or 'error'"),
        (
            len(config.color_jitter) == 3 and all(0 <= s < 1 for s in config.color_jitter),
            "color_jitter",
            "(brightness, contrast, saturation), each in [0, 1)",
        ),
        (config.crop_padding >= 0, "crop_padding", ">= 0"),
        (
            config.eval_resize == 0 or config.eval_resize >= eval_crop(config),
            "eval_resize",
            "0 or >= the eval crop (eval_image_size or image_size)",
        ),
        (config.shuffle_buffer > 0, "shuffle_buffer", "> 0"),
        (config.data_threads >= 0, "data_threads", ">= 0"),
        (config.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}"),
        (config.learning_rate > 0, "learning_rate", "> 0"),
        (config.batch_size > 0, "batch_size", "> 0"),
        (config.batch_size_per_device >= 0, "batch_size_per_device", ">= 0"),
        (config.replicas >= 0, "replicas", ">= 0"),
        (
            not config.replicas or config.batch_size % config.replicas == 0,
            "replicas",
            "a divisor of batch_size",
        ),
        (config.eval_batch_size > 0, "eval_batch_size", "> 0"),
        (config.num_epochs > 0, "num_epochs", "> 0"),
        (config.image_size >= 8, "image_size", ">= 8"),
        (0 <= config.momentum < 1, "momentum", "in [0, 1)"),
        (config.weight_decay >= 0, "weight_decay", ">= 0"),
        (0 <= config.label_smoothing < 1, "label_smoothing", "in [0, 1)"),
        (0 <= config.ema_decay < 1, "ema_decay", "in [0, 1)"),
        (config.grad_clip_norm >= 0, "grad_clip_norm", ">= 0"),
        (config.warmup_epochs >= 0, "warmup_epochs", ">= 0"),
        (config.schedule_unit in SCHEDULE_UNITS, "schedule_unit", f"one of {SCHEDULE_UNITS}"),
        (config.lr_warmup_method in WARMUP_METHODS, "lr_warmup_method", f"one of {WARMUP_METHODS}"),
        (0 < config.lr_warmup_decay <= 1, "lr_warmup_decay", "in (0, 1]"),
        (0 <= config.lr_min < config.learning_rate, "lr_min", "in [0, learning_rate)"),
        (
            config.schedule_unit == "step" or float(config.warmup_epochs).is_integer(),
            "warmup_epochs",
            'a whole number of epochs with schedule_unit="epoch"',
        ),
        (0 <= config.dropout < 1, "dropout", "in [0, 1)"),
        (config.lr_step_epochs > 0, "lr_step_epochs", "> 0"),
        (config.keep_checkpoints > 0, "keep_checkpoints", "> 0"),
        (config.log_every_steps > 0, "log_every_steps", "> 0"),
        (not config.nesterov or config.momentum > 0, "nesterov", "used with momentum > 0"),
        (config.backbone_lr_scale > 0, "backbone_lr_scale", "> 0"),
        (
            not config.remat or jaxnets.model_info(config.model).residual_blocks,
            "remat",
            "False for a model without residual blocks",
        ),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise ConfigError(f"config.{key}={getattr(config, key)!r}: expected {expected}")
    _check_head_and_freeze(config)
    _check_eval_tta(config)
    for key in ("sampler_startup_trials", "pruner_startup_trials", "pruner_first_epoch"):
        if config.sweep[key] < 0:
            raise ConfigError(f"config.sweep.{key}={config.sweep[key]!r}: expected >= 0")
    for key in ("batch_size", "eval_batch_size"):
        if config[key] % device_count:
            raise ConfigError(
                f"config.{key}={config[key]} is not divisible by the {device_count} devices"
            )


def _check_eval_tta(config) -> None:
    import jaxnets
    from train.data.protocol import parse_protocol

    try:
        parse_protocol(config.eval_tta, config.eval_scales, config.eval_resize, eval_crop(config))
    except ValueError as e:
        message = (
            str(e).replace("--tta", "config.eval_tta").replace("--scales", "config.eval_scales")
        )
        raise ConfigError(message) from None
    if "dense" in config.eval_tta and jaxnets.model_info(config.model).fixed_input_size:
        raise ConfigError(f"config.eval_tta: dense evaluation: {config.model} takes one input size")


def _check_head_and_freeze(config) -> None:
    """The head spec parses and the freeze names are layers of the model (jaxnets' messages,
    prefixed with the key)."""
    import jaxnets

    try:
        jaxnets.parse_head(config.head) if config.head else None
    except ValueError as e:
        raise ConfigError(f"config.head: {e}") from None
    options = {"head": config.head} if config.head else {}
    try:
        jaxnets.frozen_modules(config.model, config.freeze, config.freeze_until or None, **options)
    except ValueError as e:
        key = "freeze" if config.freeze else "freeze_until"
        raise ConfigError(f"config.{key}: {e}") from None
