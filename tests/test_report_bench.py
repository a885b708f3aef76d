"""The bench view's data (interplm_jax/report/bench.py) from a bench directory written by hand:
bench.csv whole and as written, the probe summary pivoted per probe, the warnings, bad input.
(The page itself: tests/test_report.py::test_bench_view, in Chromium.)"""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from conftest import REPO
from interplm_jax.bench.probes import summary
from interplm_jax.bench.table import write_table
from interplm_jax.cli import load_script
from interplm_jax.concepts.report import write_csv
from interplm_jax.errors import InputError
from interplm_jax.layout import BenchFiles
from interplm_jax.report import render_html
from interplm_jax.report.bench import bench_data, plain_table


def _row(model, sae, l1, l0, fve, rec=0.9, chosen=False, lr=3e-3):
    neurons = sae == "neurons"
    return {"model": model, "layer": 4, "sae": sae, "arch": "neuron" if neurons else "relu",
            **({} if neurons else {"l1": l1, "lr": lr}), "l0": l0, "fve": fve, "dead_frac": 0.25,
            "dense_frac": 0.0, "loss_recovered": rec, "n_concepts": 3, "mean_best_f1": 0.31,
            "test_f1": 0.2, "chosen": chosen}


@pytest.fixture
def bench(tmp_path) -> BenchFiles:
    files = BenchFiles(tmp_path / "bench")
    write_table(files.table, [_row("esm2", "sae000", 0.02, 40.0, 0.9, chosen=True),
                              _row("esm2", "sae001", 0.06, 12.5, 0.8, rec=math.nan, lr=1e-4),
                              _row("esm2", "neurons", None, 32.0, 1.0, rec=1.0),
                              _row("shuffled", "sae000", 0.02, 41.0, 0.7, chosen=True)])
    probes = [{"model": "esm2", "layer": 4, "probe": p, "k": k, "concept": c, "test_f1": f}
              for p, ks in (("sae000", (1, 5)), ("neurons", (1, 5)), ("hidden", (32,)))
              for k in ks for c, f in (("a", 0.1 * k / 32 + 0.2), ("b", 0.4))]
    write_csv(files.probes_summary, summary(probes), ["model", "layer", "probe", "k", "mean_test_f1", "n_concepts"])
    files.warnings.write_text(json.dumps(["the selection split has 9 proteins (< 20)"]))
    return files


def test_bench_data_is_the_table(bench):
    data = bench_data(bench.root)
    assert data["columns"] == ["model", "layer", "sae", "arch", "l1", "lr", "l0", "fve", "dead_frac",
                               "dense_frac", "loss_recovered", "n_concepts", "mean_best_f1", "test_f1", "chosen"]
    assert data["hparams"] == ["l1", "lr"] and data["warnings"] == ["the selection split has 9 proteins (< 20)"]
    rows = {(r[0], r[2]): dict(zip(data["columns"], r)) for r in data["rows"]}
    assert rows[("esm2", "sae001")] == {
        "model": "esm2", "layer": 4, "sae": "sae001", "arch": "relu", "l1": 0.06, "lr": 0.0001, "l0": 12.5,
        "fve": 0.8, "dead_frac": 0.25, "dense_frac": 0.0, "loss_recovered": None, "n_concepts": 3,
        "mean_best_f1": 0.31, "test_f1": 0.2, "chosen": False}  # NaN: not measured
    assert rows[("esm2", "neurons")]["l1"] is None and rows[("esm2", "neurons")]["arch"] == "neuron"
    assert [k for k, r in rows.items() if r["chosen"]] == [("esm2", "sae000"), ("shuffled", "sae000")]
    render_html({"title": "t", **data})  # JSON without NaN


