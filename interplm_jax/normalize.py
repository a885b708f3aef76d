"""Feature normalization: per-feature maximum activation over a store, and the neuron baseline.

The paper (and the reference's ``sae/normalize.py``) rescales each SAE feature by its maximum
activation over a set of proteins, so that normalized activations lie in [0, 1] on that set.
We stream the store's token rows in chunks (any size; the next chunk is read while the current
one is encoded), encode each chunk with the SAE's raw features (``scale`` = 1) in one jitted
function, and keep a running maximum and an activity count per feature. Then

    scale_i = 1 / max_i            if max_i > 0
    scale_i = 0                    if the feature never fired (max_i = 0): reported as dead

so a dead feature's normalized activation is 0 everywhere, never inf or NaN (the reference
divides by 0). Maxima, counts and a summary go to ``feature_stats/`` beside the SAE.

The neuron baseline (DESIGN.md Q8) is the identity "SAE" (F = d): each neuron min-max scaled
to [0, 1] over the normalization set, as a ReLU SAE with W_enc = W_dec = I, b_pre = min,
b_enc = 0, scale = 1 / (max - min): below the minimum is clipped to 0 by the ReLU, and on the
set the values are in [0, 1]; it is saved and used like any other SAE.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import os
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from interplm_jax import paths
from interplm_jax.config import option
from interplm_jax.errors import InputError
from interplm_jax.paths import AnyPath
from interplm_jax.progress import progress_bar
from interplm_jax.sae_dir import SavedSAE, check_params
from interplm_jax.store import prefetch

log = logging.getLogger(__name__)

STATS_DIR = "feature_stats"


@dataclasses.dataclass(frozen=True)
class NormalizeConfig:
    """The ``normalize:`` section of a study config (also the defaults of scripts/normalize.py)."""

    max_proteins: int | None = option(None, "Proteins of the store used (drawn at random, seeded); null: all.")
    seed: int = option(0, "Seed of the max_proteins draw.")
    chunk_tokens: int = option(
        256, "Token rows encoded at once (memory: rows x F floats); 256 suits CPU caches, "
        "use thousands on a GPU.")

    def __post_init__(self):
        if self.chunk_tokens < 1 or (self.max_proteins is not None and self.max_proteins < 1):
            raise ValueError("chunk_tokens and max_proteins must be positive")


def sample_proteins(store, max_proteins: int | None, seed: int = 0) -> np.ndarray | None:
    """Sorted store indices of ``max_proteins`` proteins drawn at random, or None for all."""
    if max_proteins is None or max_proteins >= store.n_proteins:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(store.n_proteins, size=max_proteins, replace=False))


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Statistics of raw (unnormalized) features over a set of tokens.

    Attributes:
      max: (F,) float32, maximum activation per feature (0 if it never fired).
      n_active: (F,) int64, tokens on which the feature was > 0.
      n_tokens, n_proteins: size of the set.
    """

    max: np.ndarray
    n_active: np.ndarray
    n_tokens: int
    n_proteins: int

    @property
    def dead(self) -> np.ndarray:
        """Indices of features that never fired on the set."""
        return np.flatnonzero(self.max <= 0)


def scale_from_max(maxima: np.ndarray) -> np.ndarray:
    """1 / max per feature, 0 where max <= 0 (never inf or NaN)."""
    maxima = np.asarray(maxima, np.float32)
    scale = np.zeros_like(maxima)
    np.divide(np.float32(1), maxima, out=scale, where=maxima > 0)
    return scale


