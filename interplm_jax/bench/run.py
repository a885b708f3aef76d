"""The bench's steps as library functions (``scripts/bench.py`` and the pipeline's ``bench``
stage call these): measure the SAEs of one layer into a part table; join the parts into
``bench.csv`` with its plots and warnings."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Sequence

from interplm_jax.atomic import atomic_write
from interplm_jax.bench.causal import read_causal, write_causal
from interplm_jax.bench.grid import measure_grid
from interplm_jax.bench.probes import plot_probes, read_probes, summary
from interplm_jax.bench.table import columns, grid_rows, plot_all, read_table, sae_name, write_table
from interplm_jax.concepts.report import write_csv
from interplm_jax.concepts.config import ConceptsConfig
from interplm_jax.errors import InputError
from interplm_jax.layout import KINDS, MAIN, BenchFiles, read_selection

log = logging.getLogger(__name__)

PROBE_COLUMNS = ("model", "layer", "probe", "k", "concept", "features", "test_f1")


def read_fidelity(path: str | os.PathLike) -> dict[str, float]:
    """SAE id -> loss recovered, from a ``scripts/fidelity.py --out`` table (TSV)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        return {r["sae_id"]: float(r["loss_recovered"]) for r in rows}
    except FileNotFoundError:
        raise InputError(f"{path}: not found (a table from scripts/fidelity.py --out)") from None
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: not a fidelity table (columns sae_id, loss_recovered)") from None


def chosen_name(selection: str | os.PathLike | None, model: str, layer: int) -> str | None:
    """The SAE that ``selection.csv`` chose for (``model``'s kind, ``layer``), if any."""
    if selection is None:
        return None
    for r in read_selection(selection):
        if r["kind"] == KINDS.get(model) and int(r["layer"]) == layer and r["selected"] == "True":
            return r["name"]
    return None


def measure_layer(labels_path, evalset_path, store, layer: int, sae_paths: Sequence, out,
                  cfg: ConceptsConfig = ConceptsConfig(), model: str = MAIN, fidelity=None,
                  selection=None, saes_per_pass: int = 32) -> list[dict]:
    """Measure the SAEs at ``sae_paths`` (one layer of one model) in passes of ``saes_per_pass``
    (one pass per architecture and shape); write their rows to the part table ``out``.

    Args:
      fidelity: ``scripts/fidelity.py`` table of these SAEs (loss recovered; None: not measured).
      selection: ``selection.csv`` of the concepts stage (the ``chosen`` column; None: none).
    """
    from interplm_jax.concepts.evalset import EvalSet
    from interplm_jax.concepts.labels import ConceptLabels
    from interplm_jax.sae_dir import load_sae
    from interplm_jax.store import ActivationStore

    st = ActivationStore.open(store) if isinstance(store, (str, os.PathLike)) else store
    labels, es = ConceptLabels.load(labels_path), EvalSet.load(evalset_path)
    saes = [load_sae(p) for p in sae_paths]
    names = [sae_name(s, Path(p).name) for s, p in zip(saes, sae_paths)]
    loss_recovered = read_fidelity(fidelity) if fidelity is not None else {}
    missing = [n for n, s in zip(names, saes) if fidelity and s.arch != "neuron" and n not in loss_recovered]
    if missing:
        raise InputError(f"{fidelity}: no loss recovered for SAE(s) {missing[:3]} of layer {layer}")
    chosen = chosen_name(selection, model, layer)
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(saes):
        groups.setdefault((s.arch, s.params["W_enc"].shape), []).append(i)
    rows = []
    for idx in groups.values():
        for a in range(0, len(idx), saes_per_pass):
            part = idx[a:a + saes_per_pass]
            m = measure_grid(st, layer, labels, es, [saes[i] for i in part], cfg.thresholds,
                             cfg.chunk_residues, cfg.activations)
            rows += grid_rows(model, layer, [saes[i] for i in part], [names[i] for i in part], m,
                              loss_recovered, chosen, cfg.top_f1, cfg.reference_test)
    write_table(out, rows, columns(rows, every_hparam=True))
    return rows


def probe_layer(labels_path, evalset_path, store, layer: int, sae_paths: Sequence, out,
                model: str = MAIN, max_residues: int = 20000, seed: int = 0) -> list[dict]:
    """Sparse probes (:mod:`interplm_jax.bench.probes`) of the SAEs at ``sae_paths`` (one layer
    of one model), the k best neurons and the hidden state, on up to ``max_residues`` residues
    of valid (fit) and of test (F1); rows written to the part table ``out``."""
    from interplm_jax.bench.probes import probe_rows, sample_split
    from interplm_jax.concepts.evalset import EvalSet
    from interplm_jax.concepts.labels import ConceptLabels, is_reported
    from interplm_jax.sae.features import feature_function
    from interplm_jax.sae_dir import load_sae
    from interplm_jax.store import ActivationStore

    st = ActivationStore.open(store) if isinstance(store, (str, os.PathLike)) else store
    labels, es = ConceptLabels.load(labels_path), EvalSet.load(evalset_path)
    valid, test = (sample_split(st, layer, labels, es, split, max_residues, seed) for split in ("valid", "test"))
    keep = [i for i, c in enumerate(es.concepts) if is_reported(c)]
    valid, test = (dataclasses.replace(p, y=p.y[:, keep]) for p in (valid, test))
    saes = [load_sae(p) for p in sae_paths]
    names = [sae_name(s, Path(p).name) for s, p in zip(saes, sae_paths)]
    rows = probe_rows(model, layer, valid, test, [es.concepts[i] for i in keep],
                      [feature_function(s.arch, s.params) for s in saes], names)
    write_csv(out, rows, PROBE_COLUMNS)
    return rows


def bench_table(parts: Sequence, out, warnings: Sequence[str] = (),
                probe_parts: Sequence = (), causal_parts: Sequence = ()) -> tuple[list[dict], list[str]]:
    """Join part tables into ``out/bench.csv``; the Pareto plots; the probe parts into
    ``probes.csv``, ``probes_summary.csv`` and ``probes.png``; the causal tables into
    ``causal.csv`` (q-values over all its rows); ``out/warnings.json`` with ``warnings`` and
    every plot left out (and why). Returns (rows, warnings written)."""
    rows = [r for p in parts for r in read_table(p)]
    seen = set()
    for r in rows:
        key = (r["model"], r["layer"], r["sae"])
        if key in seen:
            raise InputError(f"SAE {key} appears in two part tables")
        seen.add(key)
    files = BenchFiles(Path(out))
    write_table(files.table, rows)
    skipped = plot_all(rows, files)
    if probe_parts:
        probes = [r for p in probe_parts for r in read_probes(p)]
        write_csv(files.probes, probes, PROBE_COLUMNS)
        means = summary(probes)
        write_csv(files.probes_summary, means, ["model", "layer", "probe", "k", "mean_test_f1", "n_concepts"])
        why = plot_probes(means, {(r["model"], r["layer"]): r["sae"] for r in rows if r["chosen"]},
                          files.probes_plot)
        if why is not None:
            skipped[files.probes_plot.name] = why
    if causal_parts:
        write_causal(files.causal, [r for p in causal_parts for r in read_causal(p)])
    notes = list(warnings) + [f"{name} not drawn: {why}" for name, why in skipped.items()]
    for w in warnings:
        log.warning("%s", w)
    atomic_write(files.warnings, json.dumps(notes, indent=1) + "\n")
    return rows, notes
