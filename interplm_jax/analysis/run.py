"""The two analyses end to end, from files to tables and figures (what ``scripts/analyze.py``
calls).

``run_umap``: SAE -> ``feature_map.tsv`` (feature, x, y, cluster) + ``feature_map.png``.
``run_spatial``: SAE + activation store + sequences + AlphaFold directory ->
``structures_layer<L>.tsv`` (which structures were used, which excluded and why),
``spatial_layer<L>_pairs.npz`` (per (protein, feature) scores, reused by a rerun with the same
inputs), ``spatial_layer<L>.tsv`` (one row per feature) and ``spatial_layer<L>.png``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import zlib
from pathlib import Path

import numpy as np

from interplm_jax.analysis import plots, spatial, stats
from interplm_jax.analysis.config import SpatialConfig, UmapConfig
from interplm_jax.analysis.structures import load_structures
from interplm_jax.analysis.tables import (feature_column, write_dashboard_structure,
                                          write_dashboard_umap, write_tsv)
from interplm_jax.atomic import atomic_path
from interplm_jax.errors import InputError
from interplm_jax.layout import AnalysisFiles
from interplm_jax.resume import load_npz
from interplm_jax.sae.features import feature_function
from interplm_jax.sae_dir import load_sae

log = logging.getLogger(__name__)


def run_umap(sae: str | os.PathLike, out: str | os.PathLike, cfg: UmapConfig = UmapConfig(), *,
             concepts: str | os.PathLike | None = None, concept_column: str = "concept",
             spatial_table: str | os.PathLike | None = None,
             name: str = "feature_map", dashboard: bool = False) -> dict[str, Path]:
    """UMAP + HDBSCAN of the decoder rows of the SAE directory ``sae``; the map coloured by
    cluster and, when the tables are given, by best concept (``concepts``: columns ``feature``
    and ``concept_column``) and by the structural/sequential ratio (``spatial_table``: a
    ``spatial_layer<L>.tsv``).
    ``dashboard``: also write ``UMAP.csv`` for InterPLM's dashboard."""
    from interplm_jax.analysis.geometry import feature_map

    saved = load_sae(sae)
    params = saved.params
    F = params["W_dec"].shape[0]
    concept = ratio = None  # read the tables first: a bad table fails before the slow UMAP
    if concepts is not None:
        concept = feature_column(concepts, concept_column, F, numeric=False)
    if spatial_table is not None:
        ratio = feature_column(spatial_table, "struct_seq_ratio", F, numeric=True)
    fmap = feature_map(params["W_dec"], cfg)
    table = fmap.table()
    if concept is not None:
        table["concept"] = concept
    if ratio is not None:
        table["struct_seq_ratio"] = ratio
    files = AnalysisFiles(out)
    layer = saved.meta.get("layer")
    title = (f"layer {layer}, " if layer is not None else "") + f"SAE {Path(sae).name}: {F} features"
    paths = {"table": write_tsv(files.feature_map(name), table),
             "figure": plots.plot_feature_map(files.feature_map(name, "png"), fmap.xy, fmap.cluster,
                                              concept, ratio, title=title)}
    if dashboard:
        paths["dashboard"] = write_dashboard_umap(files.umap_dashboard, table)
    log.info("wrote %s", ", ".join(map(str, paths.values())))
    return paths


def _checksum(*arrays) -> int:
    c = 0
    for a in arrays:
        c = zlib.crc32(np.ascontiguousarray(a).tobytes(), c)
    return c


def _read_sequences(fasta: str | os.PathLike) -> dict[str, str]:
    from interplm_jax.fasta import iter_records

    seqs = {}
    for rec in iter_records(fasta):
        seqs[rec.id] = rec.sequence[:-1] if rec.sequence.endswith("*") else rec.sequence
    return seqs


