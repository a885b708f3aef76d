"""The one-protein view (``scripts/explain.py``): the SAE features of one or a few sequences,
per residue, in the feature browser's style, and the same numbers as a TSV.

The activations come in already encoded (``(L, F)`` per protein: the script extracts them with
``torch_bridge`` and encodes them with the SAE); this module picks what the page shows, names
the features (concept labels, LLM descriptions when a study has them) and writes both files.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from interplm_jax.atomic import atomic_write
from interplm_jax.layout import explain_table, report_page
from interplm_jax.report.examples import b64, quantise
from interplm_jax.report.inputs import _round

TSV_COLUMNS = ("protein", "residue", "amino_acid", "feature", "activation")


@dataclasses.dataclass(frozen=True)
class Explained:
    """One protein: ``id``, ``sequence`` and its SAE activations ``acts`` (L, F) float32."""

    id: str
    sequence: str
    acts: np.ndarray

    def __post_init__(self):
        if self.acts.ndim != 2 or self.acts.shape[0] != len(self.sequence):
            raise ValueError(f"{self.id}: activations {self.acts.shape} for {len(self.sequence)} residues")


def tsv_text(proteins: Sequence[Explained]) -> str:
    """Every positive activation as ``protein, residue (1-based), amino_acid, feature,
    activation``, by protein, residue, then decreasing activation (ties: feature)."""
    out = io.StringIO()
    w = csv.writer(out, delimiter="\t", lineterminator="\n")
    w.writerow(TSV_COLUMNS)
    for p in proteins:
        r, f = np.nonzero(p.acts > 0)
        vals = p.acts[r, f]
        for k in np.lexsort((f, -vals, r)):
            w.writerow([p.id, int(r[k]) + 1, p.sequence[r[k]], int(f[k]), f"{float(vals[k]):.6g}"])
    return out.getvalue()


def shown_features(acts: np.ndarray, per_residue: int, top: int) -> np.ndarray:
    """Features the page draws for one protein (L, F): the ``per_residue`` strongest of every
    residue and the ``top`` of highest maximum over the protein, active ones only, ascending."""
    m = acts.max(axis=0)
    keep = set(np.flatnonzero(m > 0)[np.argsort(-m[m > 0], kind="stable")][:top].tolist())
    if per_residue:
        k = min(per_residue, acts.shape[1])
        best = np.argpartition(-acts, k - 1, axis=1)[:, :k]
        keep |= {int(f) for f in best[np.take_along_axis(acts, best, 1) > 0]}
    return np.array(sorted(keep), np.int64)


def explain_data(proteins: Sequence[Explained], layer: int, sae_name: str, model: str,
                 per_residue: int = 3, top: int = 20,
                 concepts: Mapping[int, list] | None = None, concept_names: Sequence[str] = (),
                 descriptions: Mapping[int, dict] | None = None,
                 structures: Mapping[str, str] | None = None, label_min_f1: float = 0.5) -> dict:
    """The page's data: per protein its sequence, structure (``encode_backbone`` text or
    None) and the shown features as ``[feature, max, base64 uint8 activations over the whole
    sequence scaled to max]``; per feature shown, its best concepts (rows of
    ``report.concepts.feature_concepts``) and LLM description when given."""
    rows, named = [], set()
    for p in proteins:
        feats = shown_features(p.acts, per_residue, top)
        named |= set(feats.tolist())
        cols = []
        for f in feats:
            a = p.acts[:, f]
            cols.append([int(f), _round(float(a.max())), b64(quantise(a, float(a.max())))])
        rows.append({"id": p.id, "seq": p.sequence, "features": cols,
                     "structure": (structures or {}).get(p.id)})
    return {"format": "interplm-jax-explain", "version": 1, "layer": layer, "sae": sae_name,
            "model": model, "proteins": rows, "concept_names": list(concept_names),
            "config": {"label_min_f1": label_min_f1, "per_residue": per_residue},
            "concepts": {str(f): v for f, v in (concepts or {}).items() if f in named},
            "descriptions": {str(f): v for f, v in (descriptions or {}).items() if f in named}}


def write_explain(out: Path, data: dict, proteins: Sequence[Explained]) -> tuple[Path, Path]:
    """``<out>/index.html`` (the page) and ``<out>/activations.tsv``, each written atomically."""
    from interplm_jax.report.build import render_html

    title = f"{', '.join(p['id'] for p in data['proteins'])}: SAE features (layer {data['layer']})"
    page = render_html({**data, "title": title}, body="explain.html",
                       scripts=("util.js", "viewer.js", "explain.js"))
    tsv = atomic_write(explain_table(out), tsv_text(proteins))
    return atomic_write(report_page(out), page), tsv
