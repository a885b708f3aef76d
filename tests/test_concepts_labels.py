"""UniProt TSV -> per-residue concept labels: hand-written rows with hand-written expectations,
malformed rows, the reference-parsing flag, and the real Swiss-Prot sample."""

import gzip
import re

import numpy as np
import pytest

from interplm_jax.concepts.labels import ConceptLabels, build_labels
from interplm_jax.concepts.uniprot import ParseReport, parse_location, read_uniprot_tsv
from interplm_jax.errors import InputError

HEADER = ["Entry", "Length", "Sequence", "AlphaFoldDB", "Active site", "Binding site", "Cofactor",
          "Disulfide bond", "Helix", "Domain [FT]", "Region", "Motif", "Signal peptide"]


def tsv(tmp_path, rows, name="x.tsv"):
    lines = ["\t".join(HEADER)] + ["\t".join(r.get(h, "") for h in HEADER) for r in rows]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


P1 = {"Entry": "P1", "Length": "12", "Sequence": "MKTAYIAKQRQC", "AlphaFoldDB": "P1;",
      "Active site": 'ACT_SITE 3; /note="Proton acceptor"; /evidence="ECO:0000255"; '
                     'ACT_SITE 5; /evidence="ECO:0000255"',
      "Binding site": 'BINDING 2; /ligand="Zn(2+)"; /ligand_id="ChEBI:CHEBI:29105"; '
                      'BINDING 6..7; /ligand="Zn(2+)"; /note="shared"',
      "Cofactor": "COFACTOR: Name=Zn(2+); Xref=ChEBI:CHEBI:29105;",
      "Disulfide bond": 'DISULFID 4..12; /evidence="ECO:0000250"; DISULFID 9; /note="Interchain"',
      "Helix": 'HELIX 1..4; /evidence="ECO:0007829|PDB:1ABC"; HELIX <6..8; HELIX 10..>12',
      "Domain [FT]": 'DOMAIN 2..6; /note="DRBM"; /evidence="ECO:1"; DOMAIN 8..11; /note="DRBM; partial"',
      "Region": 'REGION ?..5; /note="Disordered"; REGION 3..6; /note="Disordered"',
      "Motif": 'MOTIF P99999:1..3; /note="Other isoform"'}
P2 = {"Entry": "P2", "Length": "5", "Sequence": "ACDEX", "AlphaFoldDB": "P2;",
      "Binding site": 'BINDING 3; /ligand="Zn(2+)"', "Domain [FT]": 'DOMAIN 1..5; /note="DRBM"',
      "Signal peptide": 'SIGNAL 1..2; /evidence="ECO:0000255"'}
P3 = {"Entry": "P3", "Length": "3", "Sequence": "MKV", "Helix": "HELIX 1..3"}  # no AlphaFold DB


def domains(lab: ConceptLabels, protein: int, concept: str) -> list[set[int]]:
    """The domains of one concept on one protein as sets of 1-based positions."""
    m = lab.matrix([protein]).toarray()[:, lab.concepts.index(concept)]
    return sorted(({int(i) + 1 for i in np.flatnonzero(m == d)} for d in set(m[m > 0])), key=min)


@pytest.fixture()
def hand(tmp_path):
    report = ParseReport("x")
    rows = list(read_uniprot_tsv(tsv(tmp_path, [P1, P2, P3]), report=report))
    return build_labels(rows, min_instances=2), report


def test_concept_names_follow_the_reference_order_and_frequency_rule(hand):
    lab, _ = hand
    assert lab.protein_ids == ["P1", "P2"]  # P3 has no AlphaFold DB entry
    named = [c for c in lab.concepts if not c.startswith("amino_acid")]
    assert named == ["Active site_any", "Binding site_Zn(2+)", "Binding site_any", "Glycosylation_any",
                     "Modified residue_any", "Transit peptide_any", "Compositional bias_any",
                     "Domain_DRBM", "Domain_any", "Region_Disordered", "Region_any", "Zinc finger_any",
                     "Motif_any", "Signal peptide_any", "Turn", "Helix", "Beta strand", "Coiled coil",
                     "Lipidation", "Disulfide bond"]
    assert lab.concepts[-1] == "amino_acid_Other" and len(lab.concepts) == len(named) + 21


