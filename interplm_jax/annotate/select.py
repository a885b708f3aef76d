"""Example proteins per feature for LLM annotation, vectorized over features.

For one feature and each annotated protein we know the protein's maximum (normalized)
activation ``a``. Proteins with ``a > 0`` fall in ``n_bins`` equal bins of (0, 1] (``a >= 1``
in the top bin); ``a == 0`` proteins are the negatives. Quotas count train + eval together
(each split receives half):

* every bin below the top one: ``2 * per_bin`` proteins (2 per split with the defaults);
* the top bin (0.9-1.0): ``2 * top_bin`` (10 per split);
* when the top bin holds fewer than ``2 * top_bin``, the next bin (0.8-0.9) tops the two
  highest bins up to ``top_two_target`` (24 = 2 x (10 + 2): the usual count of those bins);
* ``2 * negatives`` zero-activation proteins (10 per split);
* a feature with fewer than ``min_top_three`` proteins in its three highest bins is excluded.

Proteins are drawn uniformly at random within a bin. The split pairs the drawn proteins of each
bin in order of activation and sends one of each pair, at random, to each side; a bin's odd one
out goes to the side the bins before left smaller. So train and eval differ in size by at most
one, per bin and overall, and their activation distributions match.

How, for all features at once: one stable counting sort of the (proteins x features) bin
matrix groups each feature's proteins by bin; Floyd's algorithm draws each bin's q distinct
ranks (q <= 24 steps on a (features, bins, q) array); everything after that works on those
small arrays. The random numbers of feature f come from ``fold_in(PRNGKey(seed), f)``, so a
feature's examples depend neither on the chunking nor on which other features are selected.
"""

from __future__ import annotations

import functools
import logging
from typing import NamedTuple

import jax
import numpy as np

from interplm_jax.annotate.config import SelectionConfig
from interplm_jax.errors import InputError

log = logging.getLogger(__name__)


class Selection(NamedTuple):
    """Examples of the sampled features (K of them); index arrays are padded with -1.

    features: (K,) feature indices. train, eval: (K, H) protein indices, each row sorted by
    decreasing activation. excluded: (K,) bool, too few high-activation proteins.
    bin_counts: (K, n_bins + 1) proteins per bin, column 0 the zero-activation ones.
    """

    features: np.ndarray
    train: np.ndarray
    eval: np.ndarray
    excluded: np.ndarray
    bin_counts: np.ndarray

    def examples(self, k: int, split: str) -> np.ndarray:
        """Protein indices of the k-th sampled feature's ``train`` or ``eval`` examples."""
        row = (self.train if split == "train" else self.eval)[k]
        return row[row >= 0]


def sample_features(n_features: int, cfg: SelectionConfig) -> np.ndarray:
    """A seeded random ``feature_fraction`` of ``range(n_features)``, sorted (at least one)."""
    n = max(1, int(round(cfg.feature_fraction * n_features)))
    rng = np.random.default_rng(cfg.seed)
    return np.sort(rng.choice(n_features, size=n, replace=False))


