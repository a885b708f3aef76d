"""Sparse autoencoder architectures as pure functions over parameter pytrees.

Each architecture is an :class:`Architecture`: how to initialise one SAE, encode and decode
(inference, with the normalization ``scale`` applied after the nonlinearity), its training loss,
which leaves the optimizer trains, and which hyperparameters the loss reads. A sweep stacks G
SAEs of one architecture on a leading axis of every leaf; ``jax.vmap`` over that axis batches
every function here.

Leaves by architecture (shapes of one SAE; d = input width, F = dictionary size):

========== =====================================================================
relu       b_pre (d,) W_enc (d,F) b_enc (F,) W_dec (F,d) scale (F,)
topk       b_pre W_enc b_enc W_dec scale, k () int32, threshold () float32
batchtopk  as topk (threshold is used at inference)
jumprelu   W_enc b_enc W_dec, b_dec (d,) (not subtracted from the input), threshold (F,), scale
neuron     as relu with F = d (the neuron baseline; inference clipped to [0, 1]; not trained)
========== =====================================================================

>>> import jax, interplm_jax.sae as sae
>>> arch = sae.get("relu")
>>> params = arch.init(jax.random.key(0), 320, 10240)
>>> f = arch.encode(params, x)         # (B, F)
>>> x_hat = arch.decode(params, f)     # (B, d)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from interplm_jax.errors import InputError
from interplm_jax.sae import jumprelu, neuron, relu, topk
from interplm_jax.sae._types import LossAux, LossOutput, Params, StepContext


class Architecture(NamedTuple):
    """One SAE architecture: pure functions and the facts the trainer needs about it."""

    name: str
    init: Callable
    """(key, d, F, **init_kwargs) -> Params of one SAE."""
    encode: Callable
    """(params, x (B, d)) -> f (B, F), inference mode, scale applied."""
    decode: Callable
    """(params, f (B, F)) -> x_hat (B, d)."""
    loss: Callable
    """(params, x, hparams, StepContext) -> (loss, LossAux); training mode."""
    trainable: tuple[str, ...]
    """Leaves updated by the optimizer (the others are buffers)."""
    hparams: tuple[str, ...]
    """Hyperparameters the loss reads from its ``hparams`` dict (besides lr and seed)."""
    update_buffers: Callable | None = None
    """(params, LossAux, hparams, StepContext) -> params with buffers updated, or None."""
    sparsity_warmup: bool = False
    """Whether the sparsity penalty is warmed up (``StepContext.sparsity_scale``)."""
    adam_b1: float = 0.9
    """Adam's beta1 as the reference trainer sets it."""
    project_eps: float = 1e-6
    """eps in the decoder-row normalisation of the gradient projection (reference value)."""
    renorm_eps: float = 1.1920929e-07
    """eps added to the row norm when renormalising the decoder (reference value)."""
    clip_first: bool = False
    """Clip the gradient before the decoder projection (ReLU trainer) instead of after."""
    pre_activations: Callable | None = None
    """(params, x (B, d), dtype) -> (B, F) encoder product, for a step with a sparse branch."""
    active_scores: Callable | None = None
    """(params, pre, hparams) -> (B, F), -inf where an entry is inactive: the architecture can
    train with the sparse ReLU/JumpReLU step (``train.decoder``); None: it cannot."""


ARCHITECTURES: dict[str, Architecture] = {
    "relu": Architecture(
        "relu", relu.init, relu.encode, relu.decode, relu.loss, relu.TRAINABLE, relu.HPARAMS,
        sparsity_warmup=True, project_eps=0.0, renorm_eps=0.0, clip_first=True,
        pre_activations=relu.pre_activations, active_scores=relu.active_scores,
    ),
    "topk": Architecture(
        "topk", topk.init, topk.encode_topk, topk.decode, topk.loss_topk, topk.TRAINABLE,
        topk.HPARAMS, update_buffers=topk.update_buffers_topk,
    ),
    "batchtopk": Architecture(
        "batchtopk", topk.init, topk.encode_batchtopk, topk.decode, topk.loss_batchtopk,
        topk.TRAINABLE, topk.HPARAMS, update_buffers=topk.update_buffers_batchtopk,
    ),
    "jumprelu": Architecture(
        "jumprelu", jumprelu.init, jumprelu.encode, jumprelu.decode, jumprelu.loss,
        jumprelu.TRAINABLE, jumprelu.HPARAMS, sparsity_warmup=True, adam_b1=0.0,
        pre_activations=jumprelu.pre_activations, active_scores=jumprelu.active_scores,
    ),
    "neuron": Architecture(
        "neuron", neuron.init, neuron.encode, relu.decode, relu.loss, relu.TRAINABLE, relu.HPARAMS,
        sparsity_warmup=True, project_eps=0.0, renorm_eps=0.0, clip_first=True,
    ),
}


def get(name: str) -> Architecture:
    """The architecture called ``name`` (relu, topk, batchtopk, jumprelu, neuron)."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
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
    "ARCHITECTURES", "Architecture", "LossAux", "LossOutput", "Params", "StepContext",
    "decode", "encode", "get",
]
