#!/usr/bin/env python
"""The whole study, FASTA to findings, from one config: every stage is the command a user would
run by hand (``scripts/<stage>.py``, invoked in this process and logged as a command line).

\b
  model     the tiny ESM-2 (config model "tiny") and the shuffled-weight baseline model
  extract   training proteins -> activation store, per model (ESM-2, shuffled)
  evalset   UniProt TSV -> concept labels -> valid/test split -> evaluation store per model;
            AlphaFold proteins -> their store
  train     a grid of SAEs per layer, one compiled vmapped step (per model)
  normalize every SAE of every sweep scaled by its max over the evaluation proteins; neuron baseline
  concepts  F1 of every SAE on the selection split -> best SAE per layer -> held-out test report
            (SAEs, shuffled-model SAEs, neurons)
  analysis  UMAP + HDBSCAN of the chosen SAEs' decoders; sequential vs structural clustering
  annotate  LLM descriptions (ANTHROPIC_API_KEY set) or prompts + a cost estimate (dry run)
  bench     every SAE of every grid on the held-out proteins: bench.csv (L0, FVE, dead/dense,
            loss recovered, concepts found, test F1) and Pareto plots; small-study warnings
  report    static HTML feature browser: <out>/report/index.html

A finished stage is skipped (marker in <out>/pipeline/); an interrupted one resumes where its
commands stopped. Changing a config section a finished stage used is refused: --redo STAGE.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from interplm_jax.cli import command, load_script
from interplm_jax.config import from_dict, to_dict
from interplm_jax.errors import InputError
from interplm_jax.study import STAGES, Ledger, StudyConfig, StudyLayout, read_config, redo

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("pipeline")


def run_script(name: str, *args) -> None:
    """Run ``scripts/<name>.py`` with ``args`` in this process, as its command line would."""
    module = load_script(REPO / "scripts" / f"{name}.py")
    argv = [str(a) for a in args]
    log.info("$ python scripts/%s.py %s", name, " ".join(argv))
    module.main.main(args=argv, standalone_mode=False)


@dataclass(frozen=True)
class Study:
    """Everything a stage needs: the config (file, raw sections for the stage fingerprints,
    parsed sections for the values), the layout, the model paths."""

    config: Path
    data: dict[str, Any]
    sections: dict[str, Any]  # section name -> its dataclass (parse_sections)
    out: StudyLayout
    model: str | None  # --model override

    @property
    def study(self) -> StudyConfig:
        return self.sections["study"]

    def section(self, name: str) -> dict[str, Any]:
        return self.data.get(name) or {}

    @property
    def variants(self) -> tuple[str, ...]:
        """Models whose activations get SAEs: ESM-2, and the shuffled baseline when asked."""
        return ("esm2", "shuffled") if "shuffled" in self.study.baselines else ("esm2",)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.sections["train"].layers or self.extract_config.layers)

    @property
    def analysis_layers(self) -> tuple[int, ...]:
        chosen = self.study.analysis_layers or self.layers
        bad = sorted(set(chosen) - set(self.layers))
        if bad:
            raise InputError(f"{self.config}:study.analysis_layers: {bad} not trained (layers {list(self.layers)})")
        return tuple(chosen)

    @property
    def extract_config(self):
        return self.sections["extract"]

    def model_path(self, variant: str) -> str:
        if variant == "shuffled":
            return str(self.out.model("shuffled-esm2"))
        if self.model:
            return self.model
        name = self.extract_config.model
        return str(self.out.model("tiny-esm2")) if name == "tiny" else name

    @property
    def annotate_mode(self) -> str:
        mode = self.study.annotate
        if mode == "auto":
            return "real" if os.environ.get("ANTHROPIC_API_KEY") else "dry-run"
        return mode


# --- stages -------------------------------------------------------------------------------------

def stage_model(s: Study) -> dict:
    from torch_bridge.shuffled import save_shuffled_esm
    from torch_bridge.tiny_esm import build_tiny_esm

    if not s.model and s.extract_config.model == "tiny":
        build_tiny_esm(s.out.model("tiny-esm2"))
    if "shuffled" in s.variants and not (s.out.model("shuffled-esm2") / "config.json").is_file():
        save_shuffled_esm(s.model_path("esm2"), s.out.model("shuffled-esm2"), s.study.shuffle_seed)
    return {v: s.model_path(v) for v in s.variants}


def _extract(s: Study, fasta: str | Path, variant: str, out: Path):
    from interplm_jax.fasta import read_fasta
    from torch_bridge.esm import extract_to_store

    cfg = s.extract_config
    proteins, report = read_fasta(fasta, max_length=cfg.max_length, on_invalid=cfg.on_invalid)
    log.info("%s: %d proteins (%d skipped: %s) -> %s", fasta, len(proteins), len(report.skipped),
             report.counts(), out)
    store = extract_to_store(proteins, s.model_path(variant), cfg.layers, out, shard_size=cfg.shard_size,
                             max_tokens=cfg.max_tokens, store_dtype=cfg.store_dtype)
    if store is None:
        raise InputError(f"{out}: store not complete after extraction")
    return store


def stage_extract(s: Study) -> dict:
    return {v: _extract(s, s.study.train_fasta, v, s.out.store(v)).summary() for v in s.variants}


def stage_evalset(s: Study) -> dict:
    c = s.out.concepts
    run_script("evaluate_concepts", "labels", "--tsv", s.study.annotations, "--out", c / "labels.npz",
               "--config", s.config)
    run_script("evaluate_concepts", "split", "--labels", c / "labels.npz", "--out", c / "set",
               "--config", s.config)
    info = {v: _extract(s, c / "set" / "proteins.fasta", v, s.out.eval_store(v)).summary()
            for v in s.variants}
    if s.study.structures:
        info["structures"] = _extract(s, s.study.structures_fasta, "esm2", s.out.structure_store).summary()
    return info


def stage_train(s: Study) -> dict:
    for v in s.variants:
        run_script("train", "--config", s.config, "--store", s.out.store(v), "--out", s.out.sweeps(v),
                   "--resume")
    return {}


def stage_normalize(s: Study) -> dict:
    cfg = s.sections["normalize"]
    opts = ["--seed", cfg.seed, "--chunk-tokens", cfg.chunk_tokens]
    opts += ["--max-proteins", cfg.max_proteins] if cfg.max_proteins is not None else []
    for v in s.variants:
        for L in s.layers:
            run_script("normalize", "--sweep", s.out.sweeps(v) / f"layer_{L}", "--store",
                       s.out.eval_store(v), "--layer", L, *opts)
    if "neurons" in s.study.baselines:
        for L in s.layers:
            run_script("normalize", "--neurons", "--sae", s.out.neurons(L), "--store",
                       s.out.eval_store("esm2"), "--layer", L, *opts)
    return {}


def stage_concepts(s: Study) -> dict:
    c = s.out.concepts

    def f1(variant: str, layer: int, split: str, sae: Path, dest: Path, kind: str) -> Path:
        if not dest.is_file():  # counts files are written whole; a partial one resumes
            run_script("evaluate_concepts", "f1", "--labels", c / "labels.npz", "--evalset",
                       c / "set" / "evalset.json", "--store", s.out.eval_store(variant), "--layer", layer,
                       "--split", split, "--sae", sae, "--kind", kind, "--out", dest,
                       "--name", "neurons" if kind == "neurons" else sae.name,
                       "--model-name", s.study.name, "--config", s.config)
        return dest

    kinds = {"esm2": "sae", "shuffled": "shuffled"}
    candidates = [f1(v, L, "select", sae, c / "f1" / f"{v}_L{L}_{sae.name}_select.npz", kinds[v])
                  for v in s.variants for L in s.layers
                  for sae in sorted((s.out.sweeps(v) / f"layer_{L}" / "saes").iterdir())]
    run_script("evaluate_concepts", "select", *candidates, "--out", s.out.selection)
    chosen = [(v, L, sae) for v in s.variants for L, sae in s.out.chosen(kinds[v]).items()]
    if "neurons" in s.study.baselines:
        chosen += [("neurons", L, s.out.neurons(L)) for L in s.layers]
    runs = []
    for v, L, sae in chosen:
        variant, kind = ("esm2", "neurons") if v == "neurons" else (v, kinds[v])
        pair = [f1(variant, L, split, sae, c / "f1" / f"{v}_L{L}_chosen_{split}.npz", kind)
                for split in ("valid", "test")]
        runs += ["--run", ",".join(map(str, pair))]
    run_script("evaluate_concepts", "report", *runs, "--out", c / "report", "--config", s.config)
    return {"chosen": {f"{v}_L{L}": sae.name for v, L, sae in chosen}}


def stage_analysis(s: Study) -> dict:
    chosen = s.out.chosen("sae")
    for L in s.analysis_layers:
        a = s.out.analysis(L)
        spatial = []
        if s.study.structures:
            run_script("analyze", "spatial", "--sae", chosen[L], "--store", s.out.structure_store,
                       "--layer", L, "--structures", s.study.structures, "--fasta",
                       s.study.structures_fasta, "--out", a, "--config", s.config)
            spatial = ["--spatial", a / f"spatial_layer{L}.tsv"]
        run_script("analyze", "umap", "--sae", chosen[L], "--out", a, "--config", s.config, *spatial)
    return {}


def stage_annotate(s: Study) -> dict:
    mode = s.annotate_mode
    if mode == "off":
        return {"mode": "off"}
    chosen = s.out.chosen("sae")
    dry = ["--dry-run"] if mode == "dry-run" else []
    for L in s.analysis_layers:
        out = s.out.annotate(L)
        run_script("annotate", "features", "--store", s.out.eval_store("esm2"), "--layer", L,
                   "--sae", chosen[L], "--metadata", s.study.annotations, "--out", out,
                   "--config", s.config, *dry)
        if mode == "real":
            run_script("annotate", "validate", "--run", out, "--config", s.config)
    return {"mode": mode}


def study_warnings(s: Study) -> list[str]:
    """Small-study guards (interplm_jax/bench/guards.py) on this study's inputs and outputs."""
    import csv

    from interplm_jax.bench import guards
    from interplm_jax.concepts.evalset import EvalSet
    from interplm_jax.concepts.labels import ConceptLabels
    from interplm_jax.fasta import read_fasta

    es = EvalSet.load(s.out.concepts / "set" / "evalset.json")
    out = guards.small_selection(len(es.select))
    with open(s.out.selection, newline="") as f:
        out += guards.selection_ties(csv.DictReader(f))
    if s.study.structures_fasta:
        n = len(read_fasta(s.study.structures_fasta, max_length=10**9, on_invalid="skip")[0])
        out += guards.few_structures(n, s.sections["analysis"].spatial.min_proteins)
    cfg = s.extract_config
    train = read_fasta(s.study.train_fasta, max_length=cfg.max_length, on_invalid="skip")[0]
    labels = ConceptLabels.load(s.out.concepts / "labels.npz")
    ids = [*es.valid, *es.test]
    evaluation = [(i, labels.sequence(int(p))) for i, p in zip(ids, labels.indices(ids))]
    return out + guards.overlap([(p.id, p.sequence) for p in train], evaluation)


