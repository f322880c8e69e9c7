"""Gemma 2 (``Gemma2ForCausalLM``, ``model_type`` ``gemma2``): the decoder with Gemma's blocks.

Hugging Face ``transformers/models/gemma2/modeling_gemma2.py``: as Gemma 3 (scaled
embeddings, ``1 + w`` RMSNorm stored as ``1 + w``, four norms per layer, GeGLU, score scale
``query_pre_attn_scalar ** -0.5``; :mod:`..gemma3`) without q/k norms and with one RoPE (the
KV cache applies it), plus attention logit soft-capping (``cap * tanh(scores / cap)``, 50;
applied by our attention kernels, :mod:`mlcbuild.kernels.attention`, CPU and GPU) and final
logit soft-capping (30). Every second layer attends within ``sliding_window`` (4096), the
others globally. Checkpoint names: Gemma 3's loader (same layout without q/k norms).
"""

from mlcbuild.models.gemma2.config import gemma2_config
from mlcbuild.models.gemma3 import gemma3_param_map as gemma2_param_map

__all__ = ["gemma2_config", "gemma2_param_map"]
