"""Where every file of a study lives: each name is written here once and used by the writers
(scripts, library functions) and the readers (the pipeline, the feature browser) alike.

Each tool writes into a directory its user names (``--out``): the small classes below name the
files inside one such directory, and :class:`StudyLayout` places those directories under the
study directory of ``scripts/pipeline.py``. Sweep directories may be ``gs://`` URLs, so
:class:`SweepFiles` works on any :data:`~interplm_jax.paths.AnyPath`.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import Sequence

from interplm_jax.errors import InputError
from interplm_jax.paths import AnyPath, as_path

#: The study's main model's variant name (its stores and sweeps are in ``<study>/model/``);
#: studies made before it was named so use ``esm2`` (:attr:`StudyLayout.main` finds which).
MAIN, LEGACY_MAIN = "model", "esm2"
#: Control models made from the main one, each with its own stores and sweeps when the study's
#: ``baselines`` ask for it: its weights shuffled, and a fresh random initialisation.
CONTROLS = ("shuffled", "random_init")
#: Variant (the bench's ``model`` column) -> its SAEs' row kind in ``selection.csv``.
KINDS = {MAIN: "sae", LEGACY_MAIN: "sae", **{c: c for c in CONTROLS}}


def counts_table(counts: str | os.PathLike) -> Path:
    """The per-concept CSV written beside a concept counts file (``evaluate_concepts.py f1``)."""
    return Path(counts).with_suffix(".csv")


def counts_partial(counts: str | os.PathLike) -> Path:
    """The resumable partial counts of a counts file being made (``evaluate_concepts.py f1``)."""
    return Path(f"{counts}.partial.npz")


def labels_summary(labels: str | os.PathLike) -> Path:
    """The JSON summary written beside a labels file (``evaluate_concepts.py labels``)."""
    return Path(labels).with_suffix(".json")


def _file(name: str) -> property:
    """A property: the file (or subdirectory) ``name`` of the directory ``self.root``."""
    return property(lambda self: self.root / name, doc=f"``<root>/{name}``")


@dataclasses.dataclass(frozen=True)
class _Files:
    """A directory whose files have fixed names; ``root``: a local path (made absolute) or a
    ``gs://`` URL."""

    root: AnyPath

    def __post_init__(self):
        object.__setattr__(self, "root", as_path(self.root))


class SweepFiles(_Files):
    """A sweep directory (``scripts/train.py``, one layer; local or ``gs://``): config, grid,
    metrics, orbax checkpoints, the input transform and the preflight, and the SAEs written
    from it (``saes/<id>/``, by normalization)."""

    config = _file("config.yaml")
    grid = _file("grid.json")
    metrics = _file("metrics.jsonl")
    checkpoints = _file("checkpoints")
    saes = _file("saes")
    input_transform = _file("input_transform.json")  # centring/scaling of the inputs
    preflight = _file("preflight")  # the dry run before training
    preflight_report = _file("preflight/preflight.json")

    def sae(self, sae_id: str) -> AnyPath:
        return self.saes / sae_id


class EvalSetFiles(_Files):
    """The evaluation set (``evaluate_concepts.py split --out``)."""

    definition = _file("evalset.json")
    fasta = _file("proteins.fasta")
    concepts_kept = _file("concepts_kept.csv")


class ConceptReportFiles(_Files):
    """The held-out concept report (``evaluate_concepts.py report --out``); ``tag`` is
    ``<model>_<kind>_L<layer>_<name>``."""

    summary = _file("summary.csv")
    figure = _file("concepts_per_layer.png")

    def per_concept(self, tag: str) -> Path:
        return self.root / f"per_concept_{tag}.csv"

    def pairs(self, tag: str) -> Path:
        return self.root / f"pairs_{tag}.csv"


class AnalysisFiles(_Files):
    """The outputs of ``analyze.py umap`` (``<name>.tsv/.png``, default name ``feature_map``)
    and ``analyze.py spatial`` (per layer) in one output directory."""

    umap_dashboard = _file("UMAP.csv")  # InterPLM's dashboard names
    structure_dashboard = _file("Structure_feats.csv")

    def feature_map(self, name: str = "feature_map", ext: str = "tsv") -> Path:
        return self.root / f"{name}.{ext}"

    def structures(self, layer: int) -> Path:
        return self.root / f"structures_layer{layer}.tsv"

    def spatial(self, layer: int, ext: str = "tsv") -> Path:
        return self.root / f"spatial_layer{layer}.{ext}"

    def spatial_pairs(self, layer: int, partial: bool = False) -> Path:
        """Per (protein, feature) scores; ``partial``: those of an unfinished run."""
        return self.root / f"spatial_layer{layer}_pairs{'.partial' if partial else ''}.npz"


