"""The PyTorch side of interplm-jax: ESM-2 through HuggingFace transformers, exports to torch
formats and steering through nnsight. May import ``interplm_jax``; never the reverse."""