def row_chunks(store, layer: int, chunk_tokens: int = NormalizeConfig.chunk_tokens,
               proteins: Sequence[int] | None = None, read_tokens: int = 16384) -> Iterator[np.ndarray]:
    """Token rows of ``layer`` in chunks of at most ``chunk_tokens`` rows, (n, d) float32.

    ``proteins``: store indices to include (default: all); consecutive indices are read as one
    contiguous range. The store is read in blocks of about ``read_tokens`` rows (the next block in
    a background thread while the caller works) and cut into chunks.
    """
    if layer not in store.layers:
        raise InputError(f"{store.url}: layer {layer} is not in the store (layers: {list(store.layers)})")
    block = max(1, read_tokens // chunk_tokens) * chunk_tokens
    spans = [(a, min(a + block, stop)) for start, stop in store.row_runs(proteins)
             for a in range(start, stop, block)]
    for rows in prefetch(lambda span: store.rows(layer, *span), spans):
        for a in range(0, len(rows), chunk_tokens):
            yield rows[a:a + chunk_tokens]


@functools.partial(jax.jit, static_argnames=("arch", "stacked"))
def _chunk_stats(arch: str, params: dict, x: jax.Array, n_valid: jax.Array, stacked: bool = False):
    """(max (F,), count of > 0 (F,)) of raw features over the first n_valid rows of x (n, d)."""
    from interplm_jax import sae as sae_arch  # the architectures (interplm_jax.sae)

    encode = sae_arch.get(arch).encode

    def one(p):
        f = encode({**p, "scale": jnp.ones_like(p["scale"])}, x)
        f = jnp.where((jnp.arange(x.shape[0]) < n_valid)[:, None], f, 0.0)
        return jnp.max(f, axis=0), jnp.sum(f > 0, axis=0, dtype=jnp.int32)

    # a sweep: one SAE after the other on the same chunk (lax.map), so that only one (n, F)
    # activation block is alive at a time; the rows are read from the store once for all
    return jax.lax.map(one, params) if stacked else one(params)


def feature_stats(arch: str, params: dict[str, Any], chunks, n_tokens: int | None = None,
                  stacked: bool = False) -> FeatureStats:
    """Stream ``chunks`` ((n, d) arrays) through the SAE; return its :class:`FeatureStats`.

    Args:
      arch, params: the SAE (or, with ``stacked``, G SAEs stacked on a leading axis: the data
        are read once for the whole sweep and every leaf of the result gains that axis).
      n_tokens: total rows, for the progress bar only.
    """
    params = {k: jnp.asarray(v) for k, v in params.items()}
    F = params["W_enc"].shape[-1]
    lead = (params["W_enc"].shape[0],) if stacked else ()
    run_max = jnp.zeros(lead + (F,), jnp.float32)
    run_count = np.zeros(lead + (F,), np.int64)
    dev_count = jnp.zeros(lead + (F,), jnp.int32)
    size, seen, since_flush = None, 0, 0
    bar = progress_bar(total=n_tokens, desc="feature maxima", unit="tok")
    for rows in chunks:
        n = len(rows)
        if size is None or n > size:  # one compiled shape: shorter chunks are padded and masked
            size = n
            flush_every = max(1, (1 << 30) // size)  # int32 counts on device stay < 2**30
        x = np.zeros((size, rows.shape[1]), np.float32)
        x[:n] = rows
        m, c = _chunk_stats(arch, params, jnp.asarray(x), jnp.asarray(n), stacked=stacked)
        run_max, dev_count = jnp.maximum(run_max, m), dev_count + c  # no host sync per chunk
        since_flush += 1
        if since_flush == flush_every:  # int64 on the host: no overflow on any store
            run_count += np.asarray(dev_count)
            dev_count, since_flush = jnp.zeros_like(dev_count), 0
        seen += n
        bar.update(n)
    bar.close()
    run_count += np.asarray(dev_count)
    if seen == 0:
        raise InputError("normalization set is empty (no tokens)")
    return FeatureStats(np.asarray(run_max), run_count, seen, 0)


def normalize(sae: SavedSAE, store, layer: int | None = None, chunk_tokens: int = NormalizeConfig.chunk_tokens,
              proteins: Sequence[int] | None = None) -> tuple[SavedSAE, FeatureStats]:
    """The SAE with ``scale`` = 1 / max over the store's tokens, and the statistics.

    Args:
      layer: store layer to read; default the SAE's ``meta["layer"]``.
      proteins: store indices of the normalization set (default: every protein).
    """
    layer = _layer_of(sae, store, layer)
    if store.d_model != sae.d_model:
        raise InputError(f"{store.url}: d_model {store.d_model} != the SAE's input width {sae.d_model}")
    n_tok = store.n_tokens if proteins is None else int(sum(store.lengths()[np.unique(proteins)]))
    stats = feature_stats(sae.arch, sae.params, row_chunks(store, layer, chunk_tokens, proteins), n_tok)
    n_prot = store.n_proteins if proteins is None else len(np.unique(proteins))
    stats = dataclasses.replace(stats, n_proteins=n_prot)
    if len(stats.dead):
        log.warning("%d of %d features never fired on the normalization set: scale 0 "
                    "(their normalized activation is always 0)", len(stats.dead), len(stats.max))
    params = {**sae.params, "scale": scale_from_max(stats.max)}
    meta = {**sae.meta, "normalized_on": {"store": str(store.url), "layer": layer,
                                          "n_proteins": n_prot, "n_tokens": stats.n_tokens}}
    return sae.replace(params=check_params(sae.arch, params), meta=meta), stats


def neuron_baseline(store, layer: int, chunk_tokens: int = NormalizeConfig.chunk_tokens,
                    proteins: Sequence[int] | None = None) -> tuple[SavedSAE, dict[str, np.ndarray]]:
    """The identity SAE of ``layer`` with each neuron min-max scaled to [0, 1] over the set.

    Returns:
      (the SAE, {"min": (d,), "max": (d,)}). A constant neuron (max = min) gets scale 0.
    """
    lo = hi = None
    n = 0
    for rows in row_chunks(store, layer, chunk_tokens, proteins):
        lo = rows.min(0) if lo is None else np.minimum(lo, rows.min(0))
        hi = rows.max(0) if hi is None else np.maximum(hi, rows.max(0))
        n += len(rows)
    meta = {"layer": layer, "model": store.manifest.get("model", {}),
            "normalized_on": {"store": str(store.url), "layer": layer, "n_tokens": n}}
    return neuron_sae(lo, hi, meta), {"min": lo, "max": hi}


def normalize_sweep(sweep: str | os.PathLike, store, layer: int | None = None,
                    chunk_tokens: int = NormalizeConfig.chunk_tokens,
                    proteins: Sequence[int] | None = None) -> dict[str, tuple[FeatureStats, AnyPath]]:
    """Normalize every SAE of a sweep directory (local or ``gs://``) in one pass over the store:
    each goes, with its ``feature_stats/``, to ``<sweep>/saes/<id>/``.

    Returns SAE id -> (its statistics, the directory written).
    """
    from interplm_jax.layout import SweepFiles
    from interplm_jax.sae_dir import save_sae
    from interplm_jax.sweep_saes import read_sweep

    saes = read_sweep(sweep)
    first = next(iter(saes.values()))
    layer = _layer_of(first, store, layer)
    stacked = {k: np.stack([s.params[k] for s in saes.values()]) for k in first.params}
    n_tok = store.n_tokens if proteins is None else int(store.lengths()[proteins].sum())
    stats = feature_stats(first.arch, stacked, row_chunks(store, layer, chunk_tokens, proteins),
                          n_tok, stacked=True)
    n_prot = store.n_proteins if proteins is None else len(proteins)
    out = {}
    for g, (sae_id, sae) in enumerate(saes.items()):
        one = FeatureStats(stats.max[g], stats.n_active[g], stats.n_tokens, n_prot)
        params = check_params(sae.arch, {**sae.params, "scale": scale_from_max(one.max)})
        meta = {**sae.meta, "normalized_on": {"store": str(store.url), "layer": layer,
                                              "n_proteins": n_prot, "n_tokens": one.n_tokens}}
        target = SweepFiles(sweep).sae(sae_id)
        save_sae(target, sae.replace(params=params, meta=meta))
        write_feature_stats(target, one, {"store": str(store.url)})
        out[sae_id] = (one, target)
    return out


def write_neuron_baseline(out: str | os.PathLike, store, layer: int,
                          chunk_tokens: int = NormalizeConfig.chunk_tokens,
                          proteins: Sequence[int] | None = None) -> SavedSAE:
    """:func:`neuron_baseline` saved as an SAE directory ``out`` (local or ``gs://``), with the
    per-neuron bounds in ``feature_stats/{min,max}.npy``."""
    from interplm_jax.sae_dir import save_sae

    sae, bounds = neuron_baseline(store, layer, chunk_tokens, proteins)
    save_sae(out, sae)
    for name, arr in bounds.items():
        buf = io.BytesIO()
        np.save(buf, arr)
        paths.write_atomic(paths.as_path(out) / STATS_DIR / f"{name}.npy", buf.getvalue())
    return sae


def neuron_sae(lo: np.ndarray, hi: np.ndarray, meta: dict[str, Any] | None = None) -> SavedSAE:
    """The neuron baseline (arch ``neuron``, F = d): clip((x - lo) / (hi - lo), 0, 1) per neuron.

    lo, hi: (d,) per-neuron minimum and maximum over the normalization set; a constant neuron
    (hi = lo) gets scale 0. ``meta`` is recorded with ``baseline: neuron``.
    """
    lo = np.asarray(lo, np.float32)
    d = len(lo)
    eye = np.eye(d, dtype=np.float32)
    params = {"b_pre": lo, "W_enc": eye, "b_enc": np.zeros(d, np.float32), "W_dec": eye,
              "scale": scale_from_max(np.asarray(hi, np.float32) - lo)}
    return SavedSAE("neuron", check_params("neuron", params), {}, {"baseline": "neuron", **(meta or {})})


def write_feature_stats(sae_dir: str | os.PathLike, stats: FeatureStats,
                        extra: dict[str, Any] | None = None) -> AnyPath:
    """``feature_stats/{max.npy, n_active.npy, summary.json}`` in ``sae_dir`` (local or
    ``gs://``; each file written whole and atomically)."""
    out = paths.mkdir(paths.as_path(sae_dir) / STATS_DIR)
    for name, arr in (("max", stats.max), ("n_active", stats.n_active)):
        buf = io.BytesIO()
        np.save(buf, arr)
        paths.write_atomic(out / f"{name}.npy", buf.getvalue())
    dead = stats.dead
    summary = {"n_tokens": stats.n_tokens, "n_proteins": stats.n_proteins,
               "n_features": int(len(stats.max)), "n_dead": int(len(dead)),
               "dead_features": dead.tolist(),
               "dead_handling": "scale 0: normalized activation always 0",
               **(extra or {})}
    paths.write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return out


def read_feature_stats(sae_dir: str | os.PathLike) -> FeatureStats:
    """The :class:`FeatureStats` that :func:`write_feature_stats` left in ``sae_dir``.

    Raises:
      InputError naming the directory when it has none (an SAE never normalized).
    """
    d = paths.as_path(sae_dir) / STATS_DIR
    summary = paths.read_json(d / "summary.json", f"{sae_dir}: no {STATS_DIR}/ (normalize the SAE "
                              "first: scripts/normalize.py)", dict)
    try:
        arrays = {name: np.load(io.BytesIO((d / f"{name}.npy").read_bytes())) for name in ("max", "n_active")}
        return FeatureStats(arrays["max"], arrays["n_active"], int(summary["n_tokens"]), int(summary["n_proteins"]))
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{d}: unreadable feature statistics ({e})") from None


def _layer_of(sae: SavedSAE, store, layer: int | None) -> int:
    if layer is None:
        layer = sae.meta.get("layer")
        if layer is None:
            if len(store.layers) != 1:
                raise InputError(f"the SAE does not record its layer and the store has layers "
                                 f"{list(store.layers)}: pass the layer")
            layer = store.layers[0]
    return int(layer)
