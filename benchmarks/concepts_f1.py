#!/usr/bin/env python
"""Concept F1 counting: our streaming sparse engine vs the reference's compare_activations.

Same inputs for both: SAE-like normalized activations (each residue has ``--l0`` active
features out of F, values in (0, 1]) for real Swiss-Prot protein lengths, and labels with
domain ids for C concepts (random domains of 1-60 residues). The reference path is what its
``process_shard`` does after encoding: features in chunks of 250, each chunk turned into a
SciPy CSR matrix and passed to ``calc_metrics_sparse`` (loops over thresholds and concepts,
then a Python loop over feature columns to count domains). Ours: ``CountAccumulator.update``
on chunks of proteins of about 8,192 residues, from the same dense activations. The counts
are checked to be identical. Peak memory of ours at the paper's size (10,240 features x 25,000
proteins x ~135 concepts) is estimated from measured runs: it does not grow with the number of
proteins (streaming), so we measure it at two sizes and show it is flat.

    python benchmarks/concepts_f1.py [--proteins 300] [--features 2560] [--concepts 50]
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import click
import numpy as np
from scipy import sparse

from _common import median_time, real_proteins
from interplm_jax.concepts.f1 import DEFAULT_THRESHOLDS, CountAccumulator
from interplm_jax.concepts.labels import protein_chunks

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "InterPLM"


def make_inputs(n_proteins: int, F: int, C: int, l0: int, seed: int = 0):
    """(lengths (P,), acts (R, F) float32 dense, labels (R, C) CSR int64 domain ids)."""
    rng = np.random.default_rng(seed)
    lengths = np.array([len(p.sequence) for p in real_proteins(n_proteins, seed)[0]])
    R = int(lengths.sum())
    acts = np.zeros((R, F), np.float32)
    rows = np.repeat(np.arange(R), l0)
    cols = rng.integers(0, F, size=R * l0)
    acts[rows, cols] = np.minimum(rng.exponential(0.25, size=R * l0), 1.0).astype(np.float32) + 1e-3
    starts = np.concatenate([[0], np.cumsum(lengths)])
    r_l, c_l, v_l = [], [], []
    next_id = np.ones(C, np.int64)
    for c in range(C):
        short = c % 5 == 0  # a fifth of the concepts are single residues (sites)
        n_dom = rng.poisson(0.8 if not short else 2.0, size=n_proteins)
        for p in np.flatnonzero(n_dom):
            for _ in range(n_dom[p]):
                ln = 1 if short else int(rng.integers(5, 61))
                s = int(rng.integers(0, max(1, lengths[p] - ln)))
                e = min(s + ln, lengths[p])
                r_l.append(np.arange(starts[p] + s, starts[p] + e))
                c_l.append(np.full(e - s, c))
                v_l.append(np.full(e - s, next_id[c]))
                next_id[c] += 1
    r, c, v = (np.concatenate(x) for x in (r_l, c_l, v_l))
    key = r * C + c
    _, last = np.unique(key[::-1], return_index=True)  # later domains overwrite, as in labels
    pick = len(key) - 1 - last
    labels = sparse.csr_matrix((v[pick], (r[pick], c[pick])), shape=(R, C))
    return lengths, acts, labels


def ours(lengths, acts, labels, chunk_residues=8192):
    acc = CountAccumulator(acts.shape[1], labels.shape[1], DEFAULT_THRESHOLDS)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for sl in protein_chunks(lengths, chunk_residues):
        a, b = offsets[sl.start], offsets[sl.stop]
        acc.update(acts[a:b], labels[a:b], sl.stop - sl.start)
    return acc.result([str(i) for i in range(labels.shape[1])])


def load_reference():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from reference import reference_module

    return reference_module("interplm.analysis.concepts.compare_activations")


def reference(ca, acts, labels, feature_chunks=None, feat_chunk=250):
    """The reference's process_shard after encoding (optionally only the first chunks)."""
    F, C = acts.shape[1], labels.shape[1]
    T = len(DEFAULT_THRESHOLDS)
    tp, fp, tpd = (np.zeros((C, F, T)) for _ in range(3))
    chunks = np.array_split(np.arange(F), int(np.ceil(F / feat_chunk)))[:feature_chunks]
    for feats in chunks:
        m = sparse.csr_matrix(acts[:, feats])
        t, f, d = ca.calc_metrics_sparse(m, labels, list(DEFAULT_THRESHOLDS), [False] * C)
        tp[:, feats], fp[:, feats], tpd[:, feats] = t, f, d
    return tp, fp, tpd, len(chunks), len(np.array_split(np.arange(F), int(np.ceil(F / feat_chunk))))


def peak_mib(fn) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


@click.command()
@click.option("--proteins", default=300, show_default=True)
@click.option("--features", default=2560, show_default=True)
@click.option("--concepts", default=50, show_default=True)
@click.option("--l0", default=64, show_default=True, help="Active features per residue.")
@click.option("--repeats", default=3, show_default=True)
@click.option("--ref-chunks", default=None, type=int, help="Time the reference on only this many 250-feature chunks and extrapolate.")
@click.option("--memory/--no-memory", default=True, show_default=True, help="Also the paper-size memory estimate.")
def main(proteins, features, concepts, l0, repeats, ref_chunks, memory):
    lengths, acts, labels = make_inputs(proteins, features, concepts, l0)
    print(f"inputs: {proteins} proteins ({acts.shape[0]} residues), {features} features (L0 {l0}), "
          f"{concepts} concepts ({labels.nnz} labels)")
    t_ours = median_time(lambda: ours(lengths, acts, labels), repeats)
    res = ours(lengths, acts, labels)
    print(f"ours:      {t_ours:8.2f} s (median of {repeats})")
    if (REFERENCE / "interplm").is_dir():
        ca = load_reference()
        t0 = time.perf_counter()
        tp, fp, tpd, done, total = reference(ca, acts, labels, ref_chunks)
        t_ref = (time.perf_counter() - t0) * total / done
        n = done * 250
        same = (np.array_equal(res.tp[:, :n], tp[:, :n]) and np.array_equal(res.fp[:, :n], fp[:, :n])
                and np.array_equal(res.hits[:, :n], tpd[:, :n]))
        how = "measured" if done == total else f"extrapolated from {done} of {total} chunks"
        print(f"reference: {t_ref:8.2f} s ({how}, one run)")
        print(f"speed-up:  {t_ref / t_ours:8.1f}x; identical counts: {same}")
    else:
        print("reference absent: speed-up not measured")
    if memory:
        # paper size: F = 10,240, ~135 concepts, chunks of 8,192 residues; peak at two protein counts
        F, C = 10240, 135
        acc_bytes = 3 * C * F * len(DEFAULT_THRESHOLDS) * 8
        for n in (40, 120):
            L, A, Y = make_inputs(n, F, C, l0, seed=1)
            mib = peak_mib(lambda: ours(L, A, Y))
            inputs = (A.nbytes + Y.data.nbytes + Y.indices.nbytes) / 2**20
            print(f"peak traced memory, F={F}, C={C}, {n} proteins: {mib:.0f} MiB "
                  f"(accumulators {acc_bytes / 2**20:.0f} MiB; the inputs held outside: {inputs:.0f} MiB)")
        print("the peak does not depend on the number of proteins (streaming): the paper's 25,000 "
              "proteins need the same, plus one chunk of activations in the pipeline "
              f"(8,192 x {F} float32 = {8192 * F * 4 / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
