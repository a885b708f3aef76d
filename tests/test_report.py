"""The static HTML feature browser: its data (checked against plain NumPy) and the page itself in
headless Chromium (Debian's chromium driven by Playwright; skipped when either is absent unless
INTERPLM_REQUIRE_BROWSER=1)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from _browser import browser_or_skip, heat, open_page, rgb

from interplm_jax.annotate.activations import max_and_histogram
from interplm_jax.cli import load_script
from interplm_jax.errors import InputError
from interplm_jax.report import LayerInputs, report_data
from interplm_jax.report.examples import (b64, dequantise, feature_examples, quantise,
                                          top_proteins, unb64, window, windows)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
FASTA = DEMO / "swissprot_sample.fasta.gz"
METADATA = DEMO / "uniprotkb_features.tsv.gz"
ALPHAFOLD = DEMO / "alphafold"


def _load_script(name: str):
    return load_script(REPO / "scripts" / f"{name}.py")


# ---------------------------------------------------------------- the study (one fixture)

@dataclasses.dataclass(frozen=True)
class Study:
    root: Path
    store: Path
    layers: list[LayerInputs]


@pytest.fixture(scope="session")
def study(demo_study) -> Study:
    """The pipeline's demo study (tests/_study.py: layers 2 and 4, two SAEs per layer, analyses
    of layer 4), plus an LLM description file as a real `annotate.py features` run writes it."""
    from interplm_jax.annotate.describe import DESCRIPTION_COLUMNS, write_csv
    from interplm_jax.study import StudyLayout, report_inputs

    out = StudyLayout(demo_study.out)
    # a description for two features of the last layer (what a real annotation run writes)
    write_csv(out.annotate(4) / "descriptions.csv",
              [{"feature": 5, "status": "ok", "n_train": 10, "n_eval": 10,
                "summary": "Cysteine pairs of small secreted toxins",
                "description": "Fires on the cysteines of disulfide-rich peptides."},
               {"feature": 7, "status": "error", "error": "timeout"}], DESCRIPTION_COLUMNS)
    return Study(out.root, out.eval_store("model"), report_inputs(out, [2, 4]))


def _numpy_acts(store, layer: int, params: dict) -> list[np.ndarray]:
    """Per protein (length, F) float64: ReLU((x - b_pre) W_enc + b_enc) * scale, in NumPy."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    return [np.maximum((store.protein(i, layer) - p["b_pre"]) @ p["W_enc"] + p["b_enc"], 0)
            * p["scale"] for i in range(store.n_proteins)]


@pytest.fixture(scope="session")
def reference(study):
    """Layer -> (per-protein activations, per-protein maxima (P, F)) by NumPy."""
    from interplm_jax.sae_dir import load_sae
    from interplm_jax.store import ActivationStore

    store = ActivationStore.open(study.store)
    out = {}
    for li in study.layers:
        acts = _numpy_acts(store, li.layer, load_sae(li.sae).params)
        out[li.layer] = (acts, np.stack([a.max(axis=0) for a in acts]))
    return out


def _assert_live(got, fmax: np.ndarray) -> None:
    """``got`` are the live features of maxima ``fmax`` (F,) up to float32 noise at zero."""
    got = set(np.asarray(got).tolist())
    assert set(np.flatnonzero(fmax > 1e-5).tolist()) <= got <= set(np.flatnonzero(fmax > 0).tolist()) | {
        int(f) for f in np.flatnonzero(fmax >= 0) if fmax[f] < 1e-5}


def _assert_histogram(got, acts, bins: int) -> None:
    """``got`` (bins + 2,) counts == NumPy's: exactly 0, ``np.histogram`` of (0, 1] in ``bins``
    equal bins, above 1; a value within 1e-5 of a bin edge (float32 vs float64) may fall either side."""
    a = np.asarray(acts, np.float64).ravel()
    want = np.concatenate([[np.sum(a <= 0)],
                           np.histogram(a[(a > 0) & (a <= 1)], bins, range=(0, 1))[0],
                           [np.sum(a > 1)]])
    near = int(np.sum(np.abs(a[:, None] - np.linspace(0, 1, bins + 1)[None]) < 1e-5))
    got = np.asarray(got)
    assert got.shape == (bins + 2,) and got.sum() == a.size
    assert np.abs(got - want).sum() <= 2 * near, (got, want)


# ---------------------------------------------------------------- compact encoding

def test_quantise_round_trip():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 3.7, 500)
    a[::7] = 0
    q = quantise(a, 3.7)
    assert q.dtype == np.uint8 and q.max() <= 255
    assert np.abs(dequantise(q, 3.7) - a).max() <= 3.7 / 510 + 1e-12
    assert np.array_equal(unb64(b64(q)), q)
    assert quantise(np.array([5.0]), 4.0)[0] == 255  # clipped
    assert not quantise(np.ones(3), 0.0).any()


def test_window_centres_on_the_strongest_residue():
    a = np.zeros(300)
    a[250] = 1
    s = window(a, 96)
    assert s == 250 - 48 and s <= 250 < s + 96
    a = np.zeros(300)
    a[295] = 1
    assert window(a, 96) == 300 - 96  # clipped at the end
    assert window(np.ones(50), 96) == 0  # fits whole


@pytest.mark.parametrize("n", [1, 3, 40, 60])
def test_top_proteins_is_a_stable_argsort(n):
    rng = np.random.default_rng(1)
    m = rng.integers(0, 5, (40, 300)).astype(np.float32)  # many ties
    idx, val = top_proteins(m, n, chunk=128)
    ref = np.argsort(-m, axis=0, kind="stable")[:n].T
    assert np.array_equal(idx, ref)
    assert np.array_equal(val, np.take_along_axis(m.T, ref, 1))


