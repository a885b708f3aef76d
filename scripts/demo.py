#!/usr/bin/env python
"""The end-to-end demo (``make demo``): every stage of the pipeline on bundled real proteins.

Runs on 2 CPU cores in minutes with the tiny ESM-2 built locally; ``--model`` takes a real
ESM-2 (hub name with cached weights, or a local directory). Every stage is the same command a
user runs (``scripts/<stage>.py``), invoked in-process; each skips or resumes work already done,
so rerunning the demo continues where it stopped.

Stages: extract -> train (grid of SAEs per layer) -> normalize -> concept evaluation (labels,
split, F1, selection, held-out report) -> UMAP + HDBSCAN -> sequential/structural clustering on
bundled AlphaFold structures -> LLM annotation prompts (dry run; real calls need a key).
"""

from __future__ import annotations

import csv
import importlib.util
import logging
from pathlib import Path

import click

from interplm_jax.cli import command
from interplm_jax.config import load_yaml
from interplm_jax.fasta import read_fasta
from torch_bridge.esm import ExtractConfig, extract_to_store
from torch_bridge.tiny_esm import build_tiny_esm

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "demo"
log = logging.getLogger("demo")


def run_script(name: str, *args) -> None:
    """Run ``scripts/<name>.py`` with ``args`` in this process (as its command line would)."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entry = getattr(module, "main", None) or getattr(module, "cli")
    argv = [str(a) for a in args]
    log.info("== %s %s", name, " ".join(argv))
    entry.main(args=argv, standalone_mode=False)


def extract(cfg: ExtractConfig, fasta: Path, out: Path, model: str):
    """FASTA -> activation store (resumes if present)."""
    proteins, report = read_fasta(fasta, max_length=cfg.max_length, on_invalid=cfg.on_invalid)
    log.info("%s: %d proteins (%d skipped: %s)", fasta.name, len(proteins), len(report.skipped),
             report.counts())
    return extract_to_store(proteins, model, cfg.layers, out, shard_size=cfg.shard_size,
                            max_tokens=cfg.max_tokens, store_dtype=cfg.store_dtype)


def chosen_saes(selection_csv: Path, sweeps: Path) -> dict[int, Path]:
    """Layer -> directory of the SAE that `evaluate_concepts.py select` chose."""
    with open(selection_csv) as f:
        return {int(r["layer"]): sweeps / f"layer_{r['layer']}" / "saes" / r["name"]
                for r in csv.DictReader(f) if r["selected"] == "True"}


@click.command(context_settings={"show_default": True})
@click.option("--config", default=str(REPO / "configs" / "demo.yaml"), help="Demo config.")
@click.option("--out", default="out/demo", help="Output directory.")
@click.option("--model", default=None, help="A real ESM-2 (hub name or local path) instead of the tiny one.")
@command
def main(config, out, model):
    """Run the whole pipeline on the bundled data and print where the results are."""
    out = Path(out)
    cfg = load_yaml(ExtractConfig, config, "extract")
    if model is None:
        model = str(build_tiny_esm(out / "models" / "tiny-esm2")) if cfg.model == "tiny" else cfg.model
    # 1. activations of the bundled Swiss-Prot proteins (training, normalization, concepts)
    store = extract(cfg, DATA / "swissprot_sample.fasta.gz", out / "store", model)
    click.echo(store.summary())
    # 2. a grid of SAEs per layer, one compiled vmapped step each
    run_script("train", "--config", config, "--store", out / "store", "--out", out / "sweeps",
               "--resume")
    layers = sorted(int(p.name.split("_")[1]) for p in (out / "sweeps").glob("layer_*"))
    # 3. normalization: every SAE of each sweep -> <sweep>/saes/<id>/ with scale = 1/max
    for L in layers:
        run_script("normalize", "--sweep", out / "sweeps" / f"layer_{L}", "--store", out / "store",
                   "--layer", L)
    # 4. concept evaluation: labels, split, F1 of every SAE on the selection split, selection,
    #    held-out report of the chosen SAE of each layer
    c = out / "concepts"
    run_script("evaluate_concepts", "labels", "--tsv", DATA / "uniprotkb_features.tsv.gz",
               "--out", c / "labels.npz", "--config", config)
    run_script("evaluate_concepts", "split", "--labels", c / "labels.npz", "--out", c / "set",
               "--config", config)
    common = ["--labels", c / "labels.npz", "--evalset", c / "set" / "evalset.json",
              "--store", out / "store", "--config", config, "--model-name", "demo"]
    select_runs = []
    for L in layers:
        for sae in sorted((out / "sweeps" / f"layer_{L}" / "saes").iterdir()):
            dest = c / "f1" / f"L{L}_{sae.name}_select.npz"
            run_script("evaluate_concepts", "f1", *common, "--layer", L, "--split", "select",
                       "--sae", sae, "--out", dest)
            select_runs.append(dest)
    run_script("evaluate_concepts", "select", *select_runs, "--out", c / "selection.csv")
    report_runs = []
    for L, sae in sorted(chosen_saes(c / "selection.csv", out / "sweeps").items()):
        pair = []
        for split in ("valid", "test"):
            dest = c / "f1" / f"L{L}_chosen_{split}.npz"
            run_script("evaluate_concepts", "f1", *common, "--layer", L, "--split", split,
                       "--sae", sae, "--out", dest)
            pair.append(str(dest))
        report_runs += ["--run", ",".join(pair)]
    run_script("evaluate_concepts", "report", *report_runs, "--out", c / "report", "--config", config)
    # 5. analyses of the chosen SAE of the last layer: spatial clustering on the bundled
    #    AlphaFold structures (their own small store), then UMAP + HDBSCAN
    last = layers[-1]
    sae = chosen_saes(c / "selection.csv", out / "sweeps")[last]
    extract(cfg, DATA / "alphafold" / "sequences.fasta", out / "store_af", model)
    a = out / "analysis"
    run_script("analyze", "spatial", "--sae", sae, "--store", out / "store_af", "--layer", last,
               "--structures", DATA / "alphafold", "--fasta", DATA / "alphafold" / "sequences.fasta",
               "--out", a, "--config", config)
    run_script("analyze", "umap", "--sae", sae, "--out", a, "--config", config,
               "--spatial", a / f"spatial_layer{last}.tsv")
    # 6. LLM annotation: prompts and a cost estimate (set ANTHROPIC_API_KEY and drop --dry-run
    #    in scripts/annotate.py to call Claude)
    run_script("annotate", "features", "--store", out / "store", "--layer", last, "--sae", sae,
               "--metadata", DATA / "uniprotkb_features.tsv.gz", "--out", out / "annotate",
               "--config", config, "--dry-run")
    click.echo(f"\ndemo complete: {out.resolve()}\n"
               f"  store            {out / 'store'}\n"
               f"  SAE sweeps       {out / 'sweeps'}/layer_<L> (metrics.jsonl, saes/<id>/)\n"
               f"  concept report   {c / 'report'}\n"
               f"  analyses         {a}\n"
               f"  annotation (dry) {out / 'annotate'}")


if __name__ == "__main__":
    main()
