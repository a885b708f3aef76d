"""The reference InterPLM (``../shared/reference/InterPLM``, MIT) for parity tests and benchmarks.

Its real code runs here: the packages it imports at module level (einops, pandas, h5py, tap,
wandb) come with our ``dev`` extra. Tests that need it skip when it is absent
(``INTERPLM_REFERENCE`` points elsewhere).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(os.environ.get(
    "INTERPLM_REFERENCE",
    Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "InterPLM"))


def reference_module(name: str) -> types.ModuleType:
    """Import ``name`` (e.g. ``"interplm.sae.inference"``) from the reference, or skip."""
    if not (REFERENCE / "interplm").is_dir():
        pytest.skip(f"the reference InterPLM is absent ({REFERENCE})")
    # interplm.constants creates its data directory at import: keep it out of the home directory
    os.environ.setdefault("INTERPLM_DATA", os.path.join(tempfile.gettempdir(), "interplm_ref_data"))
    if str(REFERENCE) not in sys.path:
        sys.path.insert(0, str(REFERENCE))
    try:
        return importlib.import_module(name)
    except ImportError as e:
        pytest.skip(f"the reference InterPLM cannot be imported here: {e}")


def inference() -> types.ModuleType:
    """``interplm.sae.inference`` (``load_sae``) with the SAE classes and configs it loads."""
    for name in ("interplm.sae.dictionary", "interplm.train.configs", "interplm.sae.normalize"):
        reference_module(name)
    return reference_module("interplm.sae.inference")


def trainers() -> types.SimpleNamespace:
    """The reference trainers' modules: relu, top_k, batch_top_k, jump_relu."""
    pytest.importorskip("torch")
    return types.SimpleNamespace(**{
        n: reference_module(f"interplm.train.trainers.{n}")
        for n in ("relu", "top_k", "batch_top_k", "jump_relu")})


def torch_to_params(ae, arch: str) -> dict[str, np.ndarray]:
    """Our parameter dict from a reference SAE module (the mapping of DESIGN.md section 2)."""
    sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in ae.state_dict().items()}
    F = sd["encoder.weight"].shape[0]
    if arch == "relu":
        return {"b_pre": sd["bias"], "W_enc": sd["encoder.weight"].T.copy(),
                "b_enc": sd["encoder.bias"], "W_dec": sd["decoder.weight"].T.copy(),
                "scale": np.ones(F, np.float32)}
    if arch in ("topk", "batchtopk"):
        return {"b_pre": sd["b_dec"], "W_enc": sd["encoder.weight"].T.copy(),
                "b_enc": sd["encoder.bias"], "W_dec": sd["decoder.weight"].T.copy(),
                "scale": np.ones(F, np.float32), "k": np.asarray(sd["k"], np.int32),
                "threshold": np.asarray(sd["threshold"], np.float32)}
    if arch == "jumprelu":
        return {"W_enc": sd["encoder.weight"].T.copy(), "b_enc": sd["encoder.bias"],
                "W_dec": sd["decoder.weight"].T.copy(), "b_dec": sd["decoder.bias"],
                "threshold": sd["threshold"], "scale": np.ones(F, np.float32)}
    raise ValueError(arch)
