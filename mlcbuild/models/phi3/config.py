"""Phi-3 ``config.json`` -> :class:`mlcbuild.models.config.DecoderConfig` (no TVM import).

Keys and defaults follow ``transformers/models/phi3/configuration_phi3.py``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from mlcbuild.errors import RecipeError
from mlcbuild.models.config import ARCH_FIX, DecoderConfig, decoder_config, require, sliding_window
from mlcbuild.models.rope import RopeSpec


def phi3_config(cfg: dict[str, Any], path=None) -> DecoderConfig:
    """Parse a Hugging Face ``Phi3Config`` dict.

    Raises:
        RecipeError: as :func:`mlcbuild.models.config.decoder_config`, ``hidden_act`` other
            than silu, a partial rotary dimension (``partial_rotary_factor`` below 1), or a
            malformed ``longrope``/``su`` scaling (:func:`longrope`; the 128k variants: their
            RoPE is applied by the model, short or long factors by the recipe's context).
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
    scaling = dict(cfg.get("rope_scaling") or params or {})
    if scaling.get("rope_type", scaling.get("type")) not in ("longrope", "su"):
        return decoder_config(cfg, where, defaults=defaults, sliding_window=sliding_window(cfg, where))
    base = {k: v for k, v in cfg.items() if k not in ("rope_scaling", "rope_parameters")}
    out = decoder_config(base, where, defaults=defaults, sliding_window=sliding_window(cfg, where))
    short, long, original = longrope(cfg, scaling, out.head_dim, out.max_position_embeddings, where)
    n = out.num_hidden_layers
    return dataclasses.replace(
        out, layer_rope=(short,) * n, long_rope=(long,) * n, rope_max_context=original, rope_theta=short.theta
    )


def longrope(
    cfg: dict[str, Any], scaling: dict[str, Any], head_dim: int, max_positions: int, where
) -> tuple[RopeSpec, RopeSpec, int]:
    """LongRoPE (Ding et al. 2024, arXiv:2402.13753) as HF ``_compute_longrope_parameters`` reads
    it: the short factors for contexts up to ``original_max_position_embeddings``, the long
    ones beyond (:meth:`~mlcbuild.models.config.DecoderConfig.for_context` picks).

    ``attention_factor`` (absent): ``sqrt(1 + ln(s) / ln(L_orig))`` with ``s`` the config's
    ``factor`` or ``max_position_embeddings / L_orig``, 1 when ``s <= 1``; the same for both.

    Returns:
        ``(short, long, L_orig)``.
    Raises:
        RecipeError: no ``original_max_position_embeddings``, or ``short_factor`` /
            ``long_factor`` not of ``head_dim / 2`` numbers.
    """
    original = scaling.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings"))
    if not isinstance(original, int) or original <= 0:
        raise RecipeError(
            "model.config of a longrope checkpoint lacks original_max_position_embeddings",
            path=where,
            fix="copy original_max_position_embeddings from the checkpoint's config.json",
        )
    tables = {}
    for key in ("short_factor", "long_factor"):
        values = scaling.get(key)
        if not isinstance(values, list) or len(values) != head_dim // 2:
            raise RecipeError(
                f"model.config.rope_scaling.{key} must list {head_dim // 2} numbers (head_dim / 2)",
                path=where,
                fix="copy rope_scaling from the checkpoint's config.json verbatim",
            )
        tables[key] = tuple(float(f) for f in values)
    factor = scaling.get("factor") or max_positions / original
    attention = scaling.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    theta = float(cfg.get("rope_theta", scaling.get("rope_theta", 10000.0)))
    short, long = (RopeSpec(theta, ext_factors=tables[k], attention_factor=float(attention)) for k in tables)
    return short, long, original