class AnnotateFiles(_Files):
    """An LLM annotation run (``annotate.py features --out``; ``validate --run`` adds to it;
    ``categorise --out`` writes the category files)."""

    examples = _file("examples.json")
    max_acts = _file("max_acts.npz")
    descriptions = _file("descriptions.csv")
    validation = _file("validation.csv")
    predictions = _file("predictions.csv")
    validation_summary = _file("validation_summary.json")
    validation_hist = _file("validation_hist.png")
    dashboard = _file("LLM_Autointerp.csv")  # InterPLM's dashboard name
    concept_categories = _file("concept_categories.csv")
    categories = _file("categories.json")
    cache = _file("cache")
    dry_run = _file("dry_run")

    def category_counts(self, ext: str = "csv") -> Path:
        return self.root / f"category_counts.{ext}"

    def usage(self, step: str) -> Path:
        """Token totals of ``step`` (features, validate, categorise)."""
        return self.root / f"usage_{step}.json"

    def failures(self, step: str) -> Path:
        return self.root / f"failures_{step}.jsonl"


class BenchFiles(_Files):
    """The bench (``bench.py table --out``): the table, its plots and warnings; and, written by
    the pipeline's ``bench`` stage, the part tables and fidelity tables it is joined from."""

    table = _file("bench.csv")
    warnings = _file("warnings.json")
    probes = _file("probes.csv")
    probes_summary = _file("probes_summary.csv")
    probes_plot = _file("probes.png")
    causal = _file("causal.csv")
    test_fasta = _file("test_proteins.fasta")  # fidelity's proteins

    def pareto(self, y: str) -> AnyPath:
        """The plot of L0 against the bench column ``y``."""
        return self.root / f"pareto_{y}.png"

    def part(self, model: str, layer: int, what: str = "saes") -> AnyPath:
        """The part table of one layer's SAEs (``what`` = ``neurons``: its neuron baseline;
        ``probes``: the SAEs' sparse probes; ``causal``: the chosen SAE's causal test)."""
        return self.root / "parts" / f"{model}_L{layer}_{what}.csv"

    def fidelity(self, model: str, layer: int) -> AnyPath:
        return self.root / "fidelity" / f"{model}_L{layer}.tsv"


