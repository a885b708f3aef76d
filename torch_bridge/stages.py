"""The study's stages, run in order by ``scripts/pipeline.py``: each calls the library functions
behind a stage script with the parsed config sections and logs the equivalent command line
(``scripts/<stage>.py ...``), so that any step can be rerun by hand. Here, beside the protein
LMs, because several stages run one (extraction, the control models, loss recovered)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from interplm_jax.errors import InputError
from interplm_jax.layout import KINDS, StudyLayout
from interplm_jax.study import STAGES, StudyConfig, stage_inputs

log = logging.getLogger("pipeline")


def log_command(script: str, *args) -> None:
    """Log the command line that does what the pipeline does next, to rerun a step by hand."""
    log.info("$ python scripts/%s.py %s", script, " ".join(str(a) for a in args))


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

    @property
    def variants(self) -> tuple[str, ...]:
        """Models whose activations get SAEs: the main one (``extract.model``), and the control
        models (shuffled, random_init) that ``study.baselines`` asks for."""
        return self.out.variants(self.study.baselines)

    @property
    def main(self) -> str:
        return self.out.main

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
        if variant != self.main:
            return str(self.out.control_model(variant))
        if self.model:
            return self.model
        name = self.extract_config.model
        return str(self.out.model(TINY[name][0])) if name in TINY else name

    def inputs(self) -> dict[str, dict[str, Any]]:
        """Per stage, what its outputs depend on (:func:`interplm_jax.study.stage_inputs`)."""
        return stage_inputs(self.study, self.data, self.model, self.annotate_mode)

    @property
    def annotate_mode(self) -> str:
        mode = self.study.annotate
        if mode == "auto":
            return "real" if os.environ.get("ANTHROPIC_API_KEY") else "dry-run"
        return mode


#: extract.model values that name a locally built tiny model: (directory under models/, builder)
TINY = {"tiny": ("tiny-esm2", "build_tiny_esm"), "tiny-esmc": ("tiny-esmc", "build_tiny_esmc")}


# --- stages -------------------------------------------------------------------------------------


def stage_model(s: Study) -> dict:
    from torch_bridge import tiny_esm
    from torch_bridge.models import save_random_init
    from torch_bridge.shuffled import save_shuffled_esm

    if not s.model and s.extract_config.model in TINY:
        directory, builder = TINY[s.extract_config.model]
        getattr(tiny_esm, builder)(s.out.model(directory))
    make = {"shuffled": (save_shuffled_esm, s.study.shuffle_seed),
            "random_init": (save_random_init, s.study.random_init_seed)}
    for v in s.variants[1:]:  # the controls; each saved whole (atomic_dir) or not at all
        save, seed = make[v]
        if not (s.out.control_model(v) / "config.json").is_file():
            save(s.model_path(s.main), s.out.control_model(v), seed)
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
    from interplm_jax.analysis.structures import index_directory
    from interplm_jax.concepts.run import make_labels, make_split

    o, cfg = s.out, s.sections["concepts"]
    log_command("evaluate_concepts", "labels", "--tsv", s.study.annotations, "--out", o.labels,
                "--config", s.config)
    lab, _ = make_labels(s.study.annotations, o.labels, cfg)
    log.info("%s: %d proteins, %d concepts", o.labels, lab.n_proteins, lab.n_concepts)
    # the proteins with a structure first, so that the browser can show them in 3-D
    prefer = ["--prefer-structures", s.study.structures] if s.study.structures else []
    log_command("evaluate_concepts", "split", "--labels", o.labels, "--out", o.eval_set.root,
                "--config", s.config, *prefer)
    es, _ = make_split(o.labels, o.eval_set.root, cfg,
                       frozenset(index_directory(s.study.structures)) if prefer else ())
    log.info("%s: %d valid / %d test proteins", o.eval_set.root, len(es.valid), len(es.test))
    info = {v: _extract(s, o.eval_set.fasta, v, o.eval_store(v)).summary() for v in s.variants}
    if s.study.structures:
        info["structures"] = _extract(s, s.study.structures_fasta, s.main, o.structure_store).summary()
    return info


def stage_train(s: Study) -> dict:
    from interplm_jax.train.run import train_layers

    for v in s.variants:
        log_command("train", "--config", s.config, "--store", s.out.store(v), "--out",
                    s.out.sweeps(v), "--resume")
        train_layers(s.sections["train"], s.out.store(v), s.out.sweeps(v), resume=True,
                     where=f"{s.config}:train")
    return {}


def stage_normalize(s: Study) -> dict:
    from interplm_jax import normalize as nz
    from interplm_jax.store import ActivationStore

    cfg = s.sections["normalize"]
    opts = ["--seed", cfg.seed, "--chunk-tokens", cfg.chunk_tokens]
    opts += ["--max-proteins", cfg.max_proteins] if cfg.max_proteins is not None else []
    stores = {v: ActivationStore.open(s.out.eval_store(v)) for v in s.variants}
    proteins = {v: nz.sample_proteins(st, cfg.max_proteins, cfg.seed) for v, st in stores.items()}
    for v in s.variants:
        for L in s.layers:
            sweep = s.out.sweep(v, L).root
            log_command("normalize", "--sweep", sweep, "--store", s.out.eval_store(v), "--layer", L, *opts)
            nz.normalize_sweep(sweep, stores[v], L, cfg.chunk_tokens, proteins[v])
    if "neurons" in s.study.baselines:
        for L in s.layers:
            log_command("normalize", "--neurons", "--sae", s.out.neurons(L), "--store",
                        s.out.eval_store(s.main), "--layer", L, *opts)
            nz.write_neuron_baseline(s.out.neurons(L), stores[s.main], L, cfg.chunk_tokens,
                                     proteins[s.main])
    return {}


def stage_concepts(s: Study) -> dict:
    from interplm_jax.concepts.run import (count_f1, heldout, select_saes, selection_lines,
                                           summary_line)

    o, cfg = s.out, s.sections["concepts"]

    def f1(variant: str, layer: int, split: str, sae: Path, dest: Path, kind: str) -> Path:
        if not dest.is_file():  # counts files are written whole; a partial one resumes
            name = "neurons" if kind == "neurons" else sae.name
            log_command("evaluate_concepts", "f1", "--labels", o.labels, "--evalset",
                        o.eval_set.definition, "--store", o.eval_store(variant), "--layer", layer,
                        "--split", split, "--sae", sae, "--kind", kind, "--out", dest,
                        "--name", name, "--model-name", s.study.name, "--config", s.config)
            count_f1(o.labels, o.eval_set.definition, o.eval_store(variant), layer, split, dest, cfg,
                     sae=sae, kind=kind, name=name, model_name=s.study.name)
        return dest

    candidates = [f1(v, L, "select", sae, o.f1_counts(v, L, "select", sae.name), KINDS[v])
                  for v in s.variants for L in s.layers
                  for sae in sorted(o.sweep(v, L).saes.iterdir())]
    log_command("evaluate_concepts", "select", *candidates, "--out", o.selection)
    for line in selection_lines(select_saes(candidates, o.selection)):
        log.info("%s", line)
    chosen = [(v, L, sae) for v in s.variants for L, sae in o.chosen(KINDS[v]).items()]
    if "neurons" in s.study.baselines:
        chosen += [("neurons", L, o.neurons(L)) for L in s.layers]
    runs = []
    for v, L, sae in chosen:
        variant, kind = (s.main, "neurons") if v == "neurons" else (v, KINDS[v])
        runs.append(tuple(f1(variant, L, split, sae, o.f1_counts(v, L, split), kind)
                          for split in ("valid", "test")))
    log_command("evaluate_concepts", "report", *(a for r in runs for a in ("--run", ",".join(map(str, r)))),
                "--out", o.concept_report.root, "--config", s.config)
    for row in heldout(runs, o.concept_report.root, cfg):
        log.info("%s", summary_line(row, cfg.top_f1))
    return {"chosen": {f"{v}_L{L}": sae.name for v, L, sae in chosen}}


def stage_analysis(s: Study) -> dict:
    from interplm_jax.analysis.run import run_spatial, run_umap

    cfg, chosen = s.sections["analysis"], s.out.chosen("sae")
    for L in s.analysis_layers:
        a = s.out.analysis_files(L)
        spatial = None
        if s.study.structures:
            log_command("analyze", "spatial", "--sae", chosen[L], "--store", s.out.structure_store,
                        "--layer", L, "--structures", s.study.structures, "--fasta",
                        s.study.structures_fasta, "--out", a.root, "--config", s.config)
            run_spatial(chosen[L], s.out.structure_store, L, s.study.structures,
                        s.study.structures_fasta, a.root, cfg.spatial)
            spatial = a.spatial(L)
        # the map coloured by concept too: the (feature, concept) pairs of the concept report
        pairs = s.out.concept_report.pairs(f"{s.study.name}_sae_L{L}_{chosen[L].name}")
        pairs = pairs if pairs.is_file() else None
        log_command("analyze", "umap", "--sae", chosen[L], "--out", a.root, "--config", s.config,
                    *(["--spatial", spatial] if spatial else []),
                    *(["--concepts", pairs] if pairs else []))
        run_umap(chosen[L], a.root, cfg.umap, spatial_table=spatial, concepts=pairs)
    return {}


def stage_annotate(s: Study) -> dict:
    from interplm_jax.annotate.pipeline import run_features, run_validate
    from interplm_jax.sae_dir import load_sae
    from interplm_jax.store import ActivationStore

    mode = s.annotate_mode
    if mode == "off":
        return {"mode": "off"}
    cfg, chosen = s.sections["annotate"], s.out.chosen("sae")
    dry = ["--dry-run"] if mode == "dry-run" else []
    store = ActivationStore.open(s.out.eval_store(s.main))
    for L in s.analysis_layers:
        out = s.out.annotate(L)
        log_command("annotate", "features", "--store", s.out.eval_store(s.main), "--layer", L,
                    "--sae", chosen[L], "--metadata", s.study.annotations, "--out", out,
                    "--config", s.config, *dry)
        sae = load_sae(chosen[L])
        run_features(out, cfg, s.study.annotations, store, L, sae.params,
                     dry_run=mode == "dry-run", arch=sae.arch)
        if mode == "real":
            log_command("annotate", "validate", "--run", out, "--config", s.config)
            run_validate(out, cfg)
    return {"mode": mode}


def stage_bench(s: Study) -> dict:
    from interplm_jax.atomic import atomic_write
    from interplm_jax.bench.guards import study_warnings
    from interplm_jax.bench.run import bench_table, measure_layer, probe_layer
    from interplm_jax.concepts.evalset import EvalSet
    from interplm_jax.concepts.labels import ConceptLabels
    from interplm_jax.fasta import Protein, write_fasta
    from interplm_jax.sae_dir import load_sae
    from torch_bridge.fidelity import fidelity_tables, format_table
    from torch_bridge.models import load_masked_lm
    from torch_bridge.sae import TorchSAE

    o, b, cfg, fid_cfg = s.out, s.out.bench, s.sections["concepts"], s.sections["fidelity"]
    es, labels = EvalSet.load(o.eval_set.definition), ConceptLabels.load(o.labels)
    test = [Protein(i, labels.sequence(int(p))) for i, p in zip(es.test, labels.indices(es.test))]
    write_fasta(b.test_fasta, test)  # fidelity's proteins: the test split
    inputs = ["--labels", o.labels, "--evalset", o.eval_set.definition]
    parts, probes = [], []
    for v in s.variants:
        todo = [L for L in s.layers if not b.fidelity(v, L).is_file()]
        for L in todo:
            log_command("fidelity", "--model", s.model_path(v), "--fasta", b.test_fasta, "--sweep",
                        o.sweep(v, L).root, "--layer", L, "--out", b.fidelity(v, L), "--config", s.config)
        if todo:  # every layer at once: one clean forward per batch serves them all
            saes = {L: {p.name: TorchSAE.from_saved(load_sae(p)) for p in sorted(o.sweep(v, L).saes.iterdir())}
                    for L in todo}
            sequences = [p.sequence for p in test][:fid_cfg.max_proteins]
            tables = fidelity_tables(*load_masked_lm(s.model_path(v)), sequences, saes, fid_cfg.batch_size,
                                     fid_cfg.mask_fraction, fid_cfg.seed)
            for L, rows in tables.items():
                atomic_write(b.fidelity(v, L), format_table(rows))
        for L in s.layers:
            sae_dirs = sorted(o.sweep(v, L).saes.iterdir())
            saes = [a for p in sae_dirs for a in ("--sae", p)]
            fid, part, probe = b.fidelity(v, L), b.part(v, L), b.part(v, L, "probes")
            if not part.is_file():
                log_command("bench", "measure", *inputs, "--store", o.eval_store(v), "--layer", L, *saes,
                            "--model-name", v, "--fidelity", fid, "--selection", o.selection, "--out", part,
                            "--config", s.config)
                measure_layer(o.labels, o.eval_set.definition, o.eval_store(v), L, sae_dirs, part, cfg, v,
                              fid, o.selection)
            if not probe.is_file():
                log_command("bench", "probes", *inputs, "--store", o.eval_store(v), "--layer", L, *saes,
                            "--model-name", v, "--out", probe)
                probe_layer(o.labels, o.eval_set.definition, o.eval_store(v), L, sae_dirs, probe, v)
            parts.append(part)
            probes.append(probe)
    if "neurons" in s.study.baselines:
        for L in s.layers:
            part = b.part(s.main, L, "neurons")
            if not part.is_file():
                log_command("bench", "measure", *inputs, "--store", o.eval_store(s.main), "--layer", L,
                            "--sae", o.neurons(L), "--model-name", s.main, "--out", part, "--config", s.config)
                measure_layer(o.labels, o.eval_set.definition, o.eval_store(s.main), L, [o.neurons(L)], part,
                              cfg, s.main)
            parts.append(part)
    warnings = study_warnings(o, s.study, s.extract_config.max_length, s.sections["analysis"].spatial.min_proteins)
    t0 = time.perf_counter()
    causal, notes = _causal(s)
    causal_seconds = round(time.perf_counter() - t0, 1)
    warnings += notes
    log_command("bench", "table", *parts, *(a for p in probes for a in ("--probes", p)),
                *(a for p in causal for a in ("--causal", p)), "--out", b.root,
                *(a for w in warnings for a in ("--warning", repr(w))))
    rows, notes = bench_table(parts, b.root, warnings, probes, causal)
    log.info("%s: %d rows; %d warning(s)", b.table, len(rows), len(notes))
    return {"warnings": notes, "causal_seconds": causal_seconds}


def _causal(s: Study) -> tuple[list[Path], list[str]]:
    """The bench stage's causal test: one table per layer of the chosen SAEs (``causal:``
    section); a layer whose concept report has no pair to test gets an empty one and a warning."""
    from interplm_jax.bench.causal import NoChosenPairs, write_causal
    from torch_bridge.causal import causal_layer
    from torch_bridge.models import load_masked_lm

    o, cfg = s.out, s.sections["causal"]
    layers = cfg.layers or s.layers
    bad = sorted(set(layers) - set(s.layers))
    if bad:
        raise InputError(f"{s.config}:causal.layers: {bad} not trained (layers {list(s.layers)})")
    chosen, lm, parts, notes = o.chosen("sae"), None, [], []
    for L in layers:
        part = o.bench.part(s.main, L, "causal")
        pairs = o.chosen_per_concept(L)
        if not part.is_file():
            log_command("bench", "causal", "--model", s.model_path(s.main), "--labels", o.labels, "--evalset",
                        o.eval_set.definition, "--layer", L, "--sae", chosen[L], "--pairs", pairs,
                        "--model-name", s.main, "--out", part, "--config", s.config)
            lm = lm or load_masked_lm(s.model_path(s.main))
            try:
                _, layer_notes = causal_layer(None, o.labels, o.eval_set.definition, L, chosen[L], pairs, part,
                                              cfg, s.main, lm_tokenizer=lm)
                notes += layer_notes
            except NoChosenPairs as e:
                notes.append(f"causal test, layer {L}: {e}")
                write_causal(part, [])
        parts.append(part)
    return parts, notes


def stage_report(s: Study) -> dict:
    from interplm_jax.report import build_report
    from interplm_jax.study import report_evidence, report_inputs

    cfg = s.sections["report"]
    path = build_report(f"{s.study.name}: interplm-jax feature browser", s.out.eval_store(s.main),
                        s.out.eval_set.fasta, report_inputs(s.out, s.layers),
                        s.out.report, s.study.annotations, cfg,
                        **report_evidence(s.out, s.study.structures, s.study.structures_fasta))
    log.info("feature browser: %s", path)
    return {"html": str(path)}


RUNNERS: dict[str, Callable[[Study], dict]] = {
    "model": stage_model, "extract": stage_extract, "evalset": stage_evalset, "train": stage_train,
    "normalize": stage_normalize, "concepts": stage_concepts, "analysis": stage_analysis,
    "annotate": stage_annotate, "bench": stage_bench, "report": stage_report,
}
assert tuple(RUNNERS) == STAGES
