"""BatchTopK SAE (Bussmann et al. 2024) as InterPLM's ``BatchTopKTrainer`` trains it.

Its leaves, initialisation, decoder and most of its loss are TopK's (:mod:`interplm_jax.sae.topk`,
which holds the functions of both); it differs in which features a batch keeps while training
(the k*B largest entries of the whole (B, F) batch) and at inference (pre-activations above the
learned scalar ``threshold``, as the reference's ``BatchTopKSAE.encode``).
"""

from __future__ import annotations

from interplm_jax.sae import topk
from interplm_jax.sae._spec import SAELENS_COMMON, Architecture, InterPLM, SAELens, TorchLeaf

SPEC = Architecture(
    name="batchtopk",
    title="BatchTopK SAE",
    init=topk.init,
    encode=topk.encode_batchtopk,
    decode=topk.decode,
    loss=topk.loss_batchtopk,
    trainable=topk.TRAINABLE,
    hyper=topk.HYPER,
    update_buffers=topk.update_buffers_batchtopk,
    inference="threshold",
    interplm=InterPLM(topk.INTERPLM_LEAVES, "BatchTopKTrainer",
                      (("k", "k", None), ("auxk_alpha", "auxk_alpha", topk.AUXK_ALPHA.default))),
    # the same function as SAELens's jumprelu with the scalar threshold broadcast over features
    # (k is not needed at inference, and SAELens's jumprelu has no place for it)
    saelens=SAELens("jumprelu", {**SAELENS_COMMON, "b_pre": TorchLeaf("b_dec"),
                                 "threshold": TorchLeaf("threshold", "broadcast"),
                                 "k": TorchLeaf(None)},
                    reads_back=False),
)
