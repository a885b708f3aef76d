"""Sparse probing (as SAEBench): can a few features predict a concept residue by residue?

For each concept, the k features with the largest mean difference (mean activation on the
concept's residues minus elsewhere, on valid) feed a logistic regression for the per-residue
label, trained on valid; the decision threshold that maximises F1 on valid is carried to test,
where the F1 is reported. The same probe on the k best neurons (the hidden state, ranked the
same way) and on the whole hidden state (an upper bound) puts the numbers in context.

Every concept is fitted at once: ``jax.vmap`` over concepts of Newton's method on the
class-balanced logistic loss (+ a small L2) over standardised inputs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from interplm_jax.errors import InputError

KS = (1, 2, 5, 10)
#: Candidate decision thresholds on the probe's probability (chosen on valid).
CUTS = np.linspace(0.05, 0.95, 19)


@dataclasses.dataclass(frozen=True)
class ProbeSet:
    """Residues sampled from one split: hidden states ``x`` (n, d) and labels ``y`` (n, C) bool."""

    x: np.ndarray
    y: np.ndarray


def sample_split(store, layer: int, labels, eval_set, split: str, max_residues: int,
                 seed: int = 0) -> ProbeSet:
    """Whole proteins of ``split`` in a seeded random order until ``max_residues`` residues;
    their hidden states and per-residue labels of the evaluation set's concepts."""
    ids = list(eval_set.split(split))
    rng = np.random.default_rng(seed)
    ids = [ids[i] for i in rng.permutation(len(ids))]
    lab_idx = labels.indices(ids)
    keep = int(np.searchsorted(np.cumsum(labels.lengths[lab_idx]), max_residues)) + 1
    ids, lab_idx = ids[:keep], lab_idx[:keep]
    store_idx = np.array([store.index_of(i) for i in ids], np.int64)
    order = np.argsort(store_idx)
    concept_idx = np.array([labels.concepts.index(c) for c in eval_set.concepts], np.int64)
    x = store.protein_rows(layer, store_idx[order])
    y = labels.matrix(lab_idx[order], concept_idx).toarray() > 0
    if len(x) != len(y):
        raise InputError(f"{store.url}: layer {layer} has {len(x)} rows for {len(ids)} proteins of "
                         f"{split}, the labels {len(y)} residues")
    return ProbeSet(x, y)


