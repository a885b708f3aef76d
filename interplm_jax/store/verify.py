"""Checking a store's content against what its writer recorded.

Every shard marker holds a CRC-32 of each layer's rows as written; :func:`verify_store` reads
each completed shard back and compares, so a deleted chunk, flipped bytes or a truncated chunk
file is found and named (layer, shard, proteins, rows) in one pass. Stores written with the
zarr ``crc32c`` codec also fail on any read of a damaged chunk (see the reader).
:func:`forget_shards` then makes the damaged shards pending again, so that rerunning the
extraction rewrites only them.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from interplm_jax.errors import StoreDamage
from interplm_jax.progress import progress_bar
from interplm_jax.store.manifest import crc32, marker_key
from interplm_jax.store.reader import ActivationStore

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Damage:
    """One layer of one shard that does not read back as written."""

    layer: int
    shard: int
    proteins: tuple[int, int]
    rows: tuple[int, int]
    problem: str
    repairable: bool = True  # False: the values were written so (NaN/Inf); re-extracting repeats them

    def __str__(self) -> str:
        return (f"layer {self.layer}, shard {self.shard} (proteins {self.proteins[0]}..{self.proteins[1] - 1}, "
                f"rows {self.rows[0]}..{self.rows[1] - 1}): {self.problem}")


def verify_store(store: ActivationStore, layers: tuple[int, ...] | None = None) -> list[Damage]:
    """Read every completed shard of ``layers`` (default all) and compare it with its marker's
    CRC-32; return what is damaged (empty: the store reads back as written)."""
    layers = tuple(store.layers if layers is None else layers)
    found: list[Damage] = []
    bar = progress_bar(total=store.n_tokens * len(layers), desc="verify", unit="row")
    with bar:
        for i in range(store.n_shards):
            p0, p1, r0, r1 = store.shard_bounds(i)
            marker = store.objects.read_json(marker_key(i))
            for L in layers:
                if marker is None:
                    problem, repairable = "no completion marker (shard not written)", True
                else:
                    problem, repairable = _check(store, L, r0, r1, marker.get("crc32", {}).get(str(L)))
                if problem:
                    found.append(Damage(L, i, (p0, p1), (r0, r1), problem, repairable))
                    log.warning("%s: %s", store.url, found[-1])
                bar.update(r1 - r0)
    return found


def _check(store: ActivationStore, layer: int, r0: int, r1: int,
           expected: int | None) -> tuple[str | None, bool]:
    """(what is wrong with rows [r0, r1) of a layer, or None; whether re-extraction repairs it)."""
    try:
        rows = store.stored_rows(layer, r0, r1)
    except StoreDamage as e:
        return f"cannot be read: {e.detail}", True
    if expected is None:
        return "its marker records no checksum", True
    got = crc32(rows)
    if got != expected:
        return f"checksum {got:#010x}, marker says {expected:#010x} (changed since written)", True
    if not np.isfinite(rows.astype(np.float32, copy=False)).all():
        return "holds non-finite values (NaN/Inf) as written", False
    return None, True


def forget_shards(store: ActivationStore, shards: set[int]) -> None:
    """Make ``shards`` pending again: the store is marked incomplete, their markers removed and
    every layer chunk that holds rows of these shards only is deleted (a chunk shared with a
    kept shard was read back intact, or that shard would be damaged too). Rerunning the
    extraction with the same options then rewrites exactly these shards. Safe to repeat after
    an interruption."""
    manifest = dict(store.manifest)
    manifest["complete"] = False
    manifest["shards"] = [dict(e, complete=e.get("complete", True) and i not in shards)
                          for i, e in enumerate(manifest["shards"])]
    store.objects.write_json("manifest.json", manifest)  # first: readers refuse from here on
    for i in sorted(shards):
        store.objects.delete(marker_key(i))
    C, S = int(manifest["chunk_rows"]), store.shard_size
    chunks = {c for i in shards for c in range(store.shard_bounds(i)[2] // C, (store.shard_bounds(i)[3] - 1) // C + 1)}
    for c in sorted(chunks):
        first, last = np.searchsorted(store.offsets, [c * C, min((c + 1) * C, store.n_tokens) - 1], side="right") - 1
        if set(range(first // S, last // S + 1)) <= shards:
            for L in store.layers:
                store.objects.delete(f"layer_{L}/c/{c}/0")
    log.info("%s: shard(s) %s forgotten; rerun the extraction to rewrite them", store.url, sorted(shards))
