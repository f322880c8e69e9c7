"""Qwen2 / Qwen2.5: the decoder with a bias on the q/k/v projections.

Hugging Face ``transformers/models/qwen2/modeling_qwen2.py``: ``Qwen2Attention`` builds
``q_proj``/``k_proj``/``v_proj`` with ``bias=True`` (``o_proj`` without); everything else is
Llama's. Larger sizes untie the LM head (``tie_word_embeddings``).
"""

from mlcbuild.models.qwen2.config import qwen2_config

__all__ = ["qwen2_config"]
