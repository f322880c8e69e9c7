"""Mistral ``config.json`` -> :class:`mlcbuild.models.config.DecoderConfig` (no TVM import).

Keys and defaults follow ``transformers/models/mistral/configuration_mistral.py``.
"""

from __future__ import annotations

from typing import Any

from mlcbuild.models.config import ARCH_FIX, DecoderConfig, decoder_config, require, sliding_window


def mistral_config(cfg: dict[str, Any], path=None) -> DecoderConfig:
    """Parse a Hugging Face ``MistralConfig`` dict.

    Raises:
        RecipeError: as :func:`mlcbuild.models.config.decoder_config`, or ``hidden_act``
            other than silu.
    """
    where = path or "<recipe>"
    require(cfg, where, "model_type", ("mistral", None), None, "mistral", fix=ARCH_FIX)
    require(cfg, where, "hidden_act", ("silu",), "silu", "mistral")
    # An absent sliding_window is null here, not MistralConfig's 4096: recipes leave JSON nulls
    # out (TOML has none), and v0.2/v0.3 checkpoints say null.
    defaults = {"max_position_embeddings": 4096 * 32, "num_key_value_heads": 8}
    return decoder_config(cfg, where, defaults=defaults, sliding_window=sliding_window(cfg, where))
