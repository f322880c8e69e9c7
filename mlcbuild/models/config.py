"""The config every decoder-only architecture parses into (no TVM import: recipes validate fast).

Each architecture's ``config.py`` checks the keys of its own Hugging Face ``config.json``
(what it does not implement is an error, never dropped) and calls :func:`decoder_config`
for the keys they share; the flags of :class:`DecoderConfig` select the blocks of
:mod:`mlcbuild.models.decoder`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mlcbuild.errors import RecipeError
from mlcbuild.models.rope import RopeSpec, parse_rope_scaling

ARCH_FIX = "set model.architecture to the checkpoint's model_type (architectures are named after them)"
_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """The parts of a ``config.json`` that define a decoder-only model's math.

    Attributes:
        hidden_size: model width ``d``.
        intermediate_size: MLP width.
        num_hidden_layers: decoder blocks.
        num_attention_heads: query heads ``h``.
        num_key_value_heads: KV heads ``h_kv`` (GQA; ``h % h_kv == 0``).
        head_dim: per-head width.
        vocab_size: tokens.
        rms_norm_eps: RMSNorm epsilon.
        rope_theta: RoPE base.
        rope_scaling: ``{"rope_type": "default"}`` or the llama3 parameters.
        tie_word_embeddings: LM head shares the embedding.
        max_position_embeddings: longest trained context, tokens.
        attention_bias: the q/k/v projections carry a bias (Qwen2).
        qk_norm: RMSNorm over each head's q and k before RoPE (Qwen3).
        sliding_window: keys a query attends to, itself included (Mistral v0.1, Phi-3; Gemma 3's
            sliding layers); ``None`` for full attention. Applied by our attention kernels
            (:mod:`mlcbuild.kernels.attention`, CPU and GPU).
        sliding_layers: per layer whether it uses ``sliding_window`` (Gemma 3's
            ``layer_types``); ``None``: every layer does.
        hidden_act: the gated MLP's activation, ``"silu"`` or ``"gelu_pytorch_tanh"`` (Gemma).
        embed_scale: embeddings are multiplied by ``sqrt(hidden_size)`` (Gemma).
        sandwich_norms: Gemma's four norms per layer: ``post_attention_layernorm`` on the
            attention output, ``pre_feedforward_layernorm`` / ``post_feedforward_layernorm``
            around the MLP (Llama's ``post_attention_layernorm`` is the pre-MLP norm).
        attn_scale: attention score scale; ``None``: ``head_dim ** -0.5``.
        final_logit_softcapping: ``logits = cap * tanh(logits / cap)`` (Gemma 2), or ``None``.
        attn_logit_softcapping: attention scores ``cap * tanh(scores / cap)`` after scaling
            (Gemma 2), or ``None``; our attention kernels apply it.
        layer_rope: per layer a :class:`~.rope.RopeSpec` the model applies itself (Gemma 3:
            local and global layers use different bases; Phi-3 LongRoPE); ``None``: one RoPE
            (``rope_theta``/``rope_scaling``) applied by the KV cache.
        rope_max_context: LongRoPE's ``original_max_position_embeddings``, tokens: ``layer_rope``
            holds its short factors, ``long_rope`` its long ones, which a build whose context
            exceeds it uses (:meth:`for_context`); ``None`` without LongRoPE.
        long_rope: per layer the long-factor :class:`~.rope.RopeSpec` (LongRoPE), or ``None``.
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
    attention_bias: bool = False
    qk_norm: bool = False
    sliding_window: int | None = None
    sliding_layers: tuple[bool, ...] | None = None
    hidden_act: str = "silu"
    embed_scale: bool = False
    sandwich_norms: bool = False
    attn_scale: float | None = None
    final_logit_softcapping: float | None = None
    attn_logit_softcapping: float | None = None
    layer_rope: tuple[RopeSpec, ...] | None = None
    rope_max_context: int | None = None
    long_rope: tuple[RopeSpec, ...] | None = None

    def for_context(self, context_window_size: int) -> DecoderConfig:
        """This config as built for a context of ``context_window_size`` tokens: LongRoPE's long
        factors when it exceeds ``rope_max_context``, for every position (as MLC-LLM does;
        HF's ``Phi3RotaryEmbedding`` switches per call on the sequence's length, so a build for
        a long context gives HF's results once a sequence outgrows ``rope_max_context`` and the
        long-factor RoPE before that)."""
        if self.long_rope is None or context_window_size <= self.rope_max_context:
            return self
        return dataclasses.replace(self, layer_rope=self.long_rope)

    def kv_cache_spec(self):
        """What the paged KV cache needs (a :class:`mlcbuild.models.common.KVCacheSpec`)."""
        from mlcbuild.models.common import KVCacheSpec

        return KVCacheSpec(
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            rope_theta=self.rope_theta,
            rope_scaling=self.rope_scaling,
            rope_in_model=self.layer_rope is not None,
        )


def require(
    cfg: dict[str, Any], where, key: str, allowed: tuple, default: Any, arch: str, fix: str | None = None
) -> Any:
    """``cfg[key]`` (or ``default``) if it is one of ``allowed`` (``None``: the key may be absent).

    Raises:
        RecipeError: another value: the definition does not implement it.
    """
    value = cfg.get(key, default)
    if value not in allowed:
        shown = [a for a in allowed if a is not None]
        raise RecipeError(
            f"model.config.{key} = {value!r} is not supported by the {arch} definition; "
            f"supported: {', '.join(repr(a) for a in shown)}",
            path=where,
            fix=fix or f"use a checkpoint with {key} in {shown!r}",
        )
    return value


def no_sliding_window(cfg: dict[str, Any], where, arch: str) -> None:
    """Reject a config whose layers use sliding-window attention (Qwen2/Qwen3 ``use_sliding_window``).

    Raises:
        RecipeError: ``use_sliding_window`` is true, or ``layer_types`` names a sliding layer.
    """
    require(cfg, where, "use_sliding_window", (False, None), False, arch)
    kinds = set(cfg.get("layer_types") or ())
    if kinds - {"full_attention"}:
        raise RecipeError(
            f"model.config.layer_types {sorted(kinds)} are not supported by the {arch} definition; "
            "supported: full_attention",
            path=where,
            fix="use a checkpoint without sliding-window layers",
        )


def sliding_window(cfg: dict[str, Any], where) -> int | None:
    """``sliding_window`` (Mistral, Phi-3) as a positive int, or ``None``.

    Raises:
        RecipeError: a value that is neither null nor a positive integer.
    """
    window = cfg.get("sliding_window")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window <= 0):
        raise RecipeError(
            f"model.config.sliding_window must be a positive integer or absent, got {window!r}",
            path=where,
            fix="copy sliding_window from the checkpoint's config.json",
        )
    return window


