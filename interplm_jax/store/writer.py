"""Writing a store: the plan first (ids, offsets, empty arrays, manifest), then shards in any
order by any number of workers, each marked done once its rows are committed."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import zlib
from typing import Any, Mapping, Sequence

import numpy as np
import tensorstore as ts

from interplm_jax import __version__
from interplm_jax.errors import StoreError
from interplm_jax.store.manifest import (CHUNK_CHECKSUMS, DTYPES, FORMAT, FORMAT_VERSION, LAYER_CODECS,
                                         Objects, Shard, array_spec, check_same_plan, chunk_rows_for,
                                         crc32, ids_text, kvstore_url, marker_key, plan_shards,
                                         sequences_sha256)
from interplm_jax.store import stats
from interplm_jax.store.reader import ActivationStore

log = logging.getLogger(__name__)


class StoreWriter:
    """Creates a store (or reopens a partly written one) and writes its shards.

    Use :meth:`open` with the full plan; then :meth:`write_shard` for each index of
    :meth:`pending_shards`, then :meth:`finalize`. Several workers may do this concurrently on
    disjoint shards of the same store; the worker that writes the last marker sees every marker
    and finalizes the store.
    """

    def __init__(self, url: str, manifest: dict, offsets: np.ndarray):
        self.url = url
        self.objects = Objects(url)
        self.manifest = manifest
        self.offsets = offsets
        self.shards = plan_shards(self.offsets, manifest["shard_size"])
        # every chunk stored, a zero one too: a missing chunk then always means damage
        self.arrays = {L: ts.open({**array_spec(url, f"layer_{L}"), "store_data_equal_to_fill_value": True},
                                  open=True).result()
                       for L in manifest["layers"]}

    @classmethod
    def open(cls, path: str | os.PathLike, ids: Sequence[str], lengths: Sequence[int],
             layers: Sequence[int], d_model: int, model: Mapping[str, Any],
             shard_size: int = 1000, dtype: str = "float32",
             chunk_rows: int | None = None, sequences: Sequence[str] | None = None,
             chunk_checksums: bool = True) -> "StoreWriter":
        """Create the store at ``path``, or reopen it if it holds the same plan.

        Args:
          ids, lengths: protein ids and residue counts, in store order.
          sequences: the proteins' residues (optional): each shard's are fingerprinted in the
            plan, and a resume with other sequences under the same ids and lengths is refused.
          chunk_checksums: end every chunk in a CRC-32C (zarr ``crc32c`` codec) so that any read
            of a damaged chunk fails; without, damage is found only by a verify pass.
          layers: layer indices stored (``hidden_states[L]``).
          model: identity of the model (at least ``name``; ``weights_sha256`` is checked on resume).
        Raises:
          StoreError: ``path`` holds a store of another plan, model, format or version.
        """
        if dtype not in DTYPES:
            raise StoreError(f"store dtype must be one of {DTYPES}, got {dtype!r}")
        if isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
            raise StoreError(f"{path}: shard size must be a positive integer, got {shard_size!r}")
        if chunk_rows is not None and chunk_rows < 1:
            raise StoreError(f"{path}: chunk_rows must be positive, got {chunk_rows!r}")
        if len(ids) != len(lengths) or not len(ids):
            raise StoreError(f"{path}: need as many lengths as ids, and at least one protein")
        if len(set(ids)) != len(ids):
            raise StoreError(f"{path}: duplicate protein ids")
        lengths = np.asarray(lengths, dtype=np.int64)
        if (lengths <= 0).any():
            raise StoreError(f"{path}: protein {ids[int(np.argmin(lengths))]!r} has no residues")
        if sequences is not None:
            bad = [i for i, (n, seq) in enumerate(zip(lengths, sequences)) if n != len(seq)]
            if len(sequences) != len(ids) or bad:
                raise StoreError(f"{path}: sequences do not match the lengths (first: protein "
                                 f"{ids[bad[0]] if bad else len(sequences)!r})")
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        url = kvstore_url(path)
        ids_txt = ids_text(ids)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": dict(model),
            "layers": [int(L) for L in layers],
            "d_model": int(d_model),
            "dtype": dtype,
            "n_proteins": len(ids),
            "n_tokens": int(offsets[-1]),
            "shard_size": int(shard_size),
            "chunk_rows": int(chunk_rows or chunk_rows_for(d_model, 4 if dtype == "float32" else 2)),
            "ids_crc32": zlib.crc32(ids_txt.encode()),
            "offsets_crc32": zlib.crc32(offsets.tobytes()),
            "chunk_checksums": CHUNK_CHECKSUMS if chunk_checksums else None,
            "complete": False,
            "shards": [dataclasses.asdict(s) | {"complete": False} | (
                {"sequences_sha256": sequences_sha256(sequences[s.protein_start:s.protein_stop])}
                if sequences is not None else {}) for s in plan_shards(offsets, shard_size)],
        }
        objects = Objects(url)
        created = {"by": f"interplm-jax {__version__}",
                   "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        existing = objects.read_json("manifest.json")
        if existing is not None:
            check_same_plan(url, existing, manifest, ids)
            log.info("resuming store %s", url)
        else:
            objects.write("proteins/ids.txt", ids_txt)
            off = ts.open({**array_spec(url, "proteins/offsets"), "metadata": {
                "shape": [len(offsets)], "data_type": "int64",
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1 << 20]}}}},
                create=True, open=True).result()
            off.write(offsets).result()
            for L in manifest["layers"]:
                ts.open({**array_spec(url, f"layer_{L}"), "metadata": {
                    "shape": [manifest["n_tokens"], manifest["d_model"]], "data_type": dtype,
                    "chunk_grid": {"name": "regular", "configuration": {
                        "chunk_shape": [manifest["chunk_rows"], manifest["d_model"]]}},
                    "codecs": LAYER_CODECS if chunk_checksums else LAYER_CODECS[:1],
                    "dimension_names": ["token", "feature"]}},
                    create=True, open=True).result()
            manifest["created"] = created
            objects.write_json("manifest.json", manifest)  # last: a manifest implies the rest
            existing = manifest
            log.info("created store %s: %d proteins, %d tokens, layers %s", url,
                     len(ids), manifest["n_tokens"], manifest["layers"])
        return cls(url, existing, offsets)

    def done(self) -> set[int]:
        """Indices of shards whose marker exists."""
        return {int(k.split("/")[-1].split(".")[0]) for k in self.objects.keys("shards/")}

    def pending_shards(self, worker: int = 0, n_workers: int = 1) -> list[Shard]:
        """This worker's shards (``index % n_workers == worker``) without a completion marker."""
        done = self.done()
        return [s for s in self.shards if s.index % n_workers == worker and s.index not in done]

    def write_shard(self, shard: Shard, acts: Mapping[int, np.ndarray]) -> None:
        """Write one shard's rows for every layer, wait until committed, then mark it done.

        Args:
          acts: layer -> array (shard.n_rows, d_model), rows in protein order.
        """
        writes, moments = [], {}
        for L, array in self.arrays.items():
            a = acts[L]
            if a.shape != (shard.n_rows, self.manifest["d_model"]):
                raise StoreError(f"shard {shard.index} layer {L}: got shape {a.shape}, expected "
                                 f"({shard.n_rows}, {self.manifest['d_model']})")
            a = np.asarray(a, dtype=array.dtype.numpy_dtype)
            writes.append(array[shard.row_start:shard.row_stop].write(a))
            moments[L] = stats.Moments.of_rows(a)  # of the stored values, while the write runs
        self.objects.write(stats.shard_key(shard.index), stats.encode(stats.moments_arrays(moments)))
        for w in writes:
            w.result()  # committed (durable) before the marker says so
        marker = dataclasses.asdict(shard) | {"crc32": {
            str(L): crc32(np.asarray(acts[L], dtype=self.arrays[L].dtype.numpy_dtype))
            for L in self.arrays}}
        self.objects.write_json(marker_key(shard.index), marker)

    def finalize(self) -> bool:
        """Mark the store complete if every shard is done; return whether it is complete."""
        done = self.done()
        if len(done) < len(self.shards):
            log.info("store %s: %d of %d shards complete", self.url, len(done), len(self.shards))
            return False
        manifest = dict(self.manifest)
        manifest["shards"] = [dict(entry, complete=True) for entry in manifest["shards"]]
        manifest["complete"] = True
        stats.merge_shards(self.objects, self.manifest["layers"], len(self.shards))
        self.objects.write_json("manifest.json", manifest)
        self.manifest = manifest
        log.info("store %s complete: %d shards", self.url, len(self.shards))
        return True


def write_store(path: str | os.PathLike, ids: Sequence[str], acts: Mapping[int, Sequence[np.ndarray]],
                shard_size: int = 1000, model: Mapping[str, Any] | str = "in-memory",
                dtype: str = "float32", chunk_rows: int | None = None,
                chunk_checksums: bool = True) -> ActivationStore:
    """Build a complete store from in-memory per-protein arrays (tests, small jobs).

    Args:
      acts: layer -> list over proteins of arrays (length_p, d_model), in the order of ``ids``.
    """
    layers = sorted(acts)
    lengths = [len(a) for a in acts[layers[0]]]
    d_model = acts[layers[0]][0].shape[1]
    writer = StoreWriter.open(path, ids, lengths, layers, d_model,
                              {"name": model} if isinstance(model, str) else model,
                              shard_size=shard_size, dtype=dtype, chunk_rows=chunk_rows,
                              chunk_checksums=chunk_checksums)
    for shard in writer.pending_shards():
        writer.write_shard(shard, {L: np.concatenate(acts[L][shard.protein_start:shard.protein_stop])
                                   for L in layers})
    writer.finalize()
    return ActivationStore.open(path)
