"""Top proteins per feature and their per-residue activations, compactly encoded.

Two passes over the activation store: per-protein maxima of every feature and the histogram of
every residue's activation (``interplm_jax.annotate.activations.max_and_histogram``, reduced on
the device), then one
read of each protein that is among some live feature's top proteins, computing only the
columns of the features it is a top protein of (ReLU SAEs; other architectures encode all live
features of batches of proteins). Activations are quantised to uint8 relative to the feature's
maximum over all proteins (``q = round(255 a / max)``) and, for proteins longer than
``window``, cut to a window centred on the protein's strongest residue.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from typing import Mapping

import numpy as np

from interplm_jax.annotate.activations import (max_and_histogram, relu_columns,
                                               relu_encode_numpy, sae_encoder)
from interplm_jax.errors import InputError
from interplm_jax.progress import progress_bar

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Example:
    """One top protein of a feature: store index, its maximum activation, and the quantised
    activations ``q`` (uint8, window length) of residues ``start .. start + len(q)``;
    ``profile``: for the strongest proteins longer than the window, the whole sequence's
    quantised activations max-pooled into at most ``profile_bins`` bins (:func:`profile`)."""

    protein: int
    max_act: float
    start: int
    q: np.ndarray
    profile: np.ndarray | None = None


def profile(acts: np.ndarray, scales: np.ndarray, bins: int) -> np.ndarray:
    """acts (n, k) -> (k, min(n, bins)) uint8: the maximum of each of ``min(n, bins)`` equal runs
    of residues (run b: residues ``floor(b n / B) .. floor((b + 1) n / B)``), quantised as
    :func:`quantise` with the column's scale."""
    n = acts.shape[0]
    B = min(n, bins)
    edges = (np.arange(B) * n) // B
    pooled = np.maximum.reduceat(np.asarray(acts, np.float64), edges, axis=0)  # (B, k)
    scales = np.asarray(scales, np.float64)
    factor = np.divide(255.0, scales, out=np.zeros_like(scales), where=scales > 0)
    return np.clip(np.rint(pooled * factor), 0, 255).astype(np.uint8).T


@dataclasses.dataclass(frozen=True)
class FeatureExamples:
    """Live features of one SAE on one store, with their top proteins.

    Attributes:
      features: (K,) indices of the live features (active on some protein), ascending.
      feature_max: (K,) maximum activation over all proteins (the quantisation scale).
      frequency: (K,) fraction of proteins on which the feature is active.
      examples: K lists of :class:`Example`, strongest protein first.
      n_features, n_proteins: sizes of the SAE and the store.
      hist: (K, B + 2) int, or None: every residue of the store by its activation of the
        feature (``annotate.activations.activation_bins``: exactly 0, B equal bins of (0, 1],
        above 1).
    """

    features: np.ndarray
    feature_max: np.ndarray
    frequency: np.ndarray
    examples: list[list[Example]]
    n_features: int
    n_proteins: int
    hist: np.ndarray | None = None


