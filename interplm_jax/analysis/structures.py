"""AlphaFold DB structures: find the file of a protein, read its C-alpha coordinates with gemmi,
and check them against the protein's sequence.

A structure is used only with *complete coordinates*: one chain, residues numbered 1..L without
gaps, a C-alpha atom on every residue, L equal to the sequence length and the residue names
matching the sequence letters (``X`` in the sequence matches anything). Any other structure is
reported, with the reason, and excluded; it is never used silently.

File names looked up in a directory (plain or ``.gz``): ``AF-<accession>-F1-model_v<N>.cif``,
``AF-<accession>-F1-model_v<N>.pdb`` (v4 preferred, then the highest version), then
``<accession>.cif`` and ``<accession>.pdb``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from interplm_jax.errors import InputError

log = logging.getLogger(__name__)

_AF_NAME = re.compile(r"^AF-(?P<acc>[^-]+)-F1-model_v(?P<ver>\d+)\.(?P<fmt>pdb|cif)(?:\.gz)?$")
_PLAIN_NAME = re.compile(r"^(?P<acc>[^.]+)\.(?P<fmt>pdb|cif)(?:\.gz)?$")


#: Backbone atoms kept in :attr:`Structure.backbone`, in this order.
BACKBONE = ("N", "CA", "C", "O")


@dataclasses.dataclass(frozen=True)
class Structure:
    """One chain: ``sequence`` (one letter per residue), ``ca`` (L, 3) C-alpha coordinates in
    Angstrom, ``numbers`` (L,) residue sequence numbers, ``path`` of the file, and ``backbone``
    (L, 4, 3): the atoms of :data:`BACKBONE` (NaN where absent; ``ca`` is ``backbone[:, 1]``)."""

    sequence: str
    ca: np.ndarray
    numbers: np.ndarray
    path: str
    chains: int = 1
    backbone: np.ndarray | None = None


def index_directory(directory: str | os.PathLike) -> dict[str, Path]:
    """Accession -> the preferred structure file among those in ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: structure directory not found")
    ranked: dict[str, tuple[tuple, Path]] = {}
    for path in directory.iterdir():
        m = _AF_NAME.match(path.name)
        if m:
            ver = int(m["ver"])
            # v4 first (the paper's AFDB-F1-v4), then newer/older by version; mmCIF before PDB
            rank = (0, 0 if ver == 4 else 1, -ver, m["fmt"] != "cif", path.name)
        else:
            m = _PLAIN_NAME.match(path.name)
            if not m:
                continue
            rank = (1, 0, 0, m["fmt"] != "cif", path.name)
        acc = m["acc"]
        if acc not in ranked or rank < ranked[acc][0]:
            ranked[acc] = (rank, path)
    return {acc: path for acc, (_, path) in ranked.items()}


def read_ca(path: str | os.PathLike) -> Structure:
    """Read the first model's first polymer chain of a PDB or mmCIF file (gzip or not).

    Returns:
      Its :class:`Structure` (C-alpha and backbone atoms). Residues without a C-alpha get NaN
      coordinates (so that the check can report them); waters and ligands are left out.
    Raises:
      InputError: the file is unreadable or holds no polymer residue.
    """
    import gemmi

    path = Path(path)
    try:
        st = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError) as e:
        raise InputError(f"{path}: cannot read structure: {e}") from None
    st.remove_ligands_and_waters()
    st.remove_empty_chains()
    if len(st) == 0 or len(st[0]) == 0:
        raise InputError(f"{path}: no polymer chain in the first model")
    model = st[0]
    chain = model[0]
    residues = [r for r in chain.first_conformer()]
    if not residues:
        raise InputError(f"{path}: chain {chain.name} has no residues")
    backbone = np.full((len(residues), len(BACKBONE), 3), np.nan)
    for i, res in enumerate(residues):
        for j, name in enumerate(BACKBONE):
            atom = res.find_atom(name, "*")
            if atom is not None:
                backbone[i, j] = (atom.pos.x, atom.pos.y, atom.pos.z)
    sequence = gemmi.one_letter_code([r.name for r in residues]).upper()
    numbers = np.array([r.seqid.num for r in residues], dtype=np.int64)
    return Structure(sequence, backbone[:, 1].copy(), numbers, str(path), chains=len(model),
                     backbone=backbone)