def stage_bench(s: Study) -> dict:
    from interplm_jax.concepts.evalset import EvalSet
    from interplm_jax.concepts.labels import ConceptLabels
    from interplm_jax.fasta import Protein, write_fasta

    o, c = s.out, s.out.concepts
    es, labels = EvalSet.load(c / "set" / "evalset.json"), ConceptLabels.load(c / "labels.npz")
    test_fasta = o.bench / "test_proteins.fasta"  # fidelity's proteins: the test split
    write_fasta(test_fasta, [Protein(i, labels.sequence(int(p))) for i, p in zip(es.test, labels.indices(es.test))])
    inputs = ["--labels", c / "labels.npz", "--evalset", c / "set" / "evalset.json"]
    common = [*inputs, "--config", s.config]
    parts, probes = [], []
    for v in s.variants:
        for L in s.layers:
            sweep = o.sweeps(v) / f"layer_{L}"
            fid, part, probe = o.bench_fidelity(v, L), o.bench_part(v, L), o.bench_part(v, L, "probes")
            saes = [a for p in sorted((sweep / "saes").iterdir()) for a in ("--sae", p)]
            if not fid.is_file():
                run_script("fidelity", "--model", s.model_path(v), "--fasta", test_fasta, "--sweep", sweep,
                           "--layer", L, "--out", fid, "--config", s.config)
            if not part.is_file():
                run_script("bench", "measure", *common, "--store", o.eval_store(v), "--layer", L, *saes,
                           "--model-name", v, "--fidelity", fid, "--selection", o.selection, "--out", part)
            if not probe.is_file():
                run_script("bench", "probes", *inputs, "--store", o.eval_store(v), "--layer", L, *saes,
                           "--model-name", v, "--out", probe)
            parts.append(part)
            probes += ["--probes", probe]
    if "neurons" in s.study.baselines:
        for L in s.layers:
            part = o.bench_part("esm2", L, "neurons")
            if not part.is_file():
                run_script("bench", "measure", *common, "--store", o.eval_store("esm2"), "--layer", L,
                           "--sae", o.neurons(L), "--out", part)
            parts.append(part)
    warnings = study_warnings(s)
    run_script("bench", "table", *parts, *probes, "--out", o.bench,
               *[a for w in warnings for a in ("--warning", w)])
    return {"warnings": warnings}


