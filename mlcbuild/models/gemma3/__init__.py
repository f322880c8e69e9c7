"""Gemma 3 text (``Gemma3ForCausalLM``, ``model_type`` ``gemma3_text``): the decoder with
Gemma's blocks.

Hugging Face ``transformers/models/gemma3/modeling_gemma3.py``: embeddings scaled by
``sqrt(hidden_size)``; RMSNorm ``x * rsqrt(mean(x^2) + eps) * (1 + w)`` (the loader stores
``1 + w``); four norms per layer (around attention and around the MLP); GeGLU MLP
(``gelu_pytorch_tanh``); per-head q/k RMSNorm; attention scale
``query_pre_attn_scalar ** -0.5``; local (sliding-window) and global layers with their own
RoPE base (``rope_local_base_freq`` 10k, ``rope_theta`` 1M), applied by the model. The local
layers' window (``sliding_window``, 512 for Gemma-3-1B) is applied by our attention
kernels (:mod:`mlcbuild.kernels.attention`, CPU and GPU).
"""

from mlcbuild.models.gemma3.config import gemma3_config
from mlcbuild.models.gemma3.loader import gemma3_param_map

__all__ = ["gemma3_config", "gemma3_param_map"]
