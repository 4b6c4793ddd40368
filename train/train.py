"""The training loop: one jit-compiled, data-parallel train step over a ('data',) device mesh.

Read top to bottom: the set-up functions (devices, data, state, compiled steps), then
`train_and_evaluate`, a flat loop over steps that checkpoints and evaluates when a step says
so, and the final report.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import json
import os
import signal
import sys
import time
from pathlib import Path

import jax
import numpy as np
from flax import serialization
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxnets import checkpoints, heads
from jaxnets.xla_flags import donates_train_state
from train import data as data_lib
from train import metrics as metrics_lib
from train import workdir as workdir_lib
from train.config import eval_crop, replicas, validate, with_device_batches
from train.metrics import NonFiniteLoss
from train.mixing import BatchAugment
from train.optim import learning_rate_schedule
from train.state import TrainState, create_model, create_train_state, initial_variables
from train.steps import EmaRule, eval_step, train_step

__all__ = ["NonFiniteLoss", "TrainingInterrupted", "train_and_evaluate"]


class TrainingInterrupted(RuntimeError):
    """SIGTERM/SIGINT arrived; a checkpoint of the current step was written."""


# ----------------------------------------------------------------------------------------------
# Set-up.


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


@dataclasses.dataclass(frozen=True)
class Shardings:
    replicated: NamedSharding  # parameters, optimizer state, metrics
    batch: NamedSharding  # images, labels and masks, split over 'data'

    @classmethod
    def over(cls, devices) -> Shardings:
        mesh = jax.make_mesh((len(devices),), ("data",))
        return cls(NamedSharding(mesh, P()), NamedSharding(mesh, P("data")))

    def to_device(self, *arrays):
        """This process's rows of a global batch -> global arrays sharded over 'data'."""
        return [jax.make_array_from_process_local_data(self.batch, a) for a in arrays]


def load_data(config) -> tuple[data_lib.Dataset, int, int]:
    """The dataset, its epoch length in steps and the step to stop at."""
    shard = data_lib.ProcessShard(jax.process_index(), jax.process_count())
    dataset = data_lib.load_dataset(config, shard, jax.device_count())
    steps_per_epoch = dataset.steps_per_epoch(config.batch_size)
    if steps_per_epoch == 0:
        sampled = " (repeated augmentation keeps len // 256 * 256)" if config.ra_reps else ""
        raise ValueError(
            f"config.batch_size={config.batch_size} exceeds the {dataset.num_train_examples} "
            f"training examples{sampled}"
        )
    total_steps = config.num_epochs * steps_per_epoch
    return dataset, steps_per_epoch, min(config.max_steps or total_steps, total_steps)


def restore_or_keep(manager, state: TrainState, meta: dict, is_chief: bool) -> TrainState:
    """The workdir's newest readable checkpoint when it has one (a resumed run), else `state`.
    Damaged newer checkpoints are moved aside, each in one line (jaxnets/checkpoints.py)."""

    def check_meta(saved: dict) -> None:
        for key in checkpoints.RESUME_KEYS:
            if saved.get(key) != meta[key]:
                raise ValueError(
                    f"the workdir's checkpoint is of {key}={saved.get(key)!r}, this config has "
                    f"{meta[key]!r}; {workdir_lib.WAY_OUT}"
                )

    def report(line: str) -> None:
        if is_chief:  # one copy of each line
            print(f"train: {line}", file=sys.stderr)

    like = serialization.to_state_dict(state)
    found = checkpoints.restore_newest_good(manager, like, check_meta, report)
    return state if found is None else serialization.from_state_dict(state, found[0])


def current_step(state: TrainState) -> int:
    """The state's step on the host (a sync: never inside the step loop)."""
    return int(jax.device_get(state.step))


def save_checkpoint(manager, state: TrainState, meta: dict) -> None:
    step = current_step(state)
    checkpoints.save(manager, step, serialization.to_state_dict(state), meta)


