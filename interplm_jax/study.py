"""A study run by ``scripts/pipeline.py``: its ``study:`` config section and the ledger of
finished stages (where its files live: :mod:`interplm_jax.layout`).

A stage is *done* when its marker ``<out>/pipeline/<stage>.json`` exists and records the same
fingerprint: a hash of the config sections the stage reads and of the fingerprints of the stages
before it. A stage without a marker is (re)run, and each stage's commands resume their own
partial work; a stage whose marker disagrees with the config is refused with the keys that
changed, and ``--redo STAGE`` clears that stage and every later one.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from interplm_jax.atomic import atomic_write
from interplm_jax.config import from_dict, option, read_yaml, to_dict
from interplm_jax.digest import file_digest, fingerprint, tree_digest
from interplm_jax.errors import InputError
from interplm_jax.layout import CONTROLS, StudyLayout

STAGES = ("model", "extract", "evalset", "train", "normalize", "concepts", "analysis", "annotate",
          "bench", "report")
BASELINES = (*CONTROLS, "neurons")
ANNOTATE_MODES = ("auto", "dry-run", "off")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The ``study:`` section: what goes in, which baselines and analyses run.

    Paths are relative to the config file's directory (or absolute)."""

    name: str = option("study", "Model label in tables and the report, e.g. esm2_8m.")
    train_fasta: str = option("", "FASTA of the SAE training proteins.")
    annotations: str = option("", "UniProtKB TSV (with sequences) or Swiss-Prot flat file (.dat) "
                              "of the concept-evaluation proteins.")
    structures: str | None = option(None, "Directory of AlphaFold models for the spatial analysis (none: skipped).")
    structures_fasta: str | None = option(None, "FASTA of the proteins of --structures.")
    baselines: tuple[str, ...] = option((), "Baselines evaluated beside the SAEs: shuffled (the "
                                        "model's weights shuffled), random_init (the model's config, "
                                        "randomly initialised), neurons.")
    shuffle_seed: int = option(0, "Seed of the shuffled-weight model.")
    random_init_seed: int = option(0, "Seed of the randomly initialised model (torch.manual_seed).")
    analysis_layers: tuple[int, ...] | None = option(None, "Layers of the UMAP, spatial and annotation stages (none: all).")
    annotate: str = option("auto", "LLM annotation: auto (real calls when ANTHROPIC_API_KEY is set, else a dry run), dry-run, off.")

    def __post_init__(self):
        if not self.train_fasta:
            raise ValueError("train_fasta is required")
        if not self.annotations:
            raise ValueError("annotations is required")
        bad = sorted(set(self.baselines) - set(BASELINES))
        if bad:
            raise ValueError(f"unknown baseline(s) {bad}; known: {list(BASELINES)}")
        if self.annotate not in ANNOTATE_MODES:
            raise ValueError(f"annotate: {self.annotate!r} is not one of {list(ANNOTATE_MODES)}")
        if (self.structures is None) != (self.structures_fasta is None):
            raise ValueError("structures and structures_fasta go together")



def read_config(path: str | Path) -> tuple[StudyConfig, dict[str, Any]]:
    """The study section (paths made absolute) and the whole config as a mapping."""
    path = Path(path)
    data = read_yaml(path)
    if "study" not in data:
        raise InputError(f"{path}: no study: section (see configs/demo.yaml)")
    study = from_dict(StudyConfig, data["study"], f"{path}:study")
    base = path.resolve().parent

    def resolve(p: str | None) -> str | None:
        if p is None:
            return None
        full = base / p
        if not full.exists():
            raise InputError(f"{path}:study: {p} not found (paths are relative to the config file)")
        return str(full)

    study = dataclasses.replace(study, train_fasta=resolve(study.train_fasta),
                                annotations=resolve(study.annotations),
                                structures=resolve(study.structures),
                                structures_fasta=resolve(study.structures_fasta))
    return study, data


def report_inputs(layout: StudyLayout, layers: Sequence[int]) -> list:
    """The feature browser's inputs (:class:`interplm_jax.report.LayerInputs`) per layer: the
    chosen SAE, its sweep and selection scores, its valid/test concept counts, and the UMAP,
    spatial and annotation outputs where the study has them."""
    from interplm_jax.report import LayerInputs

    chosen = layout.chosen("sae")

    def there(p: Path) -> Path | None:
        return p if p.exists() else None

    main = layout.main
    return [LayerInputs(L, Path(layout.sweep(main, L).root), chosen[L], layout.selection,
                        there(layout.f1_counts(main, L, "valid")),
                        there(layout.f1_counts(main, L, "test")),
                        there(layout.analysis_files(L).feature_map()),
                        there(layout.analysis_files(L).spatial(L)), there(layout.annotate(L)),
                        there(layout.concept_report.summary),
                        **{f"{kind}_f1{suffix}": there(layout.f1_counts(kind, L, split))
                           for kind in BASELINES for suffix, split in (("", "valid"), ("_test", "test"))})
            for L in layers]


