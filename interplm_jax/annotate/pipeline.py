"""The three stages of ``scripts/annotate.py`` as library functions that write a run directory.

``features``: activations -> example selection -> examples.json -> descriptions.csv
``validate``: examples.json + descriptions.csv -> validation.csv, predictions.csv,
              validation_summary.json, validation_hist.png, LLM_Autointerp.csv
``categorise``: concept lists per model -> concept_categories.csv, categories.json,
              category_counts.csv, category_counts.png
Each stage with ``dry_run`` writes its prompts and ``estimate_<stage>.json`` instead of calling.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from interplm_jax.annotate import activations as acts_mod
from interplm_jax.annotate import categorise as cat_mod
from interplm_jax.annotate.config import AnnotateConfig
from interplm_jax.annotate.describe import (DESCRIPTION_COLUMNS, build_examples,
                                            describe_features, description_requests,
                                            load_examples, read_csv, save_examples, write_csv)
from interplm_jax.annotate.llm import LLM, write_dry_run
from interplm_jax.annotate.metadata import read_uniprot_tsv
from interplm_jax.annotate.select import sample_features, select_examples
from interplm_jax.annotate.validate import (VALIDATION_COLUMNS, plot_histogram, summarise,
                                            validate_features, validation_requests, write_summary)
from interplm_jax.atomic import atomic_path, atomic_write
from interplm_jax.config import to_dict
from interplm_jax.errors import InputError
from interplm_jax.layout import AnnotateFiles
from interplm_jax.resume import load_npz
from interplm_jax.store.manifest import model_display_name

log = logging.getLogger(__name__)


def _llm(cfg: AnnotateConfig, out: Path, cache_dir: str | Path | None, client) -> LLM:
    return LLM(cfg.llm, Path(cache_dir) if cache_dir else AnnotateFiles(out).cache, client)


def _max_acts(out: Path, store, layer: int, encode, features: np.ndarray,
              batch_rows: int) -> np.ndarray:
    """Per-protein max activations of ``features``, reused from ``out/max_acts.npz`` when it
    was computed for the same proteins and features (a resumed run skips the store pass)."""
    path = AnnotateFiles(out).max_acts
    ids = np.asarray(store.protein_ids)
    z = load_npz(path)
    if z is not None and {"features", "protein_ids", "max_acts"} <= set(z) \
            and np.array_equal(z["features"], features) and np.array_equal(z["protein_ids"], ids):
        log.info("reusing %s", path)
        return z["max_acts"]
    m = acts_mod.protein_max_activations(store, layer, encode, batch_rows)
    with atomic_path(path) as tmp:
        np.savez(tmp, max_acts=m, features=features, protein_ids=ids)
    return m


def run_features(out: str | Path, cfg: AnnotateConfig, metadata_path: str | Path, store,
                 layer: int, sae_params: Mapping[str, np.ndarray],
                 features: Sequence[int] | None = None, dry_run: bool = False,
                 cache_dir: str | Path | None = None, prompt_dir: str | Path | None = None,
                 client=None, arch: str = "relu") -> dict[str, Any]:
    """Select examples for the sampled features and ask Claude to describe them."""
    out = Path(out)
    files = AnnotateFiles(out)
    metadata = read_uniprot_tsv(metadata_path, cfg.prompt.max_annotation_chars)
    n_feat = int(np.asarray(sae_params["W_enc"]).shape[1])
    feats = (np.unique(np.asarray(features, np.int64)) if features is not None
             else sample_features(n_feat, cfg.selection))
    if feats.size == 0 or feats.min() < 0 or feats.max() >= n_feat:
        raise InputError(f"features must be indices in [0, {n_feat}); got {list(feats)[:5]}...")
    store_ids = list(store.protein_ids)
    rows = np.array([i for i, p in enumerate(store_ids) if p in metadata], np.int64)
    if rows.size == 0:
        raise InputError(f"{metadata_path}: none of the store's {len(store_ids)} proteins has "
                         "metadata (ids must be UniProt accessions)")
    if rows.size < len(store_ids):
        log.warning("%d of %d store proteins have no metadata in %s and are not used",
                    len(store_ids) - rows.size, len(store_ids), metadata_path)
    sub_ids = [store_ids[i] for i in rows]
    seqs = {p: metadata[p].sequence for p in sub_ids}
    n_tokens = np.diff(np.asarray(store.offsets))[rows]
    for p, n in zip(sub_ids, n_tokens):
        if len(seqs[p]) != n:
            raise InputError(f"protein {p}: {len(seqs[p])} residues in {metadata_path} but {n} "
                             "tokens in the store (was the sequence cut at extraction?)")

    encode = acts_mod.sae_encoder(sae_params, feats, arch)
    max_acts = _max_acts(out, store, layer, encode, feats, cfg.selection.batch_rows)
    selection = select_examples(max_acts[rows], feats, cfg.selection)

    pairs = [(int(rows[p]), k) for k in range(len(feats)) for p in selection.examples(k, "train")]
    positions = acts_mod.positions_for_examples(store, layer, encode, pairs,
                                                cfg.prompt.position_fraction,
                                                cfg.prompt.max_positions)
    positions = {(int(np.searchsorted(rows, p)), k): v for (p, k), v in positions.items()}
    examples = build_examples(selection, sub_ids, max_acts[rows], seqs, positions)
    model = model_display_name(store.manifest.get("model"))
    info = {"metadata": str(Path(metadata_path).resolve()), "layer": layer, "model": model,
            "n_sae_features": n_feat, "n_proteins": len(sub_ids), "config": to_dict(cfg)}
    save_examples(files.examples, examples, info)

    llm = _llm(cfg, out, cache_dir, client)
    if dry_run:
        reqs = description_requests(examples, metadata, cfg, prompt_dir, model)
        est = write_dry_run(llm, reqs, files.dry_run, "features")
        val = [r for r, _ in validation_requests(examples, {}, metadata, cfg, prompt_dir,
                                                 placeholder=True, model=model)]
        est_val = write_dry_run(llm, val, files.dry_run, "validate")
        return {"dry_run": True, "features": est, "validate": est_val}
    described = describe_features(examples, metadata, llm, cfg, prompt_dir, model)
    write_csv(files.descriptions, described, DESCRIPTION_COLUMNS)
    _write_usage(out, "features", llm)
    return {"descriptions": _counts(described), "usage": llm.usage}


def run_validate(run: str | Path, cfg: AnnotateConfig, metadata_path: str | Path | None = None,
                 dry_run: bool = False, cache_dir: str | Path | None = None,
                 prompt_dir: str | Path | None = None, client=None) -> dict[str, Any]:
    """Ask Claude to predict eval activations from each description; score with Pearson r."""
    run = Path(run)
    files = AnnotateFiles(run)
    examples, info = load_examples(files.examples)
    metadata = read_uniprot_tsv(metadata_path or info["metadata"], cfg.prompt.max_annotation_chars)
    described = {int(r["feature"]): r for r in read_csv(files.descriptions)
                 if r["status"] == "ok"}
    llm = _llm(cfg, run, cache_dir, client)
    if dry_run:
        reqs = [r for r, _ in validation_requests(examples, described, metadata, cfg, prompt_dir,
                                                  model=info.get("model", "ESM-2"))]
        return {"dry_run": True, "validate": write_dry_run(llm, reqs, files.dry_run, "validate")}
    rows, preds = validate_features(examples, described, metadata, llm, cfg, prompt_dir,
                                    info.get("model", "ESM-2"))
    write_csv(files.validation, rows, VALIDATION_COLUMNS)
    write_csv(files.predictions, preds, ("feature", "protein", "measured", "predicted"))
    stats = summarise(rows)
    write_summary(files.validation_summary, stats)
    plot_histogram(rows, files.validation_hist)
    # The reference dashboard's file (InterPLM dashboard_cache: LLM_Autointerp.csv).
    write_csv(files.dashboard,
              [{"Feature": r["feature"], "Correlation": r["pearson_r"], "Summary": r["summary"]}
               for r in rows if r["status"] == "ok"], ("Feature", "Correlation", "Summary"))
    _write_usage(run, "validate", llm)
    return {"validation": stats, "usage": llm.usage}


def run_categorise(out: str | Path, cfg: AnnotateConfig, concepts_by_model: Mapping[str, list[str]],
                   dry_run: bool = False, cache_dir: str | Path | None = None,
                   prompt_dir: str | Path | None = None, client=None) -> dict[str, Any]:
    """Describe, categorise and assign the concepts; write the table and the plot."""
    out = Path(out)
    files = AnnotateFiles(out)
    llm = _llm(cfg, out, cache_dir, client)
    if dry_run:
        concepts = sorted({c for v in concepts_by_model.values() for c in v})
        reqs = cat_mod.dry_run_requests(concepts, cfg, prompt_dir)
        return {"dry_run": True, "categorise": write_dry_run(llm, reqs, files.dry_run, "categorise")}
    rows, categories = cat_mod.categorise_concepts(concepts_by_model, llm, cfg, prompt_dir)
    write_csv(files.concept_categories, rows, cat_mod.CATEGORY_COLUMNS)
    atomic_write(files.categories,
                 json.dumps([dataclasses.asdict(c) for c in categories], indent=2))
    counts = cat_mod.category_counts(rows, list(concepts_by_model), categories)
    write_csv(files.category_counts(),
              [{"category": c, **by_model} for c, by_model in counts.items()],
              ("category", *concepts_by_model))
    cat_mod.plot_category_counts(counts, files.category_counts("png"))
    _write_usage(out, "categorise", llm)
    return {"concepts": len(rows), "categories": len(categories), "usage": llm.usage}


def _counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


def _write_usage(out: Path, stage: str, llm: LLM) -> None:
    """Token totals of the calls made (cached answers cost nothing), and the failed requests
    with their reasons and answers (``failures_<stage>.jsonl``); no credentials."""
    files = AnnotateFiles(out)
    atomic_write(files.usage(stage), json.dumps({"model": llm.cfg.model, **llm.usage}, indent=2))
    atomic_write(files.failures(stage), "".join(json.dumps(f) + "\n" for f in llm.failures))