def test_hand_written_rows_give_hand_written_labels(hand):
    lab, report = hand
    assert domains(lab, 0, "Active site_any") == [{3}, {5}]
    assert domains(lab, 0, "Binding site_Zn(2+)") == [{2}, {6, 7}]
    assert domains(lab, 0, "Binding site_any") == [{2}, {6, 7}]
    assert domains(lab, 0, "Domain_DRBM") == [{2, 3, 4, 5, 6}, {8, 9, 10, 11}]
    assert domains(lab, 0, "Region_Disordered") == [{3, 4, 5, 6}]   # ?..5 labels nothing
    assert domains(lab, 0, "Motif_any") == []                        # other isoform
    assert domains(lab, 0, "Helix") == [{1, 2, 3, 4}, {6, 7, 8}, {10, 11, 12}]
    assert domains(lab, 0, "Disulfide bond") == [{4, 12}, {9}]       # both bonded residues
    assert domains(lab, 1, "Domain_DRBM") == [{1, 2, 3, 4, 5}]
    assert domains(lab, 1, "Signal peptide_any") == [{1, 2}]
    assert domains(lab, 1, "amino_acid_Other") == [{5}]
    assert domains(lab, 1, "amino_acid_C") == [{2}]
    assert report.skipped_locations == {"Region": 1, "Motif": 1}
    # domain ids are unique within a concept across proteins
    m = lab.matrix([0, 1]).toarray()[:, lab.concepts.index("Domain_DRBM")]
    assert len(set(m[m > 0])) == 3
    res, dom = lab.counts([0, 1])
    j = lab.concepts.index("Binding site_Zn(2+)")
    assert (res[j], dom[j]) == (4, 3)
    j = lab.concepts.index("Disulfide bond")
    assert (res[j], dom[j]) == (3, 2)


def test_reference_parsing_reads_values_from_notes_only(tmp_path):
    rows = list(read_uniprot_tsv(tsv(tmp_path, [P1, P2, P3])))
    lab = build_labels(rows, min_instances=2, reference_parsing=True)
    assert domains(lab, 0, "Binding site_Zn(2+)") == []   # the note "shared" is not a ligand
    assert domains(lab, 1, "Binding site_any") == []
    assert domains(lab, 0, "Active site_any") == []       # 'Proton acceptor' occurs once; no-note entry dropped
    assert domains(lab, 1, "Signal peptide_any") == []    # no /note
    assert domains(lab, 0, "Domain_any") == [{2, 3, 4, 5, 6}, {8, 9, 10, 11}]
    assert domains(lab, 0, "Helix") == [{1, 2, 3, 4}, {6, 7, 8}, {10, 11, 12}]


def test_protein_filters(tmp_path):
    rows = list(read_uniprot_tsv(tsv(tmp_path, [P1, P2, P3, {**P2, "Entry": "P4"}])))
    lab = build_labels(rows, min_instances=2, require_alphafold=False, max_length=5)
    assert lab.protein_ids == ["P2", "P3"]  # P1 too long; P4 duplicates P2's sequence
    assert lab.meta["dropped_proteins"] == {"longer than max_length": 1, "duplicate sequence": 1}
    lab = build_labels(rows, require_alphafold=False, drop_duplicates=False, amino_acids=False)
    assert lab.protein_ids == ["P1", "P2", "P3", "P4"] and "amino_acid_A" not in lab.concepts


def test_overlapping_occurrences_later_one_wins(tmp_path):
    row = {"Entry": "Q1", "Length": "8", "Sequence": "MKVLAAGG", "AlphaFoldDB": "Q1;",
           "Region": 'REGION 1..6; /note="A"; REGION 4..8; /note="B"'}
    lab = build_labels(read_uniprot_tsv(tsv(tmp_path, [row])), min_instances=1)
    assert domains(lab, 0, "Region_any") == [{1, 2, 3}, {4, 5, 6, 7, 8}]
    assert domains(lab, 0, "Region_A") == [{1, 2, 3, 4, 5, 6}]