@dataclasses.dataclass(frozen=True)
class StudyLayout:
    """Where each stage of a study writes, under one output directory."""

    root: Path

    def model(self, name: str) -> Path:
        return self.root / "models" / name

    def control_model(self, control: str) -> Path:
        """The control model made by the ``model`` stage (``models/shuffled`` was
        ``models/shuffled-esm2`` in studies made before)."""
        legacy = self.model("shuffled-esm2")
        return legacy if control == "shuffled" and legacy.is_dir() else self.model(control)

    @property
    def main(self) -> str:
        """The main model's variant name: :data:`MAIN`, or :data:`LEGACY_MAIN` in a study made
        before (one with an ``esm2/`` and no ``model/`` directory), so that it still resumes."""
        old = (self.root / LEGACY_MAIN).is_dir() and not (self.root / MAIN).is_dir()
        return LEGACY_MAIN if old else MAIN

    def variants(self, baselines: Sequence[str] = CONTROLS) -> tuple[str, ...]:
        """The main model and the controls among ``baselines``."""
        return (self.main, *(c for c in CONTROLS if c in baselines))

    def variant(self, variant: str) -> Path:
        """The main model's (:attr:`main`) or a control's (:data:`CONTROLS`) directory."""
        return self.root / variant

    def store(self, variant: str) -> Path:
        return self.variant(variant) / "store"

    def eval_store(self, variant: str) -> Path:
        return self.variant(variant) / "store_eval"

    def sweeps(self, variant: str) -> Path:
        """The ``--out`` of ``train.py``: one sweep directory per layer below."""
        return self.variant(variant) / "sweeps"

    def sweep(self, variant: str, layer: int) -> SweepFiles:
        return SweepFiles(sweep_dir(self.sweeps(variant), layer))

    @property
    def structure_store(self) -> Path:
        return self.variant(self.main) / "store_af"

    def neurons(self, layer: int) -> Path:
        return self.root / "baselines" / "neurons" / f"layer_{layer}"

    @property
    def concepts(self) -> Path:
        return self.root / "concepts"

    @property
    def labels(self) -> Path:
        return self.concepts / "labels.npz"

    @property
    def eval_set(self) -> EvalSetFiles:
        return EvalSetFiles(self.concepts / "set")

    @property
    def f1_dir(self) -> Path:
        return self.concepts / "f1"

    def f1_counts(self, variant: str, layer: int, split: str, sae: str = "chosen") -> Path:
        """Concept counts of one SAE on one split: every candidate ``sae`` of a sweep on the
        select split; the chosen one (and the neurons, ``variant`` ``neurons``) on valid and
        test."""
        return self.f1_dir / f"{variant}_L{layer}_{sae}_{split}.npz"

    @property
    def selection(self) -> Path:
        return self.concepts / "selection.csv"

    @property
    def concept_report(self) -> ConceptReportFiles:
        return ConceptReportFiles(self.concepts / "report")

    @property
    def bench(self) -> BenchFiles:
        return BenchFiles(self.root / "bench")

    def analysis(self, layer: int) -> Path:
        return self.root / "analysis" / f"layer_{layer}"

    def analysis_files(self, layer: int) -> AnalysisFiles:
        return AnalysisFiles(self.analysis(layer))

    def annotate(self, layer: int) -> Path:
        return self.root / "annotate" / f"layer_{layer}"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def report_page(self) -> Path:
        return report_page(self.report)

    @property
    def ledger(self) -> Path:
        return self.root / "pipeline"

    def outputs(self, stage: str) -> list[Path]:
        """What ``--redo STAGE`` removes (stage outputs only; earlier stages are kept)."""
        variants = self.variants()
        return {
            "model": [self.root / "models"],
            "extract": [self.store(v) for v in variants],
            "evalset": [self.labels, labels_summary(self.labels), self.eval_set.root,
                        self.structure_store] + [self.eval_store(v) for v in variants],
            "train": [self.sweeps(v) for v in variants],
            "normalize": [self.root / "baselines"],  # sweeps' saes/ are rewritten by the stage itself
            "concepts": [self.f1_dir, self.selection, self.concept_report.root],
            "analysis": [self.root / "analysis"],
            "annotate": [self.root / "annotate"],
            "bench": [self.bench.root],
            "report": [self.report],
        }[stage]

    def _selected(self, kind: str) -> dict[int, dict]:
        """Layer -> the ``selection.csv`` row of the SAE chosen for it (``kind``: ``sae``, the
        main model's, or a control's: ``shuffled``, ``random_init``)."""
        if not self.selection.is_file():
            raise InputError(f"{self.selection}: no selection yet (run the concepts stage)")
        return {int(r["layer"]): r for r in read_selection(self.selection)
                if r["selected"] == "True" and r["kind"] == kind}

    def chosen(self, kind: str = "sae") -> dict[int, Path]:
        """Layer -> directory of the SAE that concept selection chose (``kind`` as :meth:`_selected`)."""
        variant = self.main if kind == "sae" else kind
        return {L: Path(self.sweep(variant, L).sae(r["name"])) for L, r in self._selected(kind).items()}

    def chosen_per_concept(self, layer: int, kind: str = "sae") -> Path:
        """The concept report's per-concept table (the feature chosen on valid for each concept)
        of the SAE chosen for ``layer``."""
        selected = self._selected(kind)
        if layer not in selected:
            raise InputError(f"{self.selection}: no {kind} chosen for layer {layer} (layers {sorted(selected)})")
        r = selected[layer]
        return self.concept_report.per_concept(f"{r['model']}_{kind}_L{layer}_{r['name']}")


def read_selection(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``selection.csv`` (``evaluate_concepts.py select``), each ``counts`` file
    as a Path: written relative to the CSV's directory, so that a study can be moved (files
    written before hold absolute paths, read as they are)."""
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["counts"] = path.parent / r["counts"]  # an absolute one stays itself
    return rows


def sweep_dir(out: str | os.PathLike, layer: int) -> AnyPath:
    """The sweep directory of ``layer`` under a ``train.py --out`` (local path or ``gs://``)."""
    return as_path(out) / f"layer_{layer}"


def report_page(out: str | os.PathLike) -> Path:
    """The feature browser's page in ``report.py --out`` (and ``explain.py --out``)."""
    return Path(out) / "index.html"


def explain_table(out: str | os.PathLike) -> Path:
    """The activations table of ``explain.py --out``."""
    return Path(out) / "activations.tsv"