def run_spatial(sae: str | os.PathLike, store_path: str | os.PathLike, layer: int,
                structures: str | os.PathLike, fasta: str | os.PathLike, out: str | os.PathLike,
                cfg: SpatialConfig = SpatialConfig(), *, recompute: bool = False,
                dashboard: bool = False) -> dict[str, Path]:
    """Sequential/structural clustering statistics of one layer's SAE features.

    Args:
      sae: the layer's SAE directory (normalized, so activations lie in [0, 1]).
      store_path: activation store holding ``layer``; its protein ids are UniProt accessions.
      structures: directory of AlphaFold DB files; fasta: the proteins' sequences.
      recompute: ignore the pair scores (complete or partial) saved by an earlier run.
      dashboard: also write ``Structure_feats.csv`` for InterPLM's dashboard.
    """
    from interplm_jax.store import ActivationStore

    files = AnalysisFiles(out)
    store = ActivationStore.open(store_path)
    if layer not in store.layers:
        raise InputError(f"{store_path}: layer {layer} not stored (layers: {list(store.layers)})")
    saved = load_sae(sae)
    if saved.d_model != store.d_model:
        raise InputError(f"{sae}: SAE width {saved.d_model} != store d_model {store.d_model}")
    F, params = saved.n_features, saved.params
    seqs = _read_sequences(fasta)
    lengths = dict(zip(store.protein_ids, store.lengths().tolist()))
    have = {pid: seqs[pid] for pid in store.protein_ids if pid in seqs}
    structs = load_structures(have, structures)
    structs.excluded += [(pid, "", "no sequence in " + str(fasta))
                         for pid in store.protein_ids if pid not in seqs]
    ids = [pid for pid in store.protein_ids if pid in structs.coords]
    for pid in ids:
        if lengths[pid] != len(seqs[pid]):
            raise InputError(f"protein {pid!r}: {lengths[pid]} rows in {store_path} but "
                             f"{len(seqs[pid])} residues in {fasta}")
    report = structs.report_rows()
    write_tsv(files.structures(layer),
              {k: [r[k] for r in report] for k in ("protein", "status", "file", "reason")})
    if not ids:
        raise InputError(f"{structures}: no protein of {store_path} has a complete structure "
                         f"(see {files.structures(layer)})")

    # leaves in sorted order: the order safetensors gives, so earlier pair files stay valid
    checksum = _checksum(*(params[k] for k in sorted(params)))
    key = json.dumps(dict(store=str(store.url), layer=layer, sae=checksum,
                          ids=spatial.ids_checksum(ids), threshold=cfg.threshold,
                          window=cfg.seq_window, radius=cfg.radius,
                          n_permutations=cfg.n_permutations, seed=cfg.seed), sort_keys=True)
    pairs_path = files.spatial_pairs(layer)
    pairs = None
    z = None if recompute else load_npz(pairs_path)
    if z is not None and str(z.get("key")) == key and set(spatial.FIELDS) <= set(z):
        pairs = spatial.PairScores(**{f: z[f] for f in spatial.FIELDS})
        log.info("reusing %s (%d pairs)", pairs_path, len(pairs))
    if pairs is None:
        partial = files.spatial_pairs(layer, partial=True)
        if recompute:
            partial.unlink(missing_ok=True)
        pairs = spatial.collect_pairs(
            ids, [structs.coords[p] for p in ids], lambda pid: store.protein(pid, layer),
            feature_function(saved.arch, params), threshold=cfg.threshold, window=cfg.seq_window,
            radius=cfg.radius, n_permutations=cfg.n_permutations, seed=cfg.seed,
            batch_tokens=cfg.batch_tokens, checkpoint=partial, checkpoint_key=key)
        with atomic_path(pairs_path) as tmp:
            np.savez(tmp, key=np.array(key), **pairs.to_dict())
        partial.unlink(missing_ok=True)
    if len(pairs) and pairs.max.max() > 1.001:
        log.warning("feature activations up to %.3g: is the SAE normalized to [0, 1]? The "
                    "threshold %.2f applies to normalized activations", pairs.max.max(),
                    cfg.threshold)

    table = stats.feature_tests(pairs, F, min_proteins=cfg.min_proteins,
                                max_proteins=cfg.max_proteins, alpha=cfg.alpha, seed=cfg.seed,
                                alternative=cfg.alternative)
    summary = stats.Summary.of(table)
    paths = {"structures": files.structures(layer), "pairs": pairs_path,
             "table": write_tsv(files.spatial(layer), table),
             "figure": plots.plot_effect_sizes(
                 files.spatial(layer, "png"), table,
                 title=f"layer {layer}: {summary.n_tested} features tested on {len(ids)} "
                       f"proteins, {summary.n_structural_only} structural-only")}
    if dashboard:
        paths["dashboard"] = write_dashboard_structure(files.structure_dashboard, table)
    log.info("layer %d: %s", layer, dataclasses.asdict(summary))
    return paths
