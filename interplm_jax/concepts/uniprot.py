"""UniProtKB TSV rows -> annotation occurrences (positions, values), with malformed rows reported.

A Swiss-Prot flat file (``uniprot_sprot.dat.gz``) is read as the TSV of its entries
(concepts/flatfile.py), so it gives the same occurrences.

Columns are recognised by the UniProt website's display names (``Entry``, ``Active site``,
``Domain [FT]``, ... as the REST API's ``format=tsv`` writes them) or by the REST field names
(``accession``, ``ft_act_site``, ``ft_domain``, ...). A feature cell is a list of entries::

    DOMAIN 29..142; /note="Plastocyanin-like 1"; /evidence="ECO:0000255"; DOMAIN 171..359; ...

Locations: ``p`` or ``s..e`` (1-based, inclusive); ``<`` and ``>`` (the feature extends beyond)
are dropped; a location with ``?`` (unknown end) or ``:`` (on another isoform or entry) labels
no residue (counted in the report) but its value still counts towards the value's frequency,
as in the reference. Anything else that does not parse, or a location
outside ``1..Length``, makes the row malformed: it is reported with its accession and column.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Iterator, Literal

from interplm_jax.concepts.flatfile import open_uniprot_table
from interplm_jax.errors import InputError
from interplm_jax.fasta import ESM_ALPHABET, alphabet_problem

Kind = Literal["categorical", "binary", "paired"]


@dataclasses.dataclass(frozen=True)
class Column:
    """One UniProt feature column and how it turns into concepts.

    Attributes:
      name: display name (TSV header), e.g. ``"Domain [FT]"``.
      field: REST API field name, e.g. ``"ft_domain"``.
      key: the feature key that starts each entry, e.g. ``"DOMAIN"``.
      kind: ``categorical`` (one concept per frequent value, plus ``<prefix>_any``), ``binary``
        (one concept) or ``paired`` (one concept; both ends of ``s..e`` are labelled).
      prefix: concept name prefix, e.g. ``"Domain"`` -> ``Domain_DRBM``.
      qualifier: the qualifier holding a categorical value (``note`` or ``ligand``).
    """

    name: str
    field: str
    key: str
    kind: Kind
    prefix: str
    qualifier: str | None = None


#: In the reference's order (concept_constants.py): categorical, binary, paired.
#: Cofactor (cc_cofactor) is a comment without residue positions, so it gives no residue concept.
COLUMNS: tuple[Column, ...] = (
    Column("Active site", "ft_act_site", "ACT_SITE", "categorical", "Active site", "note"),
    Column("Binding site", "ft_binding", "BINDING", "categorical", "Binding site", "ligand"),
    Column("Glycosylation", "ft_carbohyd", "CARBOHYD", "categorical", "Glycosylation", "note"),
    Column("Modified residue", "ft_mod_res", "MOD_RES", "categorical", "Modified residue", "note"),
    Column("Transit peptide", "ft_transit", "TRANSIT", "categorical", "Transit peptide", "note"),
    Column("Compositional bias", "ft_compbias", "COMPBIAS", "categorical", "Compositional bias", "note"),
    Column("Domain [FT]", "ft_domain", "DOMAIN", "categorical", "Domain", "note"),
    Column("Region", "ft_region", "REGION", "categorical", "Region", "note"),
    Column("Zinc finger", "ft_zn_fing", "ZN_FING", "categorical", "Zinc finger", "note"),
    Column("Motif", "ft_motif", "MOTIF", "categorical", "Motif", "note"),
    Column("Signal peptide", "ft_signal", "SIGNAL", "categorical", "Signal peptide", "note"),
    Column("Turn", "ft_turn", "TURN", "binary", "Turn"),
    Column("Helix", "ft_helix", "HELIX", "binary", "Helix"),
    Column("Beta strand", "ft_strand", "STRAND", "binary", "Beta strand"),
    Column("Coiled coil", "ft_coiled", "COILED", "binary", "Coiled coil"),
    Column("Lipidation", "ft_lipid", "LIPID", "binary", "Lipidation"),
    Column("Disulfide bond", "ft_disulfid", "DISULFID", "paired", "Disulfide bond"),
)
BASE_COLUMNS = {"accession": ("Entry", "accession"), "length": ("Length", "length"),
                "sequence": ("Sequence", "sequence"),
                "alphafold": ("AlphaFoldDB", "xref_alphafolddb")}

_ENTRY = re.compile(r'\s*(?P<key>[A-Z_]+)\s+(?P<loc>[^;\s]+)\s*(?P<quals>(?:;\s*/\w+="[^"]*")*)\s*;?')
_QUAL = re.compile(r'/(\w+)="([^"]*)"')
_POS = re.compile(r"^[<>]?(\d+)[<>]?$")


@dataclasses.dataclass(frozen=True)
class Occurrence:
    """One annotation occurrence: ``spans`` of 0-based half-open residue ranges (two one-residue
    spans for a disulfide bond), and its categorical ``value`` from the configured qualifier and
    ``note`` (the note's text before any ``;``, as the reference reads it; None when absent)."""

    column: int
    spans: tuple[tuple[int, int], ...]
    value: str | None = None
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class UniProtRow:
    """One protein of the TSV: accession, sequence, AlphaFold DB cross-reference, occurrences."""

    accession: str
    sequence: str
    line: int
    has_alphafold: bool
    occurrences: tuple[Occurrence, ...]


@dataclasses.dataclass
class ParseReport:
    """Malformed rows (line, accession, column, message) and counts of skipped locations."""

    path: str
    n_rows: int = 0
    malformed: list[tuple[int, str, str, str]] = dataclasses.field(default_factory=list)
    skipped_locations: dict[str, int] = dataclasses.field(default_factory=dict)
    missing_columns: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return {"path": self.path, "n_rows": self.n_rows, "n_malformed": len(self.malformed),
                "malformed": [dict(zip(("line", "accession", "column", "problem"), m))
                              for m in self.malformed],
                "skipped_locations": self.skipped_locations,
                "missing_columns": self.missing_columns}


class MalformedRow(InputError):
    """A TSV row whose cell could not be parsed (carries the column name)."""

    def __init__(self, column: str, message: str):
        super().__init__(message)
        self.column = column


def _first_part(text: str | None) -> str | None:
    return None if text is None else text.split(";")[0]


def parse_location(loc: str, length: int) -> tuple[int, int] | None:
    """``"s..e"`` or ``"p"`` -> 0-based half-open ``(s - 1, e)``; None for ``?``/``:`` locations.

    Raises:
      ValueError: an unparsable location, ``s > e``, or a position outside ``1..length``.
    """
    if "?" in loc or ":" in loc:
        return None
    parts = loc.split("..")
    if len(parts) > 2:
        raise ValueError(f"location {loc!r} is not 'p' or 's..e'")
    nums = []
    for part in parts:
        m = _POS.match(part)
        if not m:
            raise ValueError(f"location {loc!r} is not 'p' or 's..e'")
        nums.append(int(m.group(1)))
    start, end = nums[0], nums[-1]
    if start > end:
        raise ValueError(f"location {loc!r} starts after it ends")
    if start < 1 or end > length:
        raise ValueError(f"location {loc!r} lies outside the protein (length {length})")
    return start - 1, end


def parse_cell(text: str, column: Column, column_index: int, length: int,
               skipped: dict[str, int]) -> list[Occurrence]:
    """All occurrences of one feature cell. Raises :class:`MalformedRow` naming the column."""
    out: list[Occurrence] = []
    pos, text = 0, text.rstrip()
    while pos < len(text):
        m = _ENTRY.match(text, pos)
        if m is None or m.end() == pos:
            raise MalformedRow(column.name, f"cannot parse entry at character {pos}: "
                                            f"{text[pos:pos + 60]!r}")
        if m.group("key") != column.key:
            raise MalformedRow(column.name, f"entry key {m.group('key')!r} where {column.key!r} "
                                            f"was expected (character {pos})")
        pos = m.end()
        loc = m.group("loc")
        quals = dict(_QUAL.findall(m.group("quals")))
        try:
            span = parse_location(loc, length)
        except ValueError as e:
            raise MalformedRow(column.name, str(e)) from None
        if span is None:  # kept without residues: its value still counts towards a concept
            skipped[column.name] = skipped.get(column.name, 0) + 1
            spans: tuple[tuple[int, int], ...] = ()
        elif column.kind == "paired" and span[1] - span[0] > 1:
            spans = ((span[0], span[0] + 1), (span[1] - 1, span[1]))
        else:
            spans = (span,)
        value = _first_part(quals.get(column.qualifier)) if column.qualifier else None
        out.append(Occurrence(column_index, spans, value or None, _first_part(quals.get("note")) or None))
    return out


def _header_index(header: list[str], names: tuple[str, ...]) -> int | None:
    for n in names:
        if n in header:
            return header.index(n)
    return None


def read_uniprot_tsv(path: str | os.PathLike, on_malformed: Literal["error", "skip"] = "error",
                     report: ParseReport | None = None) -> Iterator[UniProtRow]:
    """Yield the rows of a UniProtKB TSV or flat file (plain or gzip) as :class:`UniProtRow`.

    Args:
      on_malformed: ``error`` raises :class:`InputError` at the first malformed row (with its
        line, accession and column); ``skip`` leaves the row out and records it in ``report``.
      report: filled while iterating (rows read, malformed rows, skipped locations).
    """
    if on_malformed not in ("error", "skip"):
        raise InputError(f"on_malformed must be 'error' or 'skip', got {on_malformed!r}")
    path = Path(path)
    report = report if report is not None else ParseReport(str(path))
    with open_uniprot_table(path) as (header, reader):
        base = {k: _header_index(header, names) for k, names in BASE_COLUMNS.items()}
        for k in ("accession", "length", "sequence"):
            if base[k] is None:
                raise InputError(f"{path}: no {' or '.join(BASE_COLUMNS[k])!s} column in the header "
                                 "(expected a UniProtKB TSV export or a Swiss-Prot flat file)")
        cols: list[tuple[int, int]] = []  # (index in COLUMNS, index in row)
        for ci, col in enumerate(COLUMNS):
            j = _header_index(header, (col.name, col.field))
            if j is None:
                report.missing_columns.append(col.name)
            else:
                cols.append((ci, j))
        for line, row in reader:
            report.n_rows += 1
            acc = row[base["accession"]] if len(row) > base["accession"] else "?"
            try:
                yield _parse_row(row, header, base, cols, line, report.skipped_locations)
            except MalformedRow as e:
                if on_malformed == "error":
                    raise InputError(f"{path}:{line}: protein {acc!r}, column {e.column!r}: {e} "
                                     "(use on_malformed='skip' to leave such rows out)") from None
                report.malformed.append((line, acc, e.column, str(e)))


def _parse_row(row: list[str], header: list[str], base: dict, cols: list[tuple[int, int]],
               line: int, skipped: dict[str, int]) -> UniProtRow:
    if len(row) != len(header):
        raise MalformedRow("*", f"{len(row)} fields, the header has {len(header)}")
    acc = row[base["accession"]].strip()
    if not acc:
        raise MalformedRow(header[base["accession"]], "empty accession")
    seq = row[base["sequence"]].strip().upper()
    try:
        length = int(row[base["length"]])
    except ValueError:
        raise MalformedRow(header[base["length"]], f"length {row[base['length']]!r} is not an integer") from None
    if not seq or len(seq) != length:
        raise MalformedRow(header[base["sequence"]], f"sequence has {len(seq)} residues, Length says {length}")
    bad = alphabet_problem(seq)
    if bad:  # caught here, not stages later when the model meets it
        raise MalformedRow(header[base["sequence"]], f"{bad}; the model's alphabet is "
                                                     f"{''.join(sorted(ESM_ALPHABET))}")
    occs: list[Occurrence] = []
    for ci, j in cols:
        cell = row[j].strip()
        if cell:
            occs.extend(parse_cell(cell, COLUMNS[ci], ci, length, skipped))
    af = base["alphafold"] is not None and bool(row[base["alphafold"]].strip(" ;"))
    return UniProtRow(acc, seq, line, af, tuple(occs))
