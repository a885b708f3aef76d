"""Data of the HTML feature browser at a paper-like size: top proteins and activation windows
of every live feature (two batched store passes, ``interplm_jax.report.examples``) vs a naive
per-feature loop (per-protein maxima as ours, then for each feature: argsort its column, read
each top protein from the store and compute that feature's activations in NumPy).

The loop is timed on ``--baseline-features`` features and extrapolated linearly to all live
features (it is linear in them); both are checked to agree on those features. Prints the HTML
size of a page with that data (one layer, UMAP points, proteins) and optionally writes it.

    python benchmarks/report.py [--proteins 500] [--d-model 320] [--features 10240] [--html page.html]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import real_proteins  # noqa: E402
from interplm_jax.annotate.activations import protein_max_activations, sae_encoder  # noqa: E402
from interplm_jax.report.build import FORMAT, VERSION, _features_json, render_html  # noqa: E402
from interplm_jax.report.config import ReportConfig  # noqa: E402
from interplm_jax.report.examples import feature_examples, quantise, window  # noqa: E402
from interplm_jax.store import write_store  # noqa: E402


def naive(store, layer: int, params: dict, max_acts: np.ndarray, features: np.ndarray,
          n_top: int, size: int) -> list:
    """For each feature: its top proteins by argsort; read and encode each (one column)."""
    out = []
    fmax = max_acts.max(axis=0)
    for f in features:
        w, b, s = params["W_enc"][:, f], params["b_enc"][f], params["scale"][f]
        rows = []
        for p in np.argsort(-max_acts[:, f], kind="stable")[:n_top]:
            if max_acts[p, f] <= 0:
                break
            a = np.maximum((store.protein(int(p), layer) - params["b_pre"]) @ w + b, 0) * s
            st = window(a, size)
            rows.append((int(p), st, quantise(a[st:st + size], float(fmax[f]))))
        out.append(rows)
    return out


@click.command()
@click.option("--proteins", default=500, show_default=True)
@click.option("--d-model", default=320, show_default=True)
@click.option("--features", default=10240, show_default=True)
@click.option("--baseline-features", default=512, show_default=True,
              help="Features the naive loop is timed on (then extrapolated).")
@click.option("--batch-rows", default=8192, show_default=True)
@click.option("--html", default=None, help="Also write the page here (to open in a browser).")
def main(proteins: int, d_model: int, features: int, baseline_features: int, batch_rows: int,
         html: str | None):
    import jax

    cfg = ReportConfig(batch_rows=batch_rows)
    rng = np.random.default_rng(0)
    prots, source = real_proteins(proteins)
    acts = [rng.normal(size=(len(p.sequence), d_model)).astype(np.float32) for p in prots]
    params = {"b_pre": np.zeros(d_model, np.float32),
              "W_enc": rng.normal(size=(d_model, features)).astype(np.float32) / np.sqrt(d_model),
              "b_enc": rng.uniform(-3.5, -2.0, features).astype(np.float32),
              "scale": np.ones(features, np.float32),
              "W_dec": np.zeros((features, d_model), np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "s", [p.id for p in prots], {1: acts}, shard_size=100)
        del acts
        encode = sae_encoder(params, np.arange(4))  # warm-up: compile the encoder shapes
        protein_max_activations(store, 1, encode, batch_rows)
        t0 = time.perf_counter()
        ex = feature_examples(store, 1, "relu", params, cfg.top_proteins, cfg.window, batch_rows)
        t_ours = time.perf_counter() - t0
        max_acts = protein_max_activations(store, 1, sae_encoder(params, np.arange(features)),
                                           batch_rows)  # shared first pass, timed apart
        t0 = time.perf_counter()
        max_acts = protein_max_activations(store, 1, sae_encoder(params, np.arange(features)),
                                           batch_rows)
        t_pass1 = time.perf_counter() - t0
        sub = ex.features[np.linspace(0, len(ex.features) - 1, baseline_features).astype(int)]
        t0 = time.perf_counter()
        ref = naive(store, 1, params, max_acts, sub, cfg.top_proteins, cfg.window)
        t_sub = time.perf_counter() - t0
        n_pairs = sum(len(e) for e in ex.examples)
    pos = {f: k for k, f in enumerate(ex.features)}
    for f, rows in zip(sub, ref):
        mine = ex.examples[pos[f]]
        assert [r[0] for r in rows] == [e.protein for e in mine], f"feature {f}: other proteins"
        for (p, st, q), e in zip(rows, mine):
            assert st == e.start and np.abs(q.astype(int) - e.q.astype(int)).max() <= 1
    t_naive = t_pass1 + t_sub * len(ex.features) / len(sub)
    data = {"format": FORMAT, "version": VERSION, "title": "benchmark", "created": "", "model": None,
            "n_store_proteins": proteins, "config": {},
            "layers": [{"layer": 1, "sae": "bench", "arch": "relu", "n_features": features,
                        "normalized": False, "grid": {"columns": ["sae"], "rows": [["bench"]],
                                                      "chosen": "bench", "fixed": {}}}]}
    table: dict[int, int] = {}
    data["layers"][0]["features"] = _features_json(ex, table)
    xy = rng.normal(size=(2, features)).round(3)
    data["layers"][0]["umap"] = {"x": xy[0].tolist(), "y": xy[1].tolist(),
                                 "cluster": rng.integers(-1, 40, features).tolist()}
    order = sorted(table, key=table.get)
    data["proteins"] = {"id": [prots[p].id for p in order], "name": [""] * len(order),
                        "organism": [""] * len(order), "seq": [prots[p].sequence for p in order]}
    page = render_html(data)
    if html:
        Path(html).write_text(page)
    lengths = [len(p.sequence) for p in prots]
    print(f"device: {jax.devices()[0].device_kind}; {proteins} proteins ({sum(lengths)} tokens, "
          f"from {source}), d_model {d_model}, {features} features ({len(ex.features)} live, "
          f"{n_pairs} (feature, protein) examples)")
    print(f"ours (maxima + needed columns): {t_ours:8.2f} s")
    print(f"naive per-feature loop         : {t_naive:8.2f} s (maxima pass {t_pass1:.2f} s + "
          f"{t_sub:.2f} s for {len(sub)} features, extrapolated to {len(ex.features)})")
    print(f"speed-up                       : {t_naive / t_ours:8.2f}x")
    print(f"HTML page                      : {len(page.encode()) / 1e6:8.2f} MB "
          f"({len(order)} proteins in the table; top {cfg.top_proteins}, window {cfg.window})")


if __name__ == "__main__":
    main()
