"""The training stream: batches of tokens from an activation store, shuffled within shards.

The paper shuffles "tokens within groups of 1,000 proteins": each shard's rows are read
(contiguously), permuted with a seeded permutation and cut into batches; shards are visited in a
seeded random order, a new one each epoch; the next shard is read in a background thread while
the current one is consumed. The stream's position (epoch, shard cursor, batch) is a small dict:
a stream built with it yields exactly the batches the uninterrupted stream would have yielded.

With several hosts, every host builds the same stream with its own ``host_index`` and receives
only its slice (rows ``[h*B/H, (h+1)*B/H)``) of each global batch of ``B`` tokens, reading only
those rows from the store.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterator

import numpy as np

from interplm_jax.errors import InputError, StoreError
from interplm_jax.store import ActivationStore, prefetch

log = logging.getLogger(__name__)


def check_finite(store: ActivationStore, layer: int, shard: int, rows: np.ndarray,
                 tokens: np.ndarray) -> None:
    """StoreError naming the first row (and its protein) of ``tokens`` (n, d), the store rows
    ``rows`` (n,) of a shard, that holds NaN or Inf: training on it would end as "every SAE hit a
    non-finite loss"."""
    finite = np.isfinite(tokens).all(axis=1)
    if not finite.all():
        bad = np.sort(rows[~finite])
        p = int(np.searchsorted(store.offsets, bad[0], side="right")) - 1
        raise StoreError(f"{store.url}: layer {layer} holds non-finite values (NaN/Inf) in "
                         f"{len(bad)} row(s) of shard {shard}, first row {bad[0]} (protein "
                         f"{store.protein_ids[p]!r}); SAEs cannot train on them: "
                         f"`scripts/inspect_store.py {store.url} --verify` lists every such shard")


@dataclasses.dataclass(frozen=True)
class StreamPosition:
    """Where the next batch comes from: ``batch`` of the ``shard_cursor``-th shard of ``epoch``."""

    epoch: int = 0
    shard_cursor: int = 0
    batch: int = 0


class TokenStream:
    """Endless iterator of token batches (host_batch, d_model) float32 from one store layer,
    or (L, host_batch, d_model) from L layers (the same token rows of each).

    Args:
      store: a complete :class:`ActivationStore`.
      layer: which layer's activations; a tuple of layers: all of them, each shard read once
        for all (the batches of layer ``layer[i]`` are those a stream of that layer yields).
      batch_size: global batch size B (tokens); each host gets B / host_count rows.
      seed: seeds the shard order of each epoch and the token permutation of each shard.
      host_index, host_count: this host's slice of every batch.
      position: a dict from :attr:`position`, to continue exactly from there.
      drop_remainder: drop each shard's last ``n_rows % B`` tokens (a different random set each
        epoch) so every batch has the same shape; ``False`` yields the short batch instead
        (single host only).
      prefetch: read the next shard in a background thread.
    """

    def __init__(self, store: ActivationStore, layer: int | tuple[int, ...], batch_size: int = 2048,
                 seed: int = 0, host_index: int = 0, host_count: int = 1,
                 position: dict | None = None, drop_remainder: bool = True, prefetch: bool = True):
        missing = [L for L in np.atleast_1d(layer).tolist() if L not in store.layers]
        if missing:
            raise InputError(f"{store.url}: layer {', '.join(map(str, missing))} not in the store "
                             f"(layers {list(store.layers)})")
        if batch_size <= 0 or batch_size % host_count:
            raise InputError(f"batch size {batch_size} must be positive and divisible by "
                             f"the host count {host_count}")
        if not 0 <= host_index < host_count:
            raise InputError(f"host index {host_index} out of range for {host_count} host(s)")
        if not drop_remainder and host_count > 1:
            raise InputError("drop_remainder=False needs a single host (a short batch cannot be split)")
        self.layer = tuple(layer) if isinstance(layer, (list, tuple)) else layer
        self.store, self.batch_size, self.seed = store, batch_size, seed
        self.host_index, self.host_count = host_index, host_count
        self.drop_remainder, self.prefetch = drop_remainder, prefetch
        self._pos = StreamPosition(**(position or {}))
        if self._pos.shard_cursor >= store.n_shards:
            raise InputError(f"stream position {position} is beyond the store's {store.n_shards} shards")
        if self.batches_per_epoch() == 0:
            raise InputError(f"{store.url}: no shard has {batch_size} tokens; lower the batch size")

    @property
    def position(self) -> dict:
        """JSON-serialisable position of the next batch."""
        return dataclasses.asdict(self._pos)

    def shard_order(self, epoch: int) -> np.ndarray:
        """Shard indices in the order epoch ``epoch`` visits them."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.store.n_shards)

    def n_batches(self, shard: int) -> int:
        """Batches cut from one shard."""
        n_rows = self.store.shard_bounds(shard)[3] - self.store.shard_bounds(shard)[2]
        return n_rows // self.batch_size if self.drop_remainder else -(-n_rows // self.batch_size)

    def batches_per_epoch(self) -> int:
        return sum(self.n_batches(s) for s in range(self.store.n_shards))

    def _host_rows(self, epoch: int, shard: int) -> np.ndarray:
        """This host's rows of the shard (shard-relative), in batch order."""
        _, _, r0, r1 = self.store.shard_bounds(shard)
        perm = np.random.default_rng([self.seed, epoch, shard]).permutation(r1 - r0)
        nb, B, H = self.n_batches(shard), self.batch_size, self.host_count
        if H == 1:
            return perm[:nb * B] if self.drop_remainder else perm
        return perm[:nb * B].reshape(nb, H, B // H)[:, self.host_index].reshape(-1)

    def _load(self, epoch: int, cursor: int) -> np.ndarray:
        """Read and permute this host's tokens of the ``cursor``-th shard of ``epoch``."""
        shard = int(self.shard_order(epoch)[cursor])
        rows = self.store.shard_bounds(shard)[2] + self._host_rows(epoch, shard)
        layers = self.layer if isinstance(self.layer, tuple) else (self.layer,)
        tokens = [self.store.take(layer, rows) for layer in layers]
        for layer, t in zip(layers, tokens):
            check_finite(self.store, layer, shard, rows, t)
        return np.stack(tokens) if isinstance(self.layer, tuple) else tokens[0]

    def _next_cursor(self, epoch: int, cursor: int) -> tuple[int, int]:
        return (epoch, cursor + 1) if cursor + 1 < self.store.n_shards else (epoch + 1, 0)

    def _cursors(self) -> Iterator[tuple[int, int]]:
        """(epoch, cursor) of every shard read from the current position on, endlessly."""
        at = (self._pos.epoch, self._pos.shard_cursor)
        while True:
            yield at
            at = self._next_cursor(*at)

    def __iter__(self) -> Iterator[np.ndarray]:
        per_host = self.batch_size // self.host_count
        first = self._pos.batch
        shards = prefetch(lambda at: (at, self._load(*at)), self._cursors(), ahead=self.prefetch)
        for (epoch, cursor), tokens in shards:
            nxt = self._next_cursor(epoch, cursor)
            n_batches = -(-tokens.shape[-2] // per_host)
            for b in range(first, n_batches):
                self._pos = (StreamPosition(epoch, cursor, b + 1) if b + 1 < n_batches
                             else StreamPosition(nxt[0], nxt[1], 0))
                yield tokens[..., b * per_host:(b + 1) * per_host, :]
            first = 0
            if nxt[1] == 0:
                log.debug("stream: epoch %d done", epoch)
