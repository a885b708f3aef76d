#!/usr/bin/env python
"""Extraction throughput: length-sorted token-budget batches vs fixed batches of 32 in file order.

The baseline is the reference extractor's way (32 sequences a batch, in FASTA order, padded to
the longest of each batch). Both run the same forward code on the same proteins, with an ESM-2
of the 8M model's architecture (6 layers, d=320, 20 heads; random weights, built locally), and
we report residues (real tokens) per second, medians of interleaved repeats.

    python benchmarks/extraction.py [--n 500] [--repeats 3]
"""

from __future__ import annotations

import os
import tempfile

import click
import numpy as np
import torch

from _common import median_time, real_proteins
from torch_bridge.esm import ResidueTokenizer, embed_batch, token_budget_batches
from torch_bridge.models import load_model
from torch_bridge.tiny_esm import build_tiny_esm


def run(model, tokens, proteins, batches, layers):
    for batch in batches:
        embed_batch(model, tokens, [proteins[i].sequence for i in batch], layers)


@click.command()
@click.option("--n", default=500, show_default=True, help="Proteins.")
@click.option("--repeats", default=3, show_default=True)
@click.option("--max-tokens", default=8192, show_default=True, help="Token budget of the bucketed batches.")
def main(n, repeats, max_tokens):
    torch.manual_seed(0)
    proteins, source = real_proteins(n)
    lengths = [len(p.sequence) for p in proteins]
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_esm(os.path.join(tmp, "esm8m-arch"), num_layers=6, hidden_size=320, num_heads=20)
        model, tok, _ = load_model(path, device="cpu")
    tokens = ResidueTokenizer(tok)
    layers = [1, 2, 3, 4, 5, 6]
    fixed = [list(range(i, min(i + 32, n))) for i in range(0, n, 32)]
    bucketed = token_budget_batches(lengths, max_tokens)

    def padded(batches):
        return sum(len(b) * (max(lengths[i] for i in b) + 2) for b in batches)

    run(model, tokens, proteins, fixed[:2], layers)  # warm-up
    t_fixed, t_bucket = [], []
    for _ in range(repeats):  # interleaved, so machine noise hits both alike
        t_fixed.append(median_time(lambda: run(model, tokens, proteins, fixed, layers), 1))
        t_bucket.append(median_time(lambda: run(model, tokens, proteins, bucketed, layers), 1))
    residues = sum(lengths)
    tf, tb = float(np.median(t_fixed)), float(np.median(t_bucket))
    print(f"proteins: {n} from {source}; residues {residues}; lengths median "
          f"{int(np.median(lengths))}, max {max(lengths)}; torch threads {torch.get_num_threads()}")
    print(f"fixed 32/batch, file order : {len(fixed):4d} batches, padded tokens {padded(fixed):8d}, "
          f"{residues / tf:9.0f} residues/s (median of {repeats})")
    print(f"token budget {max_tokens}, sorted: {len(bucketed):4d} batches, padded tokens "
          f"{padded(bucketed):8d}, {residues / tb:9.0f} residues/s (median of {repeats})")
    print(f"speed-up: {tf / tb:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
