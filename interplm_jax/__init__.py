"""interplm-jax: sparse autoencoders on protein language model activations, in JAX.

This package never imports torch; the PyTorch side (ESM-2, exports, steering) lives in
``torch_bridge``. Submodules are imported on demand, so ``import interplm_jax`` is cheap.
"""

__version__ = "0.1.0"
