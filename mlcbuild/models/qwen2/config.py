"""Qwen2 ``config.json`` -> :class:`mlcbuild.models.config.DecoderConfig` (no TVM import).

Keys and defaults follow ``transformers/models/qwen2/configuration_qwen2.py``.
"""

from __future__ import annotations

from typing import Any

from mlcbuild.models.config import ARCH_FIX, DecoderConfig, decoder_config, no_sliding_window, require


def qwen2_config(cfg: dict[str, Any], path=None) -> DecoderConfig:
    """Parse a Hugging Face ``Qwen2Config`` dict (q/k/v bias always on, as in ``Qwen2Attention``).

    Raises:
        RecipeError: as :func:`mlcbuild.models.config.decoder_config`, or ``hidden_act``
            other than silu, sliding-window layers (``use_sliding_window``), or ``use_mrope``.
    """
    where = path or "<recipe>"
    require(cfg, where, "model_type", ("qwen2", None), None, "qwen2", fix=ARCH_FIX)
    require(cfg, where, "hidden_act", ("silu",), "silu", "qwen2")
    no_sliding_window(cfg, where, "qwen2")
    require(cfg, where, "use_mrope", (False, None), False, "qwen2")  # Qwen2-VL's multimodal RoPE
    return decoder_config(cfg, where, defaults={"max_position_embeddings": 32768}, attention_bias=True)
