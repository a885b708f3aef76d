"""Import the reference's concept modules (../shared/reference/InterPLM) for parity checks.

The functions compared (``calc_metrics_sparse``, ``calculate_metrics``, ``calculate_f1``) need
only NumPy/SciPy, but their modules import, at the top, packages this environment lacks
(einops, h5py, pandas, tap) through unrelated helpers. Those imports are satisfied with empty
placeholder modules while importing; ``pandas.DataFrame`` is given as a function returning the
row dicts it receives, which is all ``calculate_metrics`` does with it, and ``pandas.isna`` as
the missing-value test the row parsers need. The reference's own
code runs unchanged. Tests skip when the reference is absent.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "InterPLM"


def _placeholder(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


def load(module: str, tmp_path: Path):
    """The reference module ``module`` (e.g. ``interplm.analysis.concepts.compare_activations``)."""
    if not (REFERENCE / "interplm").is_dir():
        pytest.skip("../shared/reference/InterPLM is absent")
    mp = pytest.MonkeyPatch()
    mp.setenv("INTERPLM_DATA", str(tmp_path))  # interplm.constants creates this directory
    mp.syspath_prepend(str(REFERENCE))

    def unused(*a, **k):
        raise AssertionError("placeholder called")

    placeholders = {
        "interplm.sae.dictionary": dict(Dictionary=object),
        "interplm.sae.inference": dict(get_sae_feats_in_batches=unused, load_sae=unused),
        "interplm.data_processing.embedding_loader": dict(load_shard_embeddings=unused),
        "tap": dict(tapify=unused),
    }
    try:
        importlib.import_module("pandas")
    except ImportError:
        placeholders["pandas"] = dict(DataFrame=lambda rows: rows, read_csv=unused, Series=object,
                                      isna=lambda x: x is None or (isinstance(x, float) and x != x))
    saved = {k: sys.modules.get(k) for k in list(placeholders) + [module]}
    try:
        for name, attrs in placeholders.items():
            try:
                importlib.import_module(name)
            except Exception:
                sys.modules[name] = _placeholder(name, **attrs)
        sys.modules.pop(module, None)
        return importlib.import_module(module)
    finally:
        for k, v in saved.items():
            if k == module:
                continue
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        mp.undo()
