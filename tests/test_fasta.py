import gzip
from pathlib import Path

import pytest

from interplm_jax.errors import InputError
from interplm_jax.fasta import read_fasta, record_id, sample_proteins, write_fasta, Protein

GOOD = ">sp|P1|A_HUMAN first\nMKVL\nAAG\n>p2 second\nmkvw*\n>p3\nACDEFGHIKLMNPQRSTVWYXBUZO\n"


def write(tmp_path, text, name="x.fasta"):
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    return path


def test_reads_plain_and_gzip_alike(tmp_path):
    plain, _ = read_fasta(write(tmp_path, GOOD))
    gz, _ = read_fasta(write(tmp_path, GOOD, "x.fasta.gz"))
    assert plain == gz
    assert [(p.id, p.sequence, p.line) for p in plain] == [
        ("P1", "MKVLAAG", 1), ("p2", "MKVW", 4), ("p3", "ACDEFGHIKLMNPQRSTVWYXBUZO", 6)]


def test_uniprot_accession_or_first_word():
    assert record_id("sp|P69905|HBA_HUMAN Hemoglobin") == "P69905"
    assert record_id("tr|A0A1|X_Y z") == "A0A1"
    assert record_id("sp|P69905|HBA_HUMAN Hemoglobin", "first-word") == "sp|P69905|HBA_HUMAN"
    assert record_id("my_protein some words") == "my_protein"


BAD = ">ok\nMKV\n>empty\n>dup\nMK\n>dup\nMV\n>weird\nMK1Z\n>long\nMKVLMKVLMKV\n"


def test_every_bad_record_is_reported_with_id_and_line(tmp_path):
    path = write(tmp_path, BAD)
    with pytest.raises(InputError) as e:
        read_fasta(path, max_length=10)
    msg = str(e.value)
    assert "4 invalid record(s) of 6" in msg
    assert f"{path}:3: protein 'empty': empty sequence" in msg
    assert f"{path}:6: protein 'dup': duplicate id" in msg
    assert f"{path}:8: protein 'weird': invalid characters: '1' (first at residue 3)" in msg
    assert f"{path}:10: protein 'long': too long: 11 residues > max length 10" in msg


def test_skip_policy_keeps_the_valid_and_counts_the_rest(tmp_path):
    proteins, report = read_fasta(write(tmp_path, BAD), max_length=10, on_invalid="skip")
    assert [p.id for p in proteins] == ["ok", "dup"]
    assert report.n_records == 6 and report.n_kept == 2
    assert report.counts() == {"empty sequence": 1, "duplicate id": 1, "invalid characters": 1,
                               "too long": 1}


def test_structural_errors(tmp_path):
    with pytest.raises(InputError, match=r"x.fasta:1: sequence data before the first"):
        read_fasta(write(tmp_path, "MKV\n>a\nMK\n"))
    with pytest.raises(InputError, match=r"x.fasta:2: header without an id"):
        read_fasta(write(tmp_path, ">a\n>\nMK\n"))
    with pytest.raises(InputError, match="FASTA file not found"):
        read_fasta(tmp_path / "missing.fa")
    with pytest.raises(InputError, match="no valid protein"):
        read_fasta(write(tmp_path, ">a\n"), on_invalid="skip")


def test_sample_is_seeded_bounded_and_in_file_order():
    proteins = [Protein(f"p{i}", "M" * (1 + i % 50)) for i in range(200)]
    a = sample_proteins(proteins, 30, max_length=20, seed=1)
    assert a == sample_proteins(proteins, 30, max_length=20, seed=1)
    assert a != sample_proteins(proteins, 30, max_length=20, seed=2)
    assert len({p.id for p in a}) == 30 and all(len(p.sequence) <= 20 for p in a)
    order = [int(p.id[1:]) for p in a]
    assert order == sorted(order)
    with pytest.raises(InputError, match="only"):
        sample_proteins(proteins, 199, max_length=20)
    with pytest.raises(InputError, match="cannot sample 201 proteins: there are only 200$"):
        sample_proteins(proteins, 201)  # not "<= None residues"
    with pytest.raises(InputError, match="cannot sample -1 proteins: the number to draw must be"):
        sample_proteins(proteins, -1)


def test_write_read_round_trip(tmp_path):
    proteins = [Protein("a", "MKV" * 30), Protein("b", "W")]
    for name in ("o.fa", "o.fa.gz"):
        write_fasta(tmp_path / name, proteins)
        assert [(p.id, p.sequence) for p in read_fasta(tmp_path / name)[0]] == [
            (p.id, p.sequence) for p in proteins]


def test_bundled_swissprot_sample(demo_data):
    proteins, report = read_fasta(demo_data / "swissprot_sample.fasta.gz", max_length=100_000)
    assert report.n_records == 110 and len(proteins) == 110
    assert all(len(p.id) >= 6 and "|" not in p.id for p in proteins)
    _, report = read_fasta(demo_data / "swissprot_sample.fasta.gz", on_invalid="skip")
    assert report.counts() == {"too long": 17}


def test_sample_script_draws_among_short_proteins_of_a_file_with_long_ones(demo_data, tmp_path):
    """``fasta.py sample --max-sample-length 1024`` on a FASTA with 17 proteins over 1,022
    residues: the long ones are not drawn (and not an error), the rest are."""
    from click.testing import CliRunner

    from interplm_jax.cli import load_script

    cli = load_script(Path(__file__).resolve().parents[1] / "scripts" / "fasta.py").cli
    out = tmp_path / "s.fasta.gz"
    fasta = str(demo_data / "swissprot_sample.fasta.gz")
    res = CliRunner().invoke(cli, ["sample", fasta, "--n", "93", "--max-sample-length", "1024",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    drawn = read_fasta(out, max_length=1024)[0]
    every = read_fasta(fasta, max_length=100_000)[0]
    assert [p.id for p in drawn] == [p.id for p in every if len(p.sequence) <= 1024]
    res = CliRunner().invoke(cli, ["sample", fasta, "--n", "94", "--max-sample-length", "1024",
                                   "--out", str(out)])
    assert res.exit_code == 2 and "only 93 have <= 1024 residues" in res.output
