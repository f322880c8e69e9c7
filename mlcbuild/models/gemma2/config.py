"""Gemma 2 ``config.json`` -> :class:`mlcbuild.models.config.DecoderConfig` (no TVM import).

Keys and defaults follow ``transformers/models/gemma2/configuration_gemma2.py``
(``Gemma2Config``): an absent soft-cap or window takes its default (50, 30, 4096), as there.
"""

from __future__ import annotations

from typing import Any

from mlcbuild.models.config import ARCH_FIX, DecoderConfig, decoder_config, require
from mlcbuild.models.gemma3.config import GEMMA_DEFAULTS, gemma_flags, layer_types


def gemma2_config(cfg: dict[str, Any], path=None) -> DecoderConfig:
    """Parse a Hugging Face ``Gemma2Config`` dict.

    Raises:
        RecipeError: as :func:`mlcbuild.models.config.decoder_config`; an activation other than
            ``gelu_pytorch_tanh``; a q/k/v bias; malformed ``layer_types`` or soft-caps; RoPE
            scaling other than the default.
    """
    where = path or "<recipe>"
    require(cfg, where, "model_type", ("gemma2", None), None, "gemma2", fix=ARCH_FIX)
    n_layers = cfg.get("num_hidden_layers")
    types = layer_types(cfg, where, n_layers, pattern=2) if isinstance(n_layers, int) and n_layers > 0 else []
    return decoder_config(
        cfg,
        where,
        defaults={**GEMMA_DEFAULTS, "max_position_embeddings": 8192},
        **gemma_flags(cfg, where, "gemma2", types, caps=(50.0, 30.0)),
    )
