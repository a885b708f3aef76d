"""Read the SAEs of a sweep directory (grid.json + orbax checkpoints) as :class:`SavedSAE` s.

Only the ``params`` of the train state are restored (orbax partial restore, to NumPy), so the
optimizer state never has to fit in memory. The newest complete checkpoint is used unless a
step is named. ``sweep_dir`` may be a local path or a ``gs://`` URL. An SAE normalized in place (``<sweep>/saes/<id>/``, written by
``scripts/normalize.py --sweep``) from the same checkpoint step brings its ``scale``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Sequence

import yaml

from interplm_jax.errors import InputError
from interplm_jax.input_transform import fold, read_transform
from interplm_jax.layout import SweepFiles
from interplm_jax.paths import as_path, read_json
from interplm_jax.sae_dir import META_FILE, SavedSAE, check_params, load_sae

log = logging.getLogger(__name__)


def checkpoint_steps(sweep_dir: str | os.PathLike) -> list[int]:
    """Steps of the complete checkpoints of a sweep, ascending."""
    from interplm_jax.train.checkpoint import saved_steps

    return saved_steps(SweepFiles(sweep_dir).checkpoints)


def metric_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``metrics.jsonl`` file (path or URL) in file order.

    A torn final line (no newline yet: a run killed, or a disk full, in the middle of writing
    it) is dropped with a warning; any other bad line is an :class:`InputError` naming it.
    """
    text = as_path(path).read_text()
    lines = text.splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row["sae"], row["step"]  # noqa: B018  (both present)
        except (json.JSONDecodeError, KeyError, TypeError):
            if n == len(lines) and not text.endswith("\n"):
                log.warning("%s:%d: dropping a torn last line (%d characters)", path, n, len(line))
                break
            raise InputError(f"{path}:{n}: not a metrics line (JSON with 'sae' and 'step')") from None
        rows.append(row)
    return rows


def read_metrics(sweep_dir: str | os.PathLike) -> dict[str, dict[str, list[float]]]:
    """SAE id -> metric -> values in step order, from the sweep's ``metrics.jsonl`` (one line per
    logged step and SAE; the ``step`` values are a metric like the others)."""
    path = SweepFiles(sweep_dir).metrics
    if not path.exists():
        raise InputError(f"{path}: not found; is {sweep_dir} a sweep directory (scripts/train.py)?")
    curves: dict[str, dict[str, list[float]]] = {}
    for row in metric_rows(path):
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                curves.setdefault(row["sae"], {}).setdefault(k, []).append(float(v))
    return curves


def read_grid(sweep_dir: str | os.PathLike) -> list[dict]:
    path = SweepFiles(sweep_dir).grid
    grid = read_json(path, f"{sweep_dir}: not a sweep directory (no grid.json)")
    if not isinstance(grid, list) or not all(isinstance(r, dict) and "id" in r for r in grid):
        raise InputError(f"{path}: expected a list of rows with an 'id' each")
    return grid


#: Settings of the sweep's config.yaml kept with each SAE read from it (its training provenance,
#: which the InterPLM export writes into its config.yaml).
TRAINING = ("batch_size", "steps", "warmup_steps", "decay_start", "sparsity_warmup_steps",
            "resample_steps", "grad_clip")


def read_sweep(sweep_dir: str | os.PathLike, ids: Sequence[str] | None = None,
               step: int | None = None) -> dict[str, SavedSAE]:
    """SAE id -> SAE for the chosen ids (default: all) at ``step`` (default: the newest that
    can be read; an unreadable newer one is reported).

    A sweep trained on centred/scaled inputs (``input_transform.json``) gives SAEs with the
    transform folded in: they take raw activations (:mod:`interplm_jax.input_transform`).

    Raises:
      InputError for a directory without grid.json or checkpoints, an unknown id (the known
      ones are listed) or step, or a checkpoint whose parameters do not match the grid.
    """
    from interplm_jax.train.checkpoint import newest_readable, read_params

    files = SweepFiles(sweep_dir)
    sweep_dir = files.root
    grid = read_grid(sweep_dir)
    known = [r["id"] for r in grid]
    wanted = list(known if ids is None else ids)
    unknown = [i for i in wanted if i not in known]
    if unknown:
        raise InputError(f"{sweep_dir}: no SAE {unknown} in grid.json (known: {known})")
    steps = checkpoint_steps(sweep_dir)
    if not steps:
        raise InputError(f"{sweep_dir}: no complete checkpoint under checkpoints/")
    if step is not None and step not in steps:
        raise InputError(f"{sweep_dir}: no checkpoint at step {step} (have {steps})")
    step, (stacked, meta) = newest_readable(steps if step is None else [step],
                                            lambda s: read_params(files.checkpoints, s),
                                            files.checkpoints)
    ck_dir = files.checkpoints / str(step)
    config = {}
    if files.config.is_file():
        config = yaml.safe_load(files.config.read_text()) or {}

    G = next(iter(stacked.values())).shape[0]
    if G != len(grid):
        raise InputError(f"{ck_dir}: {G} SAEs in the checkpoint, {len(grid)} rows in grid.json")
    arch = meta.get("arch") or grid[0].get("arch")
    layer = meta.get("layer", config.get("layer"))
    transform = read_transform(sweep_dir)
    out = {}
    for sae_id in wanted:
        g = known.index(sae_id)
        row = grid[g]
        params = check_params(row.get("arch", arch), {k: v[g] for k, v in stacked.items()},
                              f"{ck_dir} (SAE {sae_id})")
        if transform is not None:  # trained on centred/scaled inputs: take raw ones
            params = fold(row.get("arch", arch), params, transform)
        sae = SavedSAE(row.get("arch", arch), params,
                       {k: v for k, v in row.items() if k not in ("id", "arch")},
                       {"sweep": str(sweep_dir), "id": sae_id, "step": step,
                        "layer": layer, "model": config.get("model"),
                        "store": config.get("store"),
                        "train": {k: config[k] for k in TRAINING if k in config}})
        saved_dir = files.sae(sae_id)
        if (saved_dir / META_FILE).is_file():
            saved = load_sae(saved_dir)
            if saved.meta.get("step") == step and "normalized_on" in saved.meta:
                sae = sae.replace(params={**params, "scale": saved.params["scale"]},
                                  meta={**sae.meta, "normalized_on": saved.meta["normalized_on"]})
            else:
                log.warning("%s is from another checkpoint step (%s, not %d) or not normalized: "
                            "ignored", saved_dir, saved.meta.get("step"), step)
        out[sae_id] = sae
    log.info("read %d SAE(s) of %s at step %d", len(out), sweep_dir, step)
    return out
