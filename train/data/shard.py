"""Which slice of each global batch a process reads: shared by the in-memory datasets
(arrays.py) and the tf.data pipelines (tfdata.py)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ProcessShard:
    """Which slice of each global batch this process reads."""

    index: int = 0
    count: int = 1

    def local_batch(self, global_batch: int) -> int:
        if global_batch % self.count:
            raise ValueError(
                f"batch size {global_batch} is not divisible by the {self.count} processes"
            )
        return global_batch // self.count

    def rows(self, positions: np.ndarray, global_batch: int) -> np.ndarray:
        """This process's share of `positions`, a whole number of global batches."""
        local = self.local_batch(global_batch)
        return positions.reshape(-1, self.count, local)[:, self.index].reshape(-1)


SINGLE_PROCESS = ProcessShard()  # the whole of every batch: a run with one process
