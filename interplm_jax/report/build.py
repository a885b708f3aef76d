"""Assemble a study's outputs into one self-contained HTML feature browser.

:func:`build_report` takes explicit paths (:class:`LayerInputs` per layer), so that it does not
depend on how a pipeline names its directories; :func:`report_data` is the embedded data
(``docs/report.md`` describes its format) and :func:`render_html` puts it into the template
shipped with this package (``page.html`` + ``browser.html``, ``style.css``, the ``*.js``
files and the vendored viewer: all inline, no network).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import gzip
import html
import json
import logging
import os
import re
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from interplm_jax.atomic import atomic_write
from interplm_jax.errors import InputError
from interplm_jax.layout import CONTROLS, report_page
from interplm_jax.report import inputs
from interplm_jax.report.bench import bench_data
from interplm_jax.report.concepts import concept_features, feature_concepts
from interplm_jax.report.config import ReportConfig
from interplm_jax.report.examples import FeatureExamples, b64, feature_examples
from interplm_jax.report.structures import StructureInputs, annotation_tracks, backbones
from interplm_jax.store.manifest import model_display_name
from interplm_jax.store.stats import load_stats

log = logging.getLogger(__name__)

FORMAT = "interplm-jax-report"
VERSION = 4  # 4: "bench" (3: "hist" counts residues, was: proteins by maximum)
#: Scripts of this package inlined into the study page (``page.html`` holds the markers).
SCRIPTS = ("util.js", "viewer.js", "concept_view.js", "feature.js", "bench_view.js", "page.js")
VIEWER = "vendor/3Dmol-min.js"
#: Window size that keeps every protein whole (the structure view colours every residue).
WHOLE = 1 << 30


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
        beside the baselines (neurons, the control models' SAEs) on the test split.
      neurons_f1, neurons_f1_test, shuffled_f1, shuffled_f1_test, random_init_f1,
        random_init_f1_test: the baselines' concept counts (valid, test) for the concept view
        (best features per concept, side by side): neurons, the SAE of the shuffled-weight
        model, that of the randomly initialised model.
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
    neurons_f1: Path | None = None
    neurons_f1_test: Path | None = None
    shuffled_f1: Path | None = None
    shuffled_f1_test: Path | None = None
    random_init_f1: Path | None = None
    random_init_f1_test: Path | None = None


def _check_paths(li: LayerInputs) -> None:
    for field in dataclasses.fields(li):
        p = getattr(li, field.name)
        if field.name != "layer" and p is not None and not Path(p).exists():
            raise InputError(f"layer {li.layer}: {field.name} {p}: not found")


class _Proteins:
    """The protein table: each shown protein once (by id), with where its sequence is."""

    def __init__(self):
        self.row: dict[str, int] = {}
        self.source: dict[str, tuple[Path, int]] = {}  # id -> (FASTA, length in its store)

    def add(self, pid: str, fasta: Path, length: int) -> int:
        if pid not in self.row:
            self.row[pid] = len(self.row)
            self.source[pid] = (fasta, length)
        return self.row[pid]

    def sequences(self) -> dict[str, str]:
        by_fasta: dict[Path, list[str]] = {}
        for pid, (fasta, _) in self.source.items():
            by_fasta.setdefault(fasta, []).append(pid)
        out = {}
        for fasta, ids in by_fasta.items():
            lengths = np.array([self.source[p][1] for p in ids])
            out.update(zip(ids, inputs.sequences(fasta, ids, lengths)))
        return out


def _layer_data(li: LayerInputs, store, fasta: Path, cfg: ReportConfig, proteins: _Proteins,
                structure_store=None, structure_fasta: Path | None = None) -> dict:
    """One layer's part of the embedded data; registers the proteins it shows."""
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
                          cfg.batch_rows, hist_bins=cfg.hist_bins, profile_top=cfg.profile_proteins,
                          profile_bins=cfg.profile_bins)
    out = {"layer": li.layer, "sae": name, "arch": sae.arch, "n_features": sae.n_features,
           "normalized": "normalized_on" in sae.meta,
           "grid": inputs.grid_table(Path(li.sweep), name, li.selection_csv, li.layer),
           "features": _features_json(ex, store, fasta, proteins)}
    if structure_store is not None and li.layer in structure_store.layers and cfg.top_structures:
        sx = feature_examples(structure_store, li.layer, sae.arch, sae.params, cfg.top_structures,
                              WHOLE, cfg.batch_rows)
        top = _features_json(sx, structure_store, structure_fasta, proteins)
        out["features"]["struct"] = {str(f): {"max": m, "top": t} for f, m, t in
                                     zip(top["ids"], top["max"], top["top"])}
    stats = load_stats(store, li.layer)
    if stats is not None:  # the layer header's activation statistics (docs/extraction.md)
        s = stats.summary()
        out["activations"] = {"norm_mean": inputs._round(s["norm_mean"]),
                              "norm_max": inputs._round(s["norm_max"]),
                              "mean_norm_ratio": inputs._round(s["mean_norm_ratio"]),
                              "outliers": sorted(set(s["outliers_var"]) | set(s["outliers_absmax"]))}
    if li.concept_f1 is not None:
        fc = feature_concepts(Path(li.concept_f1), sae.n_features, ex.features,
                              cfg.top_concepts, cfg.min_f1, li.concept_f1_test)
        out["concepts"] = {"names": fc.names, "split": fc.split, "has_test": fc.has_test,
                           "by_feature": {str(k): v for k, v in fc.rows.items()},
                           "by_concept": _by_concept(li, fc.names, cfg.concept_features)}
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


