"""Feature activations from an activation store through an encoder callable.

An *encoder* maps token rows to the normalized activations of the features being annotated:
``encode(x)`` with x an array (n, d_model) returns (n, K). :func:`sae_encoder` builds one from
an SAE's parameters (``interplm_jax.sae_dir.load_sae``) for K chosen features, through the
architectures' own ``interplm_jax.sae.encode``; a ReLU SAE is first restricted to those
features, so that annotating 10% of its features costs 10% of the encoder's matrix product.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from interplm_jax import sae
from interplm_jax.errors import InputError
from interplm_jax.progress import progress_bar
from interplm_jax.sae.features import feature_function, pad_rows

log = logging.getLogger(__name__)

Encoder = Callable[[np.ndarray], np.ndarray]


def activation_bins(a, bins: int, xp=np):
    """Histogram bin of each activation (any shape, NumPy or ``xp=jnp``): 0 for exactly 0 (or
    below), ``1 + min(floor(bins * a), bins - 1)`` for a in (0, 1] (bins of width 1/bins, 1
    itself in the last), ``bins + 1`` above 1."""
    k = xp.clip(xp.floor(a * bins), 0, bins - 1).astype(xp.int32) + 1
    return xp.where(a <= 0, 0, xp.where(a > 1, bins + 1, k)).astype(xp.int32)


@functools.partial(jax.jit, static_argnames=("arch", "n_seg", "bins"))
def _encode_segment_max(arch: str, params, x, cols, seg, n_seg: int, bins: int = 0):
    # x: (n, d); cols: (K,) feature columns kept, or None for all; seg: (n,) protein of each
    # row, n_seg for padding rows (dropped). bins > 0: also the (K, bins + 2) counts of the
    # real rows' activation_bins (padding rows scattered out of range and dropped)
    f = sae.encode(arch, params, x)
    f = f if cols is None else f[:, cols]
    m = jax.ops.segment_max(f, seg, num_segments=n_seg)
    if not bins:
        return m, None
    K, width = f.shape[1], bins + 2
    flat = jnp.arange(K, dtype=jnp.int32) * width + activation_bins(f, bins, jnp)  # (n, K)
    flat = jnp.where((seg < n_seg)[:, None], flat, K * width)
    counts = jnp.zeros(K * width, jnp.int32).at[flat.ravel()].add(1, mode="drop")
    return m, counts.reshape(K, width)


def _bucket(n: int, least: int = 1024) -> int:
    """Power of two >= n and >= ``least`` (1,024 rows holds any protein within ESM-2's
    1,022-residue limit): few shapes, so few compilations."""
    return max(least, 1 << max(n - 1, 1).bit_length())


class SAEEncoder:
    """Encoder of the SAE's features ``features`` (indices, K of them).

    ``encoder(x)``: x (n, d_model) -> (n, K). ``encoder.segment_max(x, seg, n_seg)``: the
    per-segment maximum (n_seg, K), computed without bringing (n, K) back to the host
    (``segment_max_counts``: with the histogram of :func:`max_and_histogram`).
    A ReLU SAE is restricted to the K features (its features are independent of each other);
    other architectures encode every feature and keep the K columns.
    """

    def __init__(self, params: Mapping[str, np.ndarray], features: np.ndarray, arch: str = "relu"):
        feats = np.asarray(features)
        n_feat = params["W_enc"].shape[1]
        if feats.size and (feats.min() < 0 or feats.max() >= n_feat):
            raise InputError(f"feature index out of range for an SAE with {n_feat} features")
        self.arch, self.cols = arch, None
        if arch == "relu":
            params = relu_columns(params, feats)
        else:
            self.cols = feats
        self.params = {k: jnp.asarray(v) for k, v in params.items()}
        self._features = feature_function(arch, self.params, bucket=1024)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        f = self._features(x)
        return f if self.cols is None else f[:, self.cols]

    def segment_max(self, x: np.ndarray, seg: np.ndarray, n_seg: int) -> np.ndarray:
        return self.segment_max_counts(x, seg, n_seg)[0]

    def segment_max_counts(self, x: np.ndarray, seg: np.ndarray, n_seg: int,
                           bins: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """(n_seg, K) maxima, and with ``bins`` > 0 the (K, bins + 2) counts of the rows'
        :func:`activation_bins` (else None)."""
        n_pad = _bucket(n_seg, 64)
        seg = np.pad(seg, (0, _bucket(x.shape[0]) - x.shape[0]), constant_values=n_pad)
        m, counts = _encode_segment_max(self.arch, self.params, pad_rows(x, _bucket(x.shape[0])),
                                        self.cols, seg, n_seg=n_pad, bins=bins)
        return np.asarray(m[:n_seg]), None if counts is None else np.asarray(counts)


def relu_columns(params: Mapping[str, np.ndarray], features: np.ndarray) -> dict[str, np.ndarray]:
    """A ReLU SAE restricted to ``features`` (K indices; its features are independent of each
    other): ``W_enc`` (d, K), ``b_enc``, ``scale`` (ones when the SAE has none: raw
    activations) and ``W_dec`` rows of those features, ``b_pre`` and the rest unchanged."""
    missing = [k for k in ("b_pre", "W_enc", "b_enc") if k not in params]
    if missing:
        raise InputError(f"ReLU SAE without parameter(s) {missing}")
    feats = np.asarray(features)
    out = {**params, "W_enc": np.asarray(params["W_enc"])[:, feats],
           **{k: np.asarray(params[k])[feats] for k in ("b_enc", "scale", "W_dec") if k in params}}
    out.setdefault("scale", np.ones(len(feats), np.float32))
    return out


def relu_encode_numpy(params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """``relu((x - b_pre) W_enc + b_enc) * scale`` in NumPy float32 (the formula of
    ``interplm_jax.sae.relu.encode``), for parameters from :func:`relu_columns`: x (n, d) ->
    (n, K). For a few columns of a few proteins this is cheaper than a compiled encoder call."""
    f32 = {k: np.asarray(params[k], np.float32) for k in ("b_pre", "W_enc", "b_enc", "scale")}
    return np.maximum((np.asarray(x, np.float32) - f32["b_pre"]) @ f32["W_enc"] + f32["b_enc"],
                      0) * f32["scale"]


def sae_encoder(params: Mapping[str, np.ndarray], features: np.ndarray,
                arch: str = "relu") -> Encoder:
    """Encoder of ``features`` of an SAE (``SavedSAE.params``, ``SavedSAE.arch``).

    A ReLU SAE without ``scale`` gets ones (raw activations).
    """
    return SAEEncoder(params, features, arch)


def _batches(lengths: np.ndarray, batch_rows: int) -> list[tuple[int, int]]:
    """Consecutive protein ranges [a, b) of at most ``batch_rows`` tokens (at least one protein)."""
    out, a, total = [], 0, 0
    for i, n in enumerate(lengths):
        if total and total + n > batch_rows:
            out.append((a, i))
            a, total = i, 0
        total += n
    if len(lengths):
        out.append((a, len(lengths)))
    return out


def protein_max_activations(store, layer: int, encode: Encoder,
                            batch_rows: int = 1024) -> np.ndarray:
    """Each protein's maximum activation per feature: array (n_proteins, K)
    (:func:`max_and_histogram` without the histogram)."""
    return max_and_histogram(store, layer, encode, batch_rows)[0]


def max_and_histogram(store, layer: int, encode: Encoder, batch_rows: int = 1024,
                      bins: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Each protein's maximum activation per feature (n_proteins, K) and, with ``bins`` > 0,
    every residue's activation counted per feature in :func:`activation_bins`: (K, bins + 2)
    int64 (column 0: exactly zero; 1..bins: equal bins of (0, 1]; bins + 1: above 1), else None.

    Reads the store in batches of whole proteins (at most ``batch_rows`` tokens, within a
    shard) and reduces each batch: on the device through ``encode.segment_max_counts`` when the
    encoder has it, else on the host (``np.maximum.reduceat``, ``np.bincount``).
    """
    offsets = np.asarray(store.offsets)
    lengths = np.diff(offsets)
    if np.any(lengths <= 0):
        raise InputError(f"activation store: protein {int(np.argmin(lengths))} has no tokens")
    out: np.ndarray | None = None
    hist: np.ndarray | None = None
    with progress_bar(total=int(store.n_tokens), desc=f"max activations, layer {layer}",
                      unit="tok") as bar:
        for i in range(store.n_shards):
            p0, p1, _, _ = store.shard_bounds(i)
            for a, b in _batches(lengths[p0:p1], batch_rows):
                a, b = a + p0, b + p0
                x = store.rows(layer, int(offsets[a]), int(offsets[b]))
                if hasattr(encode, "segment_max_counts"):
                    seg = np.repeat(np.arange(b - a, dtype=np.int32), lengths[a:b])
                    m, counts = encode.segment_max_counts(x, seg, b - a, bins)
                else:
                    f = encode(x)
                    m = np.maximum.reduceat(f, offsets[a:b] - offsets[a], axis=0)
                    counts = _host_counts(f, bins) if bins else None
                if out is None:
                    out = np.zeros((store.n_proteins, m.shape[1]), np.float32)
                    hist = np.zeros((m.shape[1], bins + 2), np.int64) if bins else None
                out[a:b] = m
                if bins:
                    hist += counts
                bar.update(x.shape[0])
    if out is None:
        raise InputError("the activation store holds no proteins")
    return out, hist


