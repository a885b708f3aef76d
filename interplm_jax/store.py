"""The activation store: per-layer token activations of many proteins in TensorStore zarr arrays.

Layout (DESIGN.md section 2), under one directory or ``gs://`` prefix::

    manifest.json          format, version, model, layers, d_model, dtype, counts, shards
    proteins/ids.txt       one protein id per line, in store order
    proteins/offsets       zarr3 int64 (n_proteins + 1,): protein p is rows offsets[p]:offsets[p+1]
    layer_<L>/             zarr3 (n_tokens, d_model), chunked on the token axis, protein order
    shards/<i>.done        completion marker of shard i (proteins i*S .. (i+1)*S - 1)

The plan (ids, offsets, array shapes) is fixed when the store is created, before any activation
is computed, so shards can be written in any order by any number of workers. A shard's marker is
written only after its rows are durably committed; a killed job therefore resumes at the shards
without markers, and since a shard's content depends only on its proteins the finished store is
bit-identical to an uninterrupted run. Every object goes through a TensorStore kvstore, so local
paths and ``gs://`` URLs take the same code path (object writes are atomic on both).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import zlib
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np
import tensorstore as ts

from interplm_jax import __version__
from interplm_jax.errors import StoreError

log = logging.getLogger(__name__)

FORMAT = "interplm-jax.activations"
FORMAT_VERSION = 1
DTYPES = ("float32", "bfloat16")
_CACHE_BYTES = 256 << 20  # reader chunk cache: consecutive proteins share chunks


def kvstore_url(path: str | os.PathLike) -> str:
    """TensorStore kvstore URL of a store path: ``gs://`` and ``file://`` URLs as given, local
    paths made absolute. Always ends with ``/``."""
    text = os.fspath(path)
    if "://" not in text:
        text = "file://" + os.path.abspath(text)
    return text if text.endswith("/") else text + "/"


def chunk_rows_for(d_model: int, itemsize: int, target_bytes: int = 4 << 20) -> int:
    """Rows per chunk: a power of two giving chunks of about ``target_bytes`` (256..65536 rows)."""
    rows = max(1, target_bytes // (d_model * itemsize))
    return int(min(65536, max(256, 1 << (rows.bit_length() - 1))))


@dataclasses.dataclass(frozen=True)
class Shard:
    """Shard ``index``: proteins ``[protein_start, protein_stop)``, rows ``[row_start, row_stop)``."""

    index: int
    protein_start: int
    protein_stop: int
    row_start: int
    row_stop: int

    @property
    def n_rows(self) -> int:
        return self.row_stop - self.row_start


def plan_shards(offsets: np.ndarray, shard_size: int) -> list[Shard]:
    """Cut proteins into consecutive shards of ``shard_size`` (the last may be shorter)."""
    n = len(offsets) - 1
    return [Shard(i, a, min(a + shard_size, n), int(offsets[a]), int(offsets[min(a + shard_size, n)]))
            for i, a in enumerate(range(0, n, shard_size))]


class _Objects:
    """Small JSON/text objects of a store through a TensorStore kvstore."""

    def __init__(self, url: str):
        self.url = url
        self.kv = ts.KvStore.open(url).result()

    def read(self, key: str) -> bytes | None:
        result = self.kv.read(key).result()
        return result.value if result.state == "value" else None

    def read_json(self, key: str) -> Any | None:
        raw = self.read(key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise StoreError(f"{self.url}{key}: not valid JSON ({e})") from None

    def write(self, key: str, value: bytes | str) -> None:
        self.kv.write(key, value.encode() if isinstance(value, str) else value).result()

    def write_json(self, key: str, value: Any) -> None:
        self.write(key, json.dumps(value, indent=1, sort_keys=True) + "\n")

    def keys(self, prefix: str) -> list[str]:
        return sorted(k.decode() for k in self.kv.list(ts.KvStore.KeyRange(prefix, prefix + "\xff")).result())


def _crc32(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8))


def _marker_key(i: int) -> str:
    return f"shards/{i:06d}.done"


def _array_spec(url: str, name: str, cache: bool = False) -> dict:
    spec: dict = {"driver": "zarr3", "kvstore": url + name + "/"}
    if cache:
        spec["context"] = {"cache_pool": {"total_bytes_limit": _CACHE_BYTES}}
        spec["recheck_cached_data"] = "open"
    return spec


def _ids_text(ids: Sequence[str]) -> str:
    bad = [i for i in ids if not i or any(c.isspace() for c in i)]
    if bad:
        raise StoreError(f"protein id {bad[0]!r} is empty or contains whitespace")
    return "\n".join(ids) + "\n"


class StoreWriter:
    """Creates a store (or reopens a partly written one) and writes its shards.

    Use :meth:`open` with the full plan; then :meth:`write_shard` for each index of
    :meth:`pending_shards`, then :meth:`finalize`. Several workers may do this concurrently on
    disjoint shards of the same store; the worker that writes the last marker sees every marker
    and finalizes the store.
    """

    def __init__(self, url: str, manifest: dict, offsets: np.ndarray):
        self.url = url
        self.objects = _Objects(url)
        self.manifest = manifest
        self.offsets = offsets
        self.shards = plan_shards(self.offsets, manifest["shard_size"])
        self.arrays = {L: ts.open(_array_spec(url, f"layer_{L}"), open=True).result()
                       for L in manifest["layers"]}

    @classmethod
    def open(cls, path: str | os.PathLike, ids: Sequence[str], lengths: Sequence[int],
             layers: Sequence[int], d_model: int, model: Mapping[str, Any],
             shard_size: int = 1000, dtype: str = "float32",
             chunk_rows: int | None = None) -> "StoreWriter":
        """Create the store at ``path``, or reopen it if it holds the same plan.

        Args:
          ids, lengths: protein ids and residue counts, in store order.
          layers: layer indices stored (``hidden_states[L]``).
          model: identity of the model (at least ``name``; ``weights_sha256`` is checked on resume).
        Raises:
          StoreError: ``path`` holds a store of another plan, model, format or version.
        """
        if dtype not in DTYPES:
            raise StoreError(f"store dtype must be one of {DTYPES}, got {dtype!r}")
        if len(ids) != len(lengths) or not len(ids):
            raise StoreError(f"{path}: need as many lengths as ids, and at least one protein")
        if len(set(ids)) != len(ids):
            raise StoreError(f"{path}: duplicate protein ids")
        lengths = np.asarray(lengths, dtype=np.int64)
        if (lengths <= 0).any():
            raise StoreError(f"{path}: protein {ids[int(np.argmin(lengths))]!r} has no residues")
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        url = kvstore_url(path)
        ids_text = _ids_text(ids)
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
            "ids_crc32": zlib.crc32(ids_text.encode()),
            "offsets_crc32": zlib.crc32(offsets.tobytes()),
            "complete": False,
        }
        objects = _Objects(url)
        created = {"by": f"interplm-jax {__version__}",
                   "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        existing = objects.read_json("manifest.json")
        if existing is not None:
            _check_same_plan(url, existing, manifest)
            log.info("resuming store %s", url)
        else:
            objects.write("proteins/ids.txt", ids_text)
            off = ts.open({**_array_spec(url, "proteins/offsets"), "metadata": {
                "shape": [len(offsets)], "data_type": "int64",
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1 << 20]}}}},
                create=True, open=True).result()
            off.write(offsets).result()
            for L in manifest["layers"]:
                ts.open({**_array_spec(url, f"layer_{L}"), "metadata": {
                    "shape": [manifest["n_tokens"], manifest["d_model"]], "data_type": dtype,
                    "chunk_grid": {"name": "regular", "configuration": {
                        "chunk_shape": [manifest["chunk_rows"], manifest["d_model"]]}},
                    "dimension_names": ["token", "feature"]}},
                    create=True, open=True).result()
            manifest["created"] = created
            manifest["shards"] = [dataclasses.asdict(s) | {"complete": False}
                                  for s in plan_shards(offsets, shard_size)]
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
        writes = []
        for L, array in self.arrays.items():
            a = acts[L]
            if a.shape != (shard.n_rows, self.manifest["d_model"]):
                raise StoreError(f"shard {shard.index} layer {L}: got shape {a.shape}, expected "
                                 f"({shard.n_rows}, {self.manifest['d_model']})")
            a = np.asarray(a, dtype=array.dtype.numpy_dtype)
            writes.append(array[shard.row_start:shard.row_stop].write(a))
        for w in writes:
            w.result()  # committed (durable) before the marker says so
        marker = dataclasses.asdict(shard) | {"crc32": {
            str(L): _crc32(np.asarray(acts[L], dtype=self.arrays[L].dtype.numpy_dtype))
            for L in self.arrays}}
        self.objects.write_json(_marker_key(shard.index), marker)

    def finalize(self) -> bool:
        """Mark the store complete if every shard is done; return whether it is complete."""
        done = self.done()
        if len(done) < len(self.shards):
            log.info("store %s: %d of %d shards complete", self.url, len(done), len(self.shards))
            return False
        manifest = dict(self.manifest)
        manifest["shards"] = [dataclasses.asdict(s) | {"complete": True} for s in self.shards]
        manifest["complete"] = True
        self.objects.write_json("manifest.json", manifest)
        self.manifest = manifest
        log.info("store %s complete: %d shards", self.url, len(self.shards))
        return True


_PLAN_KEYS = ("format", "format_version", "layers", "d_model", "dtype", "n_proteins", "n_tokens",
              "shard_size", "ids_crc32", "offsets_crc32")


def _check_same_plan(url: str, old: dict, new: dict) -> None:
    for key in _PLAN_KEYS:
        if old.get(key) != new.get(key):
            raise StoreError(f"{url}: existing store has {key}={old.get(key)!r}, this job has "
                             f"{new.get(key)!r}; write to another path or delete the old store")
    old_hash, new_hash = old["model"].get("weights_sha256"), new["model"].get("weights_sha256")
    if old_hash != new_hash:
        raise StoreError(f"{url}: existing store was written by model weights {old_hash}, this job "
                         f"uses {new_hash} ({new['model'].get('name')}); same weights needed to resume")


class ActivationStore:
    """Read access to a complete activation store.

    Attributes:
      manifest: the parsed ``manifest.json``.
      layers, d_model, n_proteins, n_tokens, protein_ids, offsets: as in the manifest and files.
    """

    def __init__(self, url: str, manifest: dict):
        self.url = url
        self.manifest = manifest
        self.objects = _Objects(url)
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
            self.offsets = ts.open(_array_spec(url, "proteins/offsets"), open=True).result().read().result()
        except ValueError as e:
            raise StoreError(f"{url}: cannot open proteins/offsets ({e})") from None
        if (self.offsets.shape != (self.n_proteins + 1,) or self.offsets[0] != 0
                or self.offsets[-1] != self.n_tokens or (np.diff(self.offsets) <= 0).any()):
            raise StoreError(f"{url}: proteins/offsets (shape {self.offsets.shape}, last "
                             f"{self.offsets[-1] if len(self.offsets) else None}) does not match "
                             f"n_proteins={self.n_proteins}, n_tokens={self.n_tokens}")
        self._arrays = {}
        for L in self.layers:
            try:
                array = ts.open(_array_spec(url, f"layer_{L}", cache=True), open=True).result()
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
        objects = _Objects(url)
        manifest = objects.read_json("manifest.json")
        if manifest is None:
            raise StoreError(f"{path}: not an activation store (no manifest.json)")
        if manifest.get("format") != FORMAT:
            raise StoreError(f"{path}: manifest format is {manifest.get('format')!r}, expected {FORMAT!r}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"{path}: store format version {manifest.get('format_version')!r}; this "
                             f"version of interplm-jax reads version {FORMAT_VERSION}")
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
        if not 0 <= start <= stop <= self.n_tokens:
            raise IndexError(f"rows [{start}, {stop}) out of range [0, {self.n_tokens}]")
        return self._layer(layer)[start:stop].read().result().astype(np.float32, copy=False)

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
        """A few lines describing the store."""
        m = self.manifest
        return (f"activation store {self.url}\n  model: {m['model'].get('name')}\n"
                f"  layers: {list(self.layers)}, d_model {self.d_model}, {m['dtype']}\n"
                f"  {self.n_proteins} proteins, {self.n_tokens} tokens, {self.n_shards} shard(s) "
                f"of {self.shard_size} proteins")


def write_store(path: str | os.PathLike, ids: Sequence[str], acts: Mapping[int, Sequence[np.ndarray]],
                shard_size: int = 1000, model: Mapping[str, Any] | str = "in-memory",
                dtype: str = "float32") -> ActivationStore:
    """Build a complete store from in-memory per-protein arrays (tests, small jobs).

    Args:
      acts: layer -> list over proteins of arrays (length_p, d_model), in the order of ``ids``.
    """
    layers = sorted(acts)
    lengths = [len(a) for a in acts[layers[0]]]
    d_model = acts[layers[0]][0].shape[1]
    writer = StoreWriter.open(path, ids, lengths, layers, d_model,
                              {"name": model} if isinstance(model, str) else model,
                              shard_size=shard_size, dtype=dtype)
    for shard in writer.pending_shards():
        writer.write_shard(shard, {L: np.concatenate(acts[L][shard.protein_start:shard.protein_stop])
                                   for L in layers})
    writer.finalize()
    return ActivationStore.open(path)