@pytest.mark.parametrize("column,cell,problem", [
    ("Domain [FT]", 'DOMAIN 5..3; /note="x"', "starts after it ends"),
    ("Helix", "HELIX 1..40", "outside the protein"),
    ("Helix", "HELIX abc", "is not 'p' or 's..e'"),
    ("Helix", "TURN 3..4", "entry key 'TURN'"),
    ("Sequence", None, "Length says"),
    ("Sequence", "AC1EJ", "invalid characters: '1J' (first at residue 3); the model's alphabet is"),
])
def test_malformed_rows_name_accession_and_column(tmp_path, column, cell, problem):
    bad = {**P2, "Entry": "BAD1", "Sequence": "ACDEF"}
    if cell is None:
        bad["Length"] = "7"
    else:
        bad[column] = cell  # (for Sequence: a residue outside the model's alphabet, issue 13)
    path = tsv(tmp_path, [P1, bad, P2])
    with pytest.raises(InputError, match=rf"x.tsv:3: protein 'BAD1', column '{re.escape(column)}'.*{re.escape(problem)}"):
        list(read_uniprot_tsv(path))
    report = ParseReport(str(path))
    kept = list(read_uniprot_tsv(path, "skip", report))
    assert [r.accession for r in kept] == ["P1", "P2"]
    assert [(m[0], m[1], m[2]) for m in report.malformed] == [(3, "BAD1", column)]


def test_rest_api_field_names_are_accepted(tmp_path):
    path = tmp_path / "rest.tsv"
    path.write_text("accession\tlength\tsequence\tft_helix\n"
                    "R1\t4\tMKVL\tHELIX 2..3; /evidence=\"ECO:1\"\n")
    (row,) = read_uniprot_tsv(path)
    assert row.occurrences[0].spans == ((1, 3),) and not row.has_alphafold


def test_parse_location_forms():
    assert parse_location("7", 10) == (6, 7)
    assert parse_location("<1..>10", 10) == (0, 10)
    assert parse_location("?..5", 10) is None and parse_location("5..?", 10) is None
    assert parse_location("P12345-2:3..4", 10) is None


def test_labels_round_trip(hand, tmp_path):
    lab, _ = hand
    lab.save(tmp_path / "l.npz")
    back = ConceptLabels.load(tmp_path / "l.npz")
    assert back.concepts == lab.concepts and back.protein_ids == lab.protein_ids
    assert (back.matrix([1, 0]) != lab.matrix([1, 0])).nnz == 0
    sub = lab.subset([1])
    named = np.array([not c.startswith("amino_acid") for c in lab.concepts])
    a, b = sub.matrix([0]).toarray(), lab.matrix([1]).toarray()
    assert ((a != 0) == (b != 0)).all()
    assert (a[:, named] == b[:, named]).all()  # domain ids kept (amino-acid ids are residue numbers)


COLUMN_OF = {"HELIX": "Helix", "DISULFID": "Disulfide bond", "STRAND": "Beta strand",
             "DOMAIN": "Domain [FT]"}


def _independent_counts(path, key):
    """Domains of feature ``key`` per accession, from the raw text with a plain per-residue loop:
    each usable occurrence writes its id on its residues (a later one overwrites), then the
    distinct ids left are counted."""
    out = {}
    with gzip.open(path, "rt") as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            row = dict(zip(header, line.rstrip("\n").split("\t")))
            ids = [0] * int(row["Length"])
            for n, loc in enumerate(re.findall(rf"(?:^|; ){key} ([^;\s]+)", row[COLUMN_OF[key]]), 1):
                if "?" in loc or ":" in loc:
                    continue
                ends = [int(x.strip("<>")) for x in loc.split("..")]
                positions = ends if key == "DISULFID" else range(ends[0], ends[-1] + 1)
                for pos in positions:
                    ids[pos - 1] = n
            out[row["Entry"]] = len(set(ids) - {0})
    return out


