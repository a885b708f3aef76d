#!/usr/bin/env python
"""Feature geometry and spatial organisation: ``umap`` (UMAP + HDBSCAN of decoder rows) and
``spatial`` (sequential vs structural clustering on AlphaFold structures)."""

from __future__ import annotations

import click

from interplm_jax.analysis.config import SpatialConfig, UmapConfig
from interplm_jax.cli import command
from interplm_jax.config import config_options


@click.group()
def main():
    """Analyses of an SAE's features. Parameters come from the ``analysis:`` section of
    --config (defaults: the paper's values); see docs/analysis.md."""


@main.command("umap", context_settings={"show_default": True})
@click.option("--sae", required=True, type=click.Path(exists=True, file_okay=False),
              help="SAE directory (sae.json + params.safetensors).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory (feature_map.tsv, feature_map.png).")
@click.option("--concepts", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Table (TSV, or .csv) with columns 'feature' and --concept-column: colour the "
                   "map by each feature's best concept.")
@click.option("--concept-column", default="concept", help="Column of --concepts to colour by.")
@click.option("--spatial", "spatial_table", type=click.Path(dir_okay=False, exists=True),
              default=None, help="A spatial_layer<L>.tsv of this SAE: colour the map by the "
                                 "structural/sequential effect-size ratio.")
@click.option("--interplm-dashboard", "dashboard", is_flag=True,
              help="Also write UMAP.csv for InterPLM's dashboard (its column names).")
@command
@config_options(UmapConfig, "analysis.umap")
def umap_cmd(sae, out, concepts, concept_column, spatial_table, dashboard, cfg):
    """UMAP (cosine, 15 neighbours, min_dist 0.1) of the unit-normalized decoder rows and HDBSCAN
    clusters (min cluster size 5, min samples 3): table (feature, x, y, cluster) and PNG."""
    from interplm_jax.analysis.run import run_umap

    paths = run_umap(sae, out, cfg, concepts=concepts, concept_column=concept_column,
                     spatial_table=spatial_table, dashboard=dashboard)
    click.echo("\n".join(str(p) for p in paths.values()))


@main.command("spatial", context_settings={"show_default": True})
@click.option("--sae", required=True, type=click.Path(exists=True, file_okay=False),
              help="The layer's normalized SAE directory (sae.json + params.safetensors).")
@click.option("--store", required=True,
              help="Activation store (directory or gs:// URL) with --layer.")
@click.option("--layer", required=True, type=int, help="Layer of the store the SAE was trained on.")
@click.option("--structures", required=True, type=click.Path(exists=True, file_okay=False),
              help="Directory of AlphaFold DB files: AF-<acc>-F1-model_v4.(pdb|cif)[.gz] or "
                   "<acc>.(pdb|cif)[.gz].")
@click.option("--fasta", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Sequences of the store's proteins (checked against each structure).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--recompute", is_flag=True, help="Ignore pair scores saved by an earlier run.")
@click.option("--interplm-dashboard", "dashboard", is_flag=True,
              help="Also write Structure_feats.csv for InterPLM's dashboard (its column names).")
@command
@config_options(SpatialConfig, "analysis.spatial")
def spatial_cmd(sae, store, layer, structures, fasta, out, recompute, dashboard, cfg):
    """Per feature: do its activations cluster around its maximum along the sequence
    (|j - pos_max| <= 2) or in 3D (C-alpha within 6 A)? Paired t-tests against permuted
    activations, Cohen's d, Bonferroni over the layer, structural-only flags: table and PNG."""
    from interplm_jax.analysis.run import run_spatial

    paths = run_spatial(sae, store, layer, structures, fasta, out, cfg,
                        recompute=recompute, dashboard=dashboard)
    click.echo("\n".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