def test_probe_summary_one_row_per_probe(bench):
    (t,) = bench_data(bench.root)["tables"]
    assert t["key"] == "probes" and t["title"] and t["note"]
    assert t["columns"] == ["model", "layer", "probe", "k=1", "k=5", "hidden state", "concepts", "chosen"]
    # means over concepts a (0.1 k / 32 + 0.2) and b (0.4), by hand
    assert t["rows"] == [["esm2", 4, "sae000", 0.3016, 0.3078, None, 2, True],
                         ["esm2", 4, "neurons", 0.3016, 0.3078, None, 2, False],
                         ["esm2", 4, "hidden state (d=32)", None, None, 0.35, 2, False]]


def test_causal_table_per_concept(bench):
    from interplm_jax.bench.causal import COLUMNS, write_causal

    row = {c: 0.5 for c in COLUMNS} | {"model": "esm2", "layer": 4, "sae": "sae000", "feature": 7, "n_proteins": 3,
                                       "n_residues": 40, "null_size": 20}
    write_causal(bench.causal, [row | {"concept": "Helix", "delta_zero": -0.25, "p_zero": 0.01, "z_zero": math.nan},
                                row | {"concept": "Binding site_Zn(2+)", "p_zero": 0.04, "p_clamp": 0.2}])
    t = bench_data(bench.root)["tables"][1]
    assert t["key"] == "causal" and t["title"] and "Benjamini-Hochberg" in t["note"]
    assert t["columns"] == ["model", "layer", "concept", "feature", "n_residues", "n_proteins", "act_mean", "delta_zero",
                            "z_zero", "q_zero", "delta_clamp", "z_clamp", "q_clamp", "null_size"]
    # q by hand: p_zero 0.01, 0.04 -> 0.02, 0.04; p_clamp 0.5, 0.2 -> 0.5, 0.4
    assert t["rows"] == [["esm2", 4, "Helix", 7, 40, 3, 0.5, -0.25, None, 0.02, 0.5, 0.5, 0.5, 20],
                         ["esm2", 4, "Binding site_Zn(2+)", 7, 40, 3, 0.5, 0.5, 0.5, 0.04, 0.5, 0.5, 0.4, 20]]
    render_html({"title": "t", **bench_data(bench.root)})  # JSON without NaN


def test_plain_table_reads_any_bench_csv(tmp_path):
    path = tmp_path / "causal.csv"
    path.write_text("model,layer,concept,effect,p_value\nesm2,4,Binding site_Zn(2+),-0.25,0.004\nesm2,4,x,nan,\n")
    assert plain_table(path, {}) == {"columns": ["model", "layer", "concept", "effect", "p_value"],
                                     "rows": [["esm2", 4, "Binding site_Zn(2+)", -0.25, 0.004],
                                              ["esm2", 4, "x", None, None]]}


def test_bad_bench_names_the_file(bench, tmp_path):
    bench.warnings.write_text('{"not": "a list"}')
    with pytest.raises(InputError, match="warnings.json: expected a list of strings"):
        bench_data(bench.root)
    bench.warnings.write_text("[")
    with pytest.raises(InputError, match="warnings.json: not JSON"):
        bench_data(bench.root)
    with pytest.raises(InputError, match="bench.csv: not found"):
        bench_data(tmp_path / "nowhere")
    bench.warnings.unlink()
    bench.probes_summary.write_text(bench.probes_summary.read_text().replace("esm2,4,", "esm2,four,", 1))
    with pytest.raises(InputError, match=r"probes_summary.csv:2: layer 'four' and k '1' must be integers"):
        bench_data(bench.root)
    bench.table.write_text(bench.table.read_text().replace(",0.9,", ",high,", 1))
    with pytest.raises(InputError, match=r"bench.csv:2: fve = 'high' is not a number"):
        bench_data(bench.root)
    # the script: exit status 2 and the file named, before any store is read
    r = CliRunner().invoke(load_script(REPO / "scripts" / "report.py").main,
                           ["--store", str(tmp_path / "store"), "--fasta", str(REPO / "data" / "demo" / "alphafold" / "sequences.fasta"),
                            "--layer", "layer=4,sweep=s,sae=s", "--bench", str(tmp_path / "nowhere"),
                            "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "nowhere/bench.csv: not found" in r.output
    assert not (tmp_path / "out").exists()