def _host_counts(f: np.ndarray, bins: int) -> np.ndarray:
    """(n, K) activations -> (K, bins + 2) counts of their :func:`activation_bins`."""
    K, width = f.shape[1], bins + 2
    flat = np.arange(K) * width + activation_bins(np.asarray(f), bins)
    return np.bincount(flat.ravel(), minlength=K * width).reshape(K, width)


def activated_positions(acts: np.ndarray, fraction: float, max_positions: int) -> np.ndarray:
    """0-based positions of a protein's activated residues for one feature, in sequence order.

    acts: vector (length,). A residue is activated when its activation is > 0 and at least
    ``fraction`` of the protein's maximum; only the ``max_positions`` strongest are kept.
    """
    acts = np.asarray(acts)
    top = acts.max(initial=0.0)
    if top <= 0:
        return np.zeros(0, np.int64)
    pos = np.flatnonzero(acts >= fraction * top)
    if pos.size > max_positions:
        strongest = np.argsort(-acts[pos], kind="stable")[:max_positions]
        pos = np.sort(pos[strongest])
    return pos


def positions_for_examples(store, layer: int, encode: Encoder, pairs: list[tuple[int, int]],
                           fraction: float, max_positions: int) -> dict[tuple[int, int], tuple]:
    """Activated positions and their count for (protein index, feature column) pairs.

    Each protein is read and encoded once. Returns {(p, k): (positions, n_activated)}.
    """
    by_protein: dict[int, list[int]] = {}
    for p, k in pairs:
        by_protein.setdefault(p, []).append(k)
    out = {}
    with progress_bar(total=len(by_protein), desc="activated residues", unit="protein") as bar:
        for p in sorted(by_protein):
            acts = encode(store.protein(p, layer))  # (length, K)
            for k in by_protein[p]:
                col = acts[:, k]
                top = col.max(initial=0.0)
                n_act = int(np.count_nonzero(col >= fraction * top)) if top > 0 else 0
                out[(p, k)] = (activated_positions(col, fraction, max_positions), n_act)
            bar.update(1)
    return out
