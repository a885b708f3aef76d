"""LLM annotation of SAE features and categorisation of Swiss-Prot concepts, through Claude.

\b
  features    choose example proteins per sampled feature; Claude writes descriptions
  validate    Claude predicts activations on held-out proteins; Pearson r per feature
  categorise  Claude describes concepts, proposes categories and assigns each concept

The API key is read only from ANTHROPIC_API_KEY. --dry-run writes the prompts and a token and
cost estimate without calling the API (and without a key). Answers are cached on disk, so a
rerun or a resumed run pays nothing twice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interplm_jax.annotate.config import AnnotateConfig  # noqa: E402
from interplm_jax.cli import command, parse_layers  # noqa: E402  (also parses index lists)
from interplm_jax.config import config_options  # noqa: E402
from interplm_jax.errors import InputError  # noqa: E402


def common(fn):
    """Options every sub-command has (below ``@command``: ``--config`` and the LLM options
    resolve into the ``cfg`` argument)."""
    for opt in reversed([
        click.option("--cache", "cache_dir", type=click.Path(file_okay=False),
                     help="Answer cache directory [default: <out>/cache]."),
        click.option("--prompts", "prompt_dir", type=click.Path(file_okay=False, exists=True),
                     help="Directory of prompt templates overriding the packaged ones by name."),
        click.option("--dry-run", is_flag=True, help="Write prompts and a cost estimate; call "
                     "nothing."),
    ]):
        fn = opt(fn)
    return command(config_options(AnnotateConfig, "annotate", "llm.model", "llm.concurrency")(fn))


@click.group(help=__doc__)
def main():
    pass


@main.command()
@click.option("--store", required=True, help="Activation store (directory or gs:// URL).")
@click.option("--layer", required=True, type=int, help="Layer of the SAE (of the store's model).")
@click.option("--sae", required=True, type=click.Path(exists=True, file_okay=False),
              help="The SAE directory (sae.json + params.safetensors), normalized.")
@click.option("--metadata", required=True, type=click.Path(dir_okay=False, exists=True),
              help="UniProtKB TSV or Swiss-Prot flat file (.dat) of the annotated proteins (Entry, Protein names, Length, "
                   "Sequence, feature columns).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--features", "feature_list", help="Feature indices, e.g. 3,17,40-45 (default: "
              "a seeded random annotate.selection.feature_fraction of all).")
@common
def features(store, layer, sae, metadata, out, feature_list, cfg, cache_dir, prompt_dir, dry_run):
    """Select examples and ask Claude to describe each sampled feature."""
    from interplm_jax.annotate.pipeline import run_features
    from interplm_jax.sae_dir import load_sae
    from interplm_jax.store import ActivationStore

    try:
        feats = list(parse_layers(feature_list)) if feature_list else None
    except InputError as e:
        raise InputError(str(e).replace("--layers", "--features")) from None
    saved = load_sae(sae)
    result = run_features(out, cfg, metadata, ActivationStore.open(store), layer, saved.params,
                          feats, dry_run, cache_dir, prompt_dir, arch=saved.arch)
    click.echo(json.dumps(result, indent=2))


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="Run directory of `features`.")
@click.option("--metadata", type=click.Path(dir_okay=False, exists=True),
              help="UniProtKB TSV or flat file [default: the one `features` used].")
@common
def validate(run_dir, metadata, cfg, cache_dir, prompt_dir, dry_run):
    """Predict held-out activations from each description; Pearson r, table and histogram."""
    from interplm_jax.annotate.pipeline import run_validate

    result = run_validate(run_dir, cfg, metadata, dry_run, cache_dir, prompt_dir)
    click.echo(json.dumps(result, indent=2))


@main.command()
@click.option("--concepts", "concept_files", required=True, multiple=True,
              help="[MODEL=]FILE: concept names of one model (text, one per line, or CSV/TSV "
                   "with a `concept` column). Repeat for several models.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@common
def categorise(concept_files, out, cfg, cache_dir, prompt_dir, dry_run):
    """Describe concepts, propose categories, assign each concept; CSV and plot."""
    from interplm_jax.annotate.categorise import read_concepts
    from interplm_jax.annotate.pipeline import run_categorise

    by_model: dict[str, list[str]] = {}
    for spec in concept_files:
        name, _, path = spec.rpartition("=")
        name = name or Path(path).stem
        if name in by_model:
            raise InputError(f"--concepts: model {name!r} given twice")
        by_model[name] = read_concepts(path)
    result = run_categorise(out, cfg, by_model, dry_run, cache_dir, prompt_dir)
    click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
