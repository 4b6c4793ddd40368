"""The training loop: one jit-compiled, data-parallel train step over a ('data',) device mesh.

Read top to bottom: set-up (mesh, data, model, state, checkpoints), the epoch loop (train steps,
metrics, checkpoints, evaluation), and the final report.
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import serialization
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxnets
from jaxnets.xla_flags import donates_train_state
from train import data as data_lib
from train import metrics as metrics_lib
from train.config import validate
from train.optim import learning_rate_schedule, make_optimizer


class TrainState(train_state.TrainState):
    batch_stats: Any
    ema_params: Any = None
    ema_batch_stats: Any = None


class TrainingInterrupted(RuntimeError):
    """SIGTERM/SIGINT arrived; a checkpoint of the current step was written."""


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or Inf; the message names the first such step."""


# ----------------------------------------------------------------------------------------------
# The steps. Pure functions of (state, batch, key); jit and sharding are applied in
# train_and_evaluate.


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float):
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def normalize(images, mean, std):
    """uint8 batches from the tf.data pipelines are normalized here, on the device: moving
    uint8 costs a quarter of float32's bandwidth. Float batches arrive normalized."""
    if mean is None:
        return images
    mean, std = jnp.asarray(mean) * 255.0, jnp.asarray(std) * 255.0
    return (images.astype(jnp.float32) - mean) / std


def train_step(
    state: TrainState, images, labels, key, *, config, num_classes, schedule, bn_train,
    mean=None, std=None,
):  # fmt: skip
    """One SGD step on a global batch; gradients are averaged over every device by the SPMD
    partitioner (the batch is sharded over 'data', the parameters replicated)."""
    dropout_key = jax.random.fold_in(key, state.step)
    images = normalize(images, mean, std)

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=bn_train,
            mutable=["batch_stats"],
            rngs={"dropout": dropout_key},
        )
        loss = cross_entropy(logits, labels, num_classes, config.label_smoothing).mean()
        return loss, (logits, updates.get("batch_stats", state.batch_stats))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    if config.ema_decay:
        ema = lambda old, new: jax.tree.map(
            lambda a, b: config.ema_decay * a + (1 - config.ema_decay) * b, old, new
        )
        new_state = new_state.replace(
            ema_params=ema(state.ema_params, new_state.params),
            ema_batch_stats=ema(state.ema_batch_stats, new_state.batch_stats),
        )
    metrics = {
        "loss": loss,
        "top1": jnp.mean(jnp.argmax(logits, -1) == labels),
        "lr": schedule(state.step),
    }
    return new_state, metrics


def eval_step(
    params, batch_stats, images, labels, mask, *, apply_fn, num_classes, mean=None, std=None
):
    """Sums over the real (unmasked) examples, and each example's prediction."""
    images = normalize(images, mean, std)
    logits = apply_fn({"params": params, "batch_stats": batch_stats}, images, train=False)
    loss = cross_entropy(logits, labels, num_classes, 0.0)
    top5 = jax.lax.top_k(logits, min(5, num_classes))[1]
    weights = mask.astype(jnp.float32)
    sums = {
        "loss": jnp.sum(loss * weights),
        "top1": jnp.sum((top5[:, 0] == labels) * weights),
        "top5": jnp.sum(jnp.any(top5 == labels[:, None], -1) * weights),
        "count": jnp.sum(weights),
    }
    return sums, top5[:, 0]


# ----------------------------------------------------------------------------------------------
# Set-up helpers.


def create_model(config, num_classes: int, device_count: int):
    info = jaxnets.model_info(config.model)
    kwargs = {"num_classes": num_classes, "dtype": jnp.dtype(config.dtype)}
    if info.dropout:
        kwargs["dropout"] = config.dropout
    if info.residual_blocks:
        kwargs.update(zero_init_residual=config.zero_init_residual, remat=config.remat)
    if not config.bn_sync and info.batch_norm:
        # Per-device BatchNorm: each device's slice of the batch is normalized on its own.
        kwargs["bn_batch_groups"] = device_count
    return jaxnets.create_model(config.model, **kwargs)


