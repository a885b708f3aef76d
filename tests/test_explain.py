"""scripts/explain.py: one protein's features from the tiny ESM-2 and an SAE; the TSV against a
NumPy encode of hidden states taken from transformers directly, the page's data against the TSV,
and bad input (exit status 2, the file or option named)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from interplm_jax.cli import load_script
from interplm_jax.fasta import read_fasta
from interplm_jax.report import page_data
from interplm_jax.report.examples import unb64
from interplm_jax.sae_dir import SavedSAE, save_sae

REPO = Path(__file__).resolve().parents[1]
ALPHAFOLD = REPO / "data" / "demo" / "alphafold"
LAYER = 3


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    d, F = 32, 64
    p = {"b_pre": rng.normal(size=d).astype(np.float32) * 0.1,
         "W_enc": rng.normal(size=(d, F)).astype(np.float32) / np.sqrt(d),
         "b_enc": rng.uniform(-1.0, 0.2, F).astype(np.float32),
         "W_dec": rng.normal(size=(F, d)).astype(np.float32),
         "scale": rng.uniform(0.5, 2, F).astype(np.float32)}
    path = tmp_path_factory.mktemp("sae") / "sae"
    save_sae(path, SavedSAE("relu", p, meta={"layer": LAYER}))
    return path, p


def _hidden(model_dir: Path, sequence: str) -> np.ndarray:
    """(L, d) hidden states after LAYER, from transformers without torch_bridge."""
    import torch
    from transformers import AutoTokenizer, EsmModel

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = EsmModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    with torch.no_grad():
        out = model(**tok(sequence, return_tensors="pt"), output_hidden_states=True)
    return out.hidden_states[LAYER][0, 1:-1].numpy().astype(np.float64)


@pytest.fixture(scope="module")
def explained(tiny_esm, sae_dir, tmp_path_factory):
    """scripts/explain.py on O15552 (with its structure): (output directory, the protein, its
    activations (L, F) by a NumPy encode of transformers' hidden states)."""
    path, p = sae_dir
    protein = read_fasta(ALPHAFOLD / "sequences.fasta")[0][0]  # O15552, 330 residues
    out = tmp_path_factory.mktemp("explain") / "out"
    r = CliRunner().invoke(load_script(REPO / "scripts" / "explain.py").main,
                           ["--model", str(tiny_esm), "--sequence", protein.sequence, "--id", protein.id,
                            "--sae", str(path), "--structure", str(ALPHAFOLD / "O15552.cif.gz"),
                            "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    q = {k: v.astype(np.float64) for k, v in p.items()}
    want = np.maximum((_hidden(tiny_esm, protein.sequence) - q["b_pre"]) @ q["W_enc"] + q["b_enc"], 0) * q["scale"]
    return out, protein, want


def test_explain_tsv_equals_a_numpy_encode(explained):
    out, protein, want = explained
    with open(out / "activations.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    got = np.zeros_like(want)
    for row in rows:
        assert row["protein"] == protein.id
        i = int(row["residue"]) - 1
        assert row["amino_acid"] == protein.sequence[i]
        got[i, int(row["feature"])] = float(row["activation"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert all(float(row["activation"]) > 0 for row in rows) and len(rows) >= int((want > 1e-5).sum())
    # the page: the features it draws are the TSV's, quantised to the protein's maximum
    data = page_data((out / "index.html").read_text())
    (shown,) = data["proteins"]
    assert shown["id"] == protein.id and shown["seq"] == protein.sequence and shown["structure"]
    for f, m, text in shown["features"]:
        assert m == pytest.approx(want[:, f].max(), rel=1e-3)
        np.testing.assert_allclose(unb64(text) * m / 255, want[:, f], atol=m / 510 + 1e-4)
    # every residue's strongest feature is drawn
    assert set(np.argmax(want, axis=1)[want.max(axis=1) > 0]) <= {f for f, _, _ in shown["features"]}


def test_explain_page_in_chromium(explained, browser):
    """The one-protein page in headless Chromium: the features listed strongest first, the strip
    of the feature clicked is NumPy's activations, the structure is coloured by it on the strips'
    scale, and hovering a residue lists the features active there, strongest first."""
    from _browser import heat, open_page, rgb

    out, protein, want = explained
    shown = page_data((out / "index.html").read_text())["proteins"][0]["features"]
    maxima = {f: m for f, m, _ in shown}
    quantised = {f: unb64(text) * m / 255 for f, m, text in shown}
    pg = open_page(browser, (out / "index.html").as_uri())
    try:
        listed = pg.eval_on_selector_all("#featurelist a[data-feature]", "as => as.map(a => +a.dataset.feature)")
        assert sorted(listed) == sorted(maxima)
        assert [maxima[f] for f in listed] == sorted(maxima.values(), reverse=True)

        def strip() -> list[float]:
            return pg.eval_on_selector_all("#protein span[data-pos]", "ss => ss.map(s => +s.dataset.act)")

        assert pg.inner_text("#label").startswith(f"feature #{listed[0]}: no concept")
        np.testing.assert_allclose(strip(), want[:, listed[0]], atol=maxima[listed[0]] / 510 + 1e-4)
        f = listed[len(listed) // 2]
        pg.click(f"#featurelist a[data-feature='{f}']")
        assert pg.inner_text("#label").startswith(f"feature #{f}:")
        np.testing.assert_allclose(strip(), want[:, f], atol=maxima[f] / 510 + 1e-4)
        pg.wait_for_function("document.querySelector('#viewer3d') && document.querySelector('#viewer3d').dataset.row === '0'")
        assert pg.evaluate("window.featureBrowser.structureShown()") == protein.id
        colours = pg.evaluate("window.featureBrowser.viewerColours()")
        got = np.stack([rgb(colours[str(i)]) for i in range(len(protein.sequence))])
        np.testing.assert_allclose(got, np.stack([heat(a / maxima[f]) for a in want[:, f]]), atol=3)
        assert len(np.unique(got, axis=0)) > 5
        assert pg.evaluate("window.featureBrowser.viewerSticks()") == []  # no concept on this page

        i = int(np.argmax(want[:, f]))
        pg.hover(f"#protein span[data-pos='{i}']")
        assert pg.inner_text("#residue h2").startswith(f"{protein.sequence[i]}{i + 1}: strongest features")
        assert pg.eval_on_selector_all(".strip span.hl", "ss => ss.map(s => +s.dataset.pos)") == [i]
        rows = pg.eval_on_selector_all("#residue tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
        active = {g for g, a in quantised.items() if a[i] > 0}
        assert f in active and {int(r[0].lstrip("#")) for r in rows} == active
        values = [float(r[1]) for r in rows]
        assert values == sorted(values, reverse=True)
        for r in rows:
            g = int(r[0].lstrip("#"))
            assert float(r[1]) == pytest.approx(want[i, g], abs=maxima[g] / 510 + 1e-3)
        assert pg.problems == []
    finally:
        pg.close()


def test_explain_bad_input_exits_2(tiny_esm, sae_dir, tmp_path):
    path, _ = sae_dir
    main = load_script(REPO / "scripts" / "explain.py").main
    base = ["--model", str(tiny_esm), "--sae", str(path), "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(main, base + ["--sequence", "MKV1L"])
    assert r.exit_code == 2 and "--sequence query: invalid characters: '1'" in r.output
    r = CliRunner().invoke(main, base + ["--sequence", "MKVLAAGG", "--structure", str(ALPHAFOLD / "O15552.cif.gz")])
    assert r.exit_code == 2 and "O15552.cif.gz: not a structure of query: 330 residues" in r.output
    r = CliRunner().invoke(main, base + ["--sequence", "MKV", "--layer", "9"])
    assert r.exit_code == 2 and "layers [9] out of range" in r.output
    assert not (tmp_path / "o").exists()
