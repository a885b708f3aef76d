"""Our SAE parameter pytree as a torch module, for work inside ESM-2 (fidelity, steering).

The formulas are those of ``interplm_jax.sae`` (DESIGN.md section 2), in raw units:

    pre   = (x - b_pre) W_enc + b_enc                      x: (..., d) -> (..., F)
            (jumprelu: x W_enc + b_enc; its decoder bias b_dec is not subtracted from x)
    relu      f = ReLU(pre)
    topk      f = ReLU(pre) with all but the k largest of each token set to 0
    batchtopk f = ReLU(pre) * (pre > threshold)            (inference rule: a scalar threshold)
    jumprelu  f = ReLU(pre) * (pre > threshold)            (threshold: one per feature)
    decode    x_hat = f W_dec + b_pre   (jumprelu: + b_dec)

``scale`` (the normalization factors) only changes the units in which features are reported:
``encode`` returns f * scale; reconstructions always use raw features, as the reference's
``forward`` does, so normalizing an SAE never changes what it reconstructs. Which rule applies
comes from the architecture's spec (``inference``, ``clip``, ``out_bias``: ``interplm_jax.sae``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from interplm_jax import sae as sae_arch
from interplm_jax.sae_dir import SavedSAE, check_params


class TorchSAE(nn.Module):
    """A frozen SAE in torch. Build with :meth:`from_saved` (or the constructor)."""

    def __init__(self, arch: str, params: dict[str, np.ndarray]):
        super().__init__()
        params = check_params(arch, params)
        self.arch = arch
        self.spec = sae_arch.get(arch)
        self.k = int(params.pop("k")) if "k" in params else None
        for name, value in params.items():
            self.register_buffer(name, torch.from_numpy(value))

    @classmethod
    def from_saved(cls, sae: SavedSAE) -> "TorchSAE":
        return cls(sae.arch, sae.params)

    @property
    def out_bias(self) -> torch.Tensor:
        """The bias the decoder adds: b_pre (also subtracted from x) or b_dec (jumprelu)."""
        return getattr(self, self.spec.out_bias)

    @property
    def n_features(self) -> int:
        return int(self.W_enc.shape[1])

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """(x - b_pre) W_enc + b_enc (jumprelu: x W_enc + b_enc). x: (..., d) -> (..., F)."""
        if self.spec.out_bias == "b_pre":
            x = x - self.b_pre
        return x @ self.W_enc + self.b_enc

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Features before normalization. x: (..., d) -> (..., F)."""
        pre = self.pre_activations(x)
        f = torch.relu(pre)
        rule = self.spec.inference
        if rule == "topk":
            top = torch.topk(f, self.k, dim=-1)
            f = torch.zeros_like(f).scatter_(-1, top.indices, top.values)
        elif rule == "threshold":  # (equal to f * (f > threshold): f = pre wherever f > 0)
            f = f * (pre > self.threshold)
        elif rule != "relu":
            raise ValueError(f"{self.arch}: no torch rule for inference {rule!r}")
        return f

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized features f * scale (equal to raw ones until the SAE is normalized);
        the neuron baseline is clipped to [0, 1] (DESIGN.md Q8)."""
        f = self.encode_raw(x) * self.scale
        return f if self.spec.clip is None else f.clamp(max=self.spec.clip)

    def decode_raw(self, f_raw: torch.Tensor) -> torch.Tensor:
        """x_hat = f W_dec + b_pre (or b_dec) from raw features. f_raw: (..., F) -> (..., d)."""
        return f_raw @ self.W_dec + self.out_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of x: (..., d) -> (..., d)."""
        return self.decode_raw(self.encode_raw(x))

    def to_raw(self, values: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Normalized values of ``features`` -> raw units (divide by their scale).

        Raises:
          ValueError for a feature whose scale is 0 (never active on the normalization set:
          it has no normalized unit).
        """
        s = self.scale[features]
        if bool((s == 0).any()):
            dead = features[s == 0].tolist()
            raise ValueError(f"feature(s) {dead} were never active on the normalization set "
                             "(scale 0); clamp them in raw units instead")
        return values / s
