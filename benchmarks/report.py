"""Data of the HTML feature browser at a paper-like size: top proteins, activation windows and
residue histograms of every live feature (two batched store passes,
``interplm_jax.report.examples``; the histogram's cost over the maxima pass alone printed as a
ratio) vs a naive per-feature loop (per-protein maxima as ours, then for each feature: argsort
its column, read each top protein from the store and compute that feature's activations in
NumPy).

The loop is timed on ``--baseline-features`` features and extrapolated linearly to all live
features (it is linear in them); both are checked to agree on those features. Prints the HTML
size of a page with that data (one layer, UMAP points, proteins) beside the size the same data
takes as plain JSON (how pages embedded it before gzip + DecompressionStream), and with
``--chromium`` the time until the page is interactive in headless Chromium (Debian's chromium
driven by Playwright; median of 3 loads).

    python benchmarks/report.py [--proteins 500] [--d-model 320] [--features 10240] [--html page.html]
        [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import real_proteins  # noqa: E402
from interplm_jax.annotate.activations import (max_and_histogram,  # noqa: E402
                                               protein_max_activations, sae_encoder)
from interplm_jax.report.build import (FORMAT, VERSION, _features_json, _Proteins,  # noqa: E402
                                       render_html)
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
@click.option("--chromium", default=None, help="Time the page's load in this Chromium (headless).")
def main(proteins: int, d_model: int, features: int, baseline_features: int, batch_rows: int,
         html: str | None, chromium: str | None):
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
        ex = feature_examples(store, 1, "relu", params, cfg.top_proteins, cfg.window, batch_rows,
                              hist_bins=cfg.hist_bins)
        t_ours = time.perf_counter() - t0
        max_acts = protein_max_activations(store, 1, sae_encoder(params, np.arange(features)),
                                           batch_rows)  # shared first pass, timed apart
        t0 = time.perf_counter()
        max_acts = protein_max_activations(store, 1, sae_encoder(params, np.arange(features)),
                                           batch_rows)
        t_pass1 = time.perf_counter() - t0
        max_and_histogram(store, 1, sae_encoder(params, np.arange(features)), batch_rows,
                          cfg.hist_bins)  # compile the histogram's shapes
        t0 = time.perf_counter()
        max_and_histogram(store, 1, sae_encoder(params, np.arange(features)), batch_rows,
                          cfg.hist_bins)
        t_hist = time.perf_counter() - t0
        sub = ex.features[np.linspace(0, len(ex.features) - 1, baseline_features).astype(int)]
        t0 = time.perf_counter()
        ref = naive(store, 1, params, max_acts, sub, cfg.top_proteins, cfg.window)
        t_sub = time.perf_counter() - t0
        n_pairs = sum(len(e) for e in ex.examples)
        table = _Proteins()
        features_json = _features_json(ex, store, Path(tmp) / "unused.fasta", table)
    pos = {f: k for k, f in enumerate(ex.features)}
    for f, rows in zip(sub, ref):
        mine = ex.examples[pos[f]]
        assert [r[0] for r in rows] == [e.protein for e in mine], f"feature {f}: other proteins"
        for (p, st, q), e in zip(rows, mine):
            assert st == e.start and np.abs(q.astype(int) - e.q.astype(int)).max() <= 1
    t_naive = t_pass1 + t_sub * len(ex.features) / len(sub)
    data = {"format": FORMAT, "version": VERSION, "title": "benchmark", "created": "", "model": None,
            "n_store_proteins": proteins, "config": dataclasses.asdict(cfg), "track_names": [],
            "layers": [{"layer": 1, "sae": "bench", "arch": "relu", "n_features": features,
                        "normalized": False, "grid": {"columns": ["sae"], "rows": [["bench"]],
                                                      "chosen": "bench", "fixed": {}}}]}
    data["layers"][0]["features"] = features_json
    xy = rng.normal(size=(2, features)).round(3)
    data["layers"][0]["umap"] = {"x": xy[0].tolist(), "y": xy[1].tolist(),
                                 "cluster": rng.integers(-1, 40, features).tolist()}
    by_id = {p.id: p.sequence for p in prots}
    order = list(table.row)
    data["proteins"] = {"id": order, "name": [""] * len(order), "organism": [""] * len(order),
                        "seq": [by_id[p] for p in order], "structure": [None] * len(order),
                        "tracks": [None] * len(order)}
    page = render_html(data)
    plain = len(json.dumps(data, separators=(",", ":")).encode())
    load = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(html) if html else Path(tmp) / "index.html"
        path.write_text(page)
        if chromium:
            load = load_seconds(path, chromium)
    lengths = [len(p.sequence) for p in prots]
    print(f"device: {jax.devices()[0].device_kind}; {proteins} proteins ({sum(lengths)} tokens, "
          f"from {source}), d_model {d_model}, {features} features ({len(ex.features)} live, "
          f"{n_pairs} (feature, protein) examples)")
    print(f"ours (maxima + needed columns): {t_ours:8.2f} s")
    print(f"naive per-feature loop         : {t_naive:8.2f} s (maxima pass {t_pass1:.2f} s + "
          f"{t_sub:.2f} s for {len(sub)} features, extrapolated to {len(ex.features)})")
    print(f"speed-up                       : {t_naive / t_ours:8.2f}x")
    print(f"maxima pass + residue histogram: {t_hist:8.2f} s ({t_hist / t_pass1:.2f}x the maxima "
          f"pass alone, {cfg.hist_bins} bins)")
    print(f"HTML page                      : {len(page.encode()) / 1e6:8.2f} MB "
          f"({len(order)} proteins in the table; top {cfg.top_proteins}, window {cfg.window}); "
          f"the data as plain JSON: {plain / 1e6:.2f} MB")
    if load is not None:
        print(f"interactive in headless Chromium: {load:8.2f} s (median of 3 loads)")


def load_seconds(path: Path, chromium: str) -> float:
    """Median seconds from navigation start until the page has drawn its feature list."""
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        for _ in range(3):
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            pg.goto(path.as_uri())
            pg.wait_for_selector("body[data-ready='1'] #features li")
            times.append(time.perf_counter() - t0)
            pg.close()
        browser.close()
    return statistics.median(times)


if __name__ == "__main__":
    main()