def test_windows_match_the_one_column_functions():
    rng = np.random.default_rng(2)
    for n in (30, 96, 250):
        acts = np.maximum(rng.normal(size=(n, 7)), 0)
        scales = np.append(acts.max(axis=0)[:-1] * 1.5, 0.0)
        starts, q = windows(acts, scales, 96)
        for j in range(7):
            s = window(acts[:, j], 96)
            assert starts[j] == s
            assert np.array_equal(q[j], quantise(acts[s:s + 96, j], scales[j]))


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_feature_examples_on_a_synthetic_store(tmp_path, arch):
    """Both second passes (ReLU: NumPy columns; others: the batched encoder) agree with the
    SAE's own feature function applied protein by protein."""
    from interplm_jax.sae.features import feature_function
    from interplm_jax.store import write_store

    rng = np.random.default_rng(3)
    d, F = 16, 40
    acts = [rng.normal(size=(n, d)).astype(np.float32) for n in rng.integers(20, 300, 30)]
    store = write_store(tmp_path / "s", [f"P{i}" for i in range(30)], {1: acts}, shard_size=7)
    params = {"b_pre": rng.normal(size=d).astype(np.float32) * 0.1,
              "W_enc": rng.normal(size=(d, F)).astype(np.float32) / 4,
              "b_enc": rng.uniform(-1.5, 0, F).astype(np.float32),
              "scale": rng.uniform(0.5, 2, F).astype(np.float32),
              "W_dec": rng.normal(size=(F, d)).astype(np.float32)}
    params["b_enc"][3] = -100  # a dead feature
    if arch == "topk":
        params.update(k=np.int32(6), threshold=np.float32(0.0))
    feats = feature_function(arch, params)
    per_protein = [feats(a) for a in acts]
    maxima = np.stack([a.max(axis=0) for a in per_protein])
    ex = feature_examples(store, 1, arch, params, n_top=4, window_size=32, batch_rows=500,
                          profile_top=2, profile_bins=16, hist_bins=10)
    _assert_live(ex.features, maxima.max(axis=0))
    assert 3 not in ex.features
    every = np.concatenate(per_protein)  # every residue; scale up to 2: some above 1
    assert ex.hist.shape == (len(ex.features), 12) and ex.hist[:, -1].sum() > 0
    for k, f in enumerate(ex.features):
        _assert_histogram(ex.hist[k], every[:, f], 10)
    # an encoder without segment_max_counts: maxima and counts on the host, the same numbers
    _, host = max_and_histogram(store, 1, lambda x: np.asarray(feats(x)), 500, 10)
    np.testing.assert_array_equal(host[ex.features], ex.hist)
    for k, f in enumerate(ex.features):
        n_long = 0
        for e in ex.examples[k]:
            a = per_protein[e.protein][:, f]
            assert e.max_act == pytest.approx(a.max(), rel=1e-5, abs=1e-6)
            np.testing.assert_allclose(dequantise(e.q, ex.feature_max[k]), a[e.start:e.start + len(e.q)],
                                       atol=ex.feature_max[k] / 510 + 1e-5)
            # the first two proteins longer than the window: 16 maxima of equal runs of residues
            if len(a) > 32 and n_long < 2:
                n_long += 1
                edges = (np.arange(17) * len(a)) // 16  # run b: floor(b n / 16) .. floor((b + 1) n / 16)
                np.testing.assert_allclose(dequantise(e.profile, ex.feature_max[k]),
                                           [a[edges[b]:edges[b + 1]].max() for b in range(16)],
                                           atol=ex.feature_max[k] / 510 + 1e-5)
            else:
                assert e.profile is None
        got = [e.protein for e in ex.examples[k]]
        np.testing.assert_allclose(maxima[got, f], np.sort(maxima[:, f])[::-1][:len(got)], rtol=1e-5)


def test_feature_examples_match_numpy(study, reference):
    from interplm_jax.sae_dir import load_sae
    from interplm_jax.store import ActivationStore

    store = ActivationStore.open(study.store)
    li = study.layers[-1]
    sae = load_sae(li.sae)
    ex = feature_examples(store, li.layer, sae.arch, sae.params, n_top=5, window_size=40,
                          batch_rows=2048, hist_bins=20)
    acts, maxima = reference[li.layer]
    fmax = maxima.max(axis=0)
    _assert_live(ex.features, fmax)
    every = np.concatenate(acts)  # (all residues, F)
    for k, f in enumerate(ex.features):
        _assert_histogram(ex.hist[k], every[:, f], 20)
    np.testing.assert_allclose(ex.feature_max, fmax[ex.features], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ex.frequency, (maxima[:, ex.features] > 1e-6).mean(0), atol=0.02)
    for k, f in enumerate(ex.features):
        col = maxima[:, f]
        order = np.argsort(-col, kind="stable")
        got = [e.protein for e in ex.examples[k]]
        # same top proteins as NumPy (ties within float noise may swap places)
        np.testing.assert_allclose(col[got], col[order[:len(got)]], rtol=1e-4, atol=1e-6)
        assert min(5, int((col > 1e-5).sum())) <= len(got) <= min(5, int((col > 0).sum()))
        for e in ex.examples[k]:
            a = acts[e.protein][:, f]
            assert e.start <= int(np.argmax(a)) < e.start + len(e.q)
            assert len(e.q) == min(40, len(a))
            np.testing.assert_allclose(dequantise(e.q, ex.feature_max[k]),
                                       a[e.start:e.start + len(e.q)],
                                       atol=ex.feature_max[k] / 510 + 1e-5)


