"""Reading a store: :class:`ActivationStore` (token rows of a layer, of a protein, of a set of
proteins) and :func:`prefetch`, the one way to read the next block in the background."""

from __future__ import annotations

import concurrent.futures
import os
from functools import cached_property
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import tensorstore as ts

from interplm_jax.errors import InputError, StoreDamage, StoreError
from interplm_jax.store.manifest import (CHUNK_CHECKSUMS, FORMAT, FORMAT_VERSION, Objects, array_spec,
                                         check_manifest, kvstore_url)

T = TypeVar("T")
R = TypeVar("R")
_END = object()


def prefetch(load: Callable[[T], R], items: Iterable[T], ahead: bool = True) -> Iterator[R]:
    """``load(item)`` for each of ``items`` (possibly endless), in order, run in a background
    thread: with ``ahead`` the next item is loaded while the caller works on the current one;
    without, only after the caller asks for it."""
    it = iter(items)
    first = next(it, _END)
    if first is _END:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, first)
        while True:
            result = pending.result()
            nxt = next(it, _END)
            if ahead and nxt is not _END:
                pending = pool.submit(load, nxt)
            yield result
            if nxt is _END:
                return
            if not ahead:
                pending = pool.submit(load, nxt)


class ActivationStore:
    """Read access to a complete activation store.

    Attributes:
      manifest: the parsed ``manifest.json``.
      layers, d_model, n_proteins, n_tokens, protein_ids, offsets: as in the manifest and files.
    """

    def __init__(self, url: str, manifest: dict):
        self.url = url
        self.manifest = manifest
        self.objects = Objects(url)
        self.layers: tuple[int, ...] = tuple(manifest["layers"])
        self.d_model: int = manifest["d_model"]
        self.n_proteins: int = manifest["n_proteins"]
        self.n_tokens: int = manifest["n_tokens"]
        self.shard_size: int = manifest["shard_size"]
        raw_ids = self.objects.read("proteins/ids.txt")
        if raw_ids is None:
            raise StoreError(f"{url}: proteins/ids.txt is missing")
        self.protein_ids: list[str] = raw_ids.decode().splitlines()
        if len(self.protein_ids) != self.n_proteins:
            raise StoreError(f"{url}: proteins/ids.txt has {len(self.protein_ids)} ids, "
                             f"manifest says n_proteins={self.n_proteins}")
        try:
            self.offsets = ts.open(array_spec(url, "proteins/offsets"), open=True).result().read().result()
        except ValueError as e:
            raise StoreError(f"{url}: cannot open proteins/offsets ({e})") from None
        if (self.offsets.shape != (self.n_proteins + 1,) or self.offsets[0] != 0
                or self.offsets[-1] != self.n_tokens or (np.diff(self.offsets) <= 0).any()):
            raise StoreError(f"{url}: proteins/offsets (shape {self.offsets.shape}, last "
                             f"{self.offsets[-1] if len(self.offsets) else None}) does not match "
                             f"n_proteins={self.n_proteins}, n_tokens={self.n_tokens}")
        self._arrays = {}
        # a complete store whose writer stored every chunk: a missing chunk is damage, not zeros
        strict = manifest.get("complete") and manifest.get("chunk_checksums") == CHUNK_CHECKSUMS
        for L in self.layers:
            try:
                array = ts.open(array_spec(url, f"layer_{L}", cache=True, strict=strict),
                                open=True).result()
            except ValueError as e:
                raise StoreError(f"{url}: cannot open layer_{L} ({e})") from None
            if tuple(array.shape) != (self.n_tokens, self.d_model):
                raise StoreError(f"{url}: layer_{L} has shape {tuple(array.shape)}, manifest says "
                                 f"({self.n_tokens}, {self.d_model})")
            if array.dtype.name != manifest["dtype"]:
                raise StoreError(f"{url}: layer_{L} has dtype {array.dtype.name}, "
                                 f"manifest says {manifest['dtype']}")
            self._arrays[L] = array

    @classmethod
    def open(cls, path: str | os.PathLike, allow_incomplete: bool = False) -> "ActivationStore":
        """Open a store; raise :class:`StoreError` unless it is complete and consistent."""
        url = kvstore_url(path)
        objects = Objects(url)
        manifest = objects.read_json("manifest.json")
        if manifest is None:
            raise StoreError(f"{path}: not an activation store (no manifest.json)")
        if not isinstance(manifest, dict):
            raise StoreError(f"{path}: manifest.json holds a {type(manifest).__name__}, not a mapping")
        if manifest.get("format") != FORMAT:
            raise StoreError(f"{path}: manifest format is {manifest.get('format')!r}, expected {FORMAT!r}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"{path}: store format version {manifest.get('format_version')!r}; this "
                             f"version of interplm-jax reads version {FORMAT_VERSION}")
        check_manifest(str(path), manifest)
        if not manifest.get("complete") and not allow_incomplete:
            n_done = len(objects.keys("shards/"))
            raise StoreError(f"{path}: incomplete store, {n_done} of {len(manifest['shards'])} shards written; "
                             "resume the extraction with the same options")
        return cls(url, manifest)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {pid: i for i, pid in enumerate(self.protein_ids)}

    def index_of(self, protein_id: str) -> int:
        """Store index of a protein id."""
        try:
            return self._index[protein_id]
        except KeyError:
            raise StoreError(f"{self.url}: no protein {protein_id!r} in the store") from None

    def _layer(self, layer: int) -> ts.TensorStore:
        if layer not in self._arrays:
            raise StoreError(f"{self.url}: layer {layer} not stored (layers: {list(self.layers)})")
        return self._arrays[layer]

    @property
    def n_shards(self) -> int:
        return -(-self.n_proteins // self.shard_size)

    def shard_bounds(self, i: int) -> tuple[int, int, int, int]:
        """``(protein_start, protein_stop, row_start, row_stop)`` of shard ``i``."""
        if not 0 <= i < self.n_shards:
            raise IndexError(f"shard {i} out of range [0, {self.n_shards})")
        a, b = i * self.shard_size, min((i + 1) * self.shard_size, self.n_proteins)
        return a, b, int(self.offsets[a]), int(self.offsets[b])

    def rows(self, layer: int, start: int, stop: int) -> np.ndarray:
        """Token rows ``[start, stop)`` of a layer as float32, shape (stop - start, d_model)."""
        return self.stored_rows(layer, start, stop).astype(np.float32, copy=False)

    def stored_rows(self, layer: int, start: int, stop: int) -> np.ndarray:
        """Token rows ``[start, stop)`` of a layer in the stored dtype (float32 or bfloat16).

        Raises:
          StoreDamage: a chunk is damaged (checksum mismatch, truncated, or missing), naming the
            layer, rows and shards.
        """
        if not 0 <= start <= stop <= self.n_tokens:
            raise IndexError(f"rows [{start}, {stop}) out of range [0, {self.n_tokens}]")
        array = self._layer(layer)
        try:
            return array[start:stop].read().result()
        except ValueError as e:
            raise StoreDamage(f"{self.url}: layer {layer}, {self._where(start, stop)}: cannot be read "
                              f"({e}); `scripts/inspect_store.py {self.url} --verify` lists every "
                              "damaged shard", detail=str(e)) from None

    def _where(self, start: int, stop: int) -> str:
        """``rows a..b (shard s, proteins ...)`` of a row range, for messages."""
        p0 = int(np.searchsorted(self.offsets, start, side="right")) - 1
        p1 = int(np.searchsorted(self.offsets, max(start, stop - 1), side="right")) - 1
        s0, s1 = p0 // self.shard_size, p1 // self.shard_size
        shards = f"shard {s0}" if s0 == s1 else f"shards {s0}..{s1}"
        return f"rows {start}..{stop - 1} ({shards}, proteins {self.protein_ids[p0]!r}..{self.protein_ids[p1]!r})"

    def row_runs(self, proteins: Sequence[int] | None = None) -> list[tuple[int, int]]:
        """Row ranges ``[(start, stop), ...]`` covering ``proteins`` (store indices; default all),
        consecutive proteins merged into one range, in store order."""
        if proteins is None:
            return [(0, self.n_tokens)]
        idx = np.unique(np.asarray(proteins, np.int64))
        if len(idx) == 0 or idx[0] < 0 or idx[-1] >= self.n_proteins:
            raise InputError(f"{self.url}: protein indices must be in [0, {self.n_proteins}), "
                             f"got {len(idx)} indices from {idx[:1]} to {idx[-1:]}")
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        return [(int(self.offsets[r[0]]), int(self.offsets[r[-1] + 1])) for r in np.split(idx, breaks)]

    def protein_rows(self, layer: int, proteins: Sequence[int]) -> np.ndarray:
        """Rows of ``proteins`` (store indices, increasing) concatenated, (sum of lengths, d_model)
        float32; each run of consecutive proteins is one contiguous read."""
        parts = [self.rows(layer, a, b) for a, b in self.row_runs(proteins)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def take(self, layer: int, rows: np.ndarray, block_rows: int = 1 << 16) -> np.ndarray:
        """Token rows ``rows`` (absolute indices, any order) of a layer, (len(rows), d_model)
        float32, read as contiguous blocks of at most ``block_rows`` rows holding needed rows."""
        rows = np.asarray(rows, np.int64)
        order = np.argsort(rows, kind="stable")
        need = rows[order]
        out = np.empty((len(rows), self.d_model), dtype=np.float32)
        lo = 0
        while lo < len(need):
            start = int(need[lo])
            hi = int(np.searchsorted(need, start + block_rows))
            block = self.rows(layer, start, int(need[hi - 1]) + 1)
            out[order[lo:hi]] = block[need[lo:hi] - start]
            lo = hi
        return out

    def protein(self, p: int | str, layer: int) -> np.ndarray:
        """Activations of protein ``p`` (index or id) at ``layer``, shape (length, d_model)."""
        i = self.index_of(p) if isinstance(p, str) else int(p)
        if not 0 <= i < self.n_proteins:
            raise IndexError(f"protein index {i} out of range [0, {self.n_proteins})")
        return self.rows(layer, int(self.offsets[i]), int(self.offsets[i + 1]))

    def lengths(self) -> np.ndarray:
        """Residues per protein, shape (n_proteins,)."""
        return np.diff(self.offsets)

    def summary(self) -> str:
        """A few lines describing the store: model, layers, sizes, shards written, checksums."""
        m = self.manifest
        n_done = len(self.objects.keys("shards/"))
        state = "complete" if m.get("complete") else f"INCOMPLETE: {n_done} of {self.n_shards} written"
        checks = ("per-chunk CRC-32C and per-shard CRC-32" if m.get("chunk_checksums") == CHUNK_CHECKSUMS
                  else "per-shard CRC-32 (no chunk checksums: written by an older version)")
        created = m.get("created", {})
        return (f"activation store {self.url}\n  model: {m['model'].get('name')}\n"
                f"  layers: {list(self.layers)}, d_model {self.d_model}, {m['dtype']}\n"
                f"  {self.n_proteins} proteins, {self.n_tokens} tokens, {self.n_shards} shard(s) "
                f"of {self.shard_size} proteins ({state})\n"
                f"  checksums: {checks}\n"
                f"  created: {created.get('time', '?')} by {created.get('by', '?')}")
