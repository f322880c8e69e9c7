"""Phi-3 ``config.json`` -> :class:`mlcbuild.models.config.DecoderConfig` (no TVM import).

Keys and defaults follow ``transformers/models/phi3/configuration_phi3.py``.
"""

from __future__ import annotations

from typing import Any

from ..config import ARCH_FIX, DecoderConfig, decoder_config, require, sliding_window


def phi3_config(cfg: dict[str, Any], path=None) -> DecoderConfig:
    """Parse a Hugging Face ``Phi3Config`` dict.

    Raises:
        RecipeError: as :func:`mlcbuild.models.config.decoder_config` (``longrope``/``su``
            scaling is an unsupported ``rope_scaling`` type), ``hidden_act`` other than silu,
            or a partial rotary dimension (``partial_rotary_factor`` below 1).
    """
    where = path or "<recipe>"
    require(cfg, where, "model_type", ("phi3", None), None, "phi3", fix=ARCH_FIX)
    require(cfg, where, "hidden_act", ("silu",), "silu", "phi3")
    params = cfg.get("rope_parameters") or {}
    require(
        {"partial_rotary_factor": cfg.get("partial_rotary_factor", params.get("partial_rotary_factor"))},
        where,
        "partial_rotary_factor",
        (1, 1.0, None),
        None,
        "phi3",
    )
    defaults = {"rms_norm_eps": 1e-5, "max_position_embeddings": 4096}
    return decoder_config(cfg, where, defaults=defaults, sliding_window=sliding_window(cfg, where))
