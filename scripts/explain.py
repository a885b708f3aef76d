#!/usr/bin/env python
"""The SAE features of one or a few sequences, without running the pipeline: extract ESM-2
activations (torch_bridge), encode them with an SAE, write a page in the feature browser's style
(<out>/index.html: per residue its strongest features with their concepts and LLM descriptions,
the structure when given) and <out>/activations.tsv. See docs/report.md."""

from __future__ import annotations

from pathlib import Path

import click

from interplm_jax.cli import command
from interplm_jax.errors import InputError


def read_sequences(sequence: tuple[str, ...], ids: tuple[str, ...], fasta: str | None,
                   max_length: int) -> list:
    """(id, sequence) pairs from --sequence/--id or a FASTA file, checked for ESM-2."""
    from interplm_jax.fasta import Protein, iter_records, problem

    if bool(sequence) == bool(fasta):
        raise InputError("give either --sequence (one or more) or --fasta")
    if ids and len(ids) != len(sequence):
        raise InputError(f"{len(ids)} --id for {len(sequence)} --sequence")
    if fasta:
        proteins = list(iter_records(fasta))
        where = lambda p: f"{fasta}:{p.line}: {p.id}"  # noqa: E731
    else:
        names = ids or ([f"query{i + 1}" for i in range(len(sequence))] if len(sequence) > 1 else ["query"])
        proteins = [Protein(n, "".join(s.split()).upper()) for n, s in zip(names, sequence)]
        where = lambda p: f"--sequence {p.id}"  # noqa: E731
    if not proteins:
        raise InputError(f"{fasta}: no sequence")
    seen: set[str] = set()
    for p in proteins:
        why = problem(p, max_length, seen)
        if why:
            raise InputError(f"{where(p)}: {why}")
        seen.add(p.id)
    return proteins


def study_names(study: Path, layer: int, sae_dir: Path, n_features: int, features) -> dict:
    """Concept labels and LLM descriptions of the study's chosen SAE at ``layer``."""
    from interplm_jax.report.concepts import feature_concepts
    from interplm_jax.report.inputs import descriptions
    from interplm_jax.layout import StudyLayout
    from interplm_jax.study import report_inputs

    li = report_inputs(StudyLayout(study), [layer])[0]
    out: dict = {}
    if li.concept_f1 is not None:
        fc = feature_concepts(li.concept_f1, n_features, features, 3, 0.0, li.concept_f1_test)
        out.update(concepts=fc.rows, concept_names=fc.names)
    if li.annotations is not None:
        out["descriptions"] = descriptions(li.annotations)
    return out


@click.command(context_settings={"show_default": True})
@click.option("--model", required=True,
              help="Protein LM (ESM-2, ESM C) hub name or local directory: the SAE's model.")
@click.option("--sequence", multiple=True, help="A protein sequence (one-letter codes; repeat).")
@click.option("--id", "ids", multiple=True, help="Names of the --sequence proteins (default query...).")
@click.option("--fasta", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Instead of --sequence: a FASTA file.")
@click.option("--study", type=click.Path(file_okay=False, exists=True), default=None,
              help="A scripts/pipeline.py study: its SAE chosen for --layer, concepts, descriptions.")
@click.option("--sae", "sae_path", type=click.Path(file_okay=False, exists=True), default=None,
              help="Instead of --study: an SAE directory (scripts/export.py, normalize.py).")
@click.option("--layer", type=int, default=None,
              help="ESM-2 layer the SAE reads [default with --sae: the SAE's own].")
@click.option("--structure", type=click.Path(dir_okay=False, exists=True), default=None,
              help="PDB/mmCIF file of the (first) protein, e.g. its AlphaFold DB model.")
@click.option("--per-residue", default=3, help="Strongest features shown per residue.")
@click.option("--top", default=20, help="Strongest features of the protein listed.")
@click.option("--max-length", default=1022, help="Longest sequence accepted (ESM-2: 1022).")
@click.option("--device", default="cpu", help="torch device of the model.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory: index.html and activations.tsv.")
@command
def main(model, sequence, ids, fasta, study, sae_path, layer, structure, per_residue, top,
         max_length, device, out):
    """Write <out>/index.html and <out>/activations.tsv (every positive activation: protein,
    residue, amino acid, feature, activation) for the given sequences."""
    import numpy as np

    from interplm_jax.report.explain import Explained, explain_data, write_explain
    from interplm_jax.report.structures import backbone_of
    from interplm_jax.sae.features import feature_function
    from interplm_jax.sae_dir import load_sae
    from torch_bridge.esm import ResidueTokenizer, embed_batch, validate_layers
    from torch_bridge.models import load_model

    proteins = read_sequences(sequence, ids, fasta, max_length)
    if bool(study) == bool(sae_path):
        raise InputError("give either --study (with --layer) or --sae")
    if study:
        from interplm_jax.layout import StudyLayout

        if layer is None:
            raise InputError("--study needs --layer")
        chosen = StudyLayout(Path(study)).chosen("sae")
        if layer not in chosen:
            raise InputError(f"{study}: no SAE chosen for layer {layer} (layers: {sorted(chosen)})")
        sae_path = chosen[layer]
    saved = load_sae(sae_path)
    layer = layer if layer is not None else saved.meta.get("layer")
    if layer is None:
        raise InputError(f"{sae_path}: the SAE does not record its layer: pass --layer")
    esm, tokenizer, _ = load_model(model, device=device)
    validate_layers([layer], esm.config.num_hidden_layers, str(model))
    if esm.config.hidden_size != saved.d_model:
        raise InputError(f"{sae_path}: SAE width {saved.d_model} != {model} hidden size "
                         f"{esm.config.hidden_size} (another model's SAE?)")
    hidden = embed_batch(esm, ResidueTokenizer(tokenizer), [p.sequence for p in proteins], [layer])[layer]
    encode = feature_function(saved.arch, saved.params)
    explained = [Explained(p.id, p.sequence, encode(h)) for p, h in zip(proteins, hidden)]
    names = {}
    if study:
        feats = np.unique(np.concatenate([np.flatnonzero(e.acts.max(axis=0) > 0) for e in explained]))
        names = study_names(Path(study), layer, Path(sae_path), saved.n_features, feats)
    shapes = {}
    if structure:
        text, why = backbone_of(Path(structure), proteins[0].sequence)
        if text is None:
            raise InputError(f"{structure}: not a structure of {proteins[0].id}: {why}")
        shapes[proteins[0].id] = text
    data = explain_data(explained, layer, Path(sae_path).name, str(model), per_residue, top,
                        structures=shapes, **names)
    page, tsv = write_explain(Path(out), data, explained)
    click.echo(f"{page}\n{tsv}")


if __name__ == "__main__":
    main()
