#!/usr/bin/env python
"""The SAE bench: every SAE of a grid measured on the held-out proteins (docs/bench.md).

\b
  measure  SAEs of one layer (and model) -> rows of a part table: L0, FVE, dead and dense
           fractions on test (raw features), concepts found and mean best F1 on valid, test F1
           of the valid-chosen pairs; loss recovered joined from a scripts/fidelity.py table
  probes   sparse probes of the same SAEs: per concept, a logistic regression on the k = 1, 2, 5,
           10 best features (and neurons, and the whole hidden state), fit on valid, F1 on test
  causal   the causal test of one layer's chosen SAE: each concept's valid-chosen feature zeroed
           and clamped to its max at the concept's residues of test proteins, the change in the
           LM's log-probability of the true residue against random features of similar frequency
  table    part tables -> bench.csv and the Pareto plots (L0 vs FVE, loss recovered, concepts);
           probe parts -> probes.csv, probes_summary.csv, probes.png; causal parts -> causal.csv
"""

from __future__ import annotations

from pathlib import Path

import click

from interplm_jax.cli import command
from interplm_jax.concepts.config import ConceptsConfig
from interplm_jax.config import config_options
from interplm_jax.bench.causal import CausalConfig
from interplm_jax.layout import KINDS, MAIN


def layer_inputs(fn):
    """The options that name one layer's SAEs and the evaluation set they are measured on."""
    options = [
        click.option("--labels", "labels_path", required=True, type=click.Path(dir_okay=False),
                     help="labels.npz of the study."),
        click.option("--evalset", required=True, type=click.Path(dir_okay=False), help="evalset.json (valid/test split)."),
        click.option("--store", required=True, help="Evaluation activation store (valid + test proteins)."),
        click.option("--layer", required=True, type=int, help="Layer of the store."),
        click.option("--sae", "sae_paths", multiple=True, required=True, type=click.Path(file_okay=False),
                     help="SAE directory (repeat: every SAE of the grid; the neuron-baseline directory works too)."),
        click.option("--model-name", type=click.Choice(list(KINDS)), default=MAIN, show_default=True,
                     help="Model the activations come from (the table's model column): the study's "
                          "main model or a control."),
    ]
    for add in reversed(options):
        fn = add(fn)
    return fn


@click.group()
def main():
    """Measure every SAE of a grid (bench.csv) and plot the trade-offs."""


@main.command()
@layer_inputs
@click.option("--fidelity", default=None, type=click.Path(dir_okay=False),
              help="scripts/fidelity.py table of these SAEs (loss recovered; without: empty).")
@click.option("--selection", default=None, type=click.Path(dir_okay=False),
              help="selection.csv of the concepts stage (the chosen column).")
@click.option("--saes-per-pass", default=32, show_default=True, type=click.IntRange(min=1),
              help="SAEs measured in one pass over the store (the counts held grow with it: 2 x concepts x SAEs x features x thresholds int64).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Part table (CSV) to write.")
@command
@config_options(ConceptsConfig, "concepts", "thresholds", "activations", "top_f1", "reference_test", "chunk_residues")
def measure(labels_path, evalset, store, layer, sae_paths, model_name, fidelity, selection,
            saes_per_pass, out, cfg):
    """Measure the SAEs given (one layer, one model) in passes of --saes-per-pass."""
    from interplm_jax.bench.run import measure_layer

    rows = measure_layer(labels_path, evalset, store, layer, sae_paths, out, cfg, model_name, fidelity,
                         selection, saes_per_pass)
    click.echo(f"{out}: {len(rows)} SAE(s) of layer {layer} ({model_name})")


@main.command()
@layer_inputs
@click.option("--max-residues", default=20000, show_default=True, type=click.IntRange(min=1),
              help="Residues of whole proteins sampled from valid (fit) and from test (F1).")