def decoder_config(cfg: dict[str, Any], where, defaults: dict[str, Any] | None = None, **flags) -> DecoderConfig:
    """The keys every decoder shares, checked; ``flags`` set the architecture's own fields.

    Keys and defaults follow Hugging Face ``transformers/models/llama/configuration_llama.py``;
    ``defaults`` are the architecture's own defaults for absent keys (its
    ``configuration_*.py``: Qwen3's ``head_dim`` 128, Phi-3's ``rms_norm_eps`` 1e-5, ...).
    ``head_dim`` defaults to ``hidden_size // num_attention_heads``.

    Raises:
        RecipeError: a missing or mistyped key, head counts that do not divide, or an
            unsupported ``rope_scaling`` type.
    """
    cfg = {**(defaults or {}), **cfg}
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
    head_dim = cfg.get("head_dim")
    if head_dim is None:
        if cfg["hidden_size"] % heads:
            raise RecipeError(
                f"model.config.hidden_size ({cfg['hidden_size']}) is not a multiple of num_attention_heads ({heads})",
                path=where,
                fix="set model.config.head_dim explicitly",
            )
        head_dim = cfg["hidden_size"] // heads
    theta, scaling = parse_rope_scaling(cfg, where)
    return DecoderConfig(
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=int(head_dim),
        vocab_size=cfg["vocab_size"],
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
        **flags,
    )