def compile_steps(
    config, dataset, state: TrainState, schedule, steps_per_epoch: int, shardings: Shardings
):
    """The jitted train and eval steps over the mesh; the state is donated where that pays."""
    replicated, batch = shardings.replicated, shardings.batch
    train = jax.jit(
        functools.partial(
            train_step, num_classes=dataset.num_classes, schedule=schedule,
            label_smoothing=config.label_smoothing, mean=dataset.mean, std=dataset.std,
            ema=EmaRule.from_config(config, steps_per_epoch),
            augment=BatchAugment(
                random_erase=config.random_erase, mixup_alpha=config.mixup_alpha,
                cutmix_alpha=config.cutmix_alpha, groups=replicas(config, jax.device_count()),
            ),
        ),
        in_shardings=(replicated, batch, batch, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0 if donates_train_state(jax.default_backend()) else (),
    )  # fmt: skip
    evaluate = jax.jit(
        functools.partial(
            eval_step, apply_fn=state.apply_fn, num_classes=dataset.num_classes,
            mean=dataset.mean, std=dataset.std,
        ),
        in_shardings=(replicated, replicated, batch, batch, batch),
        out_shardings=(replicated, batch),
    )  # fmt: skip
    return train, evaluate


def prefetch_to_device(batches, size: int, to_device):
    """Keeps `size` batches in flight to the device (transfers are asynchronous), so the next
    batch is already there when a step finishes."""
    queue = collections.deque()
    batches = iter(batches)
    queue.extend(to_device(*b) for b in itertools.islice(batches, size))
    while queue:
        yield queue.popleft()
        queue.extend(to_device(*b) for b in itertools.islice(batches, 1))


def steps_from(start: int, stop_at: int, steps_per_epoch: int, dataset, config, to_device):
    """(step, images, labels) on the device for steps start .. stop_at - 1, epoch after epoch;
    each epoch's input pipeline starts when its first step is asked for (after the previous
    epoch's evaluation)."""
    step = start
    while step < stop_at:
        epoch, index = divmod(step, steps_per_epoch)
        batches = dataset.train_batches(config.seed, epoch, index, config.batch_size)
        for images, labels in prefetch_to_device(batches, 2, to_device):
            yield step, images, labels
            step += 1
            if step == stop_at or step % steps_per_epoch == 0:
                break
        else:  # the sources raise their own error first; this guards against a silent one
            raise ValueError(f"{dataset.name}: epoch {epoch + 1}'s batches ended at step {step}")


def gather(array) -> np.ndarray:
    """A batch-sharded global array, whole, on every process."""
    if jax.process_count() == 1:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def evaluate(p_eval_step, state: TrainState, dataset: data_lib.Dataset, config, shardings):
    """Mean loss/top-1/top-5 over the evaluation split (the EMA weights when kept), and every
    example's label and prediction for the report."""
    params, batch_stats = state.params, state.batch_stats
    if config.ema_decay:
        params, batch_stats = state.ema_params, state.ema_batch_stats
    totals, predictions, labels = collections.Counter(), [], []
    batches = dataset.eval_batches(config.eval_batch_size)
    for images, batch_labels, mask in prefetch_to_device(batches, 2, shardings.to_device):
        sums, batch_predictions = p_eval_step(params, batch_stats, images, batch_labels, mask)
        totals.update({k: float(v) for k, v in jax.device_get(sums).items()})
        mask = gather(mask)
        predictions.append(gather(batch_predictions)[mask])
        labels.append(gather(batch_labels)[mask])
    count = totals.pop("count")
    means = {k: totals[k] / count for k in ("loss", "top1", "top5")}
    return means, np.concatenate(labels), np.concatenate(predictions)


def evaluate_tta(config, state: TrainState, dataset: data_lib.Dataset) -> dict:
    """The evaluation split under config.eval_tta's protocol (train/tta.py), with the weights
    evaluate() uses; every process scores the whole split on its own devices."""
    from train import tta
    from train.data.protocol import parse_protocol

    params, batch_stats = state.params, state.batch_stats
    if config.ema_decay:
        params, batch_stats = state.ema_params, state.ema_batch_stats
    # Replicated over the mesh: any one addressable copy is the whole array.
    variables = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)),
                             {"params": params, "batch_stats": batch_stats})  # fmt: skip
    protocol = parse_protocol(config.eval_tta, config.eval_scales, config.eval_resize,
                              eval_crop(config))  # fmt: skip
    head = heads.canonical(config.head) if config.head else None
    member = tta.Member(config.model, variables, head)
    scorer = tta.ViewScorer(member, protocol, dataset.num_classes, config.eval_batch_size)
    scores = tta.score_dataset([scorer], dataset.eval_examples(tta.view_function(protocol)),
                               dataset)  # fmt: skip
    return {
        "protocol": protocol.name, "views_per_image": protocol.views_per_image,
        **metrics_lib.top_k_accuracy(scores.probabilities, scores.labels),
        "images_per_sec": scores.images_per_sec,
    }  # fmt: skip


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