def initial_variables(config, model, image_shape, num_classes: int) -> dict:
    """Fresh torchvision-style initialization, or converted weights to fine-tune (init_from)."""
    init = jax.jit(functools.partial(model.init, train=False))
    variables = init(jax.random.key(config.seed), jnp.zeros((1, *image_shape), jnp.float32))
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    if not config.init_from:
        return variables

    from jaxnets.convert import from_torchvision
    from jaxnets.export import is_export, load_export

    head = jaxnets.head_module(config.model)
    if is_export(config.init_from):
        loaded, meta = load_export(config.init_from)
        if meta.get("arch") != config.model:
            raise ValueError(f"config.init_from holds {meta.get('arch')}, not {config.model}")
    else:
        loaded = from_torchvision(
            config.model, config.init_from, num_classes=num_classes, reinit_head=True
        )
    merged = {"params": dict(loaded["params"]), "batch_stats": loaded.get("batch_stats", {})}
    if loaded["params"][head]["kernel"].shape != variables["params"][head]["kernel"].shape:
        merged["params"][head] = variables["params"][head]  # a new head for the new classes
    if jax.tree.structure(merged) != jax.tree.structure(variables):
        raise ValueError(f"config.init_from does not hold {config.model} variables")
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), merged)


def trainable_head_only(model_name: str):
    head = jaxnets.head_module(model_name)

    def trainable(params):
        return {name: jax.tree.map(lambda _, n=name: n == head, v) for name, v in params.items()}

    return trainable


def checkpoint_manager(workdir: Path, config) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints, create=True, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(workdir / "checkpoints", options=options)


def save_checkpoint(manager, state: TrainState, meta: dict) -> None:
    step = int(jax.device_get(state.step))
    if step in manager.all_steps():
        return
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(serialization.to_state_dict(state)),
            meta=ocp.args.JsonSave(meta),
        ),
    )
    manager.wait_until_finished()


def initialize_distributed(config) -> None:
    """jax.distributed.initialize for multi-host runs, from the config or the environment
    (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); coordinator_address='auto'
    leaves everything to JAX's cluster detection (TPU pods, SLURM, Kubernetes)."""
    address = config.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    if not address:
        return
    num_processes = config.num_processes or int(os.environ.get("JAX_NUM_PROCESSES", 0))
    process_id = config.process_id
    if process_id < 0 and "JAX_PROCESS_ID" in os.environ:
        process_id = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(
        coordinator_address=None if address == "auto" else address,
        num_processes=num_processes or None,
        process_id=None if process_id < 0 else process_id,
    )


def prefetch_to_device(batches, size: int, to_device):
    """Keeps `size` batches in flight to the device (transfers are asynchronous), so the next
    batch is already there when a step finishes."""
    queue = collections.deque()
    batches = iter(batches)
    queue.extend(to_device(*b) for b in itertools.islice(batches, size))
    while queue:
        yield queue.popleft()
        queue.extend(to_device(*b) for b in itertools.islice(batches, 1))


def gather(array) -> np.ndarray:
    """A batch-sharded global array, whole, on every process."""
    if jax.process_count() == 1:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def restore_checkpoint(manager, state: TrainState, meta: dict) -> TrainState:
    step = manager.latest_step()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, serialization.to_state_dict(state))
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        ),
    )
    saved = restored["meta"]
    for key in ("model", "num_classes", "dataset"):
        if saved.get(key) != meta[key]:
            raise ValueError(
                f"the workdir's checkpoint is of {key}={saved.get(key)!r}, this config has "
                f"{meta[key]!r}: use a new --workdir"
            )
    return serialization.from_state_dict(state, restored["state"])


