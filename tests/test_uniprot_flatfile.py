"""Swiss-Prot flat files (``.dat``) read as the TSV of their entries: the bundled real entries
against the TSV conversion made independently from the same flat file (data/demo)."""

import gzip
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from interplm_jax.annotate.metadata import read_uniprot_tsv as read_metadata
from interplm_jax.cli import load_script
from interplm_jax.concepts.flatfile import (FLAT_HEADER, count_entries, open_uniprot_table,
                                            protein_names)
from interplm_jax.concepts.labels import ConceptLabels, build_labels
from interplm_jax.concepts.uniprot import read_uniprot_tsv
from interplm_jax.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def table(path) -> dict[str, dict[str, str]]:
    with open_uniprot_table(path) as (header, rows):
        return {cells[0]: dict(zip(header, cells)) for _, cells in rows}


@pytest.fixture(scope="module")
def demo_pair(demo_data, tmp_path_factory):
    """The bundled flat file and a TSV of the same entries cut from the demo TSV."""
    dat = demo_data / "uniprot_sprot_sample.dat.gz"
    accessions = list(table(dat))
    lines = gzip.open(demo_data / "uniprotkb_features.tsv.gz", "rt").read().splitlines()
    by_acc = {line.split("\t")[0]: line for line in lines[1:]}
    tsv = tmp_path_factory.mktemp("flat") / "same_entries.tsv"
    tsv.write_text("\n".join([lines[0]] + [by_acc[a] for a in accessions]) + "\n")
    return dat, tsv


def test_flat_file_entries_equal_their_tsv_conversion(demo_pair):
    dat, tsv = demo_pair
    flat, conv = table(dat), table(tsv)
    assert list(flat) == list(conv) == ["F0JBF0", "G2TRQ9", "P04403", "P15711", "P58928",
                                        "Q04958", "Q80WC7"]
    for acc in flat:
        assert {c: flat[acc][c] for c in FLAT_HEADER} == {c: conv[acc][c] for c in FLAT_HEADER}, acc
    # spot checks of the conversion against the flat file's own lines
    assert flat["P04403"]["Protein names"].startswith("2S sulfur-rich seed storage protein 1 "
                                                      "(Ber e 1) [Cleaved into: ")
    assert flat["F0JBF0"]["Reviewed"] == "unreviewed" and flat["P04403"]["AlphaFoldDB"] == ""
    assert flat["Q04958"]["Length"] == "1679" == str(len(flat["Q04958"]["Sequence"]))


@pytest.mark.parametrize("kw", [dict(min_instances=1, require_alphafold=False),
                                dict(min_instances=2, require_alphafold=True, amino_acids=False),
                                dict(min_instances=1, require_alphafold=False, max_length=2000,
                                     reference_parsing=True)])
def test_flat_file_gives_the_labels_of_the_tsv(demo_pair, kw):
    dat, tsv = demo_pair
    a, b = (build_labels(read_uniprot_tsv(p), **kw) for p in (dat, tsv))
    assert a.protein_ids == b.protein_ids and a.concepts == b.concepts and a.n_concepts > 3
    for field in ("residues", "offsets", "iv_protein", "iv_concept", "iv_domain", "iv_start", "iv_stop"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_count_entries_of_both_kinds(demo_pair):
    dat, tsv = demo_pair
    assert count_entries(dat) == count_entries(tsv) == 7


def test_labels_script_and_metadata_take_the_flat_file(demo_pair, tmp_path):
    dat, tsv = demo_pair
    cli = load_script(REPO / "scripts" / "evaluate_concepts.py").main
    for name, src in (("dat", dat), ("tsv", tsv)):
        res = CliRunner().invoke(cli, ["labels", "--tsv", str(src), "--out", str(tmp_path / f"{name}.npz"),
                                       "--config", str(REPO / "configs" / "demo.yaml")])
        assert res.exit_code == 0, res.output
    a, b = ConceptLabels.load(tmp_path / "dat.npz"), ConceptLabels.load(tmp_path / "tsv.npz")
    assert a.concepts == b.concepts and a.protein_ids == b.protein_ids
    np.testing.assert_array_equal(a.iv_start, b.iv_start)
    assert read_metadata(dat) == read_metadata(tsv)


def test_whole_shared_flat_file_equals_its_tsv(shared_data):
    sp = shared_data / "swissprot"
    flat, conv = table(sp / "uniprot_sprot_sample.dat.gz"), table(sp / "uniprotkb_features.tsv.gz")
    assert len(flat) == len(conv) == 110
    assert all({c: flat[a][c] for c in FLAT_HEADER} == {c: conv[a][c] for c in FLAT_HEADER}
               for a in conv)


def test_protein_names_hand_worked():
    de = ["RecName: Full=Bifunctional protein Aas {ECO:0000255|HAMAP-Rule:MF_01162};",
          "Includes:",
          "  RecName: Full=Acyltransferase {ECO:0000255};",
          "           EC=2.3.1.40 {ECO:0000255};",
          "  AltName: Full=2-acyl-GPE acyltransferase;",
          "           Short=AAT;",
          "Includes:",
          "  RecName: Full=Acyl-ACP synthetase;",
          "Contains:",
          "  RecName: Full=Peptide 1;",
          "Flags: Precursor;"]
    assert protein_names(de) == ("Bifunctional protein Aas [Includes: Acyltransferase "
                                 "(2-acyl-GPE acyltransferase) (AAT); Acyl-ACP synthetase] "
                                 "[Cleaved into: Peptide 1]")
    assert protein_names(["SubName: Full=A {ECO:1};", "SubName: Full=B;", "EC=1.2.3.4;"]) == "A (B)"


def test_bad_flat_files_are_named(tmp_path, demo_data):
    text = gzip.open(demo_data / "uniprot_sprot_sample.dat.gz", "rt").read()
    cut = tmp_path / "cut.dat"
    cut.write_text(text[: text.index("//\n", 10) + 3] + "\n" + text[text.index("ID ", 10):][:300])
    with pytest.raises(InputError, match=r"cut.dat:\d+: entry 'TAM10_SCHPO' has no '//' line"):
        list(read_uniprot_tsv(cut))
    bad_id = tmp_path / "id.dat"
    bad_id.write_text(text.replace("Reviewed;", "Reviewd;", 1))
    with pytest.raises(InputError, match=r"id.dat:71: not a UniProtKB ID line: .ID   TAM10_SCHPO"):
        list(read_uniprot_tsv(bad_id))
    other = tmp_path / "notes.txt"
    other.write_text("some notes\n")
    with pytest.raises(InputError, match="neither a UniProtKB TSV .* nor a flat file"):
        list(read_uniprot_tsv(other))
    with pytest.raises(InputError, match="neither a UniProtKB TSV"):
        read_metadata(other)