def test_layer_header_carries_the_store_statistics(study):
    from interplm_jax.store import ActivationStore
    from interplm_jax.store.stats import load_stats

    li = study.layers[-1]
    [layer] = report_data("t", study.store, FASTA, [li])["layers"]
    store = ActivationStore.open(study.store)
    x = store.rows(li.layer, 0, store.n_tokens).astype(np.float64)
    ratio = np.linalg.norm(x.mean(0)) / np.linalg.norm(x, axis=1).mean()
    assert layer["activations"]["mean_norm_ratio"] == pytest.approx(ratio, rel=1e-3)
    stats = load_stats(store, li.layer)
    assert layer["activations"]["outliers"] == sorted(set(sum(stats.outliers().values(), [])))


# ---------------------------------------------------------------- bad input

def test_bad_inputs_name_the_file(study, tmp_path):
    li = study.layers[-1]
    with pytest.raises(InputError, match="nope"):
        report_data("t", study.store, FASTA, [dataclasses.replace(li, sae=tmp_path / "nope")])
    with pytest.raises(InputError, match="layer 9 not stored"):
        report_data("t", study.store, FASTA, [dataclasses.replace(li, layer=9)])
    fasta = tmp_path / "few.fasta"
    fasta.write_text(">P12345\nMKV\n")
    with pytest.raises(InputError, match="no sequence for protein"):
        report_data("t", study.store, fasta, [li])
    sweep = tmp_path / "sweep"
    shutil.copytree(li.sweep, sweep, ignore=shutil.ignore_patterns("checkpoints", "saes"))
    with open(sweep / "metrics.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(InputError, match=r"metrics.jsonl:\d+: not a metrics line"):
        report_data("t", study.store, FASTA, [dataclasses.replace(li, sweep=sweep)])
    from interplm_jax.report.inputs import descriptions
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "descriptions.csv").write_text("feature,status,summary\nx,ok,a\n")
    with pytest.raises(InputError, match=r"descriptions.csv:2: feature 'x'"):
        descriptions(tmp_path / "run")
    from click.testing import CliRunner
    r = CliRunner().invoke(_load_script("report").main,
                           ["--store", str(study.store), "--fasta", str(FASTA), "--out",
                            str(tmp_path / "o"), "--layer", "layer=4,sae=x"])
    assert r.exit_code == 2 and "missing ['sweep']" in r.output


def test_a_title_with_template_markers_stays_text():
    from interplm_jax.report.build import page_data, render_html

    data = {"title": "study __DATA__ <b>__TITLE__</b> __SCRIPTS__ __VIEWER__", "layers": []}
    page = render_html(data)
    assert "<title>study __DATA__ &lt;b&gt;__TITLE__&lt;/b&gt; __SCRIPTS__ __VIEWER__</title>" in page
    assert page_data(page) == data


# ---------------------------------------------------------------- the page in Chromium

