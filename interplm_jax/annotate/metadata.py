"""Protein metadata for prompts, read from a UniProtKB TSV (the columns of data/demo) or a
Swiss-Prot flat file (read as the TSV of its entries: concepts/flatfile.py).

Each protein contributes its name, organism, length, sequence and a compact summary of its
UniProt feature annotations (``Domain: Protein kinase (21-273); Binding site: ATP (27-35)``).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from interplm_jax.concepts.flatfile import open_uniprot_table
from interplm_jax.errors import InputError

REQUIRED = ("Entry", "Protein names", "Length", "Sequence")

#: Annotation columns summarised in prompts, with the label shown.
ANNOTATION_COLUMNS = {
    "Domain [FT]": "Domain", "Region": "Region", "Motif": "Motif", "Zinc finger": "Zinc finger",
    "Active site": "Active site", "Binding site": "Binding site", "Signal peptide": "Signal peptide",
    "Transit peptide": "Transit peptide", "Compositional bias": "Compositional bias",
    "Modified residue": "Modified residue", "Glycosylation": "Glycosylation",
    "Lipidation": "Lipidation", "Disulfide bond": "Disulfide bond", "Coiled coil": "Coiled coil",
    "Helix": "Helix", "Beta strand": "Beta strand", "Turn": "Turn",
}
_ENTRY = re.compile(r"(?:^|;\s*)[A-Z_]+\s+([<>?]?\d+(?:\.\.[<>?]?\d+)?)((?:;\s*/[a-z_]+=\"[^\"]*\")*)")
_QUALIFIER = re.compile(r'/(note|ligand)="([^"]*)"')


@dataclasses.dataclass(frozen=True)
class ProteinInfo:
    """What a prompt shows of one protein."""

    id: str
    name: str
    organism: str
    length: int
    sequence: str
    annotations: str


def summarise_annotations(row: dict[str, str], max_chars: int = 600) -> str:
    """``Label: value (start-end); ...`` over the annotation columns, cut to ``max_chars``."""
    parts: list[str] = []
    for column, label in ANNOTATION_COLUMNS.items():
        text = row.get(column) or ""
        if label in ("Helix", "Beta strand", "Turn"):
            n = len(_ENTRY.findall(text))
            if n:
                parts.append(f"{label}: {n} segment{'s' if n > 1 else ''}")
            continue
        for loc, quals in _ENTRY.findall(text):
            values = [v for _, v in _QUALIFIER.findall(quals)]
            loc = loc.replace("..", "-").replace("<", "").replace(">", "")
            parts.append(f"{label}: {values[0]} ({loc})" if values else f"{label} ({loc})")
    text = "; ".join(parts) or "none"
    return text if len(text) <= max_chars else text[: max_chars - 3].rstrip() + "..."


def read_uniprot_tsv(path: str | Path, max_annotation_chars: int = 600) -> dict[str, ProteinInfo]:
    """Accession -> :class:`ProteinInfo` from a UniProtKB TSV or flat file (plain or gzip)."""
    out: dict[str, ProteinInfo] = {}
    with open_uniprot_table(path) as (header, rows):
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise InputError(f"{path}: missing column(s) {missing}; found {header}")
        for line, cells in rows:
            if len(cells) != len(header):
                raise InputError(f"{path}, line {line}: {len(cells)} fields, the header has "
                                 f"{len(header)}")
            row = dict(zip(header, cells))
            acc = row["Entry"].strip()
            if not acc:
                raise InputError(f"{path}, line {line}: empty Entry")
            if acc in out:
                raise InputError(f"{path}, line {line}: duplicate Entry {acc}")
            try:
                length = int(row["Length"])
            except ValueError:
                raise InputError(f"{path}, line {line} ({acc}): Length {row['Length']!r} is not "
                                 "an integer") from None
            seq = row["Sequence"].strip()
            if len(seq) != length:
                raise InputError(f"{path}, line {line} ({acc}): Length {length} but the sequence "
                                 f"has {len(seq)} residues")
            out[acc] = ProteinInfo(acc, row["Protein names"].strip(), row.get("Organism", "").strip(),
                                   length, seq, summarise_annotations(row, max_annotation_chars))
    return out
