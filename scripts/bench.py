#!/usr/bin/env python
"""The SAE bench: every SAE of a grid measured on the held-out proteins (docs/bench.md).

\b
  measure  SAEs of one layer (and model) -> rows of a part table: L0, FVE, dead and dense
           fractions on test (raw features), concepts found and mean best F1 on valid, test F1
           of the valid-chosen pairs; loss recovered joined from a scripts/fidelity.py table
  table    part tables -> bench.csv and the Pareto plots (L0 vs FVE, loss recovered, concepts)
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import click

from interplm_jax.cli import command
from interplm_jax.concepts.config import ConceptsConfig
from interplm_jax.config import config_options
from interplm_jax.errors import InputError

log = logging.getLogger("bench")

#: Model label -> the selection's row kind of its SAEs.
KINDS = {"esm2": "sae", "shuffled": "shuffled", "random_init": "random_init"}


@click.group()
def main():
    """Measure every SAE of a grid (bench.csv) and plot the trade-offs."""


def read_fidelity(path) -> dict[str, float]:
    """SAE id -> loss recovered, from a ``scripts/fidelity.py --out`` table (TSV)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found (a table from scripts/fidelity.py --out)") from None
    try:
        return {r["sae_id"]: float(r["loss_recovered"]) for r in rows}
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: not a fidelity table (columns sae_id, loss_recovered)") from None


def chosen_name(selection, model: str, layer: int) -> str | None:
    """The SAE that ``selection.csv`` chose for (``model``'s kind, ``layer``), if any."""
    if selection is None:
        return None
    with open(selection, newline="") as f:
        for r in csv.DictReader(f):
            if r["kind"] == KINDS.get(model) and int(r["layer"]) == layer and r["selected"] == "True":
                return r["name"]
    return None


@main.command()
@click.option("--labels", "labels_path", required=True, type=click.Path(dir_okay=False), help="labels.npz of the study.")
@click.option("--evalset", required=True, type=click.Path(dir_okay=False), help="evalset.json (valid/test split).")
@click.option("--store", required=True, help="Evaluation activation store (valid + test proteins).")
@click.option("--layer", required=True, type=int, help="Layer of the store.")
@click.option("--sae", "sae_paths", multiple=True, required=True, type=click.Path(file_okay=False),
              help="SAE directory (repeat: every SAE of the grid; the neuron-baseline directory works too).")
@click.option("--model-name", type=click.Choice(list(KINDS)), default="esm2", show_default=True,
              help="Model the activations come from (the table's model column).")
@click.option("--fidelity", default=None, type=click.Path(dir_okay=False),
              help="scripts/fidelity.py table of these SAEs (loss recovered; without: empty).")
@click.option("--selection", default=None, type=click.Path(dir_okay=False),
              help="selection.csv of the concepts stage (the chosen column).")
@click.option("--saes-per-pass", default=32, show_default=True, type=click.IntRange(min=1),
              help="SAEs measured in one pass over the store (memory: chunk x SAEs x features floats).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Part table (CSV) to write.")
@command
@config_options(ConceptsConfig, "concepts", "thresholds", "activations", "top_f1", "reference_test", "chunk_residues")
def measure(labels_path, evalset, store, layer, sae_paths, model_name, fidelity, selection,
            saes_per_pass, out, cfg):
    """Measure the SAEs given (one layer, one model) in passes of --saes-per-pass."""
    from interplm_jax.bench import grid_rows, measure_grid, write_table
    from interplm_jax.bench.table import columns, sae_name
    from interplm_jax.concepts.evalset import EvalSet
    from interplm_jax.concepts.labels import ConceptLabels
    from interplm_jax.sae_dir import load_sae
    from interplm_jax.store import ActivationStore

    st, labels, es = ActivationStore.open(store), ConceptLabels.load(labels_path), EvalSet.load(evalset)
    saes = [load_sae(p) for p in sae_paths]
    names = [sae_name(s, Path(p).name) for s, p in zip(saes, sae_paths)]
    lost = read_fidelity(fidelity) if fidelity else {}
    missing = [n for n, s in zip(names, saes) if fidelity and s.arch != "neuron" and n not in lost]
    if missing:
        raise InputError(f"{fidelity}: no loss recovered for SAE(s) {missing[:3]}")
    chosen = chosen_name(selection, model_name, layer)
    groups: dict[tuple, list[int]] = {}  # one pass per architecture and shape
    for i, s in enumerate(saes):
        groups.setdefault((s.arch, s.params["W_enc"].shape), []).append(i)
    rows = []
    for idx in groups.values():
        for a in range(0, len(idx), saes_per_pass):
            part = idx[a:a + saes_per_pass]
            m = measure_grid(st, layer, labels, es, [saes[i] for i in part], cfg.thresholds,
                             cfg.chunk_residues, cfg.activations)
            rows += grid_rows(model_name, layer, [saes[i] for i in part], [names[i] for i in part], m,
                              lost, chosen, cfg.top_f1, cfg.reference_test)
    write_table(out, rows, columns(rows, every_hparam=True))
    click.echo(f"{out}: {len(rows)} SAE(s) of layer {layer} ({model_name})")


@main.command()
@click.argument("parts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for bench.csv, the Pareto plots and warnings.json.")
@click.option("--warning", "warnings", multiple=True, help="A warning to record with the table (repeatable).")
@command
def table(parts, out, warnings):
    """Join part tables into bench.csv; plot L0 against FVE, loss recovered and concepts found."""
    from interplm_jax.atomic import atomic_write
    from interplm_jax.bench import plot_all, read_table, write_table

    rows = [r for p in parts for r in read_table(p)]
    seen = set()
    for r in rows:
        key = (r["model"], r["layer"], r["sae"])
        if key in seen:
            raise InputError(f"SAE {key} appears in two part tables")
        seen.add(key)
    out = Path(out)
    write_table(out / "bench.csv", rows)
    skipped = plot_all(rows, out)
    notes = list(warnings) + [f"{name} not drawn: {why}" for name, why in skipped.items()]
    atomic_write(out / "warnings.json", json.dumps(notes, indent=1) + "\n")
    for w in warnings:
        log.warning("%s", w)
    click.echo(f"{out / 'bench.csv'}: {len(rows)} rows; {len(notes)} warning(s)")


if __name__ == "__main__":
    main()