def stage_report(s: Study) -> dict:
    from interplm_jax.report import build_report
    from interplm_jax.study import report_inputs

    cfg = s.sections["report"]
    path = build_report(f"{s.study.name}: interplm-jax feature browser", s.out.eval_store("esm2"),
                        s.out.concepts / "set" / "proteins.fasta", report_inputs(s.out, s.layers),
                        s.out.report, s.study.annotations, cfg)
    log.info("feature browser: %s", path)
    return {"html": str(path)}


RUNNERS: dict[str, Callable[[Study], dict]] = {
    "model": stage_model, "extract": stage_extract, "evalset": stage_evalset, "train": stage_train,
    "normalize": stage_normalize, "concepts": stage_concepts, "analysis": stage_analysis,
    "annotate": stage_annotate, "bench": stage_bench, "report": stage_report,
}
assert tuple(RUNNERS) == STAGES


def section_classes() -> dict[str, type]:
    """Config section -> the dataclass that reads it (every stage's, checked before any runs)."""
    from interplm_jax.analysis.config import AnalysisConfig
    from interplm_jax.annotate.config import AnnotateConfig
    from interplm_jax.concepts.config import ConceptsConfig
    from interplm_jax.normalize import NormalizeConfig
    from interplm_jax.report import ReportConfig
    from interplm_jax.train import TrainConfig
    from torch_bridge.esm import ExtractConfig
    from torch_bridge.fidelity import FidelityConfig

    return {"study": StudyConfig, "extract": ExtractConfig, "train": TrainConfig,
            "normalize": NormalizeConfig, "concepts": ConceptsConfig, "analysis": AnalysisConfig,
            "annotate": AnnotateConfig, "report": ReportConfig, "fidelity": FidelityConfig}