@pytest.mark.parametrize("source", ["demo", "shared"])
def test_real_swissprot_labels_lie_inside_proteins_and_domains_agree(source, demo_data, request):
    base = demo_data if source == "demo" else request.getfixturevalue("shared_data") / "swissprot"
    path = base / "uniprotkb_features.tsv.gz"
    report = ParseReport(str(path))
    lab = build_labels(read_uniprot_tsv(path, "error", report), min_instances=5, max_length=100_000,
                       require_alphafold=False, drop_duplicates=False)
    assert not report.malformed and lab.n_proteins == report.n_rows
    assert (lab.iv_start >= 0).all() and (lab.iv_stop <= lab.lengths[lab.iv_protein]).all()
    assert (lab.iv_start < lab.iv_stop).all()
    m = lab.matrix(np.arange(lab.n_proteins))
    assert m.shape[0] == lab.offsets[-1]
    for key, concept in [("HELIX", "Helix"), ("DISULFID", "Disulfide bond"), ("STRAND", "Beta strand"),
                         ("DOMAIN", "Domain_any")]:
        expected = _independent_counts(path, key)
        for p, acc in enumerate(lab.protein_ids):
            _, dom = lab.counts([p], np.array([lab.concepts.index(concept)]))
            assert dom[0] == expected[acc], (acc, concept)


def test_reference_parsing_matches_the_reference_parser_on_real_rows(demo_data, tmp_path):
    """Our ``reference_parsing`` labels equal the reference's own per-row parsers
    (process_categorical_feature / process_binary_feature / process_interaction_feature) on the
    bundled Swiss-Prot rows, given the same concept values; compared as domain partitions."""
    from reference import reference_module

    pu = reference_module("interplm.analysis.concepts.parsing_utils")
    from interplm_jax.concepts.uniprot import COLUMNS

    path = demo_data / "uniprotkb_features.tsv.gz"
    lab = build_labels(read_uniprot_tsv(path), min_instances=3, max_length=100_000,
                       require_alphafold=False, drop_duplicates=False, reference_parsing=True)
    with gzip.open(path, "rt") as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = [dict(zip(header, line.rstrip("\n").split("\t"))) for line in f]
    assert [r["Entry"] for r in rows] == lab.protein_ids

    def partition(ids):
        ids = np.asarray(ids, dtype=np.int64)
        return sorted(tuple(np.flatnonzero(ids == d)) for d in set(ids[ids > 0].tolist()))

    n_compared = 0
    for col in COLUMNS:
        if col.kind == "categorical":
            names = [c for c in lab.concepts if c.startswith(col.prefix + "_")]
            options = [c[len(col.prefix) + 1:] for c in names]
        else:
            names = [col.prefix]
        cols = np.array([lab.concepts.index(c) for c in names])
        current = {o: 1 for o in options} if col.kind == "categorical" else 1
        for p, row in enumerate(rows):
            cell = row[col.name] or None
            if col.kind == "categorical":
                ref_cols, current = pu.process_categorical_feature(cell, col.key, options, len(row["Sequence"]), current)
            elif col.kind == "binary":
                ref, current = pu.process_binary_feature(cell, col.key, len(row["Sequence"]), current)
                ref_cols = [ref]
            else:
                ref, _ = pu.process_interaction_feature(cell, col.key, len(row["Sequence"]))
                ref_cols = [[int(x) for x in ref]]
            ours = lab.matrix([p], cols).toarray()
            for j, ref_ids in enumerate(ref_cols):
                if col.kind == "paired":   # the reference marks bonded residues with True
                    assert ((ours[:, j] > 0) == np.asarray(ref_ids, bool)).all(), (row["Entry"], names[j])
                else:
                    assert partition(ours[:, j]) == partition(ref_ids), (row["Entry"], names[j])
                n_compared += int(np.count_nonzero(ref_ids))
    assert n_compared > 5000


def test_no_protein_kept_is_an_input_error(tmp_path):
    rows = read_uniprot_tsv(tsv(tmp_path, [P3]))  # no AlphaFold DB entry
    with pytest.raises(InputError, match="no protein kept.*no AlphaFold DB entry"):
        build_labels(rows)
