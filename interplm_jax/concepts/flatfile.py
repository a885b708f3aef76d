"""UniProtKB flat files (``uniprot_sprot.dat.gz``) and TSVs read through one table interface.

Swiss-Prot is released as a flat file laid out as the UniProtKB user manual describes: one entry
per protein, two-letter line codes (``ID``, ``AC``, ``DE``, ``OS``, ``DR``, ``FT``, ``SQ``),
``//`` after each entry. :func:`open_uniprot_table` reads it, or a TSV of the REST API, as rows
of the TSV's display-name columns: each flat-file entry becomes the row UniProt's ``format=tsv``
export writes for it (a feature column holds ``KEY location; /qualifier="value"; ...``), so
everything downstream parses one layout. The file kind is recognised by its content.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Iterator

from interplm_jax.errors import InputError
from interplm_jax.textfile import open_text

#: Feature keys (``FT`` lines) -> the TSV column that lists them (the columns of concepts.uniprot).
FEATURE_COLUMNS = {
    "ACT_SITE": "Active site", "BINDING": "Binding site", "CARBOHYD": "Glycosylation",
    "MOD_RES": "Modified residue", "TRANSIT": "Transit peptide", "COMPBIAS": "Compositional bias",
    "DOMAIN": "Domain [FT]", "REGION": "Region", "ZN_FING": "Zinc finger", "MOTIF": "Motif",
    "SIGNAL": "Signal peptide", "TURN": "Turn", "HELIX": "Helix", "STRAND": "Beta strand",
    "COILED": "Coiled coil", "LIPID": "Lipidation", "DISULFID": "Disulfide bond",
}
#: The columns of a table read from a flat file.
FLAT_HEADER = ["Entry", "Reviewed", "Entry Name", "Protein names", "Organism", "Length",
               "Sequence", *FEATURE_COLUMNS.values(), "AlphaFoldDB"]

_ID = re.compile(r"^ID   (\S+)\s+(Reviewed|Unreviewed);\s+(\d+) AA\.")
_EVIDENCE = re.compile(r"\s*\{[^}]*\}")
_NAME = re.compile(r"^(Full|Short|Allergen|Biotech|CD_antigen|INN)=(.*)$")
_FT_KEY = re.compile(r"^FT   (\S+)\s+(\S+)\s*$")
_QUALIFIER = re.compile(r'^/(\w+)(?:="(.*))?$')


@contextlib.contextmanager
def open_uniprot_table(path: str | os.PathLike) -> Iterator[tuple[list[str], Iterator[tuple[int, list[str]]]]]:
    """``with open_uniprot_table(path) as (header, rows)``: the column names and an iterator of
    ``(line, cells)`` of a UniProtKB TSV or flat file (plain or gzip; recognised by content).

    ``line`` is the row's line in a TSV, the entry's ``ID`` line in a flat file.
    Raises :class:`InputError` for a missing, empty or unreadable file (textfile.open_text), or
    one that is neither.
    """
    path = Path(path)
    with open_text(path, "UniProt TSV or flat file") as lines:
        first = next(lines, "")
        if not first:
            raise InputError(f"{path}: empty file")
        if first.startswith("ID   "):
            yield list(FLAT_HEADER), _flat_rows(path, first, lines)
            return
        if "\t" not in first:
            raise InputError(f"{path}: neither a UniProtKB TSV (a tab-separated header with "
                             f"Entry, Length, Sequence) nor a flat file (entries starting with "
                             f"'ID   '); first line {first[:60]!r}")
        csv.field_size_limit(sys.maxsize)
        header = next(csv.reader([first], delimiter="\t", quoting=csv.QUOTE_NONE))
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        yield header, ((line, row) for line, row in enumerate(reader, start=2) if row)


def count_entries(path: str | os.PathLike) -> int:
    """Proteins in a UniProtKB TSV (lines after the header) or flat file (``//`` lines), for a
    progress bar's total: a pass over the lines, far quicker than parsing them."""
    with open_text(path, "UniProt TSV or flat file") as lines:
        first = next(lines, "")
        if first.startswith("ID   "):
            return sum(line.startswith("//") for line in lines)
        return sum(1 for line in lines if line.strip())


def _flat_rows(path: Path, first: str, lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    entry: list[str] = [first.rstrip("\r\n")]
    start = 1
    for lineno, line in enumerate(lines, start=2):
        line = line.rstrip("\r\n")
        if not entry:
            if not line.strip():
                continue
            start = lineno
        entry.append(line)
        if line.startswith("//"):
            yield start, entry_row(entry, f"{path}:{start}")
            entry = []
    if entry:
        raise InputError(f"{path}:{start}: entry {entry[0][5:].split()[0]!r} has no '//' line "
                         "(truncated file?)")


def entry_row(lines: list[str], where: str) -> list[str]:
    """One flat-file entry (its lines, ``ID`` to ``//``) -> cells in :data:`FLAT_HEADER` order.

    Raises :class:`InputError` naming ``where`` (file:line) for a malformed ``ID`` line, no
    ``AC`` line or no sequence.
    """
    m = _ID.match(lines[0])
    if m is None:
        raise InputError(f"{where}: not a UniProtKB ID line: {lines[0][:80]!r}")
    name, status, length = m.groups()
    by_code: dict[str, list[str]] = {}
    sequence: list[str] = []
    for line in lines[1:]:
        if line.startswith("  "):
            sequence.append(line.replace(" ", ""))
        else:
            by_code.setdefault(line[:2], []).append(line[5:])
    accessions = " ".join(by_code.get("AC", [])).replace(";", " ").split()
    if not accessions:
        raise InputError(f"{where}: entry {name!r} has no AC line")
    if not sequence:
        raise InputError(f"{where}: entry {name!r} has no sequence")
    cells = {"Entry": accessions[0], "Reviewed": status.lower(), "Entry Name": name,
             "Protein names": protein_names(by_code.get("DE", [])),
             "Organism": " ".join(by_code.get("OS", [])).rstrip("."),
             "Length": length, "Sequence": "".join(sequence),
             "AlphaFoldDB": "".join(f"{d.split(';')[1].strip()};" for d in by_code.get("DR", [])
                                    if d.startswith("AlphaFoldDB;"))}
    for key, text in features(lines):
        column = FEATURE_COLUMNS.get(key)
        if column is not None:
            cells[column] = f"{cells[column]}; {text}" if column in cells else text
    return [cells.get(c, "") for c in FLAT_HEADER]


def protein_names(de: list[str]) -> str:
    """``DE`` lines -> the TSV's ``Protein names``: the recommended (or submitted) full name,
    every other name in parentheses, then ``[Includes: ...]`` and ``[Cleaved into: ...]``."""
    sections: dict[str, list[list[str]]] = {"": [], "Includes:": [], "Contains:": []}
    proteins = sections[""]
    for line in de:
        text = line.strip()
        if text in sections:
            proteins = sections[text]
            continue
        kind, _, field = (text.partition(": ") if text.startswith(("RecName:", "AltName:", "SubName:"))
                          else ("", "", text))
        m = _NAME.match(_EVIDENCE.sub("", field).rstrip(";"))
        if m is None:  # EC=..., Flags: ...
            continue
        if kind == "RecName" or not proteins:  # further SubNames are alternative names
            proteins.append([])
        proteins[-1].append(m.group(2))

    def one(names: list[str]) -> str:
        return " ".join([names[0], *(f"({n})" for n in names[1:])])

    out = "; ".join(one(p) for p in sections[""])
    for section, shown in (("Includes:", "Includes"), ("Contains:", "Cleaved into")):
        if sections[section]:
            out += f" [{shown}: {'; '.join(one(p) for p in sections[section])}]"
    return out


def features(lines: list[str]) -> Iterator[tuple[str, str]]:
    """``FT`` lines -> ``(key, 'KEY location; /qualifier="value"; ...')`` per feature, the
    spelling of UniProt's TSV. A qualifier continued on the next line is joined with a space, or
    with nothing after a hyphen (``E-E-T-Q-`` / ``K-T-V`` -> ``E-E-T-Q-K-T-V``), as UniProt wraps."""
    key = None
    parts: list[str] = []
    for line in lines:
        if not line.startswith("FT "):
            continue
        m = _FT_KEY.match(line)
        if m:
            if key is not None:
                yield key, "; ".join(parts)
            key, parts = m.group(1), [f"{m.group(1)} {m.group(2)}"]
            continue
        text = line[5:].strip()
        if key is None:
            continue
        if _QUALIFIER.match(text):
            parts.append(text)
        else:  # lines break at a space or after a hyphen
            parts[-1] += text if parts[-1].endswith("-") else " " + text
    if key is not None:
        yield key, "; ".join(parts)
