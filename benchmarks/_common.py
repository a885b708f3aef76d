"""Shared bits of the benchmarks: realistic protein sets and timing with medians."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from interplm_jax.fasta import Protein, read_fasta, sample_proteins

REPO = Path(__file__).resolve().parents[1]
SHARED_FASTA = REPO.parent / "shared" / "data" / "sequences" / "mmseqs2_example_DB_swissprot.fasta.gz"
DEMO_FASTA = REPO / "data" / "demo" / "swissprot_sample.fasta.gz"


def real_proteins(n: int, seed: int = 0, max_length: int = 1022) -> tuple[list[Protein], str]:
    """``n`` real Swiss-Prot proteins <= max_length (realistic length mix), and where from.

    From ../shared/data when present (3,000 Swiss-Prot entries), else the bundled 93, repeated
    with new ids to reach ``n``.
    """
    if SHARED_FASTA.exists():
        proteins, _ = read_fasta(SHARED_FASTA, max_length=max_length, on_invalid="skip")
        return sample_proteins(proteins, n, max_length, seed), str(SHARED_FASTA.name)
    proteins, _ = read_fasta(DEMO_FASTA, max_length=max_length, on_invalid="skip")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(proteins), size=n)
    return [Protein(f"{proteins[i].id}_{k}", proteins[i].sequence) for k, i in enumerate(picks)], DEMO_FASTA.name


def median_time(fn, repeats: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs (seconds)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns, repeats: int) -> tuple[list[float], list]:
    """Median seconds of each function over ``repeats`` rounds, the functions run in turn within
    each round (fair on a shared machine), after one warm-up call each; and the warm-up outputs."""
    outs = [fn() for fn in fns]  # warm-up, compilation
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times], outs
