#!/usr/bin/env python
"""The whole study, FASTA to findings, from one config: every stage (torch_bridge/stages.py) calls
the library functions behind the stage scripts with the parsed config, and logs the equivalent
command line (``scripts/<stage>.py ...``) so that any step can be rerun by hand.

\b
  model     a tiny model (config model "tiny": ESM-2, "tiny-esmc": ESM C) and the control models
            of study.baselines: shuffled weights, random initialisation
  extract   training proteins -> activation store, per model (the main one, each control)
  evalset   UniProt TSV -> concept labels -> valid/test split -> evaluation store per model;
            AlphaFold proteins -> their store
  train     a grid of SAEs per layer, one compiled vmapped step (per model)
  normalize every SAE of every sweep scaled by its max over the evaluation proteins; neuron baseline
  concepts  F1 of every SAE on the selection split -> best SAE per layer -> held-out test report
            (SAEs, the control models' SAEs, neurons)
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
import time
from pathlib import Path
from typing import Any, Callable

import click

from interplm_jax.cli import command
from interplm_jax.config import from_dict
from interplm_jax.errors import InputError
from interplm_jax.layout import StudyLayout
from interplm_jax.study import STAGES, Ledger, StudyConfig, read_config, redo
from torch_bridge.stages import RUNNERS, Study

log = logging.getLogger("pipeline")


def section_classes() -> dict[str, type]:
    """Config section -> the dataclass that reads it (every stage's, checked before any runs)."""
    from interplm_jax.analysis.config import AnalysisConfig
    from interplm_jax.annotate.config import AnnotateConfig
    from interplm_jax.bench.causal import CausalConfig
    from interplm_jax.concepts.config import ConceptsConfig
    from interplm_jax.normalize import NormalizeConfig
    from interplm_jax.report import ReportConfig
    from interplm_jax.train import TrainConfig
    from torch_bridge.esm import ExtractConfig
    from torch_bridge.fidelity import FidelityConfig

    return {"study": StudyConfig, "extract": ExtractConfig, "train": TrainConfig,
            "normalize": NormalizeConfig, "concepts": ConceptsConfig, "analysis": AnalysisConfig,
            "annotate": AnnotateConfig, "report": ReportConfig, "fidelity": FidelityConfig,
            "causal": CausalConfig}


def parse_sections(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Every section of the config through its dataclass (section name -> instance), so a typo
    fails now rather than hours into a run."""
    classes = section_classes()
    unknown = sorted(set(data) - set(classes))
    if unknown:
        raise InputError(f"{path}: unknown section(s) {unknown}; known: {sorted(classes)}")
    return {name: from_dict(cls, data.get(name) or {}, f"{path}:{name}") for name, cls in classes.items()}


def run_pipeline(s: Study, until: str | None = None, redo_stage: str | None = None,
                 echo: Callable[[str], None] = print) -> None:
    """Run every stage in order, skipping the finished ones."""
    if redo_stage:
        for p in redo(s.out, redo_stage):
            log.info("--redo %s: removed %s", redo_stage, p)
    ledger = Ledger(s.out.ledger)
    inputs = s.inputs()
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


def load_study(config_path: str | Path, out: str | Path | None = None,
               model: str | None = None) -> Study:
    """The study of a config file (every section parsed; ``out`` default ``out/<study.name>``)."""
    study, data = read_config(config_path)  # the study section with its paths resolved
    sections = {**parse_sections(Path(config_path), data), "study": study}
    out = Path(out or Path("out") / study.name).resolve()
    return Study(Path(config_path).resolve(), data, sections, StudyLayout(out), model)


@click.command(context_settings={"show_default": True}, help=__doc__)
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="Study config (configs/demo.yaml, esm2_8m.yaml, esm2_650m.yaml).")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Study directory [default: out/<study.name>].")
@click.option("--model", default=None,
              help="Hub name or local path (ESM-2 or ESM C) instead of the config's extract.model.")
@click.option("--until", type=click.Choice(STAGES), default=None, help="Stop after this stage.")
@click.option("--redo", "redo_stage", type=click.Choice(STAGES), default=None,
              help="Remove this stage's outputs and every later stage's, then run them again.")
@click.option("--plan", is_flag=True, help="Print each stage's status (done/todo/changed) and exit.")
@command
def main(config_path, out, model, until, redo_stage, plan):
    """Run the study of CONFIG into OUT, stage after stage; rerun to resume."""
    s = load_study(config_path, out, model)
    if plan:
        ledger, inputs = Ledger(s.out.ledger), s.inputs()
        for stage in STAGES:
            click.echo(f"{stage:10s} {ledger.status(stage, inputs[stage])}")
        return
    run_pipeline(s, until, redo_stage, click.echo)
    if until is None or until == "report":
        click.echo(f"\nstudy complete: {s.out.root}\n  feature browser: {s.out.report_page}")


if __name__ == "__main__":
    main()
