"""A study run by ``scripts/pipeline.py``: its ``study:`` config section, the layout of its output
directory, and the ledger of finished stages.

A stage is *done* when its marker ``<out>/pipeline/<stage>.json`` exists and records the same
fingerprint: a hash of the config sections the stage reads and of the fingerprints of the stages
before it. A stage without a marker is (re)run, and each stage's commands resume their own
partial work; a stage whose marker disagrees with the config is refused with the keys that
changed, and ``--redo STAGE`` clears that stage and every later one.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from interplm_jax.atomic import atomic_write
from interplm_jax.config import from_dict, option, read_yaml
from interplm_jax.errors import InputError

STAGES = ("model", "extract", "evalset", "train", "normalize", "concepts", "analysis", "annotate",
          "bench", "report")
BASELINES = ("shuffled", "neurons")
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
    baselines: tuple[str, ...] = option((), "Baselines evaluated beside the SAEs: shuffled, neurons.")
    shuffle_seed: int = option(0, "Seed of the shuffled-weight ESM-2.")
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


@dataclasses.dataclass(frozen=True)
class StudyLayout:
    """Where each stage writes, under one output directory."""

    root: Path

    def model(self, name: str) -> Path:
        return self.root / "models" / name

    def variant(self, variant: str) -> Path:
        """``esm2`` (the model of ``extract.model``) or ``shuffled``."""
        return self.root / variant

    def store(self, variant: str) -> Path:
        return self.variant(variant) / "store"

    def eval_store(self, variant: str) -> Path:
        return self.variant(variant) / "store_eval"

    def sweeps(self, variant: str) -> Path:
        return self.variant(variant) / "sweeps"

    @property
    def structure_store(self) -> Path:
        return self.variant("esm2") / "store_af"

    def neurons(self, layer: int) -> Path:
        return self.root / "baselines" / "neurons" / f"layer_{layer}"

    @property
    def concepts(self) -> Path:
        return self.root / "concepts"

    @property
    def selection(self) -> Path:
        return self.concepts / "selection.csv"

    @property
    def bench(self) -> Path:
        """The bench: bench.csv, Pareto plots, warnings.json (scripts/bench.py table), and the
        part tables and fidelity tables it is joined from."""
        return self.root / "bench"

    def bench_part(self, model: str, layer: int, sae: str = "saes") -> Path:
        """The part table of one layer's SAEs (``sae`` = ``neurons``: its neuron baseline;
        ``probes``: their sparse probes)."""
        return self.bench / "parts" / f"{model}_L{layer}_{sae}.csv"

    def bench_fidelity(self, model: str, layer: int) -> Path:
        return self.bench / "fidelity" / f"{model}_L{layer}.tsv"

    def analysis(self, layer: int) -> Path:
        return self.root / "analysis" / f"layer_{layer}"

    def annotate(self, layer: int) -> Path:
        return self.root / "annotate" / f"layer_{layer}"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def ledger(self) -> Path:
        return self.root / "pipeline"

    def outputs(self, stage: str) -> list[Path]:
        """What ``--redo STAGE`` removes (stage outputs only; earlier stages are kept)."""
        r = self.root
        return {
            "model": [r / "models"],
            "extract": [self.store(v) for v in ("esm2", "shuffled")],
            "evalset": [self.concepts / "labels.npz", self.concepts / "labels.json", self.concepts / "set",
                        self.structure_store] + [self.eval_store(v) for v in ("esm2", "shuffled")],
            "train": [self.sweeps(v) for v in ("esm2", "shuffled")],
            "normalize": [r / "baselines"],  # sweeps' saes/ are rewritten by the stage itself
            "concepts": [self.concepts / "f1", self.selection, self.concepts / "report"],
            "analysis": [r / "analysis"],
            "annotate": [r / "annotate"],
            "bench": [self.bench],
            "report": [self.report],
        }[stage]

    def chosen(self, kind: str = "sae") -> dict[int, Path]:
        """Layer -> directory of the SAE that concept selection chose (``kind`` sae or shuffled)."""
        variant = "esm2" if kind == "sae" else kind
        if not self.selection.is_file():
            raise InputError(f"{self.selection}: no selection yet (run the concepts stage)")
        with open(self.selection, newline="") as f:
            return {int(r["layer"]): self.sweeps(variant) / f"layer_{r['layer']}" / "saes" / r["name"]
                    for r in csv.DictReader(f) if r["selected"] == "True" and r["kind"] == kind}


def report_inputs(layout: StudyLayout, layers: Sequence[int]) -> list:
    """The feature browser's inputs (:class:`interplm_jax.report.LayerInputs`) per layer: the
    chosen SAE, its sweep and selection scores, its valid/test concept counts, and the UMAP,
    spatial and annotation outputs where the study has them."""
    from interplm_jax.report import LayerInputs

    chosen = layout.chosen("sae")

    def there(p: Path) -> Path | None:
        return p if p.exists() else None

    f1 = layout.concepts / "f1"
    return [LayerInputs(L, layout.sweeps("esm2") / f"layer_{L}", chosen[L], layout.selection,
                        there(f1 / f"esm2_L{L}_chosen_valid.npz"), there(f1 / f"esm2_L{L}_chosen_test.npz"),
                        there(layout.analysis(L) / "feature_map.tsv"),
                        there(layout.analysis(L) / f"spatial_layer{L}.tsv"), there(layout.annotate(L)),
                        there(layout.concepts / "report" / "summary.csv"))
            for L in layers]


def fingerprint(parts: Mapping[str, Any]) -> str:
    """A stable hash of JSON-able ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    """Remove the outputs and markers of ``stage`` and every later stage; return what was removed."""
    removed = []
    for s in STAGES[STAGES.index(stage):]:
        Ledger(layout.ledger).clear(s)
        for p in layout.outputs(s):
            if p.is_dir():
                shutil.rmtree(p)
                removed.append(p)
            elif p.exists():
                p.unlink()
                removed.append(p)
    return removed
