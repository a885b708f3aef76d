#!/usr/bin/env python
"""The bench: a grid of G SAEs measured in one pass over the store vs one pass per SAE.

A synthetic evaluation set: ``--proteins`` proteins (lengths drawn uniformly in
[``--min-length``, ``--max-length``]), half valid, half test, ``--concepts`` concepts of random
domains; token activations N(0, 1) of width ``--d``; G ReLU SAEs of ``--features`` features with
sparse activity (L0 about 15). Both ways give the same numbers (checked here; tests/test_bench.py
proves it in general). Optionally, ``--demo-study DIR`` (a finished demo study, e.g. ``out/demo``
after ``make demo``) reruns its bench stage alone and reports its wall time (and its causal test's).

    python benchmarks/bench.py [--saes 20] [--features 2560] [--proteins 2000] [--demo-study out/demo]
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from interplm_jax.bench import measure_grid
from interplm_jax.concepts.evalset import EvalSet
from interplm_jax.concepts.labels import ConceptLabels
from interplm_jax.sae_dir import SavedSAE
from interplm_jax.store import write_store

REPO = Path(__file__).resolve().parents[1]


def synthetic(root: Path, P: int, lo: int, hi: int, d: int, C: int, seed: int = 0):
    """(store, labels, eval set) of P proteins."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i:05d}" for i in range(P)]
    lengths = rng.integers(lo, hi + 1, size=P)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    iv = []
    for p, n in enumerate(lengths):
        for c in rng.choice(C, size=min(C, 3), replace=False):
            a = int(rng.integers(0, n - 1))
            iv.append((p, c, p + 1, a, min(n, a + int(rng.integers(1, 30)))))
    iv = np.array(sorted(iv))
    residues = rng.choice(np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", np.uint8), size=offsets[-1])
    labels = ConceptLabels(ids, residues, offsets, [f"Domain_d{c}" for c in range(C)],
                           iv[:, 0].astype(np.int32), iv[:, 1].astype(np.int32), iv[:, 2].astype(np.int64),
                           iv[:, 3].astype(np.int32), iv[:, 4].astype(np.int32), amino_acids=False)
    acts = [rng.standard_normal((n, d), dtype=np.float32) for n in lengths]
    store = write_store(root / "store", ids, {1: acts}, shard_size=500)
    order = rng.permutation(P)
    half = P // 2
    es = EvalSet(tuple(ids[i] for i in order[:half]), tuple(ids[i] for i in order[half:]),
                 tuple(ids[i] for i in order[:half // 5]), tuple(labels.concepts), {}, {})
    return store, labels, es


def sparse_relu_saes(G: int, d: int, F: int, seed: int = 0) -> list[SavedSAE]:
    rng = np.random.default_rng(seed)
    out = []
    for g in range(G):
        W_dec = rng.standard_normal((F, d)).astype(np.float32)
        W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
        params = {"b_pre": np.zeros(d, np.float32), "W_enc": (rng.standard_normal((d, F)) / np.sqrt(d)).astype(np.float32),
                  "b_enc": np.full(F, -2.5 - 0.02 * g, np.float32), "W_dec": W_dec,
                  "scale": rng.uniform(0.2, 1.0, F).astype(np.float32)}
        out.append(SavedSAE("relu", params, {"lr": 1e-3, "l1": 0.01 * g}, {"id": f"sae{g:03d}"}))
    return out


def demo_stage_seconds(study: Path) -> tuple[float, float]:
    """Wall time of the bench stage of a finished demo study, rerun alone, and of its causal
    test (as the stage recorded it in its ledger marker)."""
    config = study / "pipeline" / "model.json"
    if not config.is_file():
        raise click.UsageError(f"{study}: not a finished pipeline study (no pipeline/model.json)")
    cmd = [sys.executable, str(REPO / "scripts" / "pipeline.py"), "--config", str(REPO / "configs" / "demo.yaml"),
           "--out", str(study)]
    subprocess.run(cmd + ["--redo", "bench", "--until", "annotate"], check=True, capture_output=True)
    t0 = time.perf_counter()
    subprocess.run(cmd + ["--until", "bench"], check=True, capture_output=True,
                   env={**os.environ, "INTERPLM_PROGRESS": "0"})
    seconds = time.perf_counter() - t0
    return seconds, json.loads((study / "pipeline" / "bench.json").read_text())["info"]["causal_seconds"]


@click.command()
@click.option("--saes", default=20, show_default=True)
@click.option("--features", default=2560, show_default=True)
@click.option("--d", "d", default=320, show_default=True)
@click.option("--proteins", default=2000, show_default=True)
@click.option("--min-length", default=20, show_default=True)
@click.option("--max-length", default=60, show_default=True)
@click.option("--concepts", default=20, show_default=True)
@click.option("--chunk-residues", default=8192, show_default=True)
@click.option("--demo-study", default=None, type=click.Path(file_okay=False),
              help="A finished demo study: time its bench stage too.")
def main(saes, features, d, proteins, min_length, max_length, concepts, chunk_residues, demo_study):
    os.environ.setdefault("INTERPLM_PROGRESS", "0")  # no bars in the printed figures
    print(f"load: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        store, labels, es = synthetic(Path(tmp), proteins, min_length, max_length, d, concepts)
        grid = sparse_relu_saes(saes, d, features)
        n_test = int(sum(np.diff(store.offsets)[store.index_of(p)] for p in es.test))
        print(f"{store.n_proteins} proteins, {store.n_tokens} tokens, d={d}; {saes} SAEs x {features} "
              f"features; {concepts} concepts")
        few = dataclasses.replace(es, valid=es.valid[:40], test=es.test[:40])
        for warm in (grid, grid[:1]):  # compile both shapes on a few proteins
            measure_grid(store, 1, labels, few, warm, chunk_residues=chunk_residues)
        t0 = time.perf_counter()
        one = measure_grid(store, 1, labels, es, grid, chunk_residues=chunk_residues)
        t_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        singles = [measure_grid(store, 1, labels, es, [s], chunk_residues=chunk_residues) for s in grid]
        t_many = time.perf_counter() - t0
    for g, s in enumerate(singles):
        assert np.array_equal(one.test[g].tp, s.test[0].tp) and np.array_equal(one.valid[g].hits, s.valid[0].hits)
        assert np.isclose(one.recon.fve[g], s.recon.fve[0], rtol=1e-4), (one.recon.fve[g], s.recon.fve[0])
    print(f"L0 {one.recon.l0.min():.1f}-{one.recon.l0.max():.1f}, FVE {one.recon.fve.min():.3f}-{one.recon.fve.max():.3f}")
    print(f"one pass for {saes} SAEs:  {t_one:8.1f} s")
    print(f"{saes} passes, one per SAE: {t_many:8.1f} s")
    print(f"ratio: {t_many / t_one:.2f}x (goal >= 5x)")
    # the floor of either way: every SAE's encoder product on both splits, its decoder on test
    gflop = 2 * saes * d * features * (store.n_tokens + n_test) / 1e9
    print(f"encoder + decoder products: {gflop:.0f} GFLOP either way; one pass at {gflop / t_one:.0f} "
          f"GFLOP/s, one pass per SAE at {gflop / t_many:.0f} GFLOP/s")
    print(f"load after: {os.getloadavg()[0]:.1f}")
    if demo_study:
        stage, causal = demo_stage_seconds(Path(demo_study))
        print(f"demo bench stage (alone): {stage:.1f} s, of which the causal test {causal:.1f} s; "
              f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
