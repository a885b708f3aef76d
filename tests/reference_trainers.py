"""Load InterPLM's torch trainers from ../shared/reference (tests skip when it is absent).

The reference imports ``einops`` only for ``einops.einsum`` with named axes; when einops is not
installed, a faithful translation to ``torch.einsum`` stands in for it.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "InterPLM"


def _einops_shim() -> None:
    try:
        import einops  # noqa: F401
        return
    except ImportError:
        pass
    import torch

    def einsum(*args):
        *tensors, pattern = args
        lhs, rhs = pattern.split("->")
        letters: dict[str, str] = {}

        def conv(spec: str) -> str:
            return "".join(letters.setdefault(n, chr(97 + len(letters))) for n in spec.split())

        inputs = ",".join(conv(p) for p in lhs.split(","))
        return torch.einsum(f"{inputs}->{conv(rhs)}", *tensors)

    module = types.ModuleType("einops")
    module.einsum = einsum
    sys.modules["einops"] = module


def reference():
    """The reference trainers' modules (relu, top_k, batch_top_k, jump_relu), or skip."""
    if not (REFERENCE / "interplm" / "train" / "trainers" / "relu.py").exists():
        pytest.skip("../shared/reference/InterPLM is absent")
    pytest.importorskip("torch")
    _einops_shim()
    if str(REFERENCE) not in sys.path:
        sys.path.insert(0, str(REFERENCE))
    from interplm.train.trainers import batch_top_k, jump_relu, relu, top_k

    return types.SimpleNamespace(relu=relu, top_k=top_k, batch_top_k=batch_top_k, jump_relu=jump_relu)


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
