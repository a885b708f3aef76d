"""Templates, tables, answer parsers, metadata and Pearson r."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.stats

from interplm_jax.annotate.activations import activated_positions
from interplm_jax.annotate.llm import ParseError
from interplm_jax.annotate.metadata import read_uniprot_tsv, summarise_annotations
from interplm_jax.annotate.prompts import (TEMPLATES, load_template, parse_description,
                                           parse_json_answer, parse_predictions, quantize, render,
                                           residues_text)
from interplm_jax.annotate.validate import pearson_r
from interplm_jax.errors import InputError


def test_every_template_is_packaged_and_fills_completely():
    for name in TEMPLATES:
        t = load_template(name)
        names = {m.group("named") or m.group("braced") for m in t.pattern.finditer(t.template)
                 if m.group("named") or m.group("braced")}
        text = render(name, **{n: f"<{n}>" for n in names})
        assert "$" not in text and all(f"<{n}>" in text for n in names)


def test_prompt_dir_overrides_by_name_and_missing_values_are_named(tmp_path):
    (tmp_path / "describe.txt").write_text("Feature $feature only: $table")
    assert render("describe", tmp_path, feature=3, table="T", position_percent=50) == "Feature 3 only: T"
    assert render("validate_system", tmp_path, model="ESM-2").startswith("You are an expert")  # not overridden
    with pytest.raises(InputError, match=r"describe.txt uses \$table"):
        render("describe", tmp_path, feature=3)


def test_description_answer_parses_and_fails_clearly():
    text = "Thinking...\n<description>\nBinds zinc\nvia Cys.\n</description>\n<summary> Zinc\n finger Cys. </summary>"
    assert parse_description(text) == {"description": "Binds zinc\nvia Cys.", "summary": "Zinc finger Cys."}
    with pytest.raises(ParseError, match="no <summary>"):
        parse_description("<description>x</description>")
    with pytest.raises(ParseError, match="empty"):
        parse_description("<description> </description><summary>s</summary>")


def test_predictions_need_every_id_once_in_range():
    ids = ["P1", "Q2", "A0A3"]
    ok = "<predictions>\nP1: 0.7\n- Q2: 0\nA0A3 = 1.0\n</predictions>"
    assert parse_predictions(ok, ids) == {"P1": 0.7, "Q2": 0.0, "A0A3": 1.0}
    bad = {
        "no prediction for 1": "<predictions>P1: 0.1\nQ2: 0.2</predictions>",
        "unknown protein 'X9'": "<predictions>P1: 0.1\nQ2: 0.2\nA0A3: 0\nX9: 1</predictions>",
        "two predictions": "<predictions>P1: 0.1\nP1: 0.2\nQ2: 0\nA0A3: 0</predictions>",
        "outside": "<predictions>P1: 1.5\nQ2: 0.2\nA0A3: 0</predictions>",
        "not 'PROTEIN_ID: value'": "<predictions>P1: high\nQ2: 0.2\nA0A3: 0</predictions>",
        "no <predictions>": "P1: 0.1",
    }
    for why, text in bad.items():
        with pytest.raises(ParseError, match=re.escape(why)):
            parse_predictions(text, ids)


def test_json_answers():
    assert parse_json_answer('<answer>```json\n{"a": "b"}\n```</answer>', dict) == {"a": "b"}
    with pytest.raises(ParseError, match="expected list"):
        parse_json_answer('<answer>{"a": 1}</answer>', list)
    with pytest.raises(ParseError, match="not valid JSON"):
        parse_json_answer("<answer>{a: 1}</answer>", dict)


def test_quantize_and_residues():
    assert [quantize(a) for a in (0.0, 0.01, 0.26, 0.94, 1.3)] == [0.0, 0.1, 0.3, 0.9, 1.0]
    assert residues_text("MKHC", [2, 3], 2) == "H3, C4"
    assert residues_text("MKHC", [2], 5) == "H3 (+4 more)"
    assert residues_text("MKHC", [], 0) == "-"


def test_activated_positions_keep_the_strongest_in_sequence_order():
    acts = np.array([0.0, 0.9, 0.2, 1.0, 0.5, 0.6, 0.0])
    assert activated_positions(acts, 0.5, 10).tolist() == [1, 3, 4, 5]
    assert activated_positions(acts, 0.5, 2).tolist() == [1, 3]
    assert activated_positions(np.zeros(4), 0.5, 3).size == 0


def test_metadata_from_the_demo_tsv(demo_data):
    meta = read_uniprot_tsv(demo_data / "uniprotkb_features.tsv.gz")
    assert len(meta) == 110
    p = meta["A0B297"]
    assert p.length == len(p.sequence) == 512
    assert p.annotations == ("Domain: ABC transporter 1 (14-251); Domain: ABC transporter 2 "
                             "(262-507); Binding site: ATP (46-53)")
    row = {"Helix": "HELIX 3..9; /evidence=\"x\"; HELIX 12..20; /evidence=\"y\"",
           "Active site": 'ACT_SITE 41; /note="Proton acceptor"'}
    assert summarise_annotations(row) == "Active site: Proton acceptor (41); Helix: 2 segments"
    assert len(summarise_annotations({"Region": 'REGION 1..5; /note="' + "z" * 900 + '"'}, 100)) == 100


def test_metadata_errors_name_file_line_and_protein(tmp_path):
    bad = tmp_path / "m.tsv"
    bad.write_text("Entry\tProtein names\tLength\tSequence\nP1\tx\t3\tMKV\nP2\ty\t5\tMK\n")
    with pytest.raises(InputError, match=r"m.tsv, line 3 \(P2\): Length 5 but the sequence has 2"):
        read_uniprot_tsv(bad)
    bad.write_text("Entry\tLength\n")
    with pytest.raises(InputError, match="missing column"):
        read_uniprot_tsv(bad)


def test_pearson_r_against_scipy_and_by_hand():
    # by hand: dx = (-1, 0, 1), dy = (-4/3, -1/3, 5/3); dx.dy = 3, |dx|^2 = 2, |dy|^2 = 14/3
    assert pearson_r([1, 2, 3], [1, 2, 4]) == pytest.approx(3 / np.sqrt(2 * 14 / 3))
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = rng.normal(size=24), rng.normal(size=24)
        y = y + 0.5 * x
        assert pearson_r(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12)
    assert np.isnan(pearson_r([0.1, 0.1, 0.1], [0, 1, 2]))  # constant predictions
    assert pearson_r([1, 0], [0, 1]) == pytest.approx(-1.0)


def test_system_prompts_name_the_model_of_the_store():
    from interplm_jax.store.manifest import model_display_name

    assert model_display_name({"name": "x", "model_family": "esmc"}) == "ESM C"
    assert model_display_name({"name": "an older store"}) == "ESM-2"
    esmc = render("describe_system", model=model_display_name({"model_family": "esmc"}))
    assert "trained on the internal representations of the protein language model ESM C." in esmc
    assert "ESM-2" not in esmc + render("validate_system", model="ESM C")
    assert "the protein language model ESM-2 activates" in render("validate_system", model="ESM-2")
