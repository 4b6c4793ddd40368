"""Evaluation under a test-time protocol (train/data/views.py): every view of an image through
the model, their softmax outputs averaged; ensembles average their members' averages.

Crop views share one shape: a batch of images' crop views goes through the model at once
(padded to a fixed batch). Dense views are whole resized images, whose shapes follow each
image's aspect ratio: those of one shape in a batch go through together, and each new shape
compiles the fully convolutional network once, as the paper's dense evaluation must (the
compilation is timed apart from the scoring).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

import jaxnets
from jaxnets.dense import dense_logits, supports_dense
from train.data import normalize_on_host
from train.data.protocol import Protocol
from train.data.views import make_views


@dataclasses.dataclass
class Member:
    """One network of an evaluation: its architecture, weights and head spec."""

    name: str
    variables: dict
    head: tuple[str, ...] | None = None


class ViewScorer:
    """A member's softmax output averaged over the views of each image: a batch of images'
    crop views through the network at once, dense views of one shape together within the same
    pixel budget. Each batch shape is compiled once, ahead of its first run; `compile_seconds`
    keeps the time that took, apart from the time spent scoring."""

    def __init__(self, member: Member, protocol: Protocol, num_classes: int, network_batch: int):
        """network_batch: views through the network at once (the images of a batch are as
        many as fit, at least one)."""
        if protocol.dense and not supports_dense(member.name):
            raise ValueError(f"--tta dense: {member.name} takes one input size only")
        batch_size = max(1, network_batch // max(1, protocol.crop_views))
        self.member, self.protocol, self.batch_size = member, protocol, batch_size
        self.num_classes = num_classes
        self.pixel_budget = batch_size * max(1, protocol.crop_views) * protocol.crop**2
        self.compile_seconds = 0.0
        self._compiled = {}
        options = {"head": member.head} if member.head else {}
        model = jaxnets.create_model(member.name, num_classes=num_classes, **options)

        def crops(variables, images):  # (images, views, H, W, C) -> summed softmax per image
            n, v = images.shape[:2]
            logits = model.apply(variables, images.reshape(n * v, *images.shape[2:]), train=False)
            return jax.nn.softmax(logits).reshape(n, v, -1).sum(1)

        def dense(variables, images):  # (images, views, H, W, C) of one shape
            n, v = images.shape[:2]
            flat = images.reshape(n * v, *images.shape[2:])
            logits = dense_logits(member.name, variables, flat, head=member.head)
            return jax.nn.softmax(logits).reshape(n, v, -1).sum(1)

        self._score = {"crops": jax.jit(crops), "dense": jax.jit(dense)}
        for scale in protocol.scales if protocol.dense else ():
            side = scale or protocol.crop  # a scale the network cannot take fails now
            views = protocol.dense_views // len(protocol.scales)
            jax.eval_shape(dense, member.variables, jnp.zeros((1, views, side, side, 3)))

    def __call__(self, views: list[dict[str, np.ndarray]], dataset) -> np.ndarray:
        """(len(views), classes): each image's averaged softmax, from make_views' arrays
        (uint8, or normalized floats) of at most batch_size images."""
        totals = np.zeros((len(views), self.num_classes), np.float32)
        if self.protocol.crop_views:
            batch = np.stack([normalize_on_host(v["crops"], dataset) for v in views])
            totals += self._run("crops", batch, self.batch_size)
        # Dense views of one scale and shape go through together (the digits' all do;
        # photos of other aspect ratios mostly one by one).
        same_shape = collections.defaultdict(list)
        for row, image_views in enumerate(views):
            for key, images in image_views.items():
                if key != "crops":
                    same_shape[key, images.shape].append(row)
        for (key, shape), rows in same_shape.items():
            most = max(1, self.pixel_budget // (shape[0] * shape[1] * shape[2]))
            for start in range(0, len(rows), most):
                part = rows[start : start + most]
                batch = np.stack([normalize_on_host(views[r][key], dataset) for r in part])
                totals[part] += self._run("dense", batch, most)
        return totals / self.protocol.views_per_image

    def _run(self, kind: str, batch: np.ndarray, most: int) -> np.ndarray:
        """The scores of a batch zero-padded to `most` rows, or for a smaller one to the next
        power of two (few shapes to compile, little padding); each shape compiled once."""
        n = len(batch)
        size = most if n > most // 2 else 1 << (n - 1).bit_length()
        padded = np.zeros((size, *batch.shape[1:]), batch.dtype)
        padded[:n] = batch
        with jax.default_matmul_precision("highest"):
            key = (kind, padded.shape, padded.dtype)
            if key not in self._compiled:
                start = time.perf_counter()
                lowered = self._score[kind].lower(self.member.variables, padded)
                self._compiled[key] = lowered.compile()
                self.compile_seconds += time.perf_counter() - start
            return np.asarray(self._compiled[key](self.member.variables, padded))[:n]


@dataclasses.dataclass
class Scores:
    probabilities: np.ndarray  # (images, classes): the ensemble's averaged softmax
    members: list[np.ndarray]  # each member's own
    labels: np.ndarray
    images_per_sec: float


def score_dataset(scorers: list[ViewScorer], examples: Iterable, dataset, limit: int = 0) -> Scores:
    """Every member on every (views, label) of `examples` (the first `limit`, 0: all), in
    chunks of the scorers' batch size; images/sec leaves compilation out."""
    per_member, labels = [[] for _ in scorers], []
    seconds = 0.0
    for chunk in _chunks(_first(examples, limit), scorers[0].batch_size):
        views = [v for v, _ in chunk]
        compiling = sum(scorer.compile_seconds for scorer in scorers)
        start = time.perf_counter()
        for outputs, scorer in zip(per_member, scorers, strict=True):
            outputs.append(scorer(views, dataset))
        compiling = sum(scorer.compile_seconds for scorer in scorers) - compiling
        seconds += time.perf_counter() - start - compiling
        labels.extend(label for _, label in chunk)
    if not labels:
        raise ValueError(f"{dataset.name}: no readable evaluation images")
    members = [np.concatenate(outputs) for outputs in per_member]
    return Scores(
        probabilities=np.mean(members, axis=0),
        members=members,
        labels=np.asarray(labels),
        images_per_sec=len(labels) / seconds if seconds else float("nan"),
    )


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _first(examples: Iterable, limit: int) -> Iterator:
    for index, example in enumerate(examples):
        if limit and index >= limit:
            return
        yield example


def view_function(protocol: Protocol):
    """make_views for `protocol` as a tf.function, for the input pipelines and eagerly for
    single images (traced once per dtype and shape class, not once per image size)."""
    import tensorflow as tf

    return tf.function(lambda image: make_views(image, protocol), reduce_retracing=True)
