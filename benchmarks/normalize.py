#!/usr/bin/env python
"""Normalization throughput (tokens/s): ours vs the reference's ``calculate_feature_statistics``.

Same tokens, same SAE: the rows of one activation store are also written as the reference's
``shard_<i>.pt`` files (one per store shard), the SAE is exported to ``ae.pt`` and loaded with
the reference's ``ReLUSAE.from_pretrained``. Each side reads its own format from disk. Medians of
``--repeats`` runs after one warm-up, the two sides alternating so that a shared machine's load
changes hit both; the maxima of both sides are checked to agree.

A second measurement normalizes a sweep of G SAEs: ours in one pass over the store (the G SAEs
vmapped), the reference once per SAE.

    PYTHONPATH=. python benchmarks/normalize.py [--tokens 60000 --d 320 --features 10240]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]
os.environ.setdefault("INTERPLM_PROGRESS", "0")


def paired_times(fa, fb, repeats: int) -> tuple[float, float, object, object]:
    """Median times of ``fa`` and ``fb`` run alternately (a shared machine's load hits both)."""
    fa(), fb()  # warm-up (compilation, page cache)
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a = fa()
        t1 = time.perf_counter()
        b = fb()
        ta.append(t1 - t0)
        tb.append(time.perf_counter() - t1)
    return statistics.median(ta), statistics.median(tb), a, b


@click.command(help=__doc__.split("\n")[0])
@click.option("--tokens", default=60_000, show_default=True, help="Tokens in the store.")
@click.option("--d", default=320, show_default=True, help="d_model (ESM-2 8M: 320).")
@click.option("--features", default=10_240, show_default=True, help="F (paper: 10,240).")
@click.option("--sweep", default=4, show_default=True, help="G SAEs for the sweep measurement.")
@click.option("--chunk-tokens", default=256, show_default=True, help="Tokens per encoder call.")
@click.option("--repeats", default=3, show_default=True, help="Timed runs per side (median).")
def main(**options) -> None:
    args = SimpleNamespace(**options)

    import contextlib
    import io

    import torch

    from reference import inference as reference
    from _saes import random_sae
    from interplm_jax.normalize import feature_stats, normalize, row_chunks
    from interplm_jax.store import write_store
    from torch_bridge.export import write_interplm

    try:
        reference()
    except BaseException as e:  # pytest.skip raises a BaseException subclass
        sys.exit(f"the reference InterPLM is needed for this benchmark: {e}")
    from interplm.data_processing.embedding_loader import FlatFileShardLoader
    from interplm.sae.dictionary import ReLUSAE
    from interplm.sae.normalize import calculate_feature_statistics

    from _common import real_proteins

    rng = np.random.default_rng(0)
    proteins, _ = real_proteins(max(1, args.tokens // 150))  # a realistic length mix
    lengths = []
    for p in proteins * (1 + args.tokens // 150):
        if sum(lengths) >= args.tokens:
            break
        lengths.append(len(p.sequence))
    acts = [rng.normal(size=(n, args.d)).astype(np.float32) for n in lengths]
    tmp = Path(tempfile.mkdtemp(prefix="bench-normalize-"))
    store = write_store(tmp / "store", [f"p{i}" for i in range(len(acts))], {1: acts}, shard_size=100)
    ref_dir = tmp / "ref_shards"
    ref_dir.mkdir()
    for i in range(store.n_shards):
        _, _, r0, r1 = store.shard_bounds(i)
        torch.save(torch.from_numpy(store.rows(1, r0, r1)), ref_dir / f"shard_{i}.pt")
    n_tok = store.n_tokens

    saes = [random_sae("relu", d=args.d, F=args.features, seed=s, normalized=False)
            for s in range(args.sweep)]
    for s in saes:
        s.params["b_enc"][:] = rng.normal(scale=0.3, size=args.features) - 0.5
    write_interplm(saes[0], tmp / "sae")

    def ours():
        return normalize(saes[0], store, 1, chunk_tokens=args.chunk_tokens)[1].max

    def theirs(sae_path=tmp / "sae" / "ae.pt"):
        ae = ReLUSAE.from_pretrained(sae_path, device="cpu")
        with contextlib.redirect_stdout(io.StringIO()):  # it prints per shard
            with torch.no_grad():
                return calculate_feature_statistics(ae, FlatFileShardLoader(ref_dir)).numpy()

    print(f"store: {n_tok} tokens, {store.n_proteins} proteins, d={args.d}; SAE F={args.features}; "
          f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    t_ours, t_ref, m_ours, m_ref = paired_times(ours, theirs, args.repeats)
    np.testing.assert_allclose(m_ours, m_ref, rtol=1e-4, atol=1e-5)
    print(f"one SAE   ours {n_tok / t_ours:12,.0f} tok/s   reference {n_tok / t_ref:12,.0f} tok/s"
          f"   ratio {t_ref / t_ours:5.2f}x")

    stacked = {k: np.stack([s.params[k] for s in saes]) for k in saes[0].params}
    for g, s in enumerate(saes):
        write_interplm(s, tmp / f"sae{g}")

    def ours_sweep():
        return feature_stats("relu", stacked, row_chunks(store, 1, args.chunk_tokens), stacked=True).max

    def theirs_sweep():
        return np.stack([theirs(tmp / f"sae{g}" / "ae.pt") for g in range(len(saes))])

    t_ours_g, t_ref_g, m_g, m_ref_g = paired_times(ours_sweep, theirs_sweep, args.repeats)
    np.testing.assert_allclose(m_g, m_ref_g, rtol=1e-4, atol=1e-5)
    total = n_tok * len(saes)
    print(f"sweep x{len(saes)} ours {total / t_ours_g:12,.0f} SAE-tok/s   reference "
          f"{total / t_ref_g:12,.0f} SAE-tok/s   ratio {t_ref_g / t_ours_g:5.2f}x")


if __name__ == "__main__":
    main()