def top_proteins(max_acts: np.ndarray, n: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` proteins of highest maximum per feature.

    max_acts: (P, F). Returns (idx, val), each (F, min(n, P)): protein indices by decreasing
    value (ties: lower index first) and their values. Proteins where the feature is inactive
    (value <= 0) are still listed; callers drop them.
    """
    P, F = max_acts.shape
    n = min(n, P)
    idx = np.empty((F, n), np.int64)
    for a in range(0, F, chunk):
        block = -np.asarray(max_acts[:, a:a + chunk], np.float32).T  # (f, P)
        if n < P:
            part = np.argpartition(block, n - 1, axis=1)[:, :n]
            # argpartition breaks ties arbitrarily: widen to every protein tied with the n-th
            kth = np.take_along_axis(block, part, 1).max(axis=1, keepdims=True)
            cand = [np.flatnonzero(row <= k) for row, k in zip(block, kth)]
            part = [c[np.lexsort((c, row[c]))][:n] for c, row in zip(cand, block)]
            idx[a:a + chunk] = np.stack(part)
        else:
            idx[a:a + chunk] = np.argsort(block, axis=1, kind="stable")
    val = np.take_along_axis(np.asarray(max_acts).T, idx, 1)
    return idx, val


def quantise(acts: np.ndarray, scale: float) -> np.ndarray:
    """uint8 ``round(255 * acts / scale)`` clipped to [0, 255] (0 when ``scale`` <= 0)."""
    if scale <= 0:
        return np.zeros(len(acts), np.uint8)
    return np.clip(np.rint(np.asarray(acts, np.float64) * (255.0 / scale)), 0, 255).astype(np.uint8)


def dequantise(q: np.ndarray, scale: float) -> np.ndarray:
    """Inverse of :func:`quantise` up to ``scale / 510``."""
    return np.asarray(q, np.float64) * (scale / 255.0)


def window(acts: np.ndarray, size: int) -> int:
    """Start of the ``size``-residue window centred on the strongest residue (0 if it fits)."""
    n = len(acts)
    if n <= size:
        return 0
    return int(np.clip(int(np.argmax(acts)) - size // 2, 0, n - size))


def windows(acts: np.ndarray, scales: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`window` and :func:`quantise` of every column of ``acts`` (n, k) at once.

    Returns starts (k,) and quantised windows (k, min(n, size)) uint8.
    """
    n, k = acts.shape
    w = min(n, size)
    starts = (np.clip(np.argmax(acts, axis=0) - size // 2, 0, n - w) if n > size
              else np.zeros(k, np.int64))
    cut = acts[starts[None, :] + np.arange(w)[:, None], np.arange(k)[None, :]].T  # (k, w)
    scales = np.asarray(scales, np.float64)
    factor = np.divide(255.0, scales, out=np.zeros_like(scales), where=scales > 0)
    return starts, np.clip(np.rint(cut * factor[:, None]), 0, 255).astype(np.uint8)


def b64(q: np.ndarray) -> str:
    """uint8 array -> base64 text (what the page decodes with ``atob``)."""
    return base64.b64encode(np.ascontiguousarray(q, np.uint8).tobytes()).decode("ascii")


def unb64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), np.uint8)


def feature_examples(store, layer: int, arch: str, params: Mapping[str, np.ndarray],
                     n_top: int = 8, window_size: int = 96, batch_rows: int = 4096,
                     max_acts: np.ndarray | None = None, hist_bins: int = 0,
                     profile_top: int = 0, profile_bins: int = 120) -> FeatureExamples:
    """Top ``n_top`` proteins of every live feature of an SAE, with their activation windows.

    ``max_acts`` (P, F): per-protein maxima when already computed (else one store pass).
    ``hist_bins`` > 0: also the residue histogram of the live features, counted in that pass
    (so not with ``max_acts`` given). ``profile_top``: the
    strongest that many proteins of a feature that are longer than the window also get their
    whole-sequence :func:`profile`.
    """
    F = int(np.asarray(params["W_enc"]).shape[1])
    all_hist = None
    if max_acts is None:
        max_acts, all_hist = max_and_histogram(store, layer, sae_encoder(params, np.arange(F), arch),
                                               batch_rows, hist_bins)
    elif hist_bins > 0:
        raise ValueError("hist_bins needs the store pass: do not pass max_acts with it")
    if max_acts.shape != (store.n_proteins, F):
        raise InputError(f"per-protein maxima of shape {max_acts.shape}; expected "
                         f"({store.n_proteins}, {F})")
    fmax = max_acts.max(axis=0)
    live = np.flatnonzero(fmax > 0)
    log.info("layer %d: %d of %d features live on %d proteins", layer, live.size, F,
             store.n_proteins)
    idx, val = top_proteins(max_acts[:, live], n_top)
    # (protein -> [(column k among live, rank)]) for the positive entries only
    wanted: dict[int, list[tuple[int, int]]] = {}
    for k, r in zip(*np.nonzero(val > 0)):
        wanted.setdefault(int(idx[k, r]), []).append((int(k), int(r)))
    examples: list[list[Example | None]] = [[None] * int((val[k] > 0).sum())
                                            for k in range(live.size)]
    # (k, rank) pairs that get a whole-sequence profile: the first profile_top long proteins
    long = np.diff(np.asarray(store.offsets))[idx] > window_size  # (K, n)
    profiled = (np.cumsum(long & (val > 0), axis=1) <= profile_top) & long & (val > 0)
    proteins = sorted(wanted)
    with progress_bar(total=len(proteins), desc=f"top proteins, layer {layer}",
                      unit="protein") as bar:
        for p, acts in _protein_columns(store, layer, arch, params, live, wanted, batch_rows):
            ks = [k for k, _ in wanted[p]]
            starts, q = windows(acts, fmax[live[ks]], window_size)
            prof = (profile(acts, fmax[live[ks]], profile_bins)
                    if profile_top and len(acts) > window_size else None)
            for j, (k, r) in enumerate(wanted[p]):
                examples[k][r] = Example(p, float(val[k, r]), int(starts[j]), q[j],
                                         prof[j] if prof is not None and profiled[k, r] else None)
            bar.update(1)
    freq = (max_acts[:, live] > 0).mean(axis=0) if live.size else np.zeros(0)
    hist = all_hist[live] if all_hist is not None else None
    return FeatureExamples(live, fmax[live].astype(np.float64), freq, examples, F, store.n_proteins,
                           hist)


def _protein_columns(store, layer: int, arch: str, params: Mapping[str, np.ndarray],
                     live: np.ndarray, wanted: dict[int, list[tuple[int, int]]], batch_rows: int):
    """Yield (protein, activations (length, n_p)) of the columns ``wanted[protein]`` (indices
    into ``live``), in protein order.

    A ReLU SAE's features are independent: each protein is multiplied by only the encoder
    columns it needs, in NumPy (``annotate.activations.relu_encode_numpy``), a small fraction
    of the full encoder's cost. Other architectures encode every live feature of batches of whole proteins.
    """
    proteins = sorted(wanted)
    if arch == "relu":
        for p in proteins:
            cols = relu_columns(params, live[[k for k, _ in wanted[p]]])
            yield p, relu_encode_numpy(cols, store.protein(p, layer))
        return
    encode = sae_encoder(params, live, arch)
    offsets = np.asarray(store.offsets)
    i = 0
    while i < len(proteins):
        batch, rows = [], 0  # whole proteins up to batch_rows tokens (at least one)
        while i < len(proteins) and (not batch or rows + _len(offsets, proteins[i]) <= batch_rows):
            batch.append(proteins[i])
            rows += _len(offsets, proteins[i])
            i += 1
        acts = encode(np.concatenate([store.protein(p, layer) for p in batch]))  # (rows, K)
        at = 0
        for p in batch:
            n = _len(offsets, p)
            yield p, acts[at:at + n, [k for k, _ in wanted[p]]]
            at += n


def _len(offsets: np.ndarray, p: int) -> int:
    return int(offsets[p + 1] - offsets[p])
