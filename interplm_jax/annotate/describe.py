"""Feature descriptions: examples per feature -> description prompts -> Claude -> a table.

A run directory holds ``examples.json`` (each feature's train and eval proteins with their
measured maximum activations, and the activated residues of the train ones) and
``descriptions.csv`` (feature, status, summary, description, error); validation reads both.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from interplm_jax.annotate.config import AnnotateConfig
from interplm_jax.annotate.llm import LLM, Request
from interplm_jax.annotate.metadata import ProteinInfo
from interplm_jax.annotate.prompts import (description_table, parse_description, render,
                                           residues_text)
from interplm_jax.annotate.select import Selection
from interplm_jax.atomic import atomic_write
from interplm_jax.errors import InputError

log = logging.getLogger(__name__)

DESCRIPTION_COLUMNS = ("feature", "status", "n_train", "n_eval", "summary", "description", "error")


@dataclasses.dataclass(frozen=True)
class Example:
    """One example protein of a feature: its measured max activation, and (train) residues."""

    protein: str
    activation: float
    residues: str = ""


@dataclasses.dataclass(frozen=True)
class FeatureExamples:
    feature: int
    excluded: bool
    train: tuple[Example, ...]
    eval: tuple[Example, ...]


def build_examples(selection: Selection, protein_ids: Sequence[str], max_acts: np.ndarray,
                   sequences: Mapping[str, str],
                   positions: Mapping[tuple[int, int], tuple[np.ndarray, int]] | None = None,
                   ) -> list[FeatureExamples]:
    """Attach ids, measured activations and (for train) activated residues to a selection.

    max_acts: (n_proteins, K), the columns of ``selection.features``. positions: from
    :func:`~interplm_jax.annotate.activations.positions_for_examples`, keyed (protein, column).
    """
    out = []
    for k, feature in enumerate(selection.features):
        def ex(p: int, with_residues: bool) -> Example:
            pid = protein_ids[p]
            residues = ""
            if with_residues and positions is not None:
                pos, n_act = positions[(int(p), k)]
                residues = residues_text(sequences[pid], pos, n_act)
            return Example(pid, float(max_acts[p, k]), residues)

        out.append(FeatureExamples(
            int(feature), bool(selection.excluded[k]),
            tuple(ex(p, True) for p in selection.examples(k, "train")),
            tuple(ex(p, False) for p in selection.examples(k, "eval"))))
    return out


def save_examples(path: str | Path, examples: Sequence[FeatureExamples], info: dict[str, Any]) -> None:
    """``examples.json``: run information plus every feature's examples."""
    payload = {"info": info, "features": [dataclasses.asdict(e) for e in examples]}
    atomic_write(path, json.dumps(payload, indent=1))


def load_examples(path: str | Path) -> tuple[list[FeatureExamples], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not found; run `annotate.py features` first")
    data = json.loads(path.read_text())
    feats = [FeatureExamples(f["feature"], f["excluded"],
                             tuple(Example(**e) for e in f["train"]),
                             tuple(Example(**e) for e in f["eval"])) for f in data["features"]]
    return feats, data["info"]


def description_requests(examples: Sequence[FeatureExamples], metadata: Mapping[str, ProteinInfo],
                         cfg: AnnotateConfig, prompt_dir: str | Path | None = None,
                         model: str = "ESM-2") -> list[Request]:
    """One description request per feature that is not excluded (``model``: the protein LM's
    name in the prompt, e.g. ``ESM C``)."""
    system = render("describe_system", prompt_dir, model=model)
    reqs = []
    for fx in examples:
        if fx.excluded:
            continue
        rows = [(metadata[e.protein], e.activation, e.residues) for e in fx.train]
        prompt = render("describe", prompt_dir, feature=fx.feature, table=description_table(rows),
                        position_percent=int(round(100 * cfg.prompt.position_fraction)))
        reqs.append(Request(f"describe-{fx.feature}", system, prompt, cfg.llm.max_tokens_describe))
    return reqs


def describe_features(examples: Sequence[FeatureExamples], metadata: Mapping[str, ProteinInfo],
                      llm: LLM, cfg: AnnotateConfig,
                      prompt_dir: str | Path | None = None, model: str = "ESM-2") -> list[dict[str, Any]]:
    """Ask Claude for each feature's description and summary; one row per feature."""
    reqs = description_requests(examples, metadata, cfg, prompt_dir, model)
    answers = {o.label: o for o in llm.run(reqs, parse_description, desc="descriptions")}
    rows = []
    for fx in examples:
        row = {"feature": fx.feature, "n_train": len(fx.train), "n_eval": len(fx.eval),
               "summary": "", "description": "", "error": ""}
        if fx.excluded:
            row.update(status="excluded", error="fewer proteins than min_top_three in the top "
                                                "three activation bins")
        else:
            o = answers[f"describe-{fx.feature}"]
            row.update(status="ok" if o.ok else "failed", error=o.error, **(o.value or {}))
        rows.append(row)
    n_ok = sum(r["status"] == "ok" for r in rows)
    log.info("descriptions: %d ok, %d failed, %d excluded", n_ok,
             sum(r["status"] == "failed" for r in rows), sum(r["status"] == "excluded" for r in rows))
    return rows


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows (dicts) to a CSV with the given columns, atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not found")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
