"""Qwen3 ``config.json`` -> :class:`mlcbuild.models.config.DecoderConfig` (no TVM import).

Keys and defaults follow ``transformers/models/qwen3/configuration_qwen3.py`` (``head_dim``
defaults to 128 there, not ``hidden_size / num_attention_heads``).
"""

from __future__ import annotations

from typing import Any

from mlcbuild.models.config import ARCH_FIX, DecoderConfig, decoder_config, no_sliding_window, require


def qwen3_config(cfg: dict[str, Any], path=None) -> DecoderConfig:
    """Parse a Hugging Face ``Qwen3Config`` dict.

    Raises:
        RecipeError: as :func:`mlcbuild.models.config.decoder_config`, or ``hidden_act``
            other than silu, or sliding-window layers (``use_sliding_window``).
    """
    where = path or "<recipe>"
    require(cfg, where, "model_type", ("qwen3", None), None, "qwen3", fix=ARCH_FIX)
    require(cfg, where, "hidden_act", ("silu",), "silu", "qwen3")
    no_sliding_window(cfg, where, "qwen3")
    bias = require(cfg, where, "attention_bias", (False, True, None), False, "qwen3")
    return decoder_config(
        cfg,
        where,
        defaults={"head_dim": 128, "max_position_embeddings": 32768},
        attention_bias=bool(bias),
        qk_norm=True,
    )