def report_evidence(layout: StudyLayout, structures: str | None,
                    structures_fasta: str | None) -> dict:
    """The browser's evidence inputs of a study (keyword arguments of
    :func:`interplm_jax.report.build_report`): the concept labels of the evaluation proteins
    (annotation tracks) and the structures (``study.structures``) with the store of their
    proteins' activations when the evalset stage wrote one; the bench directory when the bench
    stage wrote its table."""
    from interplm_jax.report import StructureInputs

    out: dict = {"labels": layout.labels if layout.labels.is_file() else None, "structures": None,
                 "bench": layout.bench.root if layout.bench.table.is_file() else None}
    if structures:
        has_store = structures_fasta and (layout.structure_store / "manifest.json").is_file()
        out["structures"] = StructureInputs(Path(structures),
                                            layout.structure_store if has_store else None,
                                            Path(structures_fasta) if has_store else None)
    return out


def stage_inputs(study: StudyConfig, config: Mapping[str, Any], model: str | None,
                 annotate_mode: str) -> dict[str, dict[str, Any]]:
    """Per stage, what its outputs depend on: its config sections (``config``: the raw mapping
    of the config file), its input files by content (a same-size edit counts; streamed, cheap
    next to extraction), and the inputs of the stage before it (so a change upstream reaches
    every later stage). ``model``: the --model override; ``annotate_mode``: real, dry-run or off.
    """
    st = to_dict(study)

    def section(name: str) -> dict[str, Any]:
        return config.get(name) or {}

    def file(p):
        return None if p is None else {"path": str(p), "sha256": file_digest(p)}

    def tree(p):
        return None if p is None else {"path": str(p), "sha256": tree_digest(p)}

    own = {
        "model": {"model": model or section("extract").get("model"), "baselines": st["baselines"],
                  "shuffle_seed": st["shuffle_seed"],
                  # only where it is used: the markers of studies without it stay valid
                  **({"random_init_seed": st["random_init_seed"]} if "random_init" in st["baselines"] else {})},
        "extract": {"extract": section("extract"), "train_fasta": file(study.train_fasta)},
        "evalset": {"concepts": section("concepts"), "annotations": file(study.annotations),
                    "structures_fasta": file(study.structures_fasta),
                    "structures": tree(study.structures)},  # proteins with one are sampled first
        "train": {"train": section("train")},
        "normalize": {"normalize": section("normalize")},
        "concepts": {"concepts": section("concepts"), "name": st["name"]},
        "analysis": {"analysis": section("analysis"), "layers": st["analysis_layers"],
                     "structures": tree(study.structures)},
        "annotate": {"annotate": section("annotate"), "mode": annotate_mode},
        "bench": {"concepts": section("concepts"), "fidelity": section("fidelity"),
                  "analysis": section("analysis"),  # spatial.min_proteins: a guard
                  "causal": section("causal")},
        "report": {"report": section("report")},
    }
    inputs: dict[str, dict[str, Any]] = {}
    previous: dict[str, Any] = {}
    for stage in STAGES:
        inputs[stage] = {**own[stage], "_before": previous}
        previous = inputs[stage]
    return inputs


@dataclasses.dataclass(frozen=True)
class Ledger:
    """Markers of finished stages: ``<dir>/<stage>.json`` = {fingerprint, inputs, info}."""

    dir: Path

    def _path(self, stage: str) -> Path:
        return self.dir / f"{stage}.json"

    def status(self, stage: str, inputs: Mapping[str, Any]) -> str:
        """``done``, ``todo`` (no marker) or ``changed`` (marker from other inputs)."""
        path = self._path(stage)
        if not path.is_file():
            return "todo"
        return "done" if json.loads(path.read_text())["fingerprint"] == fingerprint(inputs) else "changed"

    def changed_keys(self, stage: str, inputs: Mapping[str, Any]) -> list[str]:
        """Top-level input keys whose value differs from the marker's."""
        old = json.loads(self._path(stage).read_text())["inputs"]
        new = json.loads(json.dumps(inputs, sort_keys=True, default=str))
        return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))

    def mark(self, stage: str, inputs: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> None:
        record = {"stage": stage, "fingerprint": fingerprint(inputs),
                  "inputs": json.loads(json.dumps(inputs, sort_keys=True, default=str)), "info": info or {}}
        atomic_write(self._path(stage), json.dumps(record, indent=1, sort_keys=True))

    def clear(self, stage: str) -> None:
        self._path(stage).unlink(missing_ok=True)


def redo(layout: StudyLayout, stage: str) -> list[Path]:
    """Remove the outputs and markers of ``stage`` and every later stage; return what was removed.

    Every affected marker goes first, so that a kill midway leaves no stage marked done whose
    outputs (or inputs) are already gone: the next run redoes them all.
    """
    affected = STAGES[STAGES.index(stage):]
    for s in affected:
        Ledger(layout.ledger).clear(s)
    removed = []
    for s in affected:
        for p in layout.outputs(s):
            if p.is_dir():
                shutil.rmtree(p)
                removed.append(p)
            elif p.exists():
                p.unlink()
                removed.append(p)
    return removed
