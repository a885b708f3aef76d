"""Text inputs (FASTA, UniProt TSVs): gzip or not, BOM, pipes, and named errors for truncated
or corrupted gzip and for text that is not UTF-8 (issue 13 item 11)."""

import gzip
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from interplm_jax.annotate.metadata import read_uniprot_tsv as read_metadata
from interplm_jax.concepts.uniprot import read_uniprot_tsv
from interplm_jax.errors import InputError
from interplm_jax.fasta import read_fasta
from interplm_jax.textfile import open_text

FASTA = ">a\nMKV\n>b\nACDE\n" * 200  # > 1 KiB, so a truncation cuts inside the data
TSV = "Entry\tProtein names\tLength\tSequence\nP1\t\"quoted\" name\t3\tMKV\n"


def lines_of(path):
    with open_text(path) as lines:
        return list(lines)


@pytest.fixture
def pipe():
    """A function: bytes -> a /dev/fd path reading them through a pipe (like ``<(...)``)."""
    threads, fds = [], []

    def make(data: bytes) -> str:
        r, w = os.pipe()
        fds.append(r)

        def feed():
            with os.fdopen(w, "wb") as f:
                f.write(data)

        threads.append(threading.Thread(target=feed, daemon=True))
        threads[-1].start()
        return f"/dev/fd/{r}"

    yield make
    for t in threads:
        t.join(timeout=5)
    for r in fds:
        try:
            os.close(r)
        except OSError:
            pass


def test_gzip_and_plain_read_alike_from_files_and_pipes(tmp_path, pipe):
    (tmp_path / "x.fa").write_text(FASTA)
    (tmp_path / "x.fa.gz").write_bytes(gzip.compress(FASTA.encode()))
    want = FASTA.splitlines(keepends=True)
    assert lines_of(tmp_path / "x.fa") == lines_of(tmp_path / "x.fa.gz") == want
    # The gzip sniff must not consume the pipe's first bytes.
    assert lines_of(pipe(FASTA.encode())) == want
    assert lines_of(pipe(gzip.compress(FASTA.encode()))) == want
    proteins, _ = read_fasta(pipe(gzip.compress(FASTA.encode())), on_invalid="skip")
    assert [(p.id, p.sequence) for p in proteins[:2]] == [("a", "MKV"), ("b", "ACDE")]


def test_a_utf8_bom_is_not_data(tmp_path):
    (tmp_path / "x.fa").write_bytes(b"\xef\xbb\xbf>a\nMKV\n")
    proteins, _ = read_fasta(tmp_path / "x.fa")
    assert [(p.id, p.sequence) for p in proteins] == [("a", "MKV")]
    (tmp_path / "m.tsv").write_bytes(b"\xef\xbb\xbf" + TSV.encode())
    assert list(read_metadata(tmp_path / "m.tsv")) == ["P1"]


def test_truncated_gzip_is_a_named_error(tmp_path):
    data = gzip.compress(FASTA.encode())
    (tmp_path / "x.fa.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"x.fa.gz: truncated gzip file"):
        read_fasta(tmp_path / "x.fa.gz")


def test_corrupted_gzip_is_a_named_error(tmp_path):
    data = bytearray(gzip.compress(FASTA.encode()))
    data[20:40] = b"\xff" * 20
    (tmp_path / "x.fa.gz").write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"x.fa.gz: corrupted gzip data"):
        read_fasta(tmp_path / "x.fa.gz")
    (tmp_path / "crc.tsv.gz").write_bytes(gzip.compress(TSV.encode())[:-8] + b"\0" * 8)
    with pytest.raises(InputError, match=r"crc.tsv.gz: corrupted gzip data .*CRC"):
        list(read_uniprot_tsv(tmp_path / "crc.tsv.gz"))


def test_latin1_text_names_the_line_and_byte(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_bytes((TSV + "P2\tprot\u00e9ine\t2\tMK\n").encode("latin-1"))
    with pytest.raises(InputError, match=r"m.tsv:3: not UTF-8 text \(byte 0xe9 at column 8\)"):
        read_metadata(path)
    with pytest.raises(InputError, match=r"m.tsv:3: not UTF-8"):
        list(read_uniprot_tsv(path))


def test_missing_file_and_directory_are_named(tmp_path):
    with pytest.raises(InputError, match=r"nope.fa: FASTA file not found"):
        read_fasta(tmp_path / "nope.fa")
    with pytest.raises(InputError, match=r"UniProt TSV.*Is a directory|cannot read the UniProt TSV"):
        list(read_uniprot_tsv(tmp_path))


def test_metadata_keeps_quotes_as_written(tmp_path):
    """A cell starting with '"' is text, not CSV quoting (issue 13 item 17)."""
    (tmp_path / "m.tsv").write_text(TSV)
    assert read_metadata(tmp_path / "m.tsv")["P1"].name == '"quoted" name'


def test_a_script_reads_gzip_from_dev_stdin():
    """`scripts/fasta.py check /dev/stdin < x.fa.gz`: the sniff must not eat the pipe's bytes."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "fasta.py"
    env = {**os.environ, "PYTHONPATH": str(script.parents[1])}
    r = subprocess.run([sys.executable, str(script), "check", "/dev/stdin", "--on-invalid", "skip"],
                       env=env, input=gzip.compress(FASTA.encode()), capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().startswith("/dev/stdin: 400 records, 2 valid")  # (ids repeat)
