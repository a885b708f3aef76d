"""Assemble a study's outputs into one self-contained HTML feature browser.

:func:`build_report` takes explicit paths (:class:`LayerInputs` per layer), so that it does not
depend on how a pipeline names its directories; :func:`report_data` is the embedded data
(``docs/report.md`` describes its format) and :func:`render_html` puts it into the template
shipped with this package (``template.html``: inline CSS and vanilla JS, no network).
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import json
import logging
import os
import re
from importlib import resources
from pathlib import Path
from typing import Sequence


from interplm_jax.atomic import atomic_write
from interplm_jax.errors import InputError
from interplm_jax.layout import report_page
from interplm_jax.report import inputs
from interplm_jax.report.config import ReportConfig
from interplm_jax.report.examples import FeatureExamples, b64, feature_examples
from interplm_jax.store.stats import load_stats

log = logging.getLogger(__name__)

FORMAT = "interplm-jax-report"
VERSION = 1


@dataclasses.dataclass(frozen=True)
class LayerInputs:
    """What the browser shows of one layer; everything but layer, sweep and sae is optional.

    Attributes:
      layer: the model layer (must be in the activation store).
      sweep: the layer's sweep directory (grid.json, metrics.jsonl).
      sae: the chosen SAE's directory (normalized, ``<sweep>/saes/<id>``).
      selection_csv: ``evaluate_concepts.py select`` output (score of every SAE of the grid).
      concept_f1: counts of the chosen SAE (``evaluate_concepts.py f1``, e.g. the valid split):
        best concepts per feature. concept_f1_test: counts on the test split (test F1 shown at
        the threshold chosen on ``concept_f1``).
      umap: ``feature_map.tsv`` of the chosen SAE (``analyze.py umap``).
      spatial: ``spatial_layer<L>.tsv`` of the chosen SAE (``analyze.py spatial``).
      annotations: an ``annotate.py features`` run directory (descriptions.csv, validation.csv).
      concept_summary: ``summary.csv`` of ``evaluate_concepts.py report``: this layer's SAE
        beside the baselines (shuffled-model SAE, neurons) on the test split.
    """

    layer: int
    sweep: Path
    sae: Path
    selection_csv: Path | None = None
    concept_f1: Path | None = None
    concept_f1_test: Path | None = None
    umap: Path | None = None
    spatial: Path | None = None
    annotations: Path | None = None
    concept_summary: Path | None = None


def _check_paths(li: LayerInputs) -> None:
    for field in dataclasses.fields(li):
        p = getattr(li, field.name)
        if field.name != "layer" and p is not None and not Path(p).exists():
            raise InputError(f"layer {li.layer}: {field.name} {p}: not found")


def _layer_data(li: LayerInputs, store, cfg: ReportConfig,
                proteins: dict[int, int]) -> dict:
    """One layer's part of the embedded data; registers the proteins it shows in ``proteins``
    (store index -> row of the protein table)."""
    from interplm_jax.sae_dir import load_sae

    _check_paths(li)
    if li.layer not in store.layers:
        raise InputError(f"activation store {store.url}: layer {li.layer} not stored "
                         f"(layers: {list(store.layers)})")
    sae = load_sae(li.sae)
    if sae.d_model != store.d_model:
        raise InputError(f"{li.sae}: SAE width {sae.d_model} != store d_model {store.d_model}")
    name = str(sae.meta.get("id") or Path(li.sae).name)
    if li.selection_csv is not None:
        chosen = inputs.selected_name(Path(li.selection_csv), li.layer)
        if chosen is not None and chosen != name:
            log.warning("layer %d: %s selected %s, but the report shows %s", li.layer,
                        li.selection_csv, chosen, name)
    ex = feature_examples(store, li.layer, sae.arch, sae.params, cfg.top_proteins, cfg.window,
                          cfg.batch_rows)
    out = {"layer": li.layer, "sae": name, "arch": sae.arch, "n_features": sae.n_features,
           "normalized": "normalized_on" in sae.meta,
           "grid": inputs.grid_table(Path(li.sweep), name, li.selection_csv, li.layer),
           "features": _features_json(ex, proteins)}
    stats = load_stats(store, li.layer)
    if stats is not None:  # the layer header's activation statistics (docs/extraction.md)
        s = stats.summary()
        out["activations"] = {"norm_mean": inputs._round(s["norm_mean"]),
                              "norm_max": inputs._round(s["norm_max"]),
                              "mean_norm_ratio": inputs._round(s["mean_norm_ratio"]),
                              "outliers": sorted(set(s["outliers_var"]) | set(s["outliers_absmax"]))}
    if li.concept_f1 is not None:
        fc = inputs.feature_concepts(Path(li.concept_f1), sae.n_features, ex.features,
                                     cfg.top_concepts, cfg.min_f1, li.concept_f1_test)
        out["concepts"] = {"names": fc.names, "split": fc.split, "has_test": fc.has_test,
                           "by_feature": {str(k): v for k, v in fc.rows.items()}}
    if li.umap is not None:
        out["umap"] = inputs.umap_points(Path(li.umap), sae.n_features)
    if li.spatial is not None:
        sp = inputs.spatial_rows(Path(li.spatial), sae.n_features)
        out["spatial"] = {"columns": sp["columns"],
                          "rows": {str(k): v for k, v in sp["rows"].items()}}
    if li.concept_summary is not None:
        out["baselines"] = inputs.concept_summary(Path(li.concept_summary), li.layer)
    if li.annotations is not None:
        described = inputs.descriptions(Path(li.annotations))
        out["descriptions"] = {str(k): v for k, v in described.items()}
    return out


def _features_json(ex: FeatureExamples, proteins: dict[int, int]) -> dict:
    """Live features: ids, max, frequency, and per feature its examples as
    ``[protein row, max activation, window start, base64 uint8 activations]``."""
    tops = []
    for examples in ex.examples:
        rows = []
        for e in examples:
            row = proteins.setdefault(e.protein, len(proteins))
            rows.append([row, inputs._round(e.max_act), e.start, b64(e.q)])
        tops.append(rows)
    return {"ids": ex.features.tolist(), "max": inputs._round(ex.feature_max.tolist()),
            "freq": inputs._round(ex.frequency.tolist(), 3), "top": tops,
            "n_proteins": ex.n_proteins}


def report_data(title: str, store_path: Path, fasta: Path, layers: Sequence[LayerInputs],
                metadata_tsv: Path | None = None, cfg: ReportConfig = ReportConfig()) -> dict:
    """The data the page embeds (a JSON-able dict; format in ``docs/report.md``)."""
    from interplm_jax.store import ActivationStore

    if not layers:
        raise InputError("no layer to report")
    if len({li.layer for li in layers}) != len(layers):
        raise InputError(f"layers given twice: {[li.layer for li in layers]}")
    if not Path(fasta).is_file():
        raise InputError(f"{fasta}: FASTA file not found")
    meta = {}
    if metadata_tsv is not None:
        from interplm_jax.annotate.metadata import read_uniprot_tsv
        meta = read_uniprot_tsv(metadata_tsv)
    store = ActivationStore.open(store_path)
    proteins: dict[int, int] = {}
    layer_data = [_layer_data(li, store, cfg, proteins)
                  for li in sorted(layers, key=lambda x: x.layer)]
    order = sorted(proteins, key=proteins.get)
    ids = [store.protein_ids[p] for p in order]
    seqs = inputs.sequences(Path(fasta), ids, store.lengths()[order])
    cut = cfg.max_name_chars

    def name(pid: str) -> str:
        n = meta[pid].name if pid in meta else ""
        return n if len(n) <= cut else n[: cut - 1] + "\u2026"

    return {"format": FORMAT, "version": VERSION, "title": title,
            "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "model": store.manifest.get("model", {}).get("name"),
            "n_store_proteins": store.n_proteins,
            "config": dataclasses.asdict(cfg),
            "proteins": {"id": ids, "name": [name(p) for p in ids],
                         "organism": [meta[p].organism if p in meta else "" for p in ids],
                         "seq": seqs},
            "layers": layer_data}


def render_html(data: dict) -> str:
    """The page: the template with the data as JSON in a ``<script type="application/json">``."""
    template = resources.files("interplm_jax.report").joinpath("template.html").read_text("utf-8")
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    payload = payload.replace("<", "\\u003c")  # no "</script>" inside the data
    values = {"TITLE": html.escape(data["title"]), "DATA": payload}
    # one pass: a title holding "__DATA__" stays text
    return re.sub(r"__(TITLE|DATA)__", lambda m: values[m.group(1)], template)


def build_report(title: str, store: str | os.PathLike, fasta: str | os.PathLike,
                 layers: Sequence[LayerInputs], out: str | os.PathLike,
                 metadata_tsv: str | os.PathLike | None = None,
                 cfg: ReportConfig = ReportConfig()) -> Path:
    """Write ``<out>/index.html`` (atomically) and return its path.

    Args:
      title: shown at the top of the page.
      store: the activation store the SAEs were trained on (proteins' activations).
      fasta: the proteins' sequences (ids as in the store).
      layers: one :class:`LayerInputs` per layer shown.
      metadata_tsv: a UniProtKB TSV (``Entry``, ``Protein names``, ...) for protein names.
    """
    data = report_data(title, Path(store), Path(fasta), layers,
                       Path(metadata_tsv) if metadata_tsv else None, cfg)
    page = render_html(data)
    path = atomic_write(report_page(out), page)
    log.info("wrote %s (%.2f MB; %d proteins, %s live features)", path, len(page.encode()) / 1e6,
             len(data["proteins"]["id"]),
             ", ".join(f"L{d['layer']}: {len(d['features']['ids'])}" for d in data["layers"]))
    return path