class Progress:
    """One tqdm bar per epoch on the chief process (config.progress_bar), else nothing."""

    def __init__(self, config, steps_per_epoch: int, enabled: bool):
        self._config, self._steps_per_epoch = config, steps_per_epoch
        self._enabled = enabled and config.progress_bar
        self._bar = None

    def step(self, step: int) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            epoch, index = divmod(step, self._steps_per_epoch)
            self._bar = tqdm(total=self._steps_per_epoch, initial=index, unit="step",
                             desc=f"epoch {epoch + 1}/{self._config.num_epochs}", leave=True,
                             dynamic_ncols=True)  # fmt: skip
        self._bar.update(1)

    def show(self, scalars: dict | None, images_per_sec: float) -> None:
        if self._bar is not None and scalars is not None:
            self._bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['lr']:.4g}",
                                  img_s=f"{images_per_sec:.0f}")  # fmt: skip

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None


# ----------------------------------------------------------------------------------------------


def train_and_evaluate(config, workdir: str | Path, after_epoch=None) -> dict:
    """Trains `config.model` on `config.dataset`, resuming from `workdir` if it holds a run.

    Args:
      config: the training config (train/config.py).
      workdir: the run's directory.
      after_epoch: called as after_epoch(epoch, eval_metrics) after each epoch's evaluation
        (epochs count from 1; a hyperparameter sweep reports to its pruner there); a true result
        ends the run after that epoch, with its checkpoint and final report written.

    Returns:
      The summary also written to workdir/summary.json (`stopped_early`: after_epoch ended it).

    Raises:
      ConfigError: invalid configuration (before anything compiles).
      NonFiniteLoss: the loss became NaN/Inf (no checkpoint of that state is written).
      TrainingInterrupted: SIGTERM/SIGINT; the current step was checkpointed.
    """
    start_time = time.perf_counter()
    workdir = Path(workdir).absolute()
    initialize_distributed(config)
    devices = jax.devices()  # every process's
    config = with_device_batches(config, len(devices))
    validate(config, len(devices))
    is_chief = jax.process_index() == 0  # the one process that writes metrics and reports
    workdir.mkdir(parents=True, exist_ok=True)
    if config.resume:
        workdir_lib.check_same_run(config, workdir)
    else:
        workdir_lib.set_aside_previous_run(workdir)

    shardings = Shardings.over(devices)
    dataset, steps_per_epoch, stop_at = load_data(config)
    model = create_model(config, dataset.num_classes, len(devices))
    variables = initial_variables(config, model, dataset.image_shape, dataset.num_classes)
    state = create_train_state(config, model, variables, steps_per_epoch)
    meta = checkpoints.describe(config.model, config.dataset, dataset.class_names,
                                dataset.image_shape, head=config.head or None)  # fmt: skip
    meta["steps_per_epoch"] = steps_per_epoch  # where a step falls in epochs, for other trainers
    manager = checkpoints.manager(workdir, max_to_keep=config.keep_checkpoints)
    # Replicated first: a restore takes the shardings of the state it is given.
    state = restore_or_keep(manager, jax.device_put(state, shardings.replicated), meta,
                            is_chief)  # fmt: skip
    if is_chief:  # after the checks: a refused config leaves the run's own in place
        workdir_lib.write_config(config, workdir)
    first_step = current_step(state)
    if first_step and is_chief:
        print(f"resumed from {checkpoints.checkpoint_dir(workdir)} at step {first_step}")
    schedule = learning_rate_schedule(config, steps_per_epoch)
    p_train_step, p_eval_step = compile_steps(
        config, dataset, state, schedule, steps_per_epoch, shardings
    )

    writer = metrics_lib.MetricWriter(workdir) if is_chief else metrics_lib.NullWriter()
    buffer, timer = metrics_lib.MetricBuffer(writer), metrics_lib.ThroughputTimer()
    progress = Progress(config, steps_per_epoch, is_chief)
    key = jax.random.key(config.seed)
    batches = steps_from(first_step, stop_at, steps_per_epoch, dataset, config,
                         shardings.to_device)  # fmt: skip
    stopped_early = False
    with _StopFlag() as stop:
        for step, images, labels in batches:
            state, step_metrics = p_train_step(state, images, labels, key)
            timer.stepped(state.step, config.batch_size)
            buffer.add(step, step_metrics)
            progress.step(step)
            done = step + 1
            if len(buffer) >= config.log_every_steps:
                progress.show(buffer.flush(), timer.images_per_sec())
            every = config.checkpoint_every_steps
            if stop.signal or (every and done % every == 0):
                buffer.flush()
                save_checkpoint(manager, state, meta)
            if stop.signal:
                raise TrainingInterrupted(
                    f"{stop.signal} at step {done}: checkpoint written to "
                    f"{checkpoints.checkpoint_dir(workdir)}; run the same command again to resume"
                )
            if done % steps_per_epoch == 0 or done == stop_at:  # the end of an epoch
                progress.show(buffer.flush(), timer.images_per_sec())
                timer.pause(state.step)
                progress.close()
                save_checkpoint(manager, state, meta)
                eval_metrics, _, _ = evaluate(p_eval_step, state, dataset, config, shardings)
                writer.write(done, "eval", eval_metrics)
                epoch = -(-done // steps_per_epoch)
                if is_chief:
                    print(
                        f"epoch {epoch}/{config.num_epochs} step {done}: "
                        + " ".join(f"eval_{k} {v:.4f}" for k, v in eval_metrics.items())
                    )
                if after_epoch is not None and after_epoch(epoch, eval_metrics):
                    stopped_early = True
                    break
                if done < stop_at:
                    timer.resume()

    summary = final_report(config, state, dataset, p_eval_step, shardings, workdir, writer,
                           is_chief)  # fmt: skip
    steps = current_step(state)
    summary.update(steps=steps, epochs=steps / steps_per_epoch, stopped_early=stopped_early,
                   images_per_sec=timer.images_per_sec(), wall_s=time.perf_counter() - start_time,
                   devices=len(devices), processes=jax.process_count())  # fmt: skip
    if is_chief:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    manager.close()
    return summary


def final_report(
    config, state, dataset, p_eval_step, shardings, workdir: Path, writer, is_chief: bool
) -> dict:
    """The last evaluation with its per-class report (confusion_matrix.json and .png), the list
    of skipped files, and the summary's accuracy fields."""
    eval_metrics, labels, predictions = evaluate(p_eval_step, state, dataset, config, shardings)
    report = metrics_lib.classification_report(labels, predictions, dataset.class_names)
    summary = {"model": config.model, "dataset": config.dataset, **eval_metrics,
               "macro_f1": report["macro_f1"], "skipped_files": len(dataset.skipped)}  # fmt: skip
    if config.eval_tta:
        summary["tta"] = evaluate_tta(config, state, dataset)
        print("final evaluation, protocol {protocol} ({views_per_image} views per image): "
              "top1 {top1:.4f} top5 {top5:.4f}, {images_per_sec:.1f} img/s"
              .format(**summary["tta"]))  # fmt: skip
    step = current_step(state)
    writer.write(step, "final", {k: summary[k] for k in ("top1", "top5", "loss", "macro_f1")})
    writer.close()
    if dataset.skipped:  # each process lists the files of its own shard
        listing = workdir / f"skipped_files.{jax.process_index()}.txt"
        listing.write_text("".join(f"{p}\t{why}\n" for p, why in sorted(dataset.skipped.items())))
        print(f"skipped {len(dataset.skipped)} unreadable or non-image files, listed in {listing}")
    if is_chief:
        (workdir / "confusion_matrix.json").write_text(json.dumps(report, indent=2) + "\n")
        metrics_lib.plot_confusion_matrix(report, workdir / "confusion_matrix.png")
    return summary
