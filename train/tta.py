"""Evaluation under a test-time protocol (train/data/views.py): every view of an image through
the model, their softmax outputs averaged; ensembles average their members' averages.

Crop views share one shape: a batch of images' crop views goes through the model at once
(padded to a fixed batch). Dense views are whole resized images, whose shapes follow each
image's aspect ratio: those of one shape in a batch go through together, and each new shape
compiles the fully convolutional network once (jit's cache), as the paper's dense evaluation
must.
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
    """One network of an evaluation: its weights, head spec and preprocessing statistics."""

    name: str
    variables: dict
    head: tuple[str, ...] | None = None
    label: str = ""  # how reports name it (the weights it came from)


class ViewScorer:
    """A member's softmax output averaged over the views of each image, `batch_size` images'
    crop views through the network at once."""

    def __init__(self, member: Member, protocol: Protocol, num_classes: int, batch_size: int = 1):
        if protocol.dense and not supports_dense(member.name):
            raise ValueError(f"--tta dense: {member.name} takes one input size only")
        self.member, self.protocol, self.batch_size = member, protocol, batch_size
        self.num_classes = num_classes
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

        self._crops, self._dense = jax.jit(crops), jax.jit(dense)
        with jax.default_matmul_precision("highest"):
            if protocol.crop_views:  # compiled now, not while the first image is timed
                shape = (batch_size, protocol.crop_views, protocol.crop, protocol.crop, 3)
                self._crops(member.variables, jnp.zeros(shape))
            for scale in protocol.scales if protocol.dense else ():
                side = scale or protocol.crop  # a scale the network cannot take fails now
                views = protocol.dense_views // len(protocol.scales)
                jax.eval_shape(dense, member.variables, jnp.zeros((1, views, side, side, 3)))
                # Square images' views (the digits', CIFAR's) compiled now, not while timed.
                self._dense(member.variables, jnp.zeros((batch_size, views, side, side, 3)))

    def __call__(self, views: list[dict[str, np.ndarray]], dataset) -> np.ndarray:
        """(len(views), classes): each image's averaged softmax, from make_views' arrays
        (uint8, or normalized floats) of at most batch_size images."""
        totals = np.zeros((len(views), self.num_classes), np.float32)
        with jax.default_matmul_precision("highest"):
            if self.protocol.crop_views:
                batch = np.stack([normalize_on_host(v["crops"], dataset) for v in views])
                totals += self._padded(self._crops, batch, always_full=True)
            # Dense views of one scale and shape go through together (the digits' all do;
            # photos of other aspect ratios one by one).
            same_shape = collections.defaultdict(list)
            for row, image_views in enumerate(views):
                for key, images in image_views.items():
                    if key != "crops":
                        same_shape[key, images.shape].append(row)
            for (key, _), rows in same_shape.items():
                batch = np.stack([normalize_on_host(views[r][key], dataset) for r in rows])
                totals[rows] += self._padded(self._dense, batch)
        return totals / self.protocol.views_per_image

    def _padded(self, score, batch: np.ndarray, always_full: bool = False) -> np.ndarray:
        """score(batch) with the batch zero-padded to the scorer's batch size (the one shape
        compiled up front), or for a smaller group of dense views to the next power of two:
        few shapes to compile, little padding."""
        n = len(batch)
        full = always_full or n > self.batch_size // 2
        size = self.batch_size if full else 1 << (n - 1).bit_length()
        padded = np.zeros((size, *batch.shape[1:]), batch.dtype)
        padded[:n] = batch
        return np.asarray(score(self.member.variables, padded))[:n]


@dataclasses.dataclass
class Scores:
    probabilities: np.ndarray  # (images, classes): the ensemble's averaged softmax
    members: list[np.ndarray]  # each member's own
    labels: np.ndarray
    images_per_sec: float


def score_dataset(scorers: list[ViewScorer], examples: Iterable, dataset, limit: int = 0) -> Scores:
    """Every member on every (views, label) of `examples` (the first `limit`, 0: all), in
    chunks of the scorers' batch size."""
    per_member, labels = [[] for _ in scorers], []
    seconds = 0.0
    for chunk in _chunks(_first(examples, limit), scorers[0].batch_size):
        views = [v for v, _ in chunk]
        start = time.perf_counter()
        for outputs, scorer in zip(per_member, scorers, strict=True):
            outputs.append(scorer(views, dataset))
        seconds += time.perf_counter() - start
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
