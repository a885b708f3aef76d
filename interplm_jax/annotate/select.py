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

Proteins are drawn at random within a bin. The split pairs the chosen proteins of each bin in
order of activation and sends one of each pair, at random, to each side; a bin's odd one out
goes to the smaller side. So train and eval differ in size by at most one, per bin and overall,
and their activation distributions match.

The selection of one feature is a pure ``jax.numpy`` function of its activations and a key
``fold_in(PRNGKey(seed), feature)``; :func:`select_examples` vmaps it over features in chunks,
so the result does not depend on the chunking or on which other features are selected.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
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
    """Bin of each activation: -1 for ``a <= 0``, else ``min(floor(a * n_bins), n_bins - 1)``.

    A tolerance of 1e-6 bins puts float32 values such as 0.7 (stored as 0.69999999) in the bin
    their decimal says.
    """
    a = np.asarray(acts, dtype=np.float64)
    bins = np.minimum(np.floor(a * n_bins + 1e-6), n_bins - 1).astype(np.int32)
    return np.where(a > 0, bins, -1)


def quotas(counts: jnp.ndarray, cfg: SelectionConfig) -> jnp.ndarray:
    """Proteins to take per bin (train + eval) from the counts per bin.

    counts: vector (n_bins + 1,), index 0 the zero-activation proteins, index i the bin i-1.
    """
    nb = cfg.n_bins
    want = jnp.full((nb + 1,), 2 * cfg.per_bin)
    want = want.at[0].set(2 * cfg.negatives).at[nb].set(2 * cfg.top_bin)
    q = jnp.minimum(counts, want)
    top_up = jnp.maximum(2 * cfg.per_bin, cfg.top_two_target - q[nb])
    q_next = jnp.where(counts[nb] < 2 * cfg.top_bin, jnp.minimum(counts[nb - 1], top_up), q[nb - 1])
    return q.at[nb - 1].set(q_next)


def max_examples(cfg: SelectionConfig) -> int:
    """The most proteins one feature can receive (train + eval)."""
    top_two = max(2 * cfg.top_bin + 2 * cfg.per_bin, cfg.top_two_target)
    return 2 * cfg.per_bin * (cfg.n_bins - 2) + top_two + 2 * cfg.negatives


def _select_one(acts, bins, key, cfg: SelectionConfig, width: int):
    """One feature. acts, bins: vectors (n,); returns train (H,), eval (H,), excluded, counts."""
    nb, n = cfg.n_bins, acts.shape[0]
    k_draw, k_pair, k_odd = jax.random.split(key, 3)
    counts = jnp.bincount(bins + 1, length=nb + 1)
    q = quotas(counts, cfg)
    excluded = counts[nb - 2:].sum() < cfg.min_top_three

    # Draw: order by bin, at random within a bin; the first q[bin] of each bin are taken.
    order = jnp.argsort(bins + jax.random.uniform(k_draw, (n,)))
    sorted_bins = bins[order]
    starts = jnp.cumsum(counts) - counts
    taken_sorted = jnp.arange(n) - starts[sorted_bins + 1] < q[sorted_bins + 1]
    taken = jnp.zeros(n, bool).at[order].set(taken_sorted) & ~excluded

    # Pair: taken proteins by bin (top first, negatives last), then by decreasing activation.
    key2 = jnp.where(taken, -4.0 * (bins + 1) - jnp.clip(acts, 0.0, 2.0), jnp.inf)
    order2 = jnp.argsort(key2)[:width]
    valid = taken[order2]
    b2 = bins[order2]
    slot = jnp.where(b2 >= 0, nb - 1 - b2, nb)  # 0 = top bin, ..., nb = negatives
    q_slot = jnp.concatenate([q[1:][::-1], q[:1]])
    rank = jnp.arange(order2.shape[0]) - (jnp.cumsum(q_slot) - q_slot)[slot]
    odd = q_slot % 2
    odd_before = jnp.cumsum(odd) - odd
    coins = jax.random.bernoulli(k_pair, shape=(nb + 1, width // 2 + 1))
    flip = jax.random.bernoulli(k_odd).astype(jnp.int32)
    leftover = (rank == q_slot[slot] - 1) & (odd[slot] == 1)
    paired_to_train = coins[slot, rank // 2] ^ (rank % 2 == 1)
    to_train = jnp.where(leftover, (odd_before[slot] + flip) % 2 == 0, paired_to_train)

    half = width // 2 + 1
    def pack(mask):
        idx = jnp.argsort(~mask, stable=True)[:half]
        return jnp.where(mask[idx], order2[idx], -1)

    return pack(valid & to_train), pack(valid & ~to_train), excluded, counts


@functools.partial(jax.jit, static_argnames=("cfg", "width"))
def _select_chunk(acts, bins, features, seed, cfg: SelectionConfig, width: int):
    # acts, bins: (n, C); features: (C,)
    base = jax.random.PRNGKey(seed)
    keys = jax.vmap(lambda f: jax.random.fold_in(base, f))(features)
    return jax.vmap(functools.partial(_select_one, cfg=cfg, width=width),
                    in_axes=(1, 1, 0))(acts, bins, keys)


def select_examples(max_acts: np.ndarray, features: np.ndarray, cfg: SelectionConfig,
                    chunk: int | None = None) -> Selection:
    """Choose and split example proteins for ``features``.

    Args:
      max_acts: array (n_proteins, K) of each protein's maximum normalized activation for
        each of the K features (column k belongs to ``features[k]``).
      features: vector (K,) of feature indices (they seed each feature's draws).
      cfg: the selection rules.
      chunk: features per vmapped call (default: about 4 million entries per call).
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
    width = min(n, max_examples(cfg))
    chunk = chunk or max(1, min(n_feat, 4_000_000 // max(n, 1)))
    bins = activation_bins(max_acts, cfg.n_bins)
    rules = dataclasses.replace(cfg, seed=0, feature_fraction=1.0)  # static: one compile per rule set
    outs = []
    for lo in range(0, n_feat, chunk):
        hi = min(lo + chunk, n_feat)
        pad = chunk - (hi - lo)  # keep one compiled shape
        a = np.pad(max_acts[:, lo:hi], ((0, 0), (0, pad)))
        b = np.pad(bins[:, lo:hi], ((0, 0), (0, pad)), constant_values=-1)
        f = np.pad(features[lo:hi], (0, pad))
        res = _select_chunk(a, b, f, cfg.seed, rules, width)
        outs.append([np.asarray(x)[: hi - lo] for x in res])
    train, eval_, excluded, counts = (np.concatenate(parts) for parts in zip(*outs))
    log.info("example selection: %d features, %d excluded (< %d proteins in the top three bins)",
             n_feat, int(excluded.sum()), cfg.min_top_three)
    return Selection(features, train, eval_, excluded, counts)
