"""FASTA in and out: reading (plain or gzip, a file or a pipe: :mod:`interplm_jax.textfile`),
validation against the ESM-2 alphabet, sampling.

Validation reports every problem with the record's id and the line of its header:
empty sequence, duplicate id, a character outside the ESM-2 alphabet, a sequence longer than
``max_length`` (1,022 residues by default, the paper's limit: ESM-2 adds ``<cls>`` and ``<eos>``
to reach its 1,024 positions). Sequences are upper-cased and one trailing ``*`` (stop codon) is
dropped before checking.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import logging
import os
import re
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np

from interplm_jax.atomic import atomic_write
from interplm_jax.errors import InputError
from interplm_jax.textfile import open_text

log = logging.getLogger(__name__)

#: Residue letters ESM-2's tokenizer has tokens for (20 standard + X, B, U, Z, O).
ESM_ALPHABET = frozenset("LAGVSERTIDPKQNFYMHWCXBUZO")
DEFAULT_MAX_LENGTH = 1022
_UNIPROT_HEADER = re.compile(r"^(?:sp|tr)\|([^|\s]+)\|")

OnInvalid = Literal["error", "skip"]
IdStyle = Literal["auto", "first-word"]


@dataclasses.dataclass(frozen=True)
class Protein:
    """One FASTA record: ``id``, upper-case ``sequence``, ``line`` of its header (1-based)."""

    id: str
    sequence: str
    line: int = 0


@dataclasses.dataclass
class FastaReport:
    """What reading kept and what it skipped (``skipped``: (id, line, reason) triples)."""

    path: str
    n_records: int = 0
    n_kept: int = 0
    skipped: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Skipped records per kind of problem (the reason's text before the colon)."""
        return dict(collections.Counter(reason.split(":")[0] for _, _, reason in self.skipped))


def record_id(header: str, style: IdStyle = "auto") -> str:
    """The id of a header line (without ``>``).

    ``auto``: the accession of UniProt headers (``sp|P69905|HBA_HUMAN ...`` -> ``P69905``),
    else the first word; ``first-word``: always the first word.
    """
    header = header.strip()
    if style == "auto":
        m = _UNIPROT_HEADER.match(header)
        if m:
            return m.group(1)
    return header.split()[0] if header else ""


def iter_records(path: str | os.PathLike, id_style: IdStyle = "auto") -> Iterator[Protein]:
    """Yield the raw records of a FASTA file (sequence upper-cased, not yet validated)."""
    path = Path(path)
    header_line, rid, chunks = 0, None, []
    with open_text(path, "FASTA file") as lines:
        for lineno, line in enumerate(lines, start=1):
            line = line.strip()
            if line.startswith(">"):
                if rid is not None:
                    yield Protein(rid, "".join(chunks).upper(), header_line)
                rid, header_line, chunks = record_id(line[1:], id_style), lineno, []
                if not rid:
                    raise InputError(f"{path}:{lineno}: header without an id")
            elif line and not line.startswith(";"):
                if rid is None:
                    raise InputError(f"{path}:{lineno}: sequence data before the first '>' header")
                chunks.append(line)
    if rid is not None:
        yield Protein(rid, "".join(chunks).upper(), header_line)


def alphabet_problem(seq: str) -> str | None:
    """What in an upper-case sequence is outside the ESM-2 alphabet (the letters and the first
    position), or None."""
    bad = sorted(set(seq) - ESM_ALPHABET)
    if not bad:
        return None
    pos = next(i for i, c in enumerate(seq) if c in bad) + 1
    return f"invalid characters: {''.join(bad)!r} (first at residue {pos})"


def problem(protein: Protein, max_length: int, seen: set[str]) -> str | None:
    """The first thing wrong with a record, or None."""
    seq = protein.sequence
    if protein.id in seen:
        return "duplicate id"
    if not seq:
        return "empty sequence"
    bad = alphabet_problem(seq)
    if bad:
        return bad
    if len(seq) > max_length:
        return f"too long: {len(seq)} residues > max length {max_length}"
    return None


def read_fasta(
    path: str | os.PathLike,
    max_length: int = DEFAULT_MAX_LENGTH,
    on_invalid: OnInvalid = "error",
    id_style: IdStyle = "auto",
) -> tuple[list[Protein], FastaReport]:
    """Read and validate a FASTA file.

    Returns:
      The valid proteins in file order, and a report. With ``on_invalid="error"`` any invalid
      record raises :class:`InputError` listing the problems (id, line, reason); with ``"skip"``
      they are left out and counted in the report.
    """
    if on_invalid not in ("error", "skip"):
        raise InputError(f"--on-invalid must be 'error' or 'skip', got {on_invalid!r}")
    report = FastaReport(path=str(path))
    kept: list[Protein] = []
    seen: set[str] = set()
    for rec in iter_records(path, id_style):
        report.n_records += 1
        if rec.sequence.endswith("*"):
            rec = dataclasses.replace(rec, sequence=rec.sequence[:-1])
        why = problem(rec, max_length, seen)
        seen.add(rec.id)
        if why is None:
            kept.append(rec)
        else:
            report.skipped.append((rec.id, rec.line, why))
    report.n_kept = len(kept)
    if report.skipped and on_invalid == "error":
        shown = "\n".join(f"  {path}:{line}: protein {rid!r}: {why}"
                          for rid, line, why in report.skipped[:20])
        more = len(report.skipped) - 20
        raise InputError(
            f"{path}: {len(report.skipped)} invalid record(s) of {report.n_records}"
            f" (use --on-invalid skip to leave them out):\n{shown}"
            + (f"\n  ... and {more} more" if more > 0 else "")
        )
    if report.skipped:
        log.warning("%s: skipped %d of %d records: %s", path, len(report.skipped),
                    report.n_records, report.counts())
    if not kept:
        raise InputError(f"{path}: no valid protein sequences")
    return kept, report


def sample_proteins(proteins: Sequence[Protein], n: int, max_length: int | None = None,
                    seed: int = 0) -> list[Protein]:
    """``n`` proteins drawn at random without replacement (seeded) among those of at most
    ``max_length`` residues, returned in their original order."""
    if n < 1:
        raise InputError(f"cannot sample {n} proteins: the number to draw must be at least 1")
    pool = [p for p in proteins if max_length is None or len(p.sequence) <= max_length]
    if n > len(pool):
        among = f"only {len(pool)} have <= {max_length} residues" if max_length is not None \
            else f"there are only {len(pool)}"
        raise InputError(f"cannot sample {n} proteins: {among}")
    idx = np.sort(np.random.default_rng(seed).choice(len(pool), size=n, replace=False))
    return [pool[i] for i in idx]


def format_fasta(proteins: Sequence[Protein], width: int = 60) -> str:
    """FASTA text, ``width`` residues a line."""
    out = []
    for p in proteins:
        out.append(f">{p.id}")
        out.extend(p.sequence[i:i + width] for i in range(0, len(p.sequence), width))
    return "\n".join(out) + "\n"


def write_fasta(path: str | os.PathLike, proteins: Sequence[Protein]) -> Path:
    """Write proteins to a FASTA file atomically (gzip when the name ends in ``.gz``)."""
    text = format_fasta(proteins).encode()
    return atomic_write(path, gzip.compress(text, mtime=0) if str(path).endswith(".gz") else text)
