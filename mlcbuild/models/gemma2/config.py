"""Gemma 2 ``config.json`` -> :class:`mlcbuild.models.config.DecoderConfig` (no TVM import).

Keys and defaults follow ``transformers/models/gemma2/configuration_gemma2.py``
(``Gemma2Config``): an absent soft-cap or window takes its default (50, 30, 4096), as there.
"""

from __future__ import annotations

from typing import Any

from ..config import ARCH_FIX, DecoderConfig, decoder_config, require, sliding_window
from ..gemma3.config import layer_types, softcap


def gemma2_config(cfg: dict[str, Any], path=None) -> DecoderConfig:
    """Parse a Hugging Face ``Gemma2Config`` dict.

    Raises:
        RecipeError: as :func:`mlcbuild.models.config.decoder_config`; an activation other than
            ``gelu_pytorch_tanh``; a q/k/v bias; malformed ``layer_types`` or soft-caps; RoPE
            scaling other than the default.
    """
    where = path or "<recipe>"
    require(cfg, where, "model_type", ("gemma2", None), None, "gemma2", fix=ARCH_FIX)
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
    require({"hidden_activation": act}, where, "hidden_activation", ("gelu_pytorch_tanh",), None, "gemma2")
    require(cfg, where, "attention_bias", (False, None), False, "gemma2")
    n_layers = cfg.get("num_hidden_layers")
    types = layer_types(cfg, where, n_layers, pattern=2) if isinstance(n_layers, int) and n_layers > 0 else []
    window = sliding_window({"sliding_window": cfg.get("sliding_window", 4096)}, where)
    return decoder_config(
        cfg,
        where,
        defaults={
            "head_dim": 256,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
            "max_position_embeddings": 8192,
        },
        sliding_window=window if "sliding_attention" in types else None,
        sliding_layers=tuple(t == "sliding_attention" for t in types),
        hidden_act="gelu_pytorch_tanh",
        embed_scale=True,
        sandwich_norms=True,
        attn_scale=float(cfg.get("query_pre_attn_scalar", 256)) ** -0.5,
        final_logit_softcapping=softcap(cfg, where, "final_logit_softcapping", 30.0),
        attn_logit_softcapping=softcap(cfg, where, "attn_logit_softcapping", 50.0),
    )