def _by_concept(li: LayerInputs, names: list[str], top: int) -> dict:
    """Kind (``sae`` and each baseline given) -> {concept index in ``names``: best features}."""
    out = {}
    baselines = [(kind, getattr(li, f"{kind}_f1"), getattr(li, f"{kind}_f1_test"))
                 for kind in ("neurons", *CONTROLS)]
    for kind, valid, test in [("sae", li.concept_f1, li.concept_f1_test), *baselines]:
        if valid is None:
            continue
        got_names, rows = concept_features(Path(valid), top, Path(test) if test else None)
        where = {n: i for i, n in enumerate(names)}
        out[kind] = {str(where[got_names[c]]): r for c, r in rows.items() if got_names[c] in where}
    return out


def _features_json(ex: FeatureExamples, store, fasta: Path, proteins: _Proteins) -> dict:
    """Live features: ids, max, frequency, histogram, and per feature its examples as
    ``[protein row, max activation, window start, base64 uint8 activations(, base64 uint8
    whole-sequence profile)]``."""
    lengths = store.lengths()
    tops = []
    for examples in ex.examples:
        rows = []
        for e in examples:
            row = proteins.add(store.protein_ids[e.protein], Path(fasta), int(lengths[e.protein]))
            rows.append([row, inputs._round(e.max_act), e.start, b64(e.q)]
                        + ([b64(e.profile)] if e.profile is not None else []))
        tops.append(rows)
    out = {"ids": ex.features.tolist(), "max": inputs._round(ex.feature_max.tolist()),
           "freq": inputs._round(ex.frequency.tolist(), 3), "top": tops,
           "n_proteins": ex.n_proteins}
    if ex.hist is not None:
        out["hist"] = ex.hist.tolist()
    return out


def report_data(title: str, store_path: Path, fasta: Path, layers: Sequence[LayerInputs],
                metadata_tsv: Path | None = None, cfg: ReportConfig = ReportConfig(),
                structures: StructureInputs | None = None, labels: Path | None = None,
                bench: Path | None = None) -> dict:
    """The data the page embeds (a JSON-able dict; format in ``docs/report.md``).

    ``structures``: where the 3-D view finds structures (and, optionally, a store of proteins
    with structures whose top proteins each feature also shows); ``labels``: concept labels
    (``evaluate_concepts.py labels``) for the annotation tracks under the sequences; ``bench``:
    a bench directory (``bench.py table --out``) for the bench view.
    """
    from interplm_jax.store import ActivationStore

    if not layers:
        raise InputError("no layer to report")
    if len({li.layer for li in layers}) != len(layers):
        raise InputError(f"layers given twice: {[li.layer for li in layers]}")
    for path in (fasta, labels, structures and structures.fasta):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{path}: file not found")
    bench_view = bench_data(Path(bench)) if bench is not None else None
    meta = {}
    if metadata_tsv is not None:
        from interplm_jax.annotate.metadata import read_uniprot_tsv
        meta = read_uniprot_tsv(metadata_tsv)
    store = ActivationStore.open(store_path)
    sstore = (ActivationStore.open(structures.store) if structures and structures.store
              else None)
    proteins = _Proteins()
    layer_data = [_layer_data(li, store, Path(fasta), cfg, proteins, sstore,
                              structures and structures.fasta)
                  for li in sorted(layers, key=lambda x: x.layer)]
    ids = list(proteins.row)
    seqs = proteins.sequences()
    shapes = backbones(seqs, Path(structures.directory)) if structures else {}
    tracks = annotation_tracks(Path(labels), ids, seqs) if labels else ([], {})
    cut = cfg.max_name_chars

    def name(pid: str) -> str:
        n = meta[pid].name if pid in meta else ""
        return n if len(n) <= cut else n[: cut - 1] + "\u2026"

    return {"format": FORMAT, "version": VERSION, "title": title,
            "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "model": store.manifest.get("model", {}).get("name"),
            "model_family": model_display_name(store.manifest.get("model")),  # 'ESM-2', 'ESM C'
            "n_store_proteins": store.n_proteins,
            "config": dataclasses.asdict(cfg),
            "proteins": {"id": ids, "name": [name(p) for p in ids],
                         "organism": [meta[p].organism if p in meta else "" for p in ids],
                         "seq": [seqs[p] for p in ids],
                         "structure": [shapes.get(p) for p in ids],
                         "tracks": [tracks[1].get(p) for p in ids]},
            "track_names": tracks[0],
            "layers": layer_data, "bench": bench_view}