def parse_sections(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Every section of the config through its dataclass (section name -> instance), so a typo
    fails now rather than hours into a run."""
    classes = section_classes()
    unknown = sorted(set(data) - set(classes))
    if unknown:
        raise InputError(f"{path}: unknown section(s) {unknown}; known: {sorted(classes)}")
    return {name: from_dict(cls, data.get(name) or {}, f"{path}:{name}") for name, cls in classes.items()}


def stage_inputs(s: Study) -> dict[str, dict[str, Any]]:
    """Per stage, what its outputs depend on: its config sections, its input files, and the
    inputs of the stage before it (so a change upstream reaches every later stage)."""
    st = to_dict(s.study)

    def file(p):
        return None if p is None else {"path": str(p), "bytes": Path(p).stat().st_size}

    own = {
        "model": {"model": s.model or s.section("extract").get("model"), "baselines": st["baselines"],
                  "shuffle_seed": st["shuffle_seed"]},
        "extract": {"extract": s.section("extract"), "train_fasta": file(s.study.train_fasta)},
        "evalset": {"concepts": s.section("concepts"), "annotations": file(s.study.annotations),
                    "structures_fasta": file(s.study.structures_fasta)},
        "train": {"train": s.section("train")},
        "normalize": {"normalize": s.section("normalize")},
        "concepts": {"concepts": s.section("concepts"), "name": st["name"]},
        "analysis": {"analysis": s.section("analysis"), "layers": st["analysis_layers"],
                     "structures": st["structures"]},
        "annotate": {"annotate": s.section("annotate"), "mode": s.annotate_mode},
        "bench": {"concepts": s.section("concepts"), "fidelity": s.section("fidelity"),
                  "spatial_min_proteins": s.sections["analysis"].spatial.min_proteins},
        "report": {"report": s.section("report")},
    }
    inputs: dict[str, dict[str, Any]] = {}
    previous: dict[str, Any] = {}
    for stage in STAGES:
        inputs[stage] = {**own[stage], "_before": previous}
        previous = inputs[stage]
    return inputs


def run_pipeline(s: Study, until: str | None = None, redo_stage: str | None = None,
                 echo: Callable[[str], None] = print) -> None:
    """Run every stage in order, skipping the finished ones."""
    if redo_stage:
        for p in redo(s.out, redo_stage):
            log.info("--redo %s: removed %s", redo_stage, p)
    ledger = Ledger(s.out.ledger)
    inputs = stage_inputs(s)
    last = STAGES.index(until) if until else len(STAGES) - 1
    for i, stage in enumerate(STAGES[: last + 1]):
        status = ledger.status(stage, inputs[stage])
        if status == "changed":
            keys = ledger.changed_keys(stage, inputs[stage])
            raise InputError(
                f"{s.out.root}: stage {stage!r} was run with other settings (changed: {', '.join(keys)}); "
                f"rerun with --redo {stage} (removes its outputs and every later stage's) or choose a new --out")
        if status == "done":
            echo(f"[{i + 1}/{len(STAGES)}] {stage}: done, skipped")
            continue
        echo(f"[{i + 1}/{len(STAGES)}] {stage}: running")
        t0 = time.perf_counter()
        info = RUNNERS[stage](s)
        ledger.mark(stage, inputs[stage], {**info, "seconds": round(time.perf_counter() - t0, 1)})
        echo(f"[{i + 1}/{len(STAGES)}] {stage}: finished in {time.perf_counter() - t0:.1f} s")


@click.command(context_settings={"show_default": True}, help=__doc__)
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Study config (configs/demo.yaml, esm2_8m.yaml, esm2_650m.yaml).")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Study directory [default: out/<study.name>].")
@click.option("--model", default=None,
              help="ESM-2 hub name or local path instead of the config's extract.model.")
@click.option("--until", type=click.Choice(STAGES), default=None, help="Stop after this stage.")
@click.option("--redo", "redo_stage", type=click.Choice(STAGES), default=None,
              help="Remove this stage's outputs and every later stage's, then run them again.")
@click.option("--plan", is_flag=True, help="Print each stage's status (done/todo/changed) and exit.")
@command
def main(config_path, out, model, until, redo_stage, plan):
    """Run the study of CONFIG into OUT, stage after stage; rerun to resume."""
    study, data = read_config(config_path)  # the study section with its paths resolved
    sections = {**parse_sections(Path(config_path), data), "study": study}
    out = Path(out or Path("out") / study.name).resolve()
    s = Study(Path(config_path).resolve(), data, sections, StudyLayout(out), model)
    if plan:
        ledger, inputs = Ledger(s.out.ledger), stage_inputs(s)
        for stage in STAGES:
            click.echo(f"{stage:10s} {ledger.status(stage, inputs[stage])}")
        return
    run_pipeline(s, until, redo_stage, click.echo)
    if until is None or until == "report":
        click.echo(f"\nstudy complete: {s.out.root}\n  feature browser: {s.out.report / 'index.html'}")


if __name__ == "__main__":
    main()
