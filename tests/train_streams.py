"""An in-memory stream with the TokenStream interface, for the trainer tests.

Batches of ``batch_size`` rows cut from a seeded per-epoch permutation of ``data``; each host
gets its ``batch_size // host_count`` contiguous rows of every batch; ``position`` is the
JSON-able position of the next batch, and ``position=`` resumes there.
"""

from __future__ import annotations

import numpy as np


class ArrayStream:
    def __init__(self, data: np.ndarray, batch_size: int, seed: int = 0, host_index: int = 0,
                 host_count: int = 1, position: dict | None = None):
        self.data = np.asarray(data, np.float32)
        self.batch_size = batch_size
        self.seed = seed
        self.host_index, self.host_count = host_index, host_count
        pos = position or {"epoch": 0, "batch": 0}
        self.epoch, self.batch = int(pos["epoch"]), int(pos["batch"])

    @property
    def batches_per_epoch(self) -> int:
        return len(self.data) // self.batch_size

    @property
    def position(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed}

    def __iter__(self):
        while True:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.data))
            while self.batch < self.batches_per_epoch:
                rows = order[self.batch * self.batch_size:(self.batch + 1) * self.batch_size]
                share = self.batch_size // self.host_count
                mine = rows[self.host_index * share:(self.host_index + 1) * share]
                self.batch += 1
                yield self.data[mine]
            self.epoch, self.batch = self.epoch + 1, 0


def factory(data: np.ndarray, batch_size: int, seed: int = 0):
    """A StreamFactory over ``data``."""
    return lambda host_index, host_count, position: ArrayStream(
        data, batch_size, seed, host_index, host_count, position)


def toy_activations(n: int = 4096, d: int = 16, seed: int = 0) -> np.ndarray:
    """Sparse-ish synthetic activations: sparse nonnegative codes over a random dictionary."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(4 * d, d)).astype(np.float32)
    codes = rng.exponential(size=(n, 4 * d)) * (rng.random((n, 4 * d)) < 0.08)
    return (codes @ atoms + 0.05 * rng.normal(size=(n, d))).astype(np.float32)
