"""Llama ``config.json`` -> :class:`LlamaConfig` (no TVM import: recipes validate fast).

Keys and defaults follow Hugging Face ``transformers/models/llama/configuration_llama.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ...errors import RecipeError
from ..rope import parse_rope_scaling

_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """The parts of a Llama ``config.json`` that define the math.

    Attributes:
        hidden_size: model width ``d``.
        intermediate_size: MLP width.
        num_hidden_layers: decoder blocks.
        num_attention_heads: query heads ``h``.
        num_key_value_heads: KV heads ``h_kv`` (GQA; ``h % h_kv == 0``).
        head_dim: per-head width (default ``d // h``).
        vocab_size: tokens.
        rms_norm_eps: RMSNorm epsilon.
        rope_theta: RoPE base.
        rope_scaling: ``{"rope_type": "default"}`` or the llama3 parameters.
        tie_word_embeddings: LM head shares the embedding.
        max_position_embeddings: longest trained context, tokens.
    """

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any]
    tie_word_embeddings: bool
    max_position_embeddings: int

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], path=None) -> "LlamaConfig":
        """Parse a Hugging Face ``LlamaConfig`` dict.

        Raises:
            RecipeError: a missing or mistyped key, a head count that does not divide,
                or a key that changes the math in a way this definition does not
                implement (``hidden_act`` other than silu, attention/MLP bias,
                an unsupported ``rope_scaling`` type).
        """
        where = path or "<recipe>"
        for key in _REQUIRED:
            if key not in cfg:
                raise RecipeError(
                    f"model.config lacks {key}", path=where, fix="copy the checkpoint's config.json into [model.config]"
                )
            if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] <= 0:
                raise RecipeError(
                    f"model.config.{key} must be a positive integer, got {cfg[key]!r}",
                    path=where,
                    fix=f"fix model.config.{key}",
                )
        heads = cfg["num_attention_heads"]
        kv_heads = cfg.get("num_key_value_heads") or heads
        if heads % kv_heads:
            raise RecipeError(
                f"model.config.num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv_heads})",
                path=where,
                fix="fix the head counts",
            )
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
        if cfg.get("head_dim") is None and cfg["hidden_size"] % heads:
            raise RecipeError(
                f"model.config.hidden_size ({cfg['hidden_size']}) is not a multiple of num_attention_heads ({heads})",
                path=where,
                fix="set model.config.head_dim explicitly",
            )
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise RecipeError(
                f"model.config.hidden_act {act!r} is not supported; supported: silu", path=where, fix="use silu"
            )
        for key in ("attention_bias", "mlp_bias"):
            if cfg.get(key):
                raise RecipeError(
                    f"model.config.{key} = true is not supported by the llama definition",
                    path=where,
                    fix=f"set {key} = false",
                )
        theta, scaling = parse_rope_scaling(cfg, where)
        return cls(
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            vocab_size=cfg["vocab_size"],
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=scaling,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
        )

    def kv_cache_spec(self):
        """What the paged KV cache needs (a :class:`mlcbuild.models.common.KVCacheSpec`)."""
        from ..common import KVCacheSpec

        return KVCacheSpec(
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            rope_theta=self.rope_theta,
            rope_scaling=self.rope_scaling,
        )
