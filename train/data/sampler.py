"""Which examples an epoch visits, in which order: a shuffle, or torchvision's repeated-
augmentation sampler (references/classification/sampler.py, `RASampler`).

RASampler, on each of `replicas` processes (one per GPU in torchvision), repeats every index of a
shuffled epoch `reps` times in a row, pads the list to a multiple of the replicas, deals it out
round-robin (rank r takes positions r, r + replicas, ...) and keeps the first
floor(n // 256 * 256 / replicas) of each rank's share. A sample's copies therefore land on
neighbouring ranks in the same step (or the next, where the deal wraps), each augmented on its
own, and an epoch sees about n / reps distinct images. Here the ranks are the replicas
(config.replicas, else the devices): replica r's slice of each global batch is what rank r's
loader would have given it, so one list serves every process and device count.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def repeated_augmentation_streams(order: np.ndarray, reps: int, replicas: int) -> np.ndarray:
    """torchvision's RASampler for all ranks at once: row r is rank r's indices for the epoch,
    given the epoch's shuffled `order`. Shape (replicas, floor(n // 256 * 256 / replicas))."""
    n = len(order)
    per_replica = -(-n * reps // replicas)
    repeated = np.repeat(order, reps)
    repeated = np.concatenate([repeated, repeated[: per_replica * replicas - len(repeated)]])
    selected = n // 256 * 256 // replicas
    return repeated.reshape(per_replica, replicas).T[:, :selected]


@dataclasses.dataclass(frozen=True)
class EpochSampler:
    """A fresh shuffle each epoch (ra_reps=0), or repeated augmentation over `replicas` devices.

    Attributes:
      ra_reps: torchvision's --ra-reps; 0 for a plain shuffle.
      replicas: the devices of the run (torchvision's world size).
    """

    ra_reps: int = 0
    replicas: int = 1

    def steps_per_epoch(self, num_examples: int, batch_size: int) -> int:
        """Full global batches an epoch (the incomplete last one is dropped)."""
        if not self.ra_reps:
            return num_examples // batch_size
        per_device = batch_size // self.replicas
        return num_examples // 256 * 256 // self.replicas // per_device

    def order(self, seed: int, epoch: int, num_examples: int, batch_size: int) -> np.ndarray:
        """The examples of each global batch of the epoch in turn, steps_per_epoch * batch_size
        of them; each batch's rows are the devices' slices in device order."""
        shuffled = np.random.default_rng([seed, epoch]).permutation(num_examples)
        steps = self.steps_per_epoch(num_examples, batch_size)
        if not self.ra_reps:
            return shuffled[: steps * batch_size]
        per_device = batch_size // self.replicas
        streams = repeated_augmentation_streams(shuffled, self.ra_reps, self.replicas)
        streams = streams[:, : steps * per_device].reshape(self.replicas, steps, per_device)
        return streams.transpose(1, 0, 2).reshape(-1)


PLAIN_SHUFFLE = EpochSampler()


def example_keys(order: np.ndarray, num_examples: int) -> np.ndarray:
    """A key per entry of an epoch's order for its augmentation seed: the example's index for
    its first occurrence, plus num_examples for each earlier copy, so repeated examples are
    augmented independently and any process count draws the same."""
    sorter = np.argsort(order, kind="stable")
    in_order = order[sorter]
    copies = np.empty_like(order)
    copies[sorter] = np.arange(len(order)) - np.searchsorted(in_order, in_order, "left")
    return order.astype(np.int64) + copies.astype(np.int64) * num_examples


def spread_over_devices(local_batch: int, local_devices: int) -> np.ndarray:
    """For a stream with each example's copies in a row (TFDS: its order is a shuffle
    buffer's), the row order of a local batch that deals consecutive rows out round-robin over
    this process's devices, as RASampler deals its list over ranks."""
    return np.arange(local_batch).reshape(-1, local_devices).T.reshape(-1)
