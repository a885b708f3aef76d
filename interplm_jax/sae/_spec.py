"""The spec of an SAE architecture: everything the rest of the project derives from it.

Each module ``interplm_jax/sae/<arch>.py`` exports one :class:`Architecture` called ``SPEC``:
its pure functions (init, encode, decode, loss), its hyperparameters (:class:`HParam`: default,
integer or float, allowed range), its optimizer settings (:class:`Optimizer`), and where each
of its leaves lives in the torch formats (:class:`TorchLeaf`). Leaves and their shapes come
from ``jax.eval_shape`` of ``init`` (:meth:`Architecture.shapes`), never from a second table.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Mapping, NamedTuple

import jax
import numpy as np

from interplm_jax.errors import InputError

INT32_MAX = 2**31 - 1


class HParam(NamedTuple):
    """A hyperparameter: one value per SAE of a grid (a vmapped (G,) array while training)."""

    name: str
    default: float
    """The value unless the grid or ``train.hparams`` gives one (written nowhere else)."""
    help: str
    integer: bool = False
    """int32 (else float32)."""
    minimum: float | None = None
    """Smallest allowed value (excluded when ``exclusive``); None: unbounded."""
    exclusive: bool = False
    maximum: float | str | None = None
    """Largest allowed value; ``"F"``: the dictionary size (known once d_model is)."""
    init: bool = False
    """Passed to ``init`` as a keyword (it sets a leaf, e.g. TopK's ``k``)."""

    def allowed(self) -> str:
        """The allowed range in words, e.g. ``> 0``, ``>= 0``, ``in [0, 1]``, ``in [1, F]``."""
        lo, hi = self.minimum, self.maximum
        if lo is None:
            return "any number" if hi is None else f"<= {hi}"
        if hi is None:
            return f"{'>' if self.exclusive else '>='} {lo:g}"
        return f"in {'(' if self.exclusive else '['}{lo:g}, {hi if isinstance(hi, str) else f'{hi:g}'}]"

    def problem(self, value: float, F: int | None = None) -> str | None:
        """What is wrong with ``value`` (a finite number), or None. ``F`` bounds ``maximum="F"``
        (unchecked while F is unknown)."""
        if self.integer and value != int(value):
            return "is not an integer"
        lo = self.minimum
        if lo is not None and (value <= lo if self.exclusive else value < lo):
            return f"must be {self.allowed()}"
        hi = F if self.maximum == "F" else self.maximum
        if hi is not None and value > hi:
            return f"must be {self.allowed()}" + (f" (F = {F})" if self.maximum == "F" else "")
        if self.integer and value > INT32_MAX:
            return f"is too large (int32: at most {INT32_MAX})"
        return None


#: Hyperparameters of every architecture (the optimizer's and the initialisation's).
COMMON_HPARAMS = (
    HParam("lr", 1e-4, "Peak learning rate.", minimum=0.0, exclusive=True),
    HParam("seed", 0, "Seed of the SAE's initialisation (and its resampling draws).",
           integer=True, minimum=0),
)


class Optimizer(NamedTuple):
    """The reference trainer's update settings (:func:`interplm_jax.train.transforms.sae_optimizer`)."""

    adam_b1: float = 0.9
    """Adam's beta1."""
    project_eps: float = 1e-6
    """eps in the decoder-row normalisation of the gradient projection."""
    renorm_eps: float = 1.1920929e-07
    """eps added to the row norm when renormalising the decoder."""
    clip_first: bool = False
    """Clip the gradient before the decoder projection (ReLU trainer) instead of after."""


class TorchLeaf(NamedTuple):
    """Where one of our leaves is stored in a torch format.

    ``how``: ``same``; ``T`` (stored transposed: ``nn.Linear`` keeps weights as (out, in));
    ``reciprocal`` (stored as 1/value, 0 where the value is 0: InterPLM's
    ``activation_rescale_factor``); ``broadcast`` (our scalar stored as (F,)); ``cfg`` (an
    integer in the format's config file rather than a tensor). ``key`` None: not stored; an
    import gives it ``default``. A stored key with a ``default`` may be absent from a file.
    """

    key: str | None
    how: str = "same"
    default: float | None = None


class SAELens(NamedTuple):
    """An architecture's place in SAELens's format (``sae_weights.safetensors`` + ``cfg.json``)."""

    architecture: str
    """SAELens's ``architecture``: ``standard``, ``topk`` or ``jumprelu``."""
    leaves: Mapping[str, TorchLeaf]
    """Our leaf -> its tensor (``scale`` is never here: SAELens has none; see torch_bridge)."""
    reads_back: bool = True
    """A SAELens folder of this ``architecture`` imports as this architecture (False: as
    another one computing the same function, e.g. BatchTopK written as SAELens jumprelu)."""
    foldable: bool = True
    """``scale`` can be folded into the weights (False where rescaling changes the choice
    of features, as TopK's)."""


class InterPLM(NamedTuple):
    """An architecture's place in InterPLM's format (``ae.pt`` state dict + ``config.yaml``)."""

    leaves: Mapping[str, TorchLeaf]
    """Our leaf -> its state-dict entry."""
    trainer: str
    """The reference trainer class (``trainer_name`` of its config)."""
    trainer_cfg: tuple[tuple[str, str, float | None], ...] = ()
    """(trainer_cfg key, our hyperparameter or leaf, value when unknown): the keys by which the
    reference's ``load_sae`` picks this class."""


#: InterPLM leaves every SAE class of the reference has (``Dictionary`` with nn.Linear layers).
INTERPLM_COMMON = {
    "W_enc": TorchLeaf("encoder.weight", "T"),
    "b_enc": TorchLeaf("encoder.bias"),
    "W_dec": TorchLeaf("decoder.weight", "T"),
    "scale": TorchLeaf("activation_rescale_factor", "reciprocal", default=1.0),
}
#: SAELens leaves every architecture has.
SAELENS_COMMON = {"W_enc": TorchLeaf("W_enc"), "b_enc": TorchLeaf("b_enc"), "W_dec": TorchLeaf("W_dec")}


@dataclasses.dataclass(frozen=True, eq=False)
class Architecture:
    """One SAE architecture: pure functions and every fact the project needs about it.

    Compared and hashed by identity (one instance per architecture, in the registry), so it can
    be part of a compiled step's static arguments.
    """

    name: str
    title: str
    """A few words for messages and docs (e.g. "ReLU SAE")."""
    init: Callable
    """(key, d, F, **init hyperparameters) -> Params of one SAE."""
    encode: Callable
    """(params, x (B, d)) -> f (B, F), inference mode, scale applied."""
    decode: Callable
    """(params, f (B, F)) -> x_hat (B, d)."""
    loss: Callable | None
    """(params, x, hparams, StepContext) -> (loss, LossAux); training mode. None: not trained."""
    trainable: tuple[str, ...]
    """Leaves updated by the optimizer (the others are buffers)."""
    hyper: tuple[HParam, ...] = ()
    """Hyperparameters the loss (or init) reads, besides :data:`COMMON_HPARAMS`."""
    update_buffers: Callable | None = None
    """(params, LossAux, hparams, StepContext) -> params with buffers updated, or None."""
    optimizer: Optimizer = Optimizer()
    sparsity_warmup_steps: int | None = None
    """Default length of the sparsity-penalty warmup; None: int(5% of steps) (the reference)."""
    resamples: bool = False
    """Supports dead-feature resampling (``train.resample_steps``)."""
    inference: str = "relu"
    """Which rule a torch module applies after the ReLU (torch_bridge.sae): ``relu`` (none),
    ``topk`` (the k largest of each row), ``threshold`` (pre > threshold)."""
    clip: float | None = None
    """Inference output clipped to at most this (the neuron baseline: 1)."""
    square: bool = False
    """F = d: one feature per input dimension."""
    interplm: InterPLM | None = None
    saelens: SAELens | None = None
    sparse_decoder: bool = False
    """``train.decoder: sparse`` applies: the loss can decode each token's active features by
    gather (:mod:`interplm_jax.sae.sparse`)."""
    encoder_product: Callable | None = None
    """(params, x (B, d), dtype) -> (B, F) encoder product without b_enc, for a step with a
    sparse branch (it is computed once, before the loss, and given to it as ``ctx.pre``)."""
    active_mask: Callable | None = None
    """(params, product, hparams) -> (B, F) bool, the entries the loss needs: the step lists
    them (``train.sparse_capacity`` per token; the sparse ReLU/JumpReLU step); None: the loss
    decides alone (TopK) or decodes densely."""

    @property
    def hparams(self) -> tuple[str, ...]:
        """Names of the hyperparameters the loss reads from its ``hparams`` dict."""
        return tuple(h.name for h in self.hyper)

    @property
    def all_hparams(self) -> tuple[HParam, ...]:
        """:data:`COMMON_HPARAMS` followed by :attr:`hyper`."""
        return COMMON_HPARAMS + self.hyper

    @property
    def trains(self) -> bool:
        return self.loss is not None

    @property
    def out_bias(self) -> str:
        """The leaf the decoder adds: ``b_pre`` (also subtracted from x before encoding) or
        ``b_dec`` (not subtracted)."""
        return "b_pre" if "b_pre" in self.leaf_dims() else "b_dec"

    def init_kwargs(self, values: Mapping) -> dict:
        """The keywords ``init`` takes from hyperparameter ``values`` (name -> value)."""
        return {h.name: values[h.name] for h in self.hyper if h.init}

    def shapes(self, d: int, F: int) -> dict[str, jax.ShapeDtypeStruct]:
        """Leaf -> shape and dtype of one SAE, from ``jax.eval_shape`` of ``init``."""
        defaults = self.init_kwargs({h.name: h.default for h in self.hyper})
        # an abstract raw key: tracing only, no device touched (jax.distributed may come later)
        key = jax.ShapeDtypeStruct((2,), np.uint32)
        return jax.eval_shape(lambda k: self.init(k, d, F, **defaults), key)

    def leaf_dims(self) -> dict[str, tuple[str, ...]]:
        """Leaf -> its shape in symbols ``d`` (input width) and ``F`` (features)."""
        return _leaf_dims(self)

    def int_leaves(self) -> tuple[str, ...]:
        """Leaves stored as int32 (the rest are float32)."""
        return _int_leaves(self)


_D, _F = 3, 5  # distinct sizes, so that each dimension of a leaf names its symbol


@functools.lru_cache(maxsize=None)
def _abstract(arch: Architecture) -> dict[str, jax.ShapeDtypeStruct]:
    return arch.shapes(_D, _D if arch.square else _F)


@functools.lru_cache(maxsize=None)
def _leaf_dims(arch: Architecture) -> dict[str, tuple[str, ...]]:
    sym = {_D: "d"} if arch.square else {_D: "d", _F: "F"}
    return {name: tuple(sym[n] for n in s.shape) for name, s in _abstract(arch).items()}


@functools.lru_cache(maxsize=None)
def _int_leaves(arch: Architecture) -> tuple[str, ...]:
    return tuple(n for n, s in _abstract(arch).items() if np.issubdtype(s.dtype, np.integer))


def check_number(h: HParam, value, where: str, F: int | None = None) -> float | int:
    """``value`` as a finite number allowed for ``h`` (int for integer ones).

    Raises:
      InputError naming ``where``, the hyperparameter and what is wrong.
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {h.name}={value!r} is not a number") from None
    if not math.isfinite(x):
        raise InputError(f"{where}: {h.name}={value!r} is not finite")
    problem = h.problem(x, F)
    if problem:
        raise InputError(f"{where}: {h.name}={value!r} {problem}")
    return int(x) if h.integer else x