def _packed(data: bytes) -> str:
    """gzip (mtime 0: the same bytes give the same page) + base64: what the page inflates
    with the browser's own ``DecompressionStream``."""
    return base64.b64encode(gzip.compress(data, 9, mtime=0)).decode("ascii")


def render_html(data: dict, body: str = "browser.html", scripts: Sequence[str] = SCRIPTS) -> str:
    """A page: ``page.html`` (of this package) with ``body``, the CSS, ``scripts`` and the
    vendored viewer inlined, and the data as gzip + base64 JSON (decoded by the page;
    :func:`page_data` reads it back)."""
    here = resources.files("interplm_jax.report")
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    shell = here.joinpath("page.html").read_text("utf-8")
    shell = shell.replace("__BODY__", here.joinpath(body).read_text("utf-8"), 1)
    parts = {"__TITLE__": html.escape(data["title"]),
             "__STYLE__": here.joinpath("style.css").read_text("utf-8"),
             "__SCRIPTS__": "\n".join(here.joinpath(f).read_text("utf-8") for f in scripts),
             "__VIEWER__": _packed(here.joinpath(VIEWER).read_bytes()),
             "__DATA__": _packed(payload.encode("utf-8"))}
    return re.sub("|".join(parts), lambda m: parts[m.group(0)], shell)  # one pass


def page_data(page: str) -> dict:
    """The data embedded in a page written by :func:`render_html` (for tests and scripts)."""
    m = re.search(r'<script type="application/gzip" id="data">([^<]*)</script>', page)
    if m is None:
        raise InputError("not a feature browser page (no embedded data)")
    return json.loads(gzip.decompress(base64.b64decode(m.group(1))))


def build_report(title: str, store: str | os.PathLike, fasta: str | os.PathLike,
                 layers: Sequence[LayerInputs], out: str | os.PathLike,
                 metadata_tsv: str | os.PathLike | None = None,
                 cfg: ReportConfig = ReportConfig(), structures: StructureInputs | None = None,
                 labels: str | os.PathLike | None = None,
                 bench: str | os.PathLike | None = None) -> Path:
    """Write ``<out>/index.html`` (atomically) and return its path.

    Args:
      title: shown at the top of the page.
      store: the activation store the SAEs were trained on (proteins' activations).
      fasta: the proteins' sequences (ids as in the store).
      layers: one :class:`LayerInputs` per layer shown.
      metadata_tsv: a UniProtKB TSV (``Entry``, ``Protein names``, ...) for protein names.
      structures, labels, bench: see :func:`report_data`.
    """
    data = report_data(title, Path(store), Path(fasta), layers,
                       Path(metadata_tsv) if metadata_tsv else None, cfg, structures,
                       Path(labels) if labels else None, Path(bench) if bench else None)
    page = render_html(data)
    path = atomic_write(report_page(out), page)
    log.info("wrote %s (%.2f MB; %d proteins, %d structures, %s live features)", path,
             len(page.encode()) / 1e6, len(data["proteins"]["id"]),
             sum(s is not None for s in data["proteins"]["structure"]),
             ", ".join(f"L{d['layer']}: {len(d['features']['ids'])}" for d in data["layers"]))
    return path
