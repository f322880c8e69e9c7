"""Qwen3 (dense): the decoder with per-head RMSNorm on q and k before RoPE.

Hugging Face ``transformers/models/qwen3/modeling_qwen3.py``: ``Qwen3Attention`` applies
``q_norm``/``k_norm`` (RMSNorm over ``head_dim``) to each head, then RoPE; the q/k/v bias
follows ``attention_bias`` (off in the released models); ``head_dim`` is set explicitly
(128 for Qwen3-0.6B, whose ``hidden_size / num_attention_heads`` is 64).
"""

from mlcbuild.models.qwen3.config import qwen3_config

__all__ = ["qwen3_config"]
