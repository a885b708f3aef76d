#!/usr/bin/env python
"""Build the static HTML feature browser of a study: one self-contained ``<out>/index.html``
(no server, no network; open it from disk). See docs/report.md."""

from __future__ import annotations

from pathlib import Path

import click

from interplm_jax.cli import command
from interplm_jax.config import config_options
from interplm_jax.errors import InputError
from interplm_jax.layout import CONTROLS
from interplm_jax.report.config import ReportConfig

#: --layer keys -> LayerInputs fields
KEYS = {"layer": "layer", "sweep": "sweep", "sae": "sae", "selection": "selection_csv",
        "f1": "concept_f1", "f1_test": "concept_f1_test", "umap": "umap", "spatial": "spatial",
        "annotations": "annotations", "summary": "concept_summary",
        **{f"{kind}_f1{split}": f"{kind}_f1{split}" for kind in ("neurons", *CONTROLS)
           for split in ("", "_test")}}


def parse_layer(spec: str, selection: str | None):
    """``layer=4,sweep=DIR,sae=DIR[,f1=NPZ,...]`` -> LayerInputs."""
    from interplm_jax.report import LayerInputs

    values: dict = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, eq, value = part.partition("=")
        if not eq or key not in KEYS:
            raise InputError(f"--layer {spec!r}: {part!r} is not KEY=VALUE with KEY one of "
                             f"{list(KEYS)}")
        values[KEYS[key]] = value
    missing = [k for k in ("layer", "sweep", "sae") if k not in values]
    if missing:
        raise InputError(f"--layer {spec!r}: missing {missing}")
    try:
        layer = int(values.pop("layer"))
    except ValueError:
        raise InputError(f"--layer {spec!r}: layer is not an integer") from None
    if selection and "selection_csv" not in values:
        values["selection_csv"] = selection
    return LayerInputs(layer, **{k: Path(v) for k, v in values.items()})


@click.command(context_settings={"show_default": True})
@click.option("--store", default=None, type=click.Path(file_okay=False),
              help="Activation store whose proteins are shown [with --study: its evaluation store].")
@click.option("--fasta", default=None, type=click.Path(dir_okay=False),
              help="Sequences of the store's proteins (same ids) [with --study: its eval-set FASTA].")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory; the page is <out>/index.html.")
@click.option("--layer", "layer_specs", multiple=True,
              help="One layer (repeat): layer=L,sweep=DIR,sae=DIR and optionally "
                   "selection=CSV,f1=NPZ,f1_test=NPZ,umap=TSV,spatial=TSV,annotations=DIR,summary=CSV,"
                   "neurons_f1=NPZ,neurons_f1_test=NPZ,shuffled_f1=NPZ,shuffled_f1_test=NPZ,"
                   "random_init_f1=NPZ,random_init_f1_test=NPZ "
                   "(the chosen SAE's directory; evaluate_concepts.py select output; its concept "
                   "counts on valid and test; analyze.py umap/spatial tables; an annotate.py "
                   "features run; evaluate_concepts.py report summary.csv; the baselines' counts).")
@click.option("--study", type=click.Path(file_okay=False, exists=True), default=None,
              help="Instead of --layer: a scripts/pipeline.py study directory (every trained layer).")
@click.option("--selection", type=click.Path(dir_okay=False), default=None,
              help="selection.csv for every --layer without selection=.")
@click.option("--metadata", type=click.Path(dir_okay=False), default=None,
              help="UniProtKB TSV (Entry, Protein names, Organism, Length, Sequence) or Swiss-Prot "
                   "flat file (.dat) for names.")
@click.option("--structures", type=click.Path(file_okay=False), default=None,
              help="AlphaFold DB / PDB files of the proteins (3-D view of those shown).")
@click.option("--structure-store", type=click.Path(file_okay=False), default=None,
              help="Activation store of proteins with structures: each feature also shows its "
                   "strongest of them in 3-D [with --study and --structures: the study's].")
@click.option("--structures-fasta", type=click.Path(dir_okay=False), default=None,
              help="Sequences of the --structure-store proteins.")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="Concept labels (evaluate_concepts.py labels) for the annotation tracks "
                   "[with --study: the study's].")
@click.option("--bench", type=click.Path(file_okay=False), default=None,
              help="A bench directory (scripts/bench.py table --out: bench.csv, probes_summary.csv, "
                   "warnings.json) for the bench view [with --study: the study's, when it has one].")
@click.option("--title", default="interplm-jax feature browser", help="Page title.")
@command
@config_options(ReportConfig, "report")
def main(store, fasta, out, layer_specs, study, selection, metadata, structures, structure_store,
         structures_fasta, labels, bench, title, cfg):
    """Write <out>/index.html: per layer the chosen SAE and the grid's metrics, the clickable
    UMAP, and per feature its top proteins (activation over the sequence, annotation tracks,
    3-D structure), best concepts, spatial statistics and LLM description; the concept view;
    the bench view (every SAE of every grid, Pareto plots, probes); search by concept or
    feature id."""
    from interplm_jax.report import StructureInputs, build_report

    if bool(layer_specs) == bool(study):
        raise InputError("give either --layer (one or more) or --study")
    if structure_store and not structures_fasta:
        raise InputError("--structure-store needs --structures-fasta (its proteins' sequences)")
    if structures_fasta and not (structure_store or study):
        raise InputError("--structures-fasta goes with --structure-store (or --study)")
    if structure_store and not structures:
        raise InputError("--structure-store needs --structures (the structure files)")
    evidence = {"labels": labels, "bench": bench, "structures": structures and StructureInputs(
        Path(structures), structure_store and Path(structure_store),
        structure_store and Path(structures_fasta))}
    if study:
        from interplm_jax.layout import StudyLayout
        from interplm_jax.study import report_evidence, report_inputs

        lay = StudyLayout(Path(study))
        store = store or lay.eval_store(lay.main)
        fasta = fasta or lay.eval_set.fasta
        layers = report_inputs(lay, sorted(lay.chosen("sae")))
        found = report_evidence(lay, structures, structures_fasta)
        evidence = {"labels": labels or found["labels"], "bench": bench or found["bench"],
                    "structures": evidence["structures"] if structure_store else found["structures"]}
    else:
        if not (store and fasta):
            raise InputError("--layer needs --store and --fasta")
        layers = [parse_layer(s, selection) for s in layer_specs]
    path = build_report(title, store, fasta, layers, out, metadata, cfg, **evidence)
    click.echo(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
