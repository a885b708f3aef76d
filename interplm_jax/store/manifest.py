"""The store's plan and small objects: format constants, shard plan, manifest checks, and the
kvstore access shared by the writer and the reader."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import zlib
from typing import Any, Mapping, Sequence

import numpy as np
import tensorstore as ts

from interplm_jax.errors import StoreError

log = logging.getLogger(__name__)

FORMAT = "interplm-jax.activations"
FORMAT_VERSION = 1
DTYPES = ("float32", "bfloat16")
_CACHE_BYTES = 256 << 20  # reader chunk cache: consecutive proteins share chunks

#: manifest keys that must agree for a job to resume a store
PLAN_KEYS = ("format", "format_version", "layers", "d_model", "dtype", "n_proteins", "n_tokens",
             "shard_size", "ids_crc32", "offsets_crc32")


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


class Objects:
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

    def delete(self, key: str) -> None:
        self.kv.delete_range(ts.KvStore.KeyRange(key, key + "\x00")).result()

    def keys(self, prefix: str) -> list[str]:
        return sorted(k.decode() for k in self.kv.list(ts.KvStore.KeyRange(prefix, prefix + "\xff")).result())


#: People's names of the model families a manifest's ``model.model_family`` records.
MODEL_DISPLAY_NAMES = {"esm2": "ESM-2", "esmc": "ESM C"}


def model_display_name(model: Mapping[str, Any] | None) -> str:
    """'ESM-2' or 'ESM C' from a manifest's ``model`` record (stores written before
    ``model_family`` was recorded hold ESM-2)."""
    family = (model or {}).get("model_family", "esm2")
    return MODEL_DISPLAY_NAMES.get(family, family)


def crc32(a: np.ndarray) -> int:
    """CRC-32 of an array's bytes (C order)."""
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8))


def marker_key(i: int) -> str:
    """Key of shard ``i``'s completion marker."""
    return f"shards/{i:06d}.done"


def array_spec(url: str, name: str, cache: bool = False, strict: bool = False) -> dict:
    """TensorStore spec of the zarr3 array ``name`` of the store at ``url``.

    ``strict``: a missing chunk is an error rather than zeros (for stores whose writer stored
    every chunk, see :data:`CHUNK_CHECKSUMS`)."""
    spec: dict = {"driver": "zarr3", "kvstore": url + name + "/"}
    if cache:
        spec["context"] = {"cache_pool": {"total_bytes_limit": _CACHE_BYTES}}
        spec["recheck_cached_data"] = "open"
    if strict:
        spec["fill_missing_data_reads"] = False
    return spec


#: manifest value ``chunk_checksums`` of stores whose layer chunks end in a CRC-32C (zarr v3's
#: ``crc32c`` codec) and are all stored (a zero chunk too): a flipped, truncated or deleted
#: chunk then fails the read that touches it
CHUNK_CHECKSUMS = "crc32c"
LAYER_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": CHUNK_CHECKSUMS}]

_POSITIVE = ("d_model", "n_proteins", "n_tokens", "shard_size")


def check_manifest(path: str, manifest: dict) -> dict:
    """``manifest`` (a mapping) if it has every key a reader needs, of the right type; else
    :class:`StoreError`."""
    for key in ("layers", "dtype", "shards", *_POSITIVE):
        if key not in manifest:
            raise StoreError(f"{path}: manifest.json has no {key!r}; the store is damaged "
                             "(extract it again)")
    for key in _POSITIVE:
        value = manifest[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise StoreError(f"{path}: manifest.json: {key} must be a positive integer, got {value!r}")
    layers = manifest["layers"]
    if (not isinstance(layers, list) or not layers
            or not all(isinstance(L, int) and not isinstance(L, bool) for L in layers)):
        raise StoreError(f"{path}: manifest.json: layers must be a non-empty list of integers, "
                         f"got {layers!r}")
    if manifest["dtype"] not in DTYPES:
        raise StoreError(f"{path}: manifest.json: dtype {manifest['dtype']!r} is not one of {DTYPES}")
    if not isinstance(manifest.get("model", {}), dict) or not isinstance(manifest["shards"], list):
        raise StoreError(f"{path}: manifest.json: model must be a mapping and shards a list")
    return manifest


def sequences_sha256(sequences: Sequence[str]) -> str:
    """SHA-256 of a shard's residue sequences (in order), the fingerprint resumes compare."""
    h = hashlib.sha256()
    for seq in sequences:
        h.update(seq.encode())
        h.update(b"\n")
    return h.hexdigest()


def ids_text(ids: Sequence[str]) -> str:
    """``proteins/ids.txt`` of ``ids`` (rejecting empty ids and ids with whitespace)."""
    bad = [i for i in ids if not i or any(c.isspace() for c in i)]
    if bad:
        raise StoreError(f"protein id {bad[0]!r} is empty or contains whitespace")
    return "\n".join(ids) + "\n"


def check_same_plan(url: str, old: dict, new: dict, ids: Sequence[str] = ()) -> None:
    """Raise :class:`StoreError` unless manifest ``old`` has the plan and model of ``new``, and
    (where both record them) the same sequences in every shard."""
    for key in PLAN_KEYS:
        if old.get(key) != new.get(key):
            raise StoreError(f"{url}: existing store has {key}={old.get(key)!r}, this job has "
                             f"{new.get(key)!r}; write to another path or delete the old store")
    old_hash, new_hash = old["model"].get("weights_sha256"), new["model"].get("weights_sha256")
    if old_hash != new_hash:
        raise StoreError(f"{url}: existing store was written by model weights {old_hash}, this job "
                         f"uses {new_hash} ({new['model'].get('name')}); same weights needed to resume")
    old_seq = [s.get("sequences_sha256") for s in old.get("shards", [])]
    new_seq = [s.get("sequences_sha256") for s in new.get("shards", [])]
    if any(new_seq) and not any(old_seq):
        log.warning("%s: the store records no sequence fingerprints (written by an older version): "
                    "cannot check that it holds these sequences", url)
        return
    for i, (a, b) in enumerate(zip(old_seq, new_seq)):
        if a and b and a != b:
            shard = new["shards"][i]
            first = ids[shard["protein_start"]] if ids else shard["protein_start"]
            raise StoreError(
                f"{url}: shard {i} (proteins {shard['protein_start']}..{shard['protein_stop'] - 1}, "
                f"from {first!r}) holds other sequences under the same ids and lengths; its "
                "activations would be stale: write to another path or delete the old store")
