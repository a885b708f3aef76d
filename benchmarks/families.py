#!/usr/bin/env python
"""Extraction throughput of ESM C vs ESM-2 of the same size, and the cost of the statistics.

Both models are built locally with random weights at ESM-2 8M's shape (6 blocks, d=320, 20
heads; ESM C's SwiGLU MLP at 3x width, ESM-2's at 4x: 13 vs 12 d^2 parameters a block) and run
the same extraction code (token-budget batches, all 6 layers) on the same real proteins. The
statistics cost is the time of the streamed statistics of every layer of the shard
(``Moments.of_rows``, what ``StoreWriter.write_shard`` adds) over the time of the forward passes
that produced it. Medians of interleaved repeats; residues (real tokens) per second.

    python benchmarks/families.py [--n 200] [--repeats 3]
"""

from __future__ import annotations

import os
import tempfile

import click
import numpy as np
import torch

from _common import interleaved, real_proteins
from interplm_jax.store.stats import Moments
from torch_bridge.esm import ResidueTokenizer, embed_shard
from torch_bridge.models import load_model
from torch_bridge.tiny_esm import build_tiny_esm, build_tiny_esmc

LAYERS = [1, 2, 3, 4, 5, 6]


@click.command()
@click.option("--n", default=200, show_default=True, help="Proteins.")
@click.option("--repeats", default=3, show_default=True)
@click.option("--max-tokens", default=8192, show_default=True, help="Token budget of a batch.")
def main(n, repeats, max_tokens):
    torch.manual_seed(0)
    proteins, source = real_proteins(n)
    residues = sum(len(p.sequence) for p in proteins)
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in (("esm2", build_tiny_esm), ("esmc", build_tiny_esmc)):
            path = build(os.path.join(tmp, name), num_layers=6, hidden_size=320, num_heads=20)
            model, tok, _ = load_model(path, device="cpu")
            models[name] = (model, ResidueTokenizer(tok))

    def extract(name):
        model, tokens = models[name]
        return lambda: embed_shard(model, tokens, proteins, LAYERS, max_tokens)

    acts = {}

    def statistics():
        return {L: Moments.of_rows(a) for L, a in acts.items()}

    times, outs = interleaved([extract("esm2"), extract("esmc")], repeats)
    acts.update(outs[1])
    (t_stats,), _ = interleaved([statistics], repeats)
    n_params = {k: sum(p.numel() for p in m.parameters()) for k, (m, _) in models.items()}
    print(f"proteins: {n} from {source}; residues {residues}; lengths median "
          f"{int(np.median([len(p.sequence) for p in proteins]))}; torch threads {torch.get_num_threads()}")
    for name, t in zip(("esm2", "esmc"), times):
        print(f"{name}: {n_params[name] / 1e6:5.2f}M parameters, {residues / t:9.0f} residues/s "
              f"(median of {repeats})")
    print(f"ESM C / ESM-2 throughput: {times[0] / times[1]:.2f}x")
    print(f"statistics of {len(LAYERS)} layers: {t_stats:.3f} s = {100 * t_stats / times[1]:.1f}% of "
          f"the ESM C forward time, {100 * t_stats / times[0]:.1f}% of ESM-2's (goal < 3%)")


if __name__ == "__main__":
    main()
