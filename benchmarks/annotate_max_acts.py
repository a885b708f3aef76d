"""Per-protein max activations of the sampled features: batches of whole proteins reduced on
the device (``segment_max``) vs reading, encoding and reducing one protein at a time.

Builds a temporary activation store of random activations (ESM-2 8M width by default), then
prints medians of ``--repeats`` runs (after a warm-up that compiles) and their ratio.

    python benchmarks/annotate_max_acts.py [--proteins 400] [--d-model 320] [--features 1024]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import interleaved  # noqa: E402
from interplm_jax.annotate.activations import protein_max_activations, sae_encoder  # noqa: E402
from interplm_jax.store import write_store  # noqa: E402


def per_protein(store, layer, encode) -> np.ndarray:
    return np.stack([encode(store.protein(p, layer)).max(axis=0) for p in range(store.n_proteins)])




@click.command()
@click.option("--proteins", default=400, show_default=True)
@click.option("--d-model", default=320, show_default=True)
@click.option("--features", default=1024, show_default=True, help="Sampled features encoded.")
@click.option("--batch-rows", default=1024, show_default=True, help="Tokens per encoder step.")
@click.option("--repeats", default=3, show_default=True)
def main(proteins: int, d_model: int, features: int, batch_rows: int, repeats: int):
    import jax

    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 1022, size=proteins)
    acts = [rng.normal(size=(n, d_model)).astype(np.float32) for n in lengths]
    n_sae = 10 * features
    params = {"b_pre": np.zeros(d_model, np.float32),
              "W_enc": rng.normal(size=(d_model, n_sae)).astype(np.float32) / np.sqrt(d_model),
              "b_enc": np.full(n_sae, -1.0, np.float32), "scale": np.ones(n_sae, np.float32),
              "W_dec": np.zeros((n_sae, d_model), np.float32)}
    feats = np.sort(rng.choice(n_sae, features, replace=False))
    encode = sae_encoder(params, feats)
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "s", [f"P{i}" for i in range(proteins)], {1: acts},
                            shard_size=100)
        (t_loop, t_fast), (ref, got) = interleaved(
            [lambda: per_protein(store, 1, encode),
             lambda: protein_max_activations(store, 1, encode, batch_rows)], repeats)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    print(f"device: {jax.devices()[0].device_kind}; {proteins} proteins ({lengths.sum()} tokens), "
          f"d_model {d_model}, {features} of {n_sae} features")
    print(f"per-protein read + encode : {t_loop:8.3f} s (median of {repeats})")
    print(f"batched + segment_max     : {t_fast:8.3f} s (median of {repeats}, {batch_rows} rows)")
    print(f"speed-up                  : {t_loop / t_fast:8.2f}x")


if __name__ == "__main__":
    main()
