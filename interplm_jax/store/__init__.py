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

Modules: :mod:`~interplm_jax.store.manifest` (plan, format, kvstore objects),
:mod:`~interplm_jax.store.writer` (:class:`StoreWriter`, :func:`write_store`),
:mod:`~interplm_jax.store.reader` (:class:`ActivationStore`, :func:`prefetch`).
"""

from interplm_jax.store.manifest import (DTYPES, FORMAT, FORMAT_VERSION, Shard, chunk_rows_for,
                                         kvstore_url, plan_shards)
from interplm_jax.store.reader import ActivationStore, prefetch
from interplm_jax.store.writer import StoreWriter, write_store

__all__ = ["DTYPES", "FORMAT", "FORMAT_VERSION", "ActivationStore", "Shard", "StoreWriter",
           "chunk_rows_for", "kvstore_url", "plan_shards", "prefetch", "write_store"]