def mean_difference(acts: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(C, F): mean activation on each concept's residues minus on the others. acts (n, F),
    y (n, C) bool; a concept without positives or negatives gets 0 everywhere."""
    yf = y.astype(np.float64)
    acts = np.asarray(acts, np.float64)  # one dtype: BLAS (a mixed-dtype product is a slow loop)
    n_pos = yf.sum(0)[:, None]
    pos = yf.T @ acts
    neg = acts.sum(0)[None] - pos
    n_neg = len(y) - n_pos
    return np.where((n_pos > 0) & (n_neg > 0), pos / np.maximum(n_pos, 1) - neg / np.maximum(n_neg, 1), 0.0)


def top_k(diff: np.ndarray, k: int) -> np.ndarray:
    """(C, k) indices of the k largest values per row (largest first; ties: lower index)."""
    return np.argsort(-diff, axis=1, kind="stable")[:, :k]


@functools.partial(jax.jit, static_argnames=("steps",))
def fit_logistic(X: jax.Array, y: jax.Array, l2: float = 1e-3, steps: int = 25):
    """Class-balanced logistic regressions, one per concept, vmapped: Newton's method on
    sum_i weight_i * CE(x_i w + b, y_i) + l2 * |w|^2, weights 1/2 per class spread over its
    residues (a fixed number of steps; the L2 term keeps the Hessian positive definite).

    Args:
      X: (C, n, k) standardised inputs per concept, or (n, k) shared by every concept (the hidden
        state: see :func:`_fit_shared`). y: (C, n) 0/1.
    Returns:
      (w (C, k), b (C,)).
    """
    if X.ndim == 2:
        return _fit_shared(X, y, l2, steps)

    def one(x, t):
        n_pos = jnp.maximum(t.sum(), 1.0)
        n_neg = jnp.maximum(len(t) - t.sum(), 1.0)
        weight = jnp.where(t > 0, 0.5 / n_pos, 0.5 / n_neg)
        xb = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)  # (n, k + 1)
        ridge = jnp.diag(jnp.concatenate([jnp.full(x.shape[1], 2 * l2), jnp.zeros(1) + 1e-8]))

        def step(theta, _):
            p = jax.nn.sigmoid(xb @ theta)
            grad = xb.T @ (weight * (p - t)) + ridge @ theta
            hess = (xb * (weight * p * (1 - p))[:, None]).T @ xb + ridge
            return theta - jnp.linalg.solve(hess, grad), None

        theta, _ = jax.lax.scan(step, jnp.zeros(x.shape[1] + 1), None, length=steps)
        return theta[:-1], theta[-1]

    return jax.vmap(one)(X, y)


def _fit_shared(X: jax.Array, y: jax.Array, l2: float, steps: int):
    """:func:`fit_logistic` of C concepts on one input X (n, k): the same Newton steps, with every
    concept's Hessian from one (C, n) x (n, (k+1)^2) product with the rows' outer products
    (instead of C small products: ~2x faster at k = 32)."""
    n, k = X.shape
    xb = jnp.concatenate([X, jnp.ones((n, 1), X.dtype)], axis=1)   # (n, k + 1)
    outer = (xb[:, :, None] * xb[:, None, :]).reshape(n, -1)        # (n, (k + 1)^2)
    n_pos = jnp.maximum(y.sum(1, keepdims=True), 1.0)
    n_neg = jnp.maximum(n - y.sum(1, keepdims=True), 1.0)
    weight = jnp.where(y > 0, 0.5 / n_pos, 0.5 / n_neg)              # (C, n)
    ridge = jnp.diag(jnp.concatenate([jnp.full(k, 2 * l2), jnp.zeros(1) + 1e-8]))

    def step(theta, _):  # theta (C, k + 1)
        p = jax.nn.sigmoid(theta @ xb.T)
        grad = (weight * (p - y)) @ xb + theta @ ridge
        hess = ((weight * p * (1 - p)) @ outer).reshape(-1, k + 1, k + 1) + ridge
        return theta - jnp.linalg.solve(hess, grad[..., None])[..., 0], None

    theta, _ = jax.lax.scan(step, jnp.zeros((y.shape[0], k + 1), X.dtype), None, length=steps)
    return theta[:, :-1], theta[:, -1]


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both by the train mean and standard deviation over residues (axis -2; std 0 -> 1)."""
    mu, sd = train.mean(-2, keepdims=True), train.std(-2, keepdims=True)
    sd = np.where(sd > 0, sd, 1.0)
    return (train - mu) / sd, (test - mu) / sd


def f1_at(prob: np.ndarray, y: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """(C, m) F1 of prob > cut per concept and cut. prob (C, n), y (C, n) bool, cuts (C, m)."""
    pred = prob[:, :, None] > cuts[:, None, :]
    tp = (pred & y[:, :, None]).sum(1)
    denom = pred.sum(1) + y.sum(1)[:, None]
    return np.divide(2 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)


def probe_f1(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> np.ndarray:
    """(C,) test F1 of per-concept probes; NaN for a concept without positives in train or test.

    Args:
      train_x, test_x: (C, n, k) inputs per concept (its chosen features), or (n, k) shared.
      train_y, test_y: (n, C) bool labels.
    """
    C = train_y.shape[1]
    xtr, xte = _standardise(np.asarray(train_x, np.float32), np.asarray(test_x, np.float32))
    ytr, yte = train_y.T, test_y.T
    w, b = fit_logistic(jnp.asarray(xtr), jnp.asarray(ytr, jnp.float32))
    w, b = np.asarray(w), np.asarray(b)
    logits = "nk,ck->cn" if xtr.ndim == 2 else "cnk,ck->cn"
    p_tr = 1 / (1 + np.exp(-(np.einsum(logits, xtr, w) + b[:, None])))
    p_te = 1 / (1 + np.exp(-(np.einsum(logits, xte, w) + b[:, None])))
    cut = CUTS[np.argmax(f1_at(p_tr, ytr, np.broadcast_to(CUTS, (C, len(CUTS)))), axis=1)]  # ties: lowest
    f1 = f1_at(p_te, yte, cut[:, None])[:, 0]
    ok = (ytr.sum(1) > 0) & (yte.sum(1) > 0)
    return np.where(ok, f1, np.nan)


def gather(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """x (n, F), idx (C, k) -> (C, n, k): each concept's chosen columns."""
    return np.moveaxis(x[:, idx], 0, 1)


def probe_rows(model: str, layer: int, valid: ProbeSet, test: ProbeSet, concepts: Sequence[str],
               saes: Sequence, names: Sequence[str], ks: Sequence[int] = KS) -> list[dict]:
    """Rows (model, layer, probe, k, concept, features, test_f1): per SAE (its normalized
    features, ``features(x)`` from :func:`interplm_jax.sae.features.feature_function`) and k, the
    k best neurons, and the whole hidden state (``probe`` = ``hidden``, k = d)."""
    rows = []

    def add(probe: str, k: int, idx, f1):
        for c, name in enumerate(concepts):
            feats = "" if idx is None else " ".join(map(str, idx[c]))
            rows.append({"model": model, "layer": int(layer), "probe": probe, "k": int(k), "concept": name,
                         "features": feats, "test_f1": float(f1[c])})

    def sparse(probe: str, a_valid: np.ndarray, a_test: np.ndarray):
        diff = mean_difference(a_valid, valid.y)
        for k in ks:
            if k <= a_valid.shape[1]:
                idx = top_k(diff, k)
                add(probe, k, idx, probe_f1(gather(a_valid, idx), valid.y, gather(a_test, idx), test.y))

    sparse("neurons", valid.x, test.x)
    add("hidden", valid.x.shape[1], None, probe_f1(valid.x, valid.y, test.x, test.y))
    for features, name in zip(saes, names):
        sparse(name, np.asarray(features(valid.x)), np.asarray(features(test.x)))
    return rows


def summary(rows: Sequence[dict]) -> list[dict]:
    """Mean test F1 over concepts (those with positives in valid and test) per (model, layer,
    probe, k)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["model"], int(r["layer"]), r["probe"], int(r["k"])), []).append(float(r["test_f1"]))
    return [{"model": m, "layer": L, "probe": p, "k": k,
             "mean_test_f1": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan"),
             "n_concepts": int(np.isfinite(v).sum())}
            for (m, L, p, k), v in groups.items()]


def read_probes(path) -> list[dict]:
    """Rows of a probe part table (``bench.py probes``)."""
    import csv

    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise InputError(f"{path}: not found (a probe table from scripts/bench.py probes)") from None
    for i, r in enumerate(rows, 2):
        try:
            r["layer"], r["k"], r["test_f1"] = int(r["layer"]), int(r["k"]), float(r["test_f1"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}:{i}: not a probe row (layer, k, test_f1)") from None
    return rows


def plot_probes(means: Sequence[dict], chosen: dict, path) -> str | None:
    """Mean test F1 against k, one panel per (model, layer): the chosen SAE, the best SAE at
    each k, the k best neurons, the hidden state (a line). Returns why nothing was drawn, or None."""
    panels = sorted({(r["model"], r["layer"]) for r in means if np.isfinite(r["mean_test_f1"])})
    if not panels:
        return "no concept with positives in both valid and test samples"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from interplm_jax.atomic import atomic_path

    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), dpi=110, squeeze=False)
    for ax, (model, layer) in zip(axes[0], panels):
        here = [r for r in means if (r["model"], r["layer"]) == (model, layer)]

        def line(probe):
            pts = sorted((r["k"], r["mean_test_f1"]) for r in here if r["probe"] == probe)
            return [k for k, _ in pts], [v for _, v in pts]

        saes = sorted({r["probe"] for r in here} - {"neurons", "hidden"})
        ks = sorted({r["k"] for r in here if r["probe"] != "hidden"})
        best = [max((r["mean_test_f1"] for r in here if r["k"] == k and r["probe"] in saes), default=np.nan)
                for k in ks]
        if chosen.get((model, layer)) in saes:
            ax.plot(*line(chosen[(model, layer)]), "-o", label=f"chosen SAE ({chosen[(model, layer)]})")
        ax.plot(ks, best, ":", color="gray", label="best SAE of the grid")
        ax.plot(*line("neurons"), "--s", label="k best neurons")
        for r in here:
            if r["probe"] == "hidden":
                ax.axhline(r["mean_test_f1"], color="k", lw=0.8, label=f"hidden state ({r['k']})")
        ax.set_xticks(ks)
        ax.set_xlabel("k (features in the probe)")
        ax.set_title(f"{model} layer {layer}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean test F1 over concepts")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Sparse probing: a logistic regression on the k best features per concept", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return None
