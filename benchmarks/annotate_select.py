"""Example selection for LLM annotation: the vectorized selection vs a per-feature NumPy loop.

The baseline is the procedure as one would write it feature by feature (bin, draw per bin with
``rng.choice``, top-up, pair and split); both produce the same per-bin counts. Prints medians
of ``--repeats`` runs (after one warm-up) and their ratio.

    python benchmarks/annotate_select.py [--proteins 25000] [--features 1024]
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import interleaved  # noqa: E402
from interplm_jax.annotate.config import SelectionConfig  # noqa: E402
from interplm_jax.annotate.select import activation_bins, select_examples  # noqa: E402


def loop_select(acts: np.ndarray, cfg: SelectionConfig, seed: int = 0):
    """Per-feature NumPy baseline: returns (train, eval) index lists per feature."""
    rng = np.random.default_rng(seed)
    nb = cfg.n_bins
    out = []
    for j in range(acts.shape[1]):
        a = acts[:, j]
        bins = activation_bins(a, nb)
        members = [np.flatnonzero(bins == b) for b in range(-1, nb)]
        counts = [m.size for m in members]
        if sum(counts[nb - 2:]) < cfg.min_top_three:
            out.append(([], []))
            continue
        want = [2 * cfg.negatives] + [2 * cfg.per_bin] * (nb - 1) + [2 * cfg.top_bin]
        q = [min(c, w) for c, w in zip(counts, want)]
        if counts[nb] < 2 * cfg.top_bin:
            q[nb - 1] = min(counts[nb - 1], max(2 * cfg.per_bin, cfg.top_two_target - q[nb]))
        train, eval_ = [], []
        flip = 0
        for m, k in zip(members, q):
            chosen = rng.choice(m, size=k, replace=False) if k else m[:0]
            chosen = chosen[np.argsort(-a[chosen])]
            for i in range(0, k - 1, 2):
                pair = chosen[i:i + 2] if rng.random() < 0.5 else chosen[i:i + 2][::-1]
                train.append(pair[0])
                eval_.append(pair[1])
            if k % 2:
                (train if flip % 2 == 0 else eval_).append(chosen[-1])
                flip += 1
        out.append((train, eval_))
    return out




@click.command()
@click.option("--proteins", default=25000, show_default=True)
@click.option("--features", default=1024, show_default=True)
@click.option("--repeats", default=3, show_default=True)
def main(proteins: int, features: int, repeats: int):
    import jax

    rng = np.random.default_rng(0)
    power = rng.uniform(0.3, 4.0, size=features).astype(np.float32)
    acts = rng.uniform(size=(proteins, features)).astype(np.float32) ** power
    acts[rng.uniform(size=(proteins, features)) < 0.5] = 0.0
    acts /= acts.max(axis=0)
    cfg = SelectionConfig()
    feats = np.arange(features)

    sel = select_examples(acts, feats, cfg)
    ref = loop_select(acts, cfg)
    for j in range(0, features, max(1, features // 16)):  # same per-bin totals
        both = np.r_[sel.examples(j, "train"), sel.examples(j, "eval")]
        ref_both = np.r_[ref[j][0], ref[j][1]].astype(int)
        assert np.array_equal(np.bincount(activation_bins(acts[both, j], 10) + 1, minlength=11),
                              np.bincount(activation_bins(acts[ref_both, j], 10) + 1, minlength=11))

    (t_loop, t_jax), _ = interleaved([lambda: loop_select(acts, cfg),
                           lambda: select_examples(acts, feats, cfg)], repeats)
    print(f"device: {jax.devices()[0].device_kind}; {proteins} proteins x {features} features")
    print(f"numpy per-feature loop : {t_loop:8.3f} s (median of {repeats})")
    print(f"vectorized selection   : {t_jax:8.3f} s (median of {repeats})")
    print(f"speed-up               : {t_loop / t_jax:8.2f}x")


if __name__ == "__main__":
    main()
