"""Gemma 3 text ``config.json`` -> :class:`mlcbuild.models.config.DecoderConfig` (no TVM import).

Keys and defaults follow ``transformers/models/gemma3/configuration_gemma3.py``
(``Gemma3TextConfig``). RoPE comes in either spelling: transformers 4.x (``rope_theta`` for
global layers with ``rope_scaling``, ``rope_local_base_freq`` for local ones) or 5.x
(``rope_parameters`` keyed by layer type).
"""

from __future__ import annotations

from typing import Any

from mlcbuild.errors import RecipeError
from mlcbuild.models.config import ARCH_FIX, DecoderConfig, decoder_config, require, sliding_window
from mlcbuild.models.rope import RopeSpec

LAYER_TYPES = ("sliding_attention", "full_attention")


def _rope(params: dict[str, Any], where, kind: str) -> RopeSpec:
    """One layer type's RoPE parameters (theta, linear factor).

    Raises:
        RecipeError: a type other than default/linear.
    """
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ("default", "linear"):
        raise RecipeError(
            f"model.config RoPE type {rope_type!r} for {kind} layers is not supported by the gemma3_text "
            "definition; supported: 'default', 'linear'",
            path=where,
            fix="use a checkpoint with default or linear RoPE scaling",
        )
    factor = float(params.get("factor", 1.0)) if rope_type == "linear" else 1.0
    return RopeSpec(float(params["rope_theta"]), factor)


def layer_types(cfg: dict[str, Any], where, n_layers: int, pattern: int = 6) -> list[str]:
    """Per layer ``"sliding_attention"`` or ``"full_attention"``: ``layer_types`` (transformers
    5), else every ``sliding_window_pattern``-th layer global (4.x; default ``pattern``: Gemma 3's
    6, Gemma 2's 2).

    Raises:
        RecipeError: ``layer_types`` of the wrong length or with another kind.
    """
    types = cfg.get("layer_types")
    if types is None:  # transformers 4.x: every sliding_window_pattern-th layer is global
        pattern = int(cfg.get("sliding_window_pattern", pattern))
        return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)]
    if len(types) != n_layers or set(types) - set(LAYER_TYPES):
        raise RecipeError(
            f"model.config.layer_types must list {n_layers} of {LAYER_TYPES}, got {types!r}",
            path=where,
            fix="copy layer_types from the checkpoint's config.json",
        )
    return list(types)


def softcap(cfg: dict[str, Any], where, key: str, default: float | None) -> float | None:
    """A soft-capping value (``cap * tanh(x / cap)``): ``cfg[key]`` or ``default``, positive or ``None``.

    Raises:
        RecipeError: not a positive number.
    """
    cap = cfg.get(key, default)
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or cap <= 0):
        raise RecipeError(
            f"model.config.{key} must be a positive number or null, got {cap!r}",
            path=where,
            fix=f"copy {key} from the checkpoint's config.json",
        )
    return float(cap) if cap is not None else None


GEMMA_DEFAULTS = {"head_dim": 256, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}


def gemma_flags(cfg: dict[str, Any], where, arch: str, types: list[str], caps: tuple) -> dict[str, Any]:
    """The :class:`~mlcbuild.models.config.DecoderConfig` flags Gemma 2 and 3 share: GeGLU,
    scaled embeddings, four norms, score scale ``query_pre_attn_scalar ** -0.5``, the window
    of the ``sliding_attention`` layers in ``types``, and the soft-caps (``caps``: the
    attention and final defaults for absent keys).

    Raises:
        RecipeError: an activation other than ``gelu_pytorch_tanh``, a q/k/v bias, a
            malformed window or soft-cap.
    """
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
    require({"hidden_activation": act}, where, "hidden_activation", ("gelu_pytorch_tanh",), None, arch)
    require(cfg, where, "attention_bias", (False, None), False, arch)
    window = sliding_window({"sliding_window": cfg.get("sliding_window", 4096)}, where)
    return {
        "sliding_window": window if "sliding_attention" in types else None,
        "sliding_layers": tuple(t == "sliding_attention" for t in types),
        "hidden_act": "gelu_pytorch_tanh",
        "embed_scale": True,
        "sandwich_norms": True,
        "attn_scale": float(cfg.get("query_pre_attn_scalar", 256)) ** -0.5,
        "attn_logit_softcapping": softcap(cfg, where, "attn_logit_softcapping", caps[0]),
        "final_logit_softcapping": softcap(cfg, where, "final_logit_softcapping", caps[1]),
    }


def gemma3_config(cfg: dict[str, Any], path=None) -> DecoderConfig:
    """Parse a Hugging Face ``Gemma3TextConfig`` dict.

    Raises:
        RecipeError: as :func:`mlcbuild.models.config.decoder_config`; an activation other than
            ``gelu_pytorch_tanh``; bidirectional attention or a q/k/v bias (not implemented);
            malformed ``layer_types`` or soft-caps; an unsupported RoPE type.
    """
    where = path or "<recipe>"
    require(cfg, where, "model_type", ("gemma3_text", None), None, "gemma3_text", fix=ARCH_FIX)
    require(cfg, where, "use_bidirectional_attention", (False, None), False, "gemma3_text")
    n_layers = cfg.get("num_hidden_layers")
    types = layer_types(cfg, where, n_layers) if isinstance(n_layers, int) and n_layers > 0 else []
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and set(params) & set(LAYER_TYPES):
        ropes = {kind: _rope(params[kind], where, kind) for kind in LAYER_TYPES if kind in params}
    else:
        ropes = {
            "full_attention": _rope(
                {"rope_theta": cfg.get("rope_theta", 1e6), **(cfg.get("rope_scaling") or {})}, where, "full_attention"
            ),
            "sliding_attention": RopeSpec(float(cfg.get("rope_local_base_freq", 1e4))),
        }
    missing = sorted(set(types) - set(ropes))
    if missing:
        raise RecipeError(
            f"model.config.rope_parameters lacks {missing}", path=where, fix="copy rope_parameters from the checkpoint"
        )
    base = {k: v for k, v in cfg.items() if k not in ("rope_parameters", "rope_scaling", "rope_theta")}
    return decoder_config(
        base,
        where,
        defaults={**GEMMA_DEFAULTS, "max_position_embeddings": 131072},
        qk_norm=True,
        **gemma_flags(cfg, where, "gemma3_text", types, caps=(None, None)),
        layer_rope=tuple(ropes[t] for t in types),
    )