@click.option("--seed", default=0, show_default=True, help="Seed of the protein sample.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Probe part table (CSV) to write.")
@command
def probes(labels_path, evalset, store, layer, sae_paths, model_name, max_residues, seed, out):
    """Sparse probing of the SAEs given (one layer, one model), the k best neurons and the hidden state."""
    from interplm_jax.bench.run import probe_layer

    rows = probe_layer(labels_path, evalset, store, layer, sae_paths, out, model_name, max_residues, seed)
    click.echo(f"{out}: {len(rows)} probe rows of layer {layer} ({model_name})")


@main.command()
@click.option("--model", required=True, help="Hub name or local directory of the masked LM the SAE reads.")
@click.option("--layer", required=True, type=int, help="Layer of the SAE.")
@click.option("--study", default=None, type=click.Path(file_okay=False),
              help="A pipeline study directory: the four inputs below default to its own (the SAE chosen for --layer).")
@click.option("--labels", "labels_path", default=None, type=click.Path(dir_okay=False), help="labels.npz of the study.")
@click.option("--evalset", default=None, type=click.Path(dir_okay=False), help="evalset.json (its test proteins are used).")
@click.option("--sae", "sae_path", default=None, type=click.Path(file_okay=False),
              help="The chosen SAE's directory (normalized: its feature_stats/ give maxima and frequencies).")
@click.option("--pairs", default=None, type=click.Path(dir_okay=False),
              help="per_concept_<tag>.csv of evaluate_concepts.py report for this SAE (the valid-chosen features).")
@click.option("--model-name", type=click.Choice(list(KINDS)), default=MAIN, show_default=True,
              help="The table's model column.")
@click.option("--device", default="cpu", show_default=True, help="torch device.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Causal table (CSV) to write.")
@command
@config_options(CausalConfig, "causal", skip=("layers",))
def causal(model, layer, study, labels_path, evalset, sae_path, pairs, model_name, device, out, cfg):
    """Zero / clamp each concept's chosen feature at its residues; effect vs a null of random features."""
    from interplm_jax.errors import InputError
    from interplm_jax.layout import StudyLayout
    from torch_bridge.causal import causal_layer

    if study is not None:
        o = StudyLayout(Path(study).resolve())
        labels_path, evalset = labels_path or o.labels, evalset or o.eval_set.definition
        pairs = pairs or o.chosen_per_concept(layer)  # InputError if no SAE was chosen for the layer
        sae_path = sae_path or o.chosen("sae")[layer]
    missing = [f"--{n}" for n, v in (("labels", labels_path), ("evalset", evalset), ("sae", sae_path),
                                     ("pairs", pairs)) if v is None]
    if missing:
        raise InputError(f"give {', '.join(missing)} (or --study)")

    rows, notes = causal_layer(model, labels_path, evalset, layer, sae_path, pairs, out, cfg, model_name, device)
    for note in notes:
        click.echo(f"warning: {note}", err=True)
    click.echo(f"{out}: {len(rows)} concept(s) of layer {layer} tested")


@main.command()
@click.argument("parts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--probes", "probe_parts", multiple=True, type=click.Path(dir_okay=False),
              help="Probe part table of `probes` (repeatable).")
@click.option("--causal", "causal_parts", multiple=True, type=click.Path(dir_okay=False),
              help="Table of `causal` (repeatable): joined into causal.csv, q-values over all its rows.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for bench.csv, the Pareto plots and warnings.json.")
@click.option("--warning", "warnings", multiple=True, help="A warning to record with the table (repeatable).")
@command
def table(parts, probe_parts, causal_parts, out, warnings):
    """Join part tables into bench.csv; plot L0 against FVE, loss recovered and concepts found."""
    from interplm_jax.bench.run import bench_table

    from interplm_jax.layout import BenchFiles

    rows, notes = bench_table(parts, out, warnings, probe_parts, causal_parts)
    click.echo(f"{BenchFiles(Path(out)).table}: {len(rows)} rows; {len(notes)} warning(s)")


if __name__ == "__main__":
    main()