def mismatch(structure: Structure, sequence: str) -> str | None:
    """Why ``structure`` does not give complete coordinates for ``sequence``, or None."""
    n, length = len(structure.sequence), len(sequence)
    if structure.chains != 1:
        return f"{structure.chains} polymer chains (expected one)"
    expected = np.arange(1, n + 1)
    if not np.array_equal(structure.numbers, expected):
        gaps = np.flatnonzero(np.diff(structure.numbers) != 1)
        if structure.numbers[0] != 1:
            return f"residue numbering starts at {structure.numbers[0]}, not 1 (missing residues)"
        if gaps.size:
            a, b = structure.numbers[gaps[0]], structure.numbers[gaps[0] + 1]
            return f"missing residues: numbering jumps from {a} to {b}"
        return "residue numbering is not 1..L"
    if n != length:
        return f"{n} residues in the structure, {length} in the sequence"
    no_ca = np.flatnonzero(np.isnan(structure.ca).any(axis=1))
    if no_ca.size:
        return f"no C-alpha atom at residue(s) {', '.join(map(str, structure.numbers[no_ca][:5]))}"
    for i, (s, q) in enumerate(zip(structure.sequence, sequence)):
        if s != q and q != "X":
            return f"residue {i + 1} is {s} in the structure but {q} in the sequence"
    return None


@dataclasses.dataclass
class StructureSet:
    """C-alpha coordinates of the proteins with complete structures, and why others have none.

    ``coords``: protein id -> (L, 3) float32; ``excluded``: (protein id, file or '', reason);
    ``files``: protein id -> the structure file its coordinates were read from.
    """

    coords: dict[str, np.ndarray]
    excluded: list[tuple[str, str, str]]
    files: dict[str, str] = dataclasses.field(default_factory=dict)

    def report_rows(self) -> list[dict[str, str]]:
        """One row per protein: id, status (``used`` or ``excluded``), file read and reason."""
        rows = [dict(protein=p, status="used", file=self.files.get(p, ""), reason="")
                for p in self.coords]
        rows += [dict(protein=p, status="excluded", file=f, reason=r) for p, f, r in self.excluded]
        return rows


def load_structures(sequences: Mapping[str, str] | Iterable[tuple[str, str]],
                    directory: str | os.PathLike) -> StructureSet:
    """C-alpha coordinates of each protein whose structure in ``directory`` is complete.

    Args:
      sequences: protein id (a UniProt accession) -> amino-acid sequence.
      directory: folder of AlphaFold DB files (names in the module docstring).
    """
    from interplm_jax.progress import progress_bar

    items = list(sequences.items() if isinstance(sequences, Mapping) else sequences)
    files = index_directory(directory)
    coords: dict[str, np.ndarray] = {}
    read_from: dict[str, str] = {}
    excluded: list[tuple[str, str, str]] = []
    with progress_bar(len(items), desc="structures", unit="protein") as bar:
        for pid, seq in items:
            bar.update()
            path = files.get(pid)
            if path is None:
                excluded.append((pid, "", "no structure file"))
                continue
            try:
                st = read_ca(path)
            except InputError as e:
                excluded.append((pid, str(path), str(e)))
                continue
            why = mismatch(st, seq)
            if why is not None:
                excluded.append((pid, str(path), why))
                continue
            coords[pid] = st.ca.astype(np.float32)
            read_from[pid] = str(path)
    log.info("structures: %d of %d proteins have complete coordinates in %s (%d excluded)",
             len(coords), len(items), directory, len(excluded))
    return StructureSet(coords, excluded, read_from)
