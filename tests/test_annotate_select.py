"""Example selection on constructed activations with hand-computed expectations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from interplm_jax.annotate.config import SelectionConfig
from interplm_jax.annotate.select import activation_bins, sample_features, select_examples
from interplm_jax.errors import InputError

CFG = SelectionConfig()
N = 120


def column(groups: list[tuple[float, int]]) -> np.ndarray:
    """Activations: ``count`` proteins at about ``value`` each (spread a little inside the bin),
    padded with 0.05 (bin 0.0-0.1) to N proteins."""
    vals = []
    for value, count in groups:
        vals += list(value + np.linspace(0.0, 0.04, count)) if value > 0 else [0.0] * count
    vals += [0.05] * (N - len(vals))
    return np.array(vals[:N])


# feature -> activations; per-split expectations are worked out in the comments
COLUMNS = {
    # 30 negatives, 5 in each of bins 0-8, 25 at the top: every quota met, no top-up.
    # Per split: 10 negatives, 2 per bin 0-8, 10 at the top.
    10: column([(0.0, 30)] + [(b / 10 + 0.03, 5) for b in range(1, 9)] + [(0.93, 25)]),
    # Top bin 12 (< 20) -> bin 0.8-0.9 tops up to 24: 12 of its 20. Bin 0.7 has 3, all taken
    # (2 + 1); 5 negatives, all taken (2 + 3); bin 0 gives 4. Total 36 -> 18 + 18.
    11: column([(0.0, 5), (0.93, 12), (0.83, 20), (0.73, 3)]),
    # 10 + 7 + 0 = 17 proteins in the three highest bins: excluded.
    12: column([(0.0, 60), (0.93, 10), (0.83, 7)]),
    # Exactly 20 in the top three bins (8 + 8 + 4): kept; top-up wants 16 from bin 0.8, has 8.
    13: column([(0.0, 20), (0.93, 8), (0.83, 8), (0.73, 4)]),
    # Top bin 21 (>= 20): no top-up, bin 0.8 gives 4 of its 10.
    14: column([(0.0, 20), (0.93, 21), (0.83, 10)]),
}
FEATURES = np.array(sorted(COLUMNS))
ACTS = np.stack([COLUMNS[f] for f in FEATURES], axis=1)

# expected per-split counts per bin: [negatives, bin 0, ..., bin 9]
EXPECTED = {
    10: ([10] + [2] * 9 + [10], [10] + [2] * 9 + [10]),
    11: None,  # odd bins: checked separately
    12: ([0] * 11, [0] * 11),
    13: ([10, 2, 0, 0, 0, 0, 0, 0, 2, 4, 4], [10, 2, 0, 0, 0, 0, 0, 0, 2, 4, 4]),
    14: ([10, 2, 0, 0, 0, 0, 0, 0, 0, 2, 10], [10, 2, 0, 0, 0, 0, 0, 0, 0, 2, 10]),
}


def split_counts(sel, k, split):
    idx = sel.examples(k, split)
    return np.bincount(activation_bins(ACTS[idx, k], 10) + 1, minlength=11)


@pytest.fixture(scope="module")
def sel():
    return select_examples(ACTS, FEATURES, CFG)


def test_bins_are_decimal_and_clip_at_the_top():
    a = np.array([0.0, 1e-6, 0.1, 0.3, 0.7, 0.8999, 0.9, 1.0, 1.7], np.float32)
    assert activation_bins(a, 10).tolist() == [-1, 0, 1, 3, 7, 8, 9, 9, 9]


def test_counts_per_bin_match_the_hand_worked_selection(sel):
    for k, f in enumerate(FEATURES):
        if EXPECTED[f] is None:
            continue
        train, eval_ = EXPECTED[f]
        assert split_counts(sel, k, "train").tolist() == train, f
        assert split_counts(sel, k, "eval").tolist() == eval_, f


def test_top_up_takes_whole_small_bins_and_splits_odd_ones_evenly(sel):
    k = list(FEATURES).index(11)
    tr, ev = split_counts(sel, k, "train"), split_counts(sel, k, "eval")
    both = tr + ev
    assert both.tolist() == [5, 4, 0, 0, 0, 0, 0, 0, 3, 12, 12]
    assert np.abs(tr - ev).max() <= 1
    assert tr.sum() == ev.sum() == 18  # two odd bins: their extra ones go to opposite sides
    chosen = set(sel.examples(k, "train")) | set(sel.examples(k, "eval"))
    col = ACTS[:, k]
    # bins that were not larger than their quota are taken whole
    for lo, hi in ((0.9, 1.0), (0.7, 0.8)):
        assert set(np.flatnonzero((col >= lo) & (col < hi))) <= chosen
    assert set(np.flatnonzero(col == 0)) <= chosen


def test_exclusion_and_bin_counts(sel):
    assert sel.excluded.tolist() == [False, False, True, False, False]
    k = list(FEATURES).index(12)
    assert sel.examples(k, "train").size == sel.examples(k, "eval").size == 0
    assert sel.bin_counts[k].tolist() == [60, 43, 0, 0, 0, 0, 0, 0, 0, 7, 10]


def test_splits_are_disjoint_sorted_and_matched(sel):
    for k in range(len(FEATURES)):
        tr, ev = sel.examples(k, "train"), sel.examples(k, "eval")
        assert not set(tr) & set(ev)
        assert abs(tr.size - ev.size) <= 1
        for idx in (tr, ev):
            assert np.all(np.diff(ACTS[idx, k]) <= 0)
        if tr.size:
            # matched distributions: paired examples are close, so the means are close
            assert abs(ACTS[tr, k].mean() - ACTS[ev, k].mean()) < 0.05


def test_draws_depend_on_seed_and_feature_only(sel):
    again = select_examples(ACTS, FEATURES, CFG, chunk=1)  # same compiled shape as below
    alone = select_examples(ACTS[:, [1]], FEATURES[[1]], CFG)
    for a, b in ((sel.train, again.train), (sel.eval, again.eval)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(alone.train[0], sel.train[1])
    # bins of 5 give up 1 protein; over seeds, every protein of such a bin gets drawn
    k = list(FEATURES).index(10)
    col = ACTS[:, k]
    members = set(np.flatnonzero((col >= 0.4) & (col < 0.5)))
    drawn = set()
    for seed in range(12):
        s = select_examples(ACTS[:, [k]], FEATURES[[k]], dataclasses.replace(CFG, seed=seed))
        drawn |= set(s.examples(0, "train")) | set(s.examples(0, "eval"))
    assert members <= drawn


def test_sample_features_is_seeded_and_sized():
    a = sample_features(10240, CFG)
    assert a.size == 1024 and np.all(np.diff(a) > 0) and a.max() < 10240
    np.testing.assert_array_equal(a, sample_features(10240, CFG))
    assert not np.array_equal(a, sample_features(10240, dataclasses.replace(CFG, seed=1)))
    assert sample_features(3, CFG).size == 1


def test_bad_activations_are_rejected():
    bad = ACTS.copy()
    bad[7, 2] = np.nan
    with pytest.raises(InputError, match="protein 7, feature 12"):
        select_examples(bad, FEATURES, CFG)
    with pytest.raises(InputError, match="shape"):
        select_examples(ACTS, FEATURES[:2], CFG)


def reference_quota(counts: list[int], cfg: SelectionConfig) -> list[int]:
    """Plain-Python quotas (train + eval) per [negatives, bin 0, ..., top bin]."""
    nb = cfg.n_bins
    if sum(counts[nb - 2:]) < cfg.min_top_three:
        return [0] * (nb + 1)
    q = [min(counts[0], 2 * cfg.negatives)] + [min(c, 2 * cfg.per_bin) for c in counts[1:nb]]
    q.append(min(counts[nb], 2 * cfg.top_bin))
    if counts[nb] < 2 * cfg.top_bin:
        q[nb - 1] = min(counts[nb - 1], max(2 * cfg.per_bin, cfg.top_two_target - q[nb]))
    return q


def test_vectorized_selection_matches_a_plain_reference_on_random_features():
    rng = np.random.default_rng(1)
    n, k = 200, 64
    # per feature a different shape: sparse ones, dense ones, ones with few high proteins
    power = rng.uniform(0.3, 4.0, size=k)
    acts = rng.uniform(size=(n, k)) ** power
    acts[rng.uniform(size=(n, k)) < rng.uniform(0.0, 0.6, size=k)] = 0.0
    acts /= acts.max(axis=0)
    feats = np.arange(100, 100 + k)
    sel = select_examples(acts, feats, CFG)
    for j in range(k):
        counts = np.bincount(activation_bins(acts[:, j], 10) + 1, minlength=11).tolist()
        tr = sel.examples(j, "train")
        ev = sel.examples(j, "eval")
        got = np.bincount(activation_bins(acts[np.r_[tr, ev], j], 10) + 1, minlength=11)
        assert got.tolist() == reference_quota(counts, CFG), j
        assert sel.bin_counts[j].tolist() == counts
        assert abs(tr.size - ev.size) <= 1


def test_floyd_draws_are_uniform_and_distinct():
    from interplm_jax.annotate.select import _floyd

    rng = np.random.default_rng(0)
    cells = 20000
    c = np.full(cells, 10)
    q = np.full(cells, 4)
    ranks = _floyd(rng.uniform(size=(cells, 6)), c, q)
    assert np.all(ranks[:, 4:] == -1)
    chosen = ranks[:, :4]
    assert np.all(np.sort(chosen, 1)[:, 1:] != np.sort(chosen, 1)[:, :-1])  # distinct
    freq = np.bincount(chosen.ravel(), minlength=10) / cells
    np.testing.assert_allclose(freq, 0.4, atol=0.015)  # each of 10 ranks in 4/10 of draws
    # q == c takes everything
    assert sorted(_floyd(rng.uniform(size=(1, 5)), np.array([5]), np.array([5]))[0]) == [0, 1, 2, 3, 4]