class _StopFlag:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps."""

    def __init__(self):
        self.signal = None

    def __enter__(self):
        self._previous = {
            s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)
        }
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


# ----------------------------------------------------------------------------------------------


def train_and_evaluate(config, workdir: str | Path) -> dict:
    """Trains `config.model` on `config.dataset`, resuming from `workdir` if it holds a run.

    Returns:
      The summary also written to workdir/summary.json.

    Raises:
      ConfigError: invalid configuration (before anything compiles).
      NonFiniteLoss: the loss became NaN/Inf (no checkpoint of that state is written).
      TrainingInterrupted: SIGTERM/SIGINT; the current step was checkpointed.
    """
    workdir = Path(workdir).absolute()  # orbax refuses relative checkpoint paths
    initialize_distributed(config)
    devices = jax.devices()  # every process's
    validate(config, len(devices))
    is_chief = jax.process_index() == 0  # the one process that writes metrics and reports
    workdir.mkdir(parents=True, exist_ok=True)
    if is_chief:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")

    mesh = jax.make_mesh((len(devices),), ("data",))
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))

    dataset = data_lib.load_dataset(
        config, data_lib.ProcessShard(jax.process_index(), jax.process_count())
    )
    num_classes = dataset.num_classes
    steps_per_epoch = dataset.steps_per_epoch(config.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(
            f"config.batch_size={config.batch_size} exceeds the {dataset.num_train_examples} "
            "training examples"
        )
    total_steps = config.num_epochs * steps_per_epoch
    stop_at = min(config.max_steps or total_steps, total_steps)

    model = create_model(config, num_classes, len(devices))
    variables = initial_variables(config, model, dataset.image_shape, num_classes)
    trainable = trainable_head_only(config.model) if config.freeze_backbone else None
    schedule = learning_rate_schedule(config, steps_per_epoch)
    state = TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=make_optimizer(config, steps_per_epoch, trainable),
        # Copies: on GPU/TPU the state is donated to the train step (see donates_train_state),
        # and a buffer cannot be donated twice.
        ema_params=jax.tree.map(jnp.copy, variables["params"]) if config.ema_decay else None,
        ema_batch_stats=(
            jax.tree.map(jnp.copy, variables["batch_stats"]) if config.ema_decay else None
        ),
    )
    meta = {
        "model": config.model,
        "num_classes": num_classes,
        "dataset": config.dataset,
        "class_names": dataset.class_names,
        "image_shape": list(dataset.image_shape),
    }
    state = jax.device_put(state, replicated)
    manager = checkpoint_manager(workdir, config)
    if manager.latest_step() is not None:
        state = restore_checkpoint(manager, state, meta)
        if is_chief:
            print(f"resumed from {workdir / 'checkpoints'} at step {int(state.step)}")

    p_train_step = jax.jit(
        functools.partial(
            train_step, config=config, num_classes=num_classes, schedule=schedule,
            bn_train=not config.freeze_backbone, mean=dataset.mean, std=dataset.std,
        ),
        in_shardings=(replicated, batch_sharding, batch_sharding, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0 if donates_train_state(jax.default_backend()) else (),
    )  # fmt: skip
    p_eval_step = jax.jit(
        functools.partial(
            eval_step,
            apply_fn=model.apply,
            num_classes=num_classes,
            mean=dataset.mean,
            std=dataset.std,
        ),
        in_shardings=(replicated, replicated, batch_sharding, batch_sharding, batch_sharding),
        out_shardings=(replicated, batch_sharding),
    )

    def to_device(*arrays):
        return [jax.make_array_from_process_local_data(batch_sharding, a) for a in arrays]

    def evaluate(state: TrainState) -> tuple[dict, np.ndarray, np.ndarray]:
        use_ema = config.ema_decay > 0
        params = state.ema_params if use_ema else state.params
        batch_stats = state.ema_batch_stats if use_ema else state.batch_stats
        totals, predictions, labels = {}, [], []
        batches = prefetch_to_device(dataset.eval_batches(config.eval_batch_size), 2, to_device)
        for images, batch_labels, mask in batches:
            sums, batch_predictions = p_eval_step(params, batch_stats, images, batch_labels, mask)
            for k, v in jax.device_get(sums).items():
                totals[k] = totals.get(k, 0.0) + float(v)
            mask = gather(mask)
            predictions.append(gather(batch_predictions)[mask])
            labels.append(gather(batch_labels)[mask])
        count = totals.pop("count")
        return (
            {k: v / count for k, v in totals.items()},
            np.concatenate(labels),
            np.concatenate(predictions),
        )

    writer = metrics_lib.MetricWriter(workdir) if is_chief else metrics_lib.NullWriter()
    key = jax.random.key(config.seed)
    step = int(jax.device_get(state.step))
    pending: list[tuple[int, dict]] = []  # per-step metrics still on device
    # Throughput excludes compilation (the first step) and evaluation: it is timed in windows
    # from the start of each epoch's steps to the synchronized end of that epoch's last one.
    train_images_seen, train_seconds, compiled = 0, 0.0, False
    window_start, window_images = 0.0, 0
    eval_metrics: dict = {}
    start = time.perf_counter()

    def flush(progress) -> None:
        """Brings pending per-step metrics to the host: the only per-step sync point."""
        nonlocal pending
        if not pending:
            return
        host = jax.device_get([m for _, m in pending])
        for (s, _), m in zip(pending, host, strict=True):
            if not np.isfinite(m["loss"]):
                raise NonFiniteLoss(
                    f"loss is {m['loss']} at step {s} (lr {m['lr']:.4g}); stopping, no checkpoint "
                    "of this state is written: lower learning_rate or add grad_clip_norm"
                )
        last = host[-1]
        scalars = {k: float(np.mean([h[k] for h in host])) for k in ("loss", "top1")}
        writer.write(pending[-1][0], "train", {**scalars, "lr": float(last["lr"])})
        if progress is not None:
            seconds = train_seconds + (time.perf_counter() - window_start if compiled else 0)
            images = train_images_seen + window_images
            progress.set_postfix(
                loss=f"{scalars['loss']:.4f}", lr=f"{float(last['lr']):.4g}",
                img_s=f"{images / max(seconds, 1e-9):.0f}",
            )  # fmt: skip
        pending = []

    with _StopFlag() as stop:
        while step < stop_at:
            epoch, index = divmod(step, steps_per_epoch)
            progress = _progress_bar(config, epoch, steps_per_epoch, index) if is_chief else None
            epoch_end = min((epoch + 1) * steps_per_epoch, stop_at)
            batches = prefetch_to_device(
                dataset.train_batches(config.seed, epoch, index, config.batch_size), 2, to_device
            )
            window_start, window_images = time.perf_counter(), 0
            while step < epoch_end:
                images, labels = next(batches)
                state, step_metrics = p_train_step(state, images, labels, key)
                if compiled:
                    window_images += config.batch_size
                else:
                    jax.block_until_ready(state.step)
                    compiled, window_start = True, time.perf_counter()
                pending.append((step, step_metrics))
                step += 1
                index += 1
                if progress is not None:
                    progress.update(1)
                if len(pending) >= config.log_every_steps:
                    flush(progress)
                every = config.checkpoint_every_steps
                if stop.signal or (every and step % every == 0):
                    flush(progress)
                    save_checkpoint(manager, state, meta)
                if stop.signal:
                    raise TrainingInterrupted(
                        f"{stop.signal} at step {step}: checkpoint written to "
                        f"{workdir / 'checkpoints'}; run the same command again to resume"
                    )
            flush(progress)
            jax.block_until_ready(state.step)
            train_seconds += time.perf_counter() - window_start
            train_images_seen += window_images
            if progress is not None:
                progress.close()
            save_checkpoint(manager, state, meta)
            eval_metrics, _, _ = evaluate(state)
            writer.write(step, "eval", eval_metrics)
            if is_chief:
                print(
                    f"epoch {epoch + 1}/{config.num_epochs} step {step}: "
                    + " ".join(f"eval_{k} {v:.4f}" for k, v in eval_metrics.items())
                )
    # Final evaluation with the per-class report.
    eval_metrics, labels, predictions = evaluate(state)
    report = metrics_lib.classification_report(labels, predictions, dataset.class_names)
    skipped = getattr(dataset, "skipped", {})
    wall = time.perf_counter() - start
    summary = {
        "model": config.model,
        "dataset": config.dataset,
        "top1": eval_metrics["top1"],
        "top5": eval_metrics["top5"],
        "loss": eval_metrics["loss"],
        "macro_f1": report["macro_f1"],
        "steps": step,
        "epochs": step / steps_per_epoch,
        "images_per_sec": train_images_seen / max(train_seconds, 1e-9),
        "wall_s": wall,
        "devices": len(devices),
        "processes": jax.process_count(),
        "skipped_files": len(skipped),
    }
    writer.write(step, "final", {k: summary[k] for k in ("top1", "top5", "loss", "macro_f1")})
    writer.close()
    if skipped:  # each process lists the files of its own shard
        listing = workdir / f"skipped_files.{jax.process_index()}.txt"
        listing.write_text("".join(f"{path}\t{why}\n" for path, why in sorted(skipped.items())))
        print(f"skipped {len(skipped)} unreadable or non-image files, listed in {listing}")
    if is_chief:
        (workdir / "confusion_matrix.json").write_text(json.dumps(report, indent=2) + "\n")
        metrics_lib.plot_confusion_matrix(report, workdir / "confusion_matrix.png")
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    manager.close()
    return summary


def _progress_bar(config, epoch: int, total: int, initial: int):
    if not config.progress_bar:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{config.num_epochs}",
                unit="step", leave=True, dynamic_ncols=True)  # fmt: skip