@pytest.fixture(scope="session")
def report_html(study, tmp_path_factory) -> Path:
    """index.html built by scripts/report.py with explicit --layer specs."""
    from click.testing import CliRunner

    out = tmp_path_factory.mktemp("report")
    args = ["--store", str(study.store), "--fasta", str(FASTA), "--metadata", str(METADATA),
            "--out", str(out), "--title", "Demo study", "--config", str(REPO / "configs" / "demo.yaml")]
    args += ["--structures", str(ALPHAFOLD), "--structure-store", str(study.root / "model" / "store_af"),
             "--structures-fasta", str(ALPHAFOLD / "sequences.fasta"),
             "--labels", str(study.root / "concepts" / "labels.npz"), "--bench", str(study.root / "bench")]
    keys = {v: k for k, v in _load_script("report").KEYS.items()}
    for li in study.layers:
        spec = {keys[f.name]: getattr(li, f.name) for f in dataclasses.fields(li)}
        args += ["--layer", ",".join(f"{k}={v}" for k, v in spec.items() if v is not None)]
    r = CliRunner().invoke(_load_script("report").main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    page = out / "index.html"
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing fetched
    return page


@pytest.fixture(scope="session")
def chromium():
    """Skip (or fail with INTERPLM_REQUIRE_BROWSER=1) before the study is built."""
    return browser_or_skip()


@pytest.fixture(scope="session")
def page(chromium, report_html, browser):
    """The report open in headless Chromium (``page.problems``: see tests/_browser.py)."""
    pg = open_page(browser, report_html.as_uri())
    yield pg
    pg.close()


def _strips(pg) -> list[dict]:
    """The top proteins shown (not the whole structure proteins): id and each residue's position and activation."""
    return pg.eval_on_selector_all("#feature .protein:not(.whole)", """els => els.map(e => ({
        id: e.dataset.protein,
        pos: [...e.querySelectorAll('span[data-pos]')].map(s => +s.dataset.pos),
        act: [...e.querySelectorAll('span[data-pos]')].map(s => +s.dataset.act),
        profile: [...e.querySelectorAll('svg.profile rect[data-bin]')].map(r => +r.dataset.act),
        letters: [...e.querySelectorAll('span[data-pos]')].map(s => s.textContent).join('')}))""")


def _check_feature(pg, study, reference, layer: int, f: int, sequences: dict):
    from interplm_jax.store import ActivationStore

    assert pg.inner_text("#feature h2").endswith(f"#{f}")
    acts, maxima = reference[layer]
    ids = ActivationStore.open(study.store).protein_ids
    col = maxima[:, f]
    shown = _strips(pg)
    assert min(8, int((col > 1e-5).sum())) <= len(shown) <= min(8, int((col > 0).sum()))
    assert shown
    order = np.argsort(-col, kind="stable")[:len(shown)]
    got = [ids.index(s["id"]) for s in shown]
    np.testing.assert_allclose(col[got], col[order], rtol=1e-4, atol=1e-6)
    # the histogram drawn: every residue by its activation (the last bar, above 1, only if any)
    counts = pg.eval_on_selector_all("#hist rect[data-count]", "rs => rs.map(r => +r.dataset.count)")
    every = np.concatenate([a[:, f] for a in acts])
    assert len(counts) in (21, 22)  # hist_bins 20 (the default: configs/demo.yaml keeps it)
    _assert_histogram(counts + [0] * (22 - len(counts)), every, 20)
    scale = col.max() / 255
    for s, p in zip(shown, got):
        a = acts[p][:, f]
        pos = np.array(s["pos"])
        assert len(pos) == min(96, len(a)) and int(np.argmax(a)) in pos
        np.testing.assert_allclose(s["act"], a[pos], atol=scale / 2 + 1e-5)
        assert s["letters"] == "".join(sequences[s["id"]][i] for i in pos)
        # the whole-sequence profile of the strongest 3 proteins longer than the window: the
        # maxima of equal runs of residues
        rank = [k for k, t in enumerate(shown) if len(sequences[t["id"]]) > 96]
        if s in [shown[k] for k in rank[:3]]:
            B = min(120, len(a))
            edges = (np.arange(B + 1) * len(a)) // B
            np.testing.assert_allclose(s["profile"], [a[edges[b]:edges[b + 1]].max() for b in range(B)],
                                       atol=scale / 2 + 1e-5)
        else:
            assert s["profile"] == []


def _best_f1(counts_path: Path, concept: str, f: int) -> float:
    """Best F1 over thresholds of (concept, feature), from the raw counts in NumPy."""
    return float(_best_f1_all(counts_path, concept)[f])


def test_page_in_headless_chromium(page, study, reference, tmp_path_factory):
    from interplm_jax.fasta import iter_records

    pg = page
    sequences = {r.id: r.sequence for r in iter_records(FASTA)}
    # the layer selector lists the study's layers; the last one is shown
    layers = [li.layer for li in study.layers]
    assert pg.eval_on_selector_all("#layer option", "os => os.map(o => +o.value)") == layers
    last = layers[-1]
    assert pg.input_value("#layer") == str(last)
    # the grid table: every SAE of the sweep, the chosen one highlighted
    grid = json.loads((study.layers[-1].sweep / "grid.json").read_text())
    assert pg.locator("#grid tbody tr").count() == len(grid)
    assert pg.inner_text("#grid tr.chosen td >> nth=0") == study.layers[-1].sae.name
    assert "activations: ||mean|| / mean token norm" in pg.inner_text("#layerinfo")
    header = pg.eval_on_selector_all("#grid th", "hs => hs.map(h => h.textContent)")
    cells = pg.eval_on_selector_all("#grid tr.chosen td", "ts => ts.map(t => t.textContent)")
    lines = [json.loads(x) for x in (study.layers[-1].sweep / "metrics.jsonl").read_text().splitlines()]
    final = [x for x in lines if x["sae"] == cells[0]][-1]
    for col, key in (("loss", "loss"), ("L0", "l0"), ("FVE", "fve")):
        assert float(cells[header.index(col)]) == pytest.approx(final[key], rel=1e-3, abs=1e-3)  # shown to 4 digits
    with open(study.layers[-1].selection_csv) as fh:  # the SAEs' row, not the shuffled baseline's
        score = next(float(r["mean_best_f1"]) for r in csv.DictReader(fh)
                     if (r["kind"], r["layer"], r["name"]) == ("sae", str(last), cells[0]))
    assert float(cells[header.index("selection F1")]) == pytest.approx(score, abs=1e-3)
    # the SAE beside the baselines on the held-out split: the report's summary.csv rows of the layer
    with open(study.layers[-1].concept_summary) as fh:
        want = [r for r in csv.DictReader(fh) if r["layer"] == str(last)]
    shown = pg.eval_on_selector_all("#baselines tbody tr",
                                    "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
    assert [r[0] for r in shown] == [{"sae": "SAE", "shuffled": "SAE on shuffled ESM-2", "neurons": "neurons",
                                      "random_init": "SAE on randomly initialised ESM-2"}[r["kind"]] for r in want]
    assert [float(r[2]) for r in shown] == pytest.approx([float(r["mean_test_f1"]) for r in want],
                                                         rel=1e-3, abs=1e-3)
    # the features list: the chosen SAE's live features
    listed = pg.eval_on_selector_all("#features li", "ls => ls.map(l => +l.dataset.feature)")
    assert listed == sorted(listed)
    _assert_live(listed, reference[last][1].max(axis=0))
    live = np.array(listed)

    # click a feature in the list: its top proteins, with activations equal to NumPy's
    f = int(live[len(live) // 2])
    pg.click(f"#features li[data-feature='{f}']")
    _check_feature(pg, study, reference, last, f, sequences)

    # click a point of the UMAP: the most isolated live feature, so the click is unambiguous
    pts = {int(g): pg.evaluate(f"window.featureBrowser.point({int(g)})") for g in live}
    xy = np.array(list(pts.values()))
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
    g = list(pts)[int(np.argmax(d.min(axis=1)))]
    box = pg.locator("#umap").bounding_box()
    pg.mouse.click(box["x"] + pts[g][0], box["y"] + pts[g][1])
    _check_feature(pg, study, reference, last, g, sequences)

    # search by a concept name: the features listed show that concept; the F1 row matches
    li = study.layers[-1]
    data = pg.evaluate("window.featureBrowser.data")
    layer_data = next(x for x in data["layers"] if x["layer"] == last)
    by_feature = layer_data["concepts"]["by_feature"]
    names = layer_data["concepts"]["names"]
    feat, row = next((int(k), v[0]) for k, v in by_feature.items() if not names[v[0][0]].startswith("amino"))
    concept = names[row[0]]
    pg.fill("#search", concept)
    hits = pg.eval_on_selector_all("#features li[data-feature]", "ls => ls.map(l => +l.dataset.feature)")
    assert feat in hits
    pg.click(f"#features li[data-feature='{feat}']")
    rows = pg.eval_on_selector_all("#concepts tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
    shown = next(r for r in rows if r[0] == concept.replace("_", ": ", 1))
    assert abs(float(shown[1]) - _best_f1(li.concept_f1, concept, feat)) < 1e-3
    # search by feature id
    pg.fill("#search", str(g))
    assert g in pg.eval_on_selector_all("#features li[data-feature]", "ls => ls.map(l => +l.dataset.feature)")
    pg.fill("#search", "")
    # the LLM description and the spatial row
    pg.click("#features li[data-feature='5']")
    assert "Cysteine pairs" in pg.inner_text("#description")
    pg.click("#features li[data-feature='7']")  # its annotation failed: no description
    assert pg.locator("#description").count() == 0
    spatial = layer_data.get("spatial", {}).get("rows", {})
    if spatial:
        k = next(iter(spatial))
        pg.click(f"#features li[data-feature='{k}']")
        assert pg.locator("#spatial tbody tr").count() == 1

    # the other layer: its own live features
    pg.select_option("#layer", str(layers[0]))
    listed = pg.eval_on_selector_all("#features li", "ls => ls.map(l => +l.dataset.feature)")
    _assert_live(listed, reference[layers[0]][1].max(axis=0))
    pg.select_option("#layer", str(last))
    pg.click(f"#features li[data-feature='{f}']")

    # no table is clipped at 1,400 px (the grid, the baselines, the feature's tables)
    assert pg.evaluate("[...document.querySelectorAll('.tablewrap')]"
                       ".filter(t => t.scrollWidth > t.clientWidth + 1).length") == 0

    # a screenshot that shows something
    from PIL import Image

    shot = tmp_path_factory.mktemp("screenshots") / "report.png"
    pg.screenshot(path=str(shot), full_page=True)
    img = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"))
    assert img.shape[1] == 1400 and img.shape[0] >= 900
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200  # text, heat strips, map colours
    assert img.std() > 20
    print(f"screenshot: {shot}")
    assert pg.problems == []


# ---------------------------------------------------------------- evidence: 3-D, tracks, concepts

def _open(pg, page_path: Path, fragment: str = "") -> None:
    pg.goto("about:blank")
    pg.goto(page_path.as_uri() + fragment)
    pg.wait_for_selector("body[data-ready='1']")


def test_structure_view_colours_follow_the_activations(page, report_html, study):
    """Deep link to a feature on O15552 (an AlphaFold model of the structure store): the viewer
    draws it, and the colour it gives each residue is the colour of NumPy's activation."""
    from PIL import Image

    from interplm_jax.sae_dir import load_sae
    from interplm_jax.store import ActivationStore

    pg, li = page, study.layers[-1]
    store = ActivationStore.open(study.root / "model" / "store_af")
    acts = _numpy_acts(store, li.layer, load_sae(li.sae).params)[store.protein_ids.index("O15552")]
    data = pg.evaluate("window.featureBrowser.data")
    F = next(x for x in data["layers"] if x["layer"] == li.layer)["features"]
    live = [f for f in F["ids"] if str(f) in F["struct"]]
    f = max(live, key=lambda g: np.ptp(acts[:, g]) / F["max"][F["ids"].index(g)])
    _open(pg, report_html, f"#layer={li.layer}&feature={f}&protein=O15552")
    pg.wait_for_function("window.featureBrowser.structureShown() === 'O15552'")
    colours = pg.evaluate("window.featureBrowser.viewerColours()")
    assert sorted(map(int, colours)) == list(range(len(acts)))
    fmax = F["max"][F["ids"].index(f)]
    want = np.stack([heat(a / fmax) for a in acts[:, f]])
    got = np.stack([rgb(colours[str(i)]) for i in range(len(acts))])
    np.testing.assert_allclose(got, want, atol=3)  # uint8 activations: 1/510 of the scale
    assert len(np.unique(got, axis=0)) > 5
    pg.wait_for_timeout(300)
    img = np.asarray(Image.open(io.BytesIO(pg.locator("#viewer3d").screenshot())).convert("RGB"))
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50 and (img.min(axis=2) < 200).mean() > 0.005
    # hovering a residue of the strip highlights it (the viewer labels it; the strip outlines it)
    cell = f".protein[data-protein='O15552'] span[data-pos='{int(np.argmax(acts[:, f]))}']"
    pg.hover(cell)
    assert pg.locator(cell).get_attribute("class") == "hl"
    assert "protein=O15552" in pg.evaluate("location.hash")
    assert page.problems == []


def _best_f1_all(counts_path: Path, concept: str) -> np.ndarray:
    """(F,) best F1 over thresholds of ``concept`` for every feature, in NumPy from the counts."""
    with np.load(counts_path) as z:
        c = [str(x) for x in z["concepts"]].index(concept)
        tp, fp, hits = (z[k][c].astype(float) for k in ("tp", "fp", "hits"))  # (F, T)
        prec = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
        denom = z["n_residues"][c] if z["per_residue"][c] else z["n_domains"][c]
        rec = (tp if z["per_residue"][c] else hits) / max(denom, 1)
        f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=prec + rec > 0)
    return f1.max(axis=1)


def test_deep_links_history_and_the_concept_view(page, report_html, study):
    pg = page
    first, last = study.layers[0], study.layers[-1]
    data = pg.evaluate("window.featureBrowser.data")
    ids = next(x for x in data["layers"] if x["layer"] == first.layer)["features"]["ids"]
    f, g = ids[1], ids[2]
    _open(pg, report_html, f"#layer={first.layer}&feature={f}")
    assert pg.input_value("#layer") == str(first.layer)
    assert pg.inner_text("#feature h2").endswith(f"#{f}")
    pg.click(f"#features li[data-feature='{g}']")
    assert pg.inner_text("#feature h2").endswith(f"#{g}") and f"feature={g}" in pg.evaluate("location.hash")
    pg.go_back()
    pg.wait_for_function(f"document.querySelector('#feature h2').textContent.endsWith('#{f}')")
    pg.go_forward()
    pg.wait_for_function(f"document.querySelector('#feature h2').textContent.endsWith('#{g}')")

    # the concept view of the best-scored concept: SAE and baselines' F1 equal NumPy's
    layer = next(x for x in data["layers"] if x["layer"] == last.layer)
    names = layer["concepts"]["names"]
    c = max(layer["concepts"]["by_concept"]["sae"], key=lambda k: layer["concepts"]["by_concept"]["sae"][k][0][1])
    name = names[int(c)]
    _open(pg, report_html, f"#layer={last.layer}&concept={name.replace('+', '%2B')}")
    assert pg.inner_text("#conceptname") == name.replace("_", ": ", 1)
    k = data["config"]["concept_features"]
    for kind, counts in (("sae", last.concept_f1), ("neurons", last.neurons_f1), ("shuffled", last.shuffled_f1),
                         ("random_init", last.random_init_f1)):
        rows = pg.eval_on_selector_all(f".kind[data-kind='{kind}'] tbody tr",
                                       "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
        ref = _best_f1_all(counts, name)
        want = np.sort(ref[ref > 0])[::-1][:k]
        assert [float(r[1]) for r in rows] == pytest.approx(want.tolist(), abs=1e-3)
        for r in rows:
            assert ref[int(r[0].lstrip("#"))] == pytest.approx(float(r[1]), abs=1e-3)
    # each column named with the model's family (the store's model_family)
    assert pg.eval_on_selector_all(".kind h3", "hs => hs.map(h => h.textContent)") == [
        "SAE features", "ESM-2 neurons", "SAE on shuffled ESM-2", "SAE on randomly initialised ESM-2"]
    # a feature link of the concept view opens the feature
    feat = pg.get_attribute(".kind[data-kind='sae'] tbody tr a", "data-feature")
    pg.click(".kind[data-kind='sae'] tbody tr a")
    assert pg.inner_text("#feature h2").endswith(f"#{feat}")
    assert page.problems == []


def test_annotation_tracks_equal_the_labels(page, report_html, study):
    """The bars under each residue are the protein's annotated residues of the feature's best
    concepts, read from the labels file's intervals."""
    pg, li = page, study.layers[-1]
    with np.load(study.root / "concepts" / "labels.npz") as z:
        pids, concepts = [str(x) for x in z["protein_ids"]], [str(x) for x in z["concepts"]]
        iv = {k: z[k] for k in ("iv_protein", "iv_concept", "iv_start", "iv_stop")}
    data = pg.evaluate("window.featureBrowser.data")
    layer = next(x for x in data["layers"] if x["layer"] == li.layer)
    names = layer["concepts"]["names"]
    checked = 0
    for f, rows in list(layer["concepts"]["by_feature"].items())[:12]:
        _open(pg, report_html, f"#layer={li.layer}&feature={f}")
        shown = pg.eval_on_selector_all("#feature .protein", """els => els.map(e => ({id: e.dataset.protein,
            cells: [...e.querySelectorAll('span[data-pos]')].map(s => [+s.dataset.pos,
              [...s.querySelectorAll('i.tr')].map(i => i.dataset.concept)])}))""")
        for s in shown:
            if s["id"] not in pids:
                continue
            p = pids.index(s["id"])
            for row in rows:
                name = names[row[0]]
                c = concepts.index(name)
                sel = (iv["iv_protein"] == p) & (iv["iv_concept"] == c)
                want = set()
                for a, b in zip(iv["iv_start"][sel], iv["iv_stop"][sel]):
                    want |= set(range(int(a), int(b)))
                got = {pos for pos, marks in s["cells"] if name in marks}
                assert got == want & {pos for pos, _ in s["cells"]}, (f, s["id"], name)
                checked += len(got)
    assert checked > 0


def test_hostile_text_is_shown_as_text(page, study, tmp_path):
    """Protein names, an LLM description and the title with markup: shown as text, never run."""
    import gzip

    from interplm_jax.annotate.describe import DESCRIPTION_COLUMNS, write_csv
    from interplm_jax.report import build_report

    evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    lines = gzip.decompress(METADATA.read_bytes()).decode().splitlines()
    col = lines[0].split("\t").index("Protein names")
    rows = [r.split("\t") for r in lines[1:]]
    for r in rows:
        r[col] = evil + " " + r[col]
    meta = tmp_path / "meta.tsv"
    meta.write_text("\n".join([lines[0]] + ["\t".join(r) for r in rows]) + "\n")
    li = study.layers[-1]
    run = tmp_path / "annotate"
    run.mkdir()
    write_csv(run / "descriptions.csv", [{"feature": 5, "status": "ok", "summary": evil,
                                          "description": evil}], DESCRIPTION_COLUMNS)
    page_path = build_report(evil, study.store, FASTA, [dataclasses.replace(li, annotations=run)],
                             tmp_path / "out", meta)
    pg = page.context.new_page()  # the session's browser
    try:
        pg.goto(page_path.as_uri() + f"#layer={li.layer}&feature=5")
        pg.wait_for_selector("body[data-ready='1']")
        assert pg.evaluate("window.__pwned") is None
        assert pg.locator("img").count() == 0
        assert pg.inner_text("#title") == evil and pg.title() == evil
        assert evil in pg.inner_text("#description")
        assert pg.inner_text("#feature .phead span:nth-child(2) >> nth=0").startswith(evil)
    finally:
        pg.close()


def test_concept_sticks_follow_the_annotations(page, report_html, tmp_path):
    """The residues the 3-D view draws as sticks are those of the picked concept's annotation
    track. The demo's structure proteins have no UniProt annotations, so O15552 is given tracks
    by hand in the page's data (the tracks themselves are checked against the labels above)."""
    from interplm_jax.report import page_data, render_html

    data = page_data(report_html.read_text())
    P, names = data["proteins"], data["track_names"]
    row = P["id"].index("O15552")
    P["tracks"][row] = [[0, 10, 14], [0, 100, 101], [1, 50, 53]]
    want = {names[0]: [10, 11, 12, 13, 100], names[1]: [50, 51, 52], "": []}
    layer = data["layers"][-1]
    f = next(int(k) for k, v in layer["features"]["struct"].items() if any(t[0] == row for t in v["top"]))
    path = tmp_path / "index.html"
    path.write_text(render_html(data))
    pg = page.context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        pg.goto(path.as_uri() + f"#layer={layer['layer']}&feature={f}&protein=O15552")
        pg.wait_for_function("window.featureBrowser && window.featureBrowser.structureShown() === 'O15552'")
        for name, residues in want.items():
            pg.select_option("#stickpick", name)
            pg.wait_for_function("want => JSON.stringify(window.featureBrowser.viewerSticks()) === JSON.stringify(want)",
                                 arg=residues, timeout=10000)
            if name:
                assert f"{len(residues)} residue(s) annotated" in pg.inner_text("#structnote")
        assert errors == []
    finally:
        pg.close()


# ---------------------------------------------------------------- the bench view

MODEL_NAMES = {"model": "ESM-2", "shuffled": "shuffled ESM-2", "random_init": "random-init ESM-2"}


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _front(x, y) -> set[int]:
    """Points no other point dominates (x no larger and y no smaller, one strictly): brute force."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    beaten = ((x[None] <= x[:, None]) & (y[None] >= y[:, None])
              & ((x[None] < x[:, None]) | (y[None] > y[:, None])))  # [i, j]: j beats i
    return set(np.flatnonzero(~beaten.any(axis=1)).tolist())


def _bench_rows(pg, table: str) -> list[dict]:
    """Rows of a bench table as shown: column -> (data-value or None, text)."""
    return pg.eval_on_selector_all(f"{table} tbody tr", """rs => rs.map(r => ({cls: r.className,
        cells: Object.fromEntries([...r.cells].map(c => [c.dataset.col, [c.dataset.value ?? null, c.textContent]]))}))""")


def test_bench_view(page, report_html, study):
    """The bench view in Chromium: the table's numbers are bench.csv's (chosen and control rows
    marked), sorting works, each plot draws every SAE with a finite value and its Pareto front is
    NumPy's, a point's tooltip names its SAE, the probe summary and the warnings are the bench's."""
    from interplm_jax.bench.table import METRICS

    pg, bench = page, study.root / "bench"
    first, last = study.layers[0].layer, study.layers[-1].layer
    table = _csv(bench / "bench.csv")
    hparams = [c for c in table[0] if c not in ("model", "layer", "sae", "arch", *METRICS, "chosen")]
    want = [r for r in table if r["layer"] == str(last)]
    _open(pg, report_html, f"#layer={last}")
    pg.click("#benchview")
    assert f"bench={last}" in pg.evaluate("location.hash")
    warnings = json.loads((bench / "warnings.json").read_text())
    assert warnings and pg.eval_on_selector_all("#benchwarnings li", "ls => ls.map(l => l.textContent)") == warnings

    rows = _bench_rows(pg, "#benchtable")
    assert len(rows) == len(want)
    shown = {(r["cells"]["model"][1], r["cells"]["sae"][1]): r for r in rows}
    for w in want:
        r = shown[(MODEL_NAMES[w["model"]], w["sae"])]
        for c in METRICS:
            value, text = r["cells"][c]
            if w[c] in ("", "nan"):
                assert value is None and text == "\u2013"
            else:
                assert float(value) == pytest.approx(float(w[c]), rel=5e-4)  # 4 significant digits
                assert float(text) == pytest.approx(float(w[c]), rel=1e-3, abs=1e-3)
        for h in hparams:
            v = r["cells"][h][0]
            assert v is None if w[h] == "" else float(v) == pytest.approx(float(w[h]), rel=5e-4)
        assert ("chosen" in r["cls"].split()) == (w["chosen"] == "True") == (r["cells"]["chosen"][1] == "\u2713")
        assert ("control" in r["cls"].split()) == (w["model"] != "model" or w["sae"] == "neurons")

    def column(col: str, text: bool = False) -> list:
        return [r["cells"][col][1] if text else float(r["cells"][col][0]) for r in _bench_rows(pg, "#benchtable")]

    pg.click("#benchtable th[data-col='l0']")
    assert column("l0") == pytest.approx(sorted(float(w["l0"]) for w in want), rel=5e-4)
    pg.click("#benchtable th[data-col='l0']")
    assert column("l0") == pytest.approx(sorted((float(w["l0"]) for w in want), reverse=True), rel=5e-4)
    pg.click("#benchtable th[data-col='sae']")
    assert column("sae", text=True) == sorted(w["sae"] for w in want)

    # the plots: every row with a finite value, the front of each model's SAEs as NumPy's
    for y in ("fve", "loss_recovered", "n_concepts"):
        fig = f"#pareto figure[data-y='{y}']"
        pts = pg.eval_on_selector_all(f"{fig} g.pt", "gs => gs.map(g => ({...g.dataset}))")
        finite = [w for w in want if w[y] not in ("", "nan")]
        assert finite and len(pts) == len(finite)
        for model in {w["model"] for w in finite}:
            saes = [w for w in finite if w["model"] == model and w["sae"] != "neurons"]
            front = {saes[i]["sae"] for i in _front([float(w["l0"]) for w in saes], [float(w[y]) for w in saes])}
            assert {p["sae"] for p in pts if p["model"] == model and p["front"] == "1"} == front
            line = pg.locator(f"{fig} polyline.front[data-model='{model}']")
            assert line.count() == (len(front) > 1)
        assert ({(p["model"], p["sae"]) for p in pts if p["chosen"] == "1"}
                == {(w["model"], w["sae"]) for w in finite if w["chosen"] == "True"})
        assert pg.locator(f"{fig} g.pt[data-chosen='1'] circle.ring").count() == sum(p["chosen"] == "1" for p in pts)

    # hover the most isolated point of the FVE plot: its tooltip names the SAE and its hyperparameters
    boxes = [pg.locator("#pareto figure[data-y='fve'] g.pt").nth(i).bounding_box() for i in range(len(want))]
    centres = np.array([[b["x"] + b["width"] / 2, b["y"] + b["height"] / 2] for b in boxes])
    gap = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1)) + np.eye(len(centres)) * 1e9
    i = int(np.argmax(gap.min(axis=1)))
    point = pg.eval_on_selector_all("#pareto figure[data-y='fve'] g.pt", f"gs => ({{...gs[{i}].dataset}})")
    pg.mouse.move(*centres[i])
    tip = pg.inner_text("#pareto figure[data-y='fve'] .tip")
    w = next(w for w in want if (w["model"], w["sae"]) == (point["model"], point["sae"]))
    assert f"{MODEL_NAMES[w['model']]} \u00b7 layer {last} \u00b7 {w['sae']}" in tip
    for h in hparams:
        assert w[h] == "" or f"{h} {float(w[h]):g}" in tip
    # a click on an SAE whose features the page does not have says so; the chosen one opens them
    browsable = w["model"] == "model" and w["chosen"] == "True"
    pg.mouse.click(*centres[i])
    if not browsable:
        assert f"{w['sae']}: measured in the bench, but its features are not in this page" in pg.inner_text("#benchnote")
        pg.click("#benchtable a[data-browse]")
    assert pg.evaluate("location.hash") == f"#layer={last}"
    assert pg.locator("#benchopened").count() == 1 and pg.locator("#features li[data-feature]").count() > 0

    # the probe summary: per probe the mean test F1 at each k, the hidden state apart
    _open(pg, report_html, f"#layer={last}&bench={last}")
    probes = {(r["cells"]["model"][1], r["cells"]["probe"][1]): r for r in _bench_rows(pg, "#benchtable-probes")}
    summary = [r for r in _csv(bench / "probes_summary.csv") if r["layer"] == str(last)]
    assert summary and len(probes) == len({(r["model"], r["probe"]) for r in summary})
    for s in summary:
        hidden = s["probe"] == "hidden"
        r = probes[(MODEL_NAMES[s["model"]], f"hidden state (d={s['k']})" if hidden else s["probe"])]
        assert float(r["cells"]["hidden state" if hidden else f"k={s['k']}"][0]) == pytest.approx(
            float(s["mean_test_f1"]), rel=5e-4)

    # the causal test (the demo study's causal.layers: the last layer): causal.csv's rows
    causal = {r["cells"]["concept"][1]: r for r in _bench_rows(pg, "#benchtable-causal")}
    tested = [r for r in _csv(bench / "causal.csv") if r["layer"] == str(last)]
    assert tested and set(causal) == {r["concept"] for r in tested}
    for w in tested:
        for c in ("feature", "n_residues", "delta_zero", "q_zero", "delta_clamp", "q_clamp"):
            assert float(causal[w["concept"]]["cells"][c][0]) == pytest.approx(float(w[c]), rel=5e-4, abs=1e-12)
    assert pg.inner_text("#benchtable-causal th[data-col='delta_zero']") == "zero: \u0394 log p"

    # another layer from the bench's own selector: its rows; the page follows
    pg.select_option("#benchlayer", str(first))
    assert len(_bench_rows(pg, "#benchtable")) == sum(r["layer"] == str(first) for r in table)
    assert f"bench={first}" in pg.evaluate("location.hash") and pg.input_value("#layer") == str(first)
    assert page.problems == []
