"""Backbones of the shown proteins for the page's 3-D view (3Dmol.js draws the cartoon from
N, CA, C and O), and the evidence tracks: each shown protein's annotated residues.

Only structures that match their protein exactly are embedded (one chain numbered 1..L, the
sequence's letters; ``interplm_jax.analysis.structures.mismatch``); any other is left out with a
warning naming the file and the reason, never shown against the wrong residues.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Mapping

import numpy as np

from interplm_jax.report.examples import b64

log = logging.getLogger(__name__)

#: Coordinates are stored as int16 in units of 1/RESOLUTION Angstrom; MISSING marks absent atoms.
RESOLUTION = 10.0
MISSING = -32768


@dataclasses.dataclass(frozen=True)
class StructureInputs:
    """Where the browser finds structures.

    Attributes:
      directory: AlphaFold DB / PDB files (names as ``interplm_jax.analysis.structures``).
      store: optional activation store of proteins with structures (the pipeline's
        ``model/store_af``), so that a study whose evaluation proteins have no structure still
        shows features on structures; ``fasta``: their sequences.
    """

    directory: Path
    store: Path | None = None
    fasta: Path | None = None

    def __post_init__(self):
        if (self.store is None) != (self.fasta is None):
            raise ValueError("a structure store needs its FASTA (and the other way round)")


def encode_backbone(backbone: np.ndarray) -> str:
    """(L, 4, 3) Angstrom (NaN: absent) -> base64 of int16 ``round(x * RESOLUTION)`` (MISSING
    where absent), row-major."""
    a = np.asarray(backbone, np.float64) * RESOLUTION
    if np.nanmax(np.abs(a), initial=0.0) >= -MISSING:
        raise ValueError(f"coordinates beyond +-{-MISSING / RESOLUTION} A")
    q = np.where(np.isnan(a), MISSING, np.rint(np.nan_to_num(a))).astype("<i2")
    return b64(q.view(np.uint8))


def decode_backbone(text: str) -> np.ndarray:
    """Inverse of :func:`encode_backbone` (NaN where absent), to 1 / (2 RESOLUTION) A."""
    import base64

    q = np.frombuffer(base64.b64decode(text), "<i2").reshape(-1, 4, 3).astype(np.float64)
    return np.where(q == MISSING, np.nan, q / RESOLUTION)


def backbone_of(path: Path, sequence: str) -> tuple[str | None, str | None]:
    """(:func:`encode_backbone` text, None) of the structure file ``path`` when it matches
    ``sequence`` residue for residue, else (None, the reason)."""
    from interplm_jax.analysis.structures import mismatch, read_ca
    from interplm_jax.errors import InputError

    try:
        st = read_ca(path)
        why = mismatch(st, sequence)
        return (encode_backbone(st.backbone), None) if why is None else (None, why)
    except (InputError, ValueError) as e:
        return None, str(e)


def backbones(sequences: Mapping[str, str], directory: Path) -> dict[str, str]:
    """Protein id -> :func:`encode_backbone` of its structure in ``directory``, for the proteins
    that have a structure matching their sequence (the others are logged with the reason)."""
    from interplm_jax.analysis.structures import index_directory

    files = index_directory(directory)
    out = {}
    for pid, seq in sequences.items():
        if pid not in files:
            continue
        text, why = backbone_of(files[pid], seq)
        if text is None:
            log.warning("protein %s: structure %s not shown: %s", pid, files[pid], why)
        else:
            out[pid] = text
    log.info("structures: %d of %d shown proteins (%s)", len(out), len(sequences), directory)
    return out


def annotation_tracks(labels_path: Path, ids: list[str],
                      sequences: Mapping[str, str]) -> tuple[list[str], dict[str, list[list[int]]]]:
    """The annotated residues of the proteins ``ids`` in a concept-labels file
    (``evaluate_concepts.py labels``): (concept names, {protein id: [[concept index, start,
    stop], ...]}) with 0-based half-open intervals, reported concepts only (no amino acids).
    Proteins without labels are left out; labels of another sequence are an error."""
    from interplm_jax.concepts.labels import ConceptLabels, is_reported
    from interplm_jax.errors import InputError

    labels = ConceptLabels.load(labels_path)
    index = {pid: i for i, pid in enumerate(labels.protein_ids)}
    concepts = [i for i, c in enumerate(labels.concepts) if is_reported(c)]
    col = {c: j for j, c in enumerate(concepts)}
    out: dict[str, list[list[int]]] = {}
    for pid in ids:
        p = index.get(pid)
        if p is None:
            continue
        if labels.sequence(p) != sequences[pid]:
            raise InputError(f"{labels_path}: protein {pid!r} has another sequence than the "
                             "report's FASTA (labels of another evaluation set?)")
        lo, hi = np.searchsorted(labels.iv_protein, [p, p + 1])
        rows = [[col[int(c)], int(a), int(b)] for c, a, b in
                zip(labels.iv_concept[lo:hi], labels.iv_start[lo:hi], labels.iv_stop[lo:hi])
                if int(c) in col]
        if rows:
            out[pid] = rows
    return [labels.concepts[c] for c in concepts], out
