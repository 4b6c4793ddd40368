"""Where metrics go: metrics.jsonl and TensorBoard event files in the workdir, the per-step
metrics buffered on device in between, the training throughput, and the final classification
report (per-class accuracy, macro-F1, confusion matrix as JSON and PNG)."""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from pathlib import Path

import jax
import numpy as np


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or Inf; the message names the first such step."""


class NullWriter:
    """What processes other than the first write: nothing (one copy of each metric)."""

    def write(self, step: int, split: str, scalars: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class MetricWriter:
    """Appends {'step', 'split', **scalars} lines to metrics.jsonl and writes TensorBoard
    scalars (tag 'split/name') to an event file in workdir/tensorboard."""

    def __init__(self, workdir: Path):
        self._jsonl = open(workdir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
        self._tb = EventFile(workdir / "tensorboard")

    def write(self, step: int, split: str, scalars: dict[str, float]) -> None:
        from tensorboard.compat.proto import summary_pb2

        scalars = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")
        self._jsonl.flush()
        values = [summary_pb2.Summary.Value(tag=f"{split}/{name}", simple_value=value)
                  for name, value in scalars.items()]  # fmt: skip
        self._tb.add(step, summary_pb2.Summary(value=values))

    def close(self) -> None:
        self._jsonl.close()
        self._tb.close()


_event_files = itertools.count()


class EventFile:
    """A TensorBoard event file, written as TensorBoard's EventFileWriter writes one (Event
    protocol buffers in TFRecord framing, the first one naming the file version), through a
    plain file. EventFileWriter itself opens its file through TensorFlow's gfile, which
    imports TensorFlow; this way a run on in-memory data (the demo) never does: 7.8 s of its
    start-up on this project's 2-core CPU."""

    def __init__(self, directory: Path):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        directory.mkdir(parents=True, exist_ok=True)
        now = time.time()
        # TensorBoard's own file name: events.out.tfevents.<seconds>.<host>.<pid>.<index>, the
        # index counting this process's files (a resumed run in the same second is another).
        index = next(_event_files)
        name = f"events.out.tfevents.{now:010.0f}.{socket.gethostname()}.{os.getpid()}.{index}"
        self._event = event_pb2.Event
        self._records = RecordWriter(open(directory / name, "wb"))  # noqa: SIM115
        self._write(self._event(wall_time=now, file_version="brain.Event:2"))

    def add(self, step: int, summary) -> None:
        """Writes one Summary protocol buffer at `step`, now."""
        self._write(self._event(wall_time=time.time(), step=step, summary=summary))

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())
        self._records.flush()

    def close(self) -> None:
        self._records.close()


class MetricBuffer:
    """Per-step metrics left on the device until `flush`, the loop's only per-step sync."""

    def __init__(self, writer):
        self._writer = writer
        self._pending: list[tuple[int, dict]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, step: int, metrics: dict) -> None:
        self._pending.append((step, metrics))

    def flush(self) -> dict[str, float] | None:
        """Brings the pending metrics to the host, writes their means at the last step, and
        returns them (None if nothing was pending).

        Raises:
          NonFiniteLoss: a step's loss is NaN or Inf.
        """
        if not self._pending:
            return None
        host = jax.device_get([m for _, m in self._pending])
        for (step, _), m in zip(self._pending, host, strict=True):
            if not np.isfinite(m["loss"]):
                raise NonFiniteLoss(
                    f"loss is {m['loss']} at step {step} (lr {m['lr']:.4g}); stopping, no "
                    "checkpoint of this state is written: lower learning_rate or add grad_clip_norm"
                )
        scalars = {k: float(np.mean([h[k] for h in host])) for k in ("loss", "top1")}
        scalars["lr"] = float(host[-1]["lr"])
        self._writer.write(self._pending[-1][0], "train", scalars)
        self._pending = []
        return scalars


class ThroughputTimer:
    """Training images per second, over the steps only: the first step (compilation) and the
    time between `pause` and `resume` (each epoch's checkpoint and evaluation) are left out."""

    def __init__(self):
        self.images, self.seconds = 0, 0.0
        self._compiled, self._since = False, None

    def stepped(self, state, batch_size: int) -> None:
        """After each step is dispatched; the first one is waited for and not counted."""
        if self._compiled:
            self.images += batch_size
            return
        jax.block_until_ready(state)
        self._compiled, self._since = True, time.perf_counter()

    def pause(self, state) -> None:
        jax.block_until_ready(state)  # steps are asynchronous: count them once they are done
        if self._since is not None:
            self.seconds += time.perf_counter() - self._since
        self._since = None

    def resume(self) -> None:
        if self._compiled:
            self._since = time.perf_counter()

    def images_per_sec(self) -> float:
        running = time.perf_counter() - self._since if self._since is not None else 0.0
        return self.images / max(self.seconds + running, 1e-9)


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 of (examples, classes) logits or probabilities against labels."""
    top5 = np.argsort(-scores, axis=-1)[:, :5]
    return {
        "top1": float(np.mean(top5[:, 0] == labels)),
        "top5": float(np.mean(np.any(top5 == labels[:, None], axis=-1))),
    }


def classification_report(
    labels: np.ndarray, predictions: np.ndarray, class_names: list[str]
) -> dict:
    """Per-class accuracy (recall), per-class F1, macro-F1 and the confusion matrix
    (rows: true class, columns: predicted)."""
    k = len(class_names)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    true_positive = np.diag(confusion).astype(np.float64)
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    recall = np.divide(true_positive, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(true_positive, predicted, out=np.zeros(k), where=predicted > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(k), where=denominator > 0)
    return {
        "class_names": class_names,
        "per_class_accuracy": dict(zip(class_names, recall.round(6).tolist(), strict=True)),
        "per_class_f1": dict(zip(class_names, f1.round(6).tolist(), strict=True)),
        "macro_f1": float(f1[support > 0].mean()),
        "confusion_matrix": confusion.tolist(),
    }


def plot_confusion_matrix(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(report["confusion_matrix"])
    names = report["class_names"]
    size = max(4.0, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion, cmap="Blues")
    if len(names) <= 30:
        ax.set_xticks(range(len(names)), names, rotation=90)
        ax.set_yticks(range(len(names)), names)
        for (i, j), count in np.ndenumerate(confusion):
            if count:
                color = "white" if count > confusion.max() / 2 else "black"
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (macro-F1 {report['macro_f1']:.4f})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