def activation_bins(acts: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each activation (int8): -1 for ``a <= 0``, else ``min(floor(a * n_bins), n_bins - 1)``.

    A tolerance of 1e-5 bins (1e-6 in activation) puts float32 values such as 0.7 (stored as
    0.69999999) in the bin their decimal says.
    """
    a = np.asarray(acts, dtype=np.float32)
    bins = np.minimum(a * np.float32(n_bins) + np.float32(1e-5), n_bins - 1).astype(np.int8)
    return np.where(a > 0, bins, np.int8(-1))


def quotas(counts: np.ndarray, cfg: SelectionConfig) -> np.ndarray:
    """Proteins to take per bin (train + eval) from the counts per bin.

    counts: array (..., n_bins + 1), index 0 the zero-activation proteins, index i the bin i-1.
    Excluded features get zero everywhere.
    """
    nb = cfg.n_bins
    want = np.full(nb + 1, 2 * cfg.per_bin)
    want[0], want[nb] = 2 * cfg.negatives, 2 * cfg.top_bin
    q = np.minimum(counts, want)
    top_up = np.maximum(2 * cfg.per_bin, cfg.top_two_target - q[..., nb])
    q[..., nb - 1] = np.where(counts[..., nb] < 2 * cfg.top_bin,
                              np.minimum(counts[..., nb - 1], top_up), q[..., nb - 1])
    excluded = counts[..., nb - 2:].sum(-1) < cfg.min_top_three
    return np.where(excluded[..., None], 0, q)


def max_examples(cfg: SelectionConfig) -> int:
    """The most proteins one feature can receive (train + eval)."""
    top_two = max(2 * cfg.top_bin + 2 * cfg.per_bin, cfg.top_two_target)
    return 2 * cfg.per_bin * (cfg.n_bins - 2) + top_two + 2 * cfg.negatives


@functools.partial(jax.jit, static_argnames=("shape",))
def _uniforms(seed, features, shape: tuple[int, ...]):
    """Uniforms of shape (K, *shape), the row of feature f from fold_in(PRNGKey(seed), f)."""
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda f: jax.random.uniform(jax.random.fold_in(base, f), shape))(features)


def _floyd(u: np.ndarray, c: np.ndarray, q: np.ndarray) -> np.ndarray:
    """q distinct uniform ranks in [0, c) per cell (Floyd's algorithm), -1 padded.

    u: (..., m) uniforms; c, q: (...) counts and quotas, q <= min(c, m). Returns (..., m).
    """
    m = u.shape[-1]
    out = np.full(u.shape, -1, np.int64)
    for i in range(m):
        j = c - q + i  # the candidate range grows to [0, j]
        t = np.minimum((u[..., i] * (j + 1)).astype(np.int64), j)
        taken = (out[..., :i] == t[..., None]).any(-1)
        out[..., i] = np.where(i < q, np.where(taken, j, t), -1)
    return out


def _draws(cfg: SelectionConfig) -> int:
    """Most proteins drawn from one bin (train + eval)."""
    return max(2 * cfg.top_bin, 2 * cfg.per_bin, cfg.top_two_target, 2 * cfg.negatives)


def _select_chunk(acts: np.ndarray, bins: np.ndarray, r: np.ndarray, cfg: SelectionConfig):
    # acts: (n, C) float32; bins: (C, n) int8, one row per feature; r: (C, S, 2m + 1) uniforms
    nb, n_feat = cfg.n_bins, acts.shape[1]
    n_slot, m = nb + 1, _draws(cfg)
    key = bins + np.int8(1)  # 0 = negatives, i = bin i-1
    order = np.argsort(key, axis=-1, kind="stable")  # radix sort: proteins grouped by bin
    flat = key.astype(np.int64) + n_slot * np.arange(n_feat)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n_feat * n_slot).reshape(n_feat, n_slot)
    q = quotas(counts, cfg)  # (C, S); slot 0 = negatives, slot i = bin i-1
    excluded = q.sum(-1) == 0
    starts = np.cumsum(counts, -1) - counts

    ranks = _floyd(r[..., :m], counts, q)  # (C, S, m) ranks within each bin, -1 padded
    valid = ranks >= 0
    pos = np.where(valid, starts[..., None] + ranks, 0)
    cols = np.arange(n_feat)[:, None, None]
    prot = order[cols, pos]  # (C, S, m) protein indices
    a = acts[prot, cols]
    # Pair the drawn proteins of each bin by decreasing activation; a coin splits each pair.
    by_act = np.argsort(np.where(valid, -a, np.inf), axis=-1, kind="stable")
    prot, a, valid = (np.take_along_axis(x, by_act, -1) for x in (prot, a, valid))
    rank = np.arange(m)
    coin = r[..., m:2 * m][..., rank // 2] < 0.5
    odd = q % 2
    # the odd ones out alternate sides, from the top bin down, starting on a random side
    odd_before = np.cumsum(odd[:, ::-1], -1)[:, ::-1] - odd
    flip = (r[:, 0, 2 * m] < 0.5).astype(np.int64)[:, None]
    leftover = (rank == q[..., None] - 1) & (odd[..., None] == 1)
    to_train = np.where(leftover, ((odd_before + flip) % 2 == 0)[..., None], coin ^ (rank % 2 == 1))

    half = max_examples(cfg) // 2 + 1
    prot, a = prot.reshape(n_feat, -1), a.reshape(n_feat, -1)

    def pack(mask):
        mask = mask.reshape(n_feat, -1)
        pick = np.argsort(np.where(mask, -a, np.inf), axis=-1, kind="stable")[:, :half]
        return np.where(np.take_along_axis(mask, pick, -1), np.take_along_axis(prot, pick, -1), -1)

    return pack(valid & to_train), pack(valid & ~to_train), excluded, counts


def select_examples(max_acts: np.ndarray, features: np.ndarray, cfg: SelectionConfig,
                    chunk: int | None = None) -> Selection:
    """Choose and split example proteins for ``features``.

    Args:
      max_acts: array (n_proteins, K) of each protein's maximum normalized activation for
        each of the K features (column k belongs to ``features[k]``).
      features: vector (K,) of feature indices (they seed each feature's draws).
      cfg: the selection rules.
      chunk: features per step (default: about 4 million matrix entries per step).
    """
    max_acts = np.asarray(max_acts, dtype=np.float32)
    features = np.asarray(features, dtype=np.int64)
    if max_acts.ndim != 2 or max_acts.shape[1] != features.shape[0]:
        raise InputError(f"max_acts has shape {max_acts.shape}; expected (n_proteins, "
                         f"{features.shape[0]}) for {features.shape[0]} features")
    bad = ~np.isfinite(max_acts) | (max_acts < 0)
    if bad.any():
        p, k = np.argwhere(bad)[0]
        raise InputError(f"max activation of protein {p}, feature {features[k]} is "
                         f"{max_acts[p, k]}; expected a finite value >= 0")
    n, n_feat = max_acts.shape
    chunk = chunk or max(1, min(n_feat, 4_000_000 // max(n, 1)))
    bins = activation_bins(max_acts, cfg.n_bins)  # (n, K) int8
    shape = (cfg.n_bins + 1, 2 * _draws(cfg) + 1)
    outs = []
    for lo in range(0, n_feat, chunk):
        hi = min(lo + chunk, n_feat)
        f = np.pad(features[lo:hi], (0, chunk - (hi - lo)))  # one compiled shape for the RNG
        r = np.asarray(_uniforms(cfg.seed, f, shape))[: hi - lo]
        bins_t = np.ascontiguousarray(bins[:, lo:hi].T)  # int8: a cheap transpose
        outs.append(_select_chunk(max_acts[:, lo:hi], bins_t, r, cfg))
    train, eval_, excluded, counts = (np.concatenate(parts) for parts in zip(*outs))
    log.info("example selection: %d features, %d excluded (< %d proteins in the top three bins)",
             n_feat, int(excluded.sum()), cfg.min_top_three)
    return Selection(features, train, eval_, excluded, counts)
