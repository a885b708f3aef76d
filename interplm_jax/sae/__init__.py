"""Sparse autoencoder architectures as pure functions over parameter pytrees.

Each architecture is one module exporting one :class:`Architecture` called ``SPEC`` (see
:mod:`interplm_jax.sae._spec`): how to initialise one SAE, encode and decode (inference, with the
normalization ``scale`` applied after the nonlinearity), its training loss, which leaves the
optimizer trains, its hyperparameters with defaults and allowed ranges, its optimizer settings
and its leaves' names in the torch formats. The SAE directory format, the train config and the
torch bridge are derived from these specs. A sweep stacks G SAEs of one architecture on a
leading axis of every leaf; ``jax.vmap`` over that axis batches every function here.

Leaves by architecture (shapes of one SAE; d = input width, F = dictionary size;
``SPEC.leaf_dims()`` gives them, from ``jax.eval_shape`` of ``init``):

========== =====================================================================
relu       b_pre (d,) W_enc (d,F) b_enc (F,) W_dec (F,d) scale (F,)
topk       b_pre W_enc b_enc W_dec scale, k () int32, threshold () float32
batchtopk  as topk (threshold is used at inference)
jumprelu   W_enc b_enc W_dec, b_dec (d,) (not subtracted from the input), threshold (F,), scale
matryoshka as batchtopk (nested prefixes of the dictionary in the loss only)
neuron     as relu with F = d (the neuron baseline; inference clipped to [0, 1]; not trained)
========== =====================================================================

>>> import jax, interplm_jax.sae as sae
>>> arch = sae.get("relu")
>>> params = arch.init(jax.random.key(0), 320, 10240)
>>> f = arch.encode(params, x)         # (B, F)
>>> x_hat = arch.decode(params, f)     # (B, d)
"""

from __future__ import annotations

from interplm_jax.errors import InputError
from interplm_jax.sae import batchtopk, jumprelu, matryoshka, neuron, relu, topk
from interplm_jax.sae._spec import COMMON_HPARAMS, Architecture, HParam, TorchLeaf
from interplm_jax.sae._types import LossAux, LossOutput, Params, StepContext

#: Every architecture by name: the one list to extend with a new module's ``SPEC``.
ARCHITECTURES: dict[str, Architecture] = {
    m.SPEC.name: m.SPEC for m in (relu, topk, batchtopk, jumprelu, matryoshka, neuron)
}
#: Architectures the sweep trainer trains (``train.arch``).
TRAINABLE_ARCHS = tuple(name for name, a in ARCHITECTURES.items() if a.trains)
#: Architectures the InterPLM and SAELens formats hold.
EXPORTABLE_ARCHS = tuple(name for name, a in ARCHITECTURES.items() if a.interplm is not None)


def get(name: str) -> Architecture:
    """The architecture called ``name`` (relu, topk, batchtopk, jumprelu, matryoshka, neuron)."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown SAE architecture {name!r}; known: {sorted(ARCHITECTURES)}"
        ) from None


def encode(arch: str, params: Params, x):
    """Inference features of one SAE: (B, d) -> (B, F)."""
    return get(arch).encode(params, x)


def decode(arch: str, params: Params, f):
    """Reconstruction of one SAE: (B, F) -> (B, d)."""
    return get(arch).decode(params, f)


__all__ = [
    "ARCHITECTURES", "COMMON_HPARAMS", "EXPORTABLE_ARCHS", "TRAINABLE_ARCHS", "Architecture", "HParam",
    "LossAux", "LossOutput", "Params", "StepContext", "TorchLeaf", "decode", "encode", "get",
]
