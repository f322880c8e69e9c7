"""Llama ``config.json`` -> :class:`mlcbuild.models.config.DecoderConfig` (no TVM import).

Keys and defaults follow Hugging Face ``transformers/models/llama/configuration_llama.py``.
"""

from __future__ import annotations

from typing import Any

from mlcbuild.models.config import ARCH_FIX, DecoderConfig, decoder_config, require


def llama_config(cfg: dict[str, Any], path=None) -> DecoderConfig:
    """Parse a Hugging Face ``LlamaConfig`` dict.

    Raises:
        RecipeError: a missing or mistyped key, a head count that does not divide, or a
            key that changes the math in a way this definition does not implement
            (``hidden_act`` other than silu, attention/MLP bias, interleaved RoPE, an unsupported
            ``rope_scaling`` type).
    """
    where = path or "<recipe>"
    require(cfg, where, "model_type", ("llama", "mobilellm", None), None, "llama", fix=ARCH_FIX)
    require(cfg, where, "hidden_act", ("silu",), "silu", "llama")
    for key in ("attention_bias", "mlp_bias", "rope_interleaved"):
        require(cfg, where, key, (False, None), False, "llama")
    return decoder_config(cfg, where)
