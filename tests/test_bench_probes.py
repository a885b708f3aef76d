"""Sparse probing (interplm_jax/bench/probes.py): the logistic regression against SciPy, a
concept one feature encodes found with F1 = 1, neurons and the hidden state probed the same way."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from interplm_jax.bench.probes import (fit_logistic, mean_difference, probe_f1, probe_rows, summary,
                                       top_k)


def test_logistic_regression_equals_scipy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2, 300, 3)).astype(np.float32)
    y = (X[:, :, 0] + 0.5 * X[:, :, 1] + rng.normal(scale=0.7, size=(2, 300)) > 0.8).astype(np.float32)
    w, b = fit_logistic(X, y, l2=1e-3)
    for c in range(2):
        x, t = X[c].astype(np.float64), y[c].astype(np.float64)
        weight = np.where(t > 0, 0.5 / t.sum(), 0.5 / (len(t) - t.sum()))

        def loss(p):
            z = x @ p[:3] + p[3]
            return np.sum(weight * (np.logaddexp(0, z) - t * z)) + 1e-3 * np.sum(p[:3] ** 2)

        ref = minimize(loss, np.zeros(4), method="BFGS", options={"gtol": 1e-9}).x
        np.testing.assert_allclose(np.asarray(w[c]), ref[:3], atol=2e-3)
        assert float(b[c]) == pytest.approx(ref[3], abs=2e-3)


def test_shared_input_fit_equals_one_fit_per_concept():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 5)).astype(np.float32)
    y = (X[None, :, :2].sum(-1) + rng.normal(size=(3, 400)) > np.array([[0.0], [1.0], [2.0]])).astype(np.float32)
    w, b = fit_logistic(X, y)
    w_each, b_each = fit_logistic(np.broadcast_to(X, (3, *X.shape)), y)
    np.testing.assert_allclose(np.asarray(w), np.asarray(w_each), atol=1e-5)
    np.testing.assert_allclose(np.asarray(b), np.asarray(b_each), atol=1e-5)


def test_mean_difference_and_top_k_by_hand():
    acts = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [1.0, 3.0, 0.0]])
    y = np.array([[True], [False], [False], [True]])
    np.testing.assert_allclose(mean_difference(acts, y), [[1.0, 1.0, 0.0]])
    assert top_k(mean_difference(acts, y), 2).tolist() == [[0, 1]]  # ties: lower index


def case(rng, n=600):
    """Concept 0: feature 3 is exactly its indicator; concept 1: the sign of x0 + x1 (no single
    neuron gives it, the hidden state does)."""
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = np.zeros((n, 2), bool)
    y[:, 0] = rng.random(n) < 0.1
    y[:, 1] = x[:, 0] + x[:, 1] > 1.0
    acts = rng.random((n, 8)).astype(np.float32) * 0.5
    acts[:, 3] = y[:, 0]
    return x, y, acts


def test_a_feature_that_encodes_the_concept_gives_f1_one():
    rng = np.random.default_rng(1)
    (xv, yv, av), (xt, yt, at) = case(rng), case(rng)
    idx = top_k(mean_difference(av, yv), 1)
    assert idx[0, 0] == 3
    f1 = probe_f1(np.moveaxis(av[:, idx], 0, 1), yv, np.moveaxis(at[:, idx], 0, 1), yt)
    assert f1[0] == 1.0 and f1[1] < 0.5


def test_rows_neurons_and_hidden_state_bound():
    rng = np.random.default_rng(2)
    (xv, yv, av), (xt, yt, at) = case(rng, 1500), case(rng, 1500)
    from interplm_jax.bench.probes import ProbeSet

    lookup = {id(xv): av, id(xt): at}
    rows = probe_rows("esm2", 2, ProbeSet(xv, yv), ProbeSet(xt, yt), ["a", "b"], [lambda x: lookup[id(x)]],
                      ["sae000"], ks=(1, 2))
    f1 = {(r["probe"], r["k"], r["concept"]): r["test_f1"] for r in rows}
    assert f1[("sae000", 1, "a")] == 1.0
    assert f1[("hidden", 6, "b")] > 0.9 > f1[("neurons", 1, "b")]  # x0 + x1: needs both neurons
    assert f1[("neurons", 2, "b")] > 0.9
    feats = {(r["probe"], r["k"], r["concept"]): r["features"] for r in rows}
    assert feats[("neurons", 1, "b")] in {"0", "1"} and sorted(feats[("neurons", 2, "b")].split()) == ["0", "1"]
    assert feats[("hidden", 6, "b")] == "" and feats[("sae000", 1, "a")] == "3"
    s = {(r["probe"], r["k"]): r for r in summary(rows)}
    assert s[("sae000", 1)]["mean_test_f1"] == pytest.approx(np.mean([f1[("sae000", 1, c)] for c in "ab"]))

