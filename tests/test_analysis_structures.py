"""AlphaFold structure reading (gemmi): file lookup, C-alpha traces, completeness checks."""

import gzip

import numpy as np
import pytest

from interplm_jax.analysis.structures import (Structure, index_directory, load_structures,
                                              mismatch, read_ca)
from interplm_jax.errors import InputError

THREE = {"A": "ALA", "G": "GLY", "L": "LEU", "K": "LYS", "E": "GLU", "M": "MET", "S": "SER"}


def write_ca_pdb(path, sequence, coords, numbers=None, drop_ca=()):
    """A C-alpha-only PDB file written with gemmi (gzip when the name ends in .gz)."""
    import gemmi

    st = gemmi.Structure()
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    numbers = range(1, len(sequence) + 1) if numbers is None else numbers
    for i, (aa, xyz, num) in enumerate(zip(sequence, coords, numbers)):
        res = gemmi.Residue()
        res.name, res.seqid = THREE[aa], gemmi.SeqId(int(num), " ")
        res.entity_type = gemmi.EntityType.Polymer
        if i not in drop_ca:
            atom = gemmi.Atom()
            atom.name, atom.element, atom.pos = "CA", gemmi.Element("C"), gemmi.Position(*xyz)
            res.add_atom(atom)
        else:  # keep the residue with another atom only
            atom = gemmi.Atom()
            atom.name, atom.element, atom.pos = "N", gemmi.Element("N"), gemmi.Position(*xyz)
            res.add_atom(atom)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    text = st.make_pdb_string()
    if str(path).endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _line(n):
    return np.stack([3.8 * np.arange(n), np.zeros(n), np.zeros(n)], axis=1)


def test_index_prefers_v4_and_mmcif_and_accepts_plain_names(tmp_path):
    for name in ["AF-P1-F1-model_v3.pdb", "AF-P1-F1-model_v4.pdb.gz", "AF-P1-F1-model_v4.cif",
                 "P2.pdb.gz", "P3.cif", "AF-P3-F1-model_v2.pdb", "notes.txt", "P4.fasta"]:
        (tmp_path / name).write_text("")
    idx = index_directory(tmp_path)
    assert {k: v.name for k, v in idx.items()} == {
        "P1": "AF-P1-F1-model_v4.cif", "P2": "P2.pdb.gz", "P3": "AF-P3-F1-model_v2.pdb"}
    with pytest.raises(InputError, match="not found"):
        index_directory(tmp_path / "missing")


def test_read_ca_round_trip(tmp_path):
    seq = "MKLAGES"
    coords = _line(7) + [1.0, 2.0, 3.0]
    st = read_ca(write_ca_pdb(tmp_path / "AF-P1-F1-model_v4.pdb.gz", seq, coords))
    assert st.sequence == seq
    np.testing.assert_allclose(st.ca, coords, atol=1e-3)
    assert mismatch(st, seq) is None
    assert mismatch(st, "MKLAGXS") is None  # X in the sequence matches anything


@pytest.mark.parametrize("case, reason", [
    ("short", "7 residues in the structure, 8 in the sequence"),
    ("letter", "residue 3 is L in the structure but A in the sequence"),
    ("gap", "missing residues: numbering jumps from 3 to 5"),
    ("start", "numbering starts at 2"),
    ("no_ca", "no C-alpha atom at residue(s) 4"),
])
def test_incomplete_structures_are_reported(tmp_path, case, reason):
    seq, numbers, drop, query = "MKLAGES", None, (), "MKLAGES"
    if case == "short":
        query = seq + "A"
    elif case == "letter":
        query = "MKAAGES"
    elif case == "gap":
        numbers = [1, 2, 3, 5, 6, 7, 8]
    elif case == "start":
        numbers = range(2, 9)
    elif case == "no_ca":
        drop = (3,)
    st = read_ca(write_ca_pdb(tmp_path / "x.pdb", seq, _line(7), numbers, drop))
    assert reason in mismatch(st, query)


def test_load_structures_uses_complete_ones_and_reports_the_rest(tmp_path):
    write_ca_pdb(tmp_path / "AF-P1-F1-model_v4.pdb", "MKLA", _line(4))
    write_ca_pdb(tmp_path / "P2.pdb.gz", "MKLA", _line(4))
    (tmp_path / "P3.cif").write_text("data_broken\n_atom_site.id\n")
    write_ca_pdb(tmp_path / "P1.pdb", "MKLA", _line(4))  # AlphaFold DB's v4 name wins
    s = load_structures({"P1": "MKLA", "P2": "MKLAG", "P3": "MK", "P4": "MM"}, tmp_path)
    assert list(s.coords) == ["P1"] and s.coords["P1"].shape == (4, 3)
    why = {p: r for p, _, r in s.excluded}
    assert "4 residues in the structure, 5 in the sequence" in why["P2"]
    assert "P3.cif" in why["P3"]
    assert why["P4"] == "no structure file"
    assert [r["status"] for r in s.report_rows()] == ["used", "excluded", "excluded", "excluded"]
    # which file was read is recorded for the used proteins too
    assert s.report_rows()[0]["file"] == str(tmp_path / "AF-P1-F1-model_v4.pdb")


def test_real_alphafold_models(shared_data):
    """Every AlphaFold model in ../shared/data: one C-alpha per residue, 3.8 A apart."""
    idx = index_directory(shared_data / "alphafold")
    assert len(idx) >= 5
    for acc, path in idx.items():
        st = read_ca(path)
        assert isinstance(st, Structure) and len(st.ca) == len(st.sequence) > 100
        assert mismatch(st, st.sequence) is None, acc
        steps = np.linalg.norm(np.diff(st.ca, axis=0), axis=1)
        assert abs(np.median(steps) - 3.8) < 0.1, acc
        assert np.mean(np.abs(steps - 3.8) < 0.2) > 0.9, acc  # low-pLDDT stretches stray
        assert 2.8 < steps.min() and steps.max() < 4.2, acc  # cis-peptides ~2.9 A
    # the same protein as mmCIF and PDB gives the same trace
    cif, pdb = (read_ca(shared_data / "alphafold" / f"Q7Z6M3.{ext}.gz") for ext in ("cif", "pdb"))
    assert cif.sequence == pdb.sequence
    np.testing.assert_allclose(cif.ca, pdb.ca, atol=1e-3)


def test_experimental_multichain_entry_is_excluded(shared_data):
    st = read_ca(shared_data / "pdb" / "2XHE.pdb.gz")
    assert "2 polymer chains" in mismatch(st, st.sequence)
