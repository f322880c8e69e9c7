"""Llama architecture: Llama 2/3/3.1/3.2, SmolLM/SmolLM2, TinyLlama, MobileLLM.

Mirrors Hugging Face ``transformers/models/llama/modeling_llama.py``
(``LlamaForCausalLM``): pre-norm decoder blocks of RMSNorm -> GQA attention with
RoPE -> residual -> RMSNorm -> SwiGLU MLP -> residual, a final RMSNorm, and an LM
head that may be tied to the token embedding.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from ..errors import RecipeError
from .common import (
    Embedding,
    GatedMLP,
    KVCacheSpec,
    PagedAttention,
    create_tir_paged_kv_cache,
    last_token,
    parse_rope_scaling,
)

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
                raise RecipeError(f"model.config lacks {key}", path=where, fix="copy the checkpoint's config.json into [model.config]")
            if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] <= 0:
                raise RecipeError(f"model.config.{key} must be a positive integer, got {cfg[key]!r}", path=where, fix=f"fix model.config.{key}")
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
            raise RecipeError(f"model.config.hidden_act {act!r} is not supported; supported: silu", path=where, fix="use silu")
        for key in ("attention_bias", "mlp_bias"):
            if cfg.get(key):
                raise RecipeError(f"model.config.{key} = true is not supported by the llama definition", path=where, fix=f"set {key} = false")
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

    def kv_cache_spec(self) -> KVCacheSpec:
        return KVCacheSpec(
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            rope_theta=self.rope_theta,
            rope_scaling=self.rope_scaling,
        )


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig, dtype: str):
        self.input_layernorm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=dtype)
        self.self_attn = PagedAttention(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, dtype)
        self.post_attention_layernorm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=dtype)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, dtype)

    def forward(self, x: Tensor, paged_kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), paged_kv_cache, layer_id)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, cfg: LlamaConfig, dtype: str):
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype)
        self.layers = nn.ModuleList([LlamaDecoderLayer(cfg, dtype) for _ in range(cfg.num_hidden_layers)])
        self.norm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=dtype)

    def forward(self, x: Tensor, paged_kv_cache: PagedKVCache) -> Tensor:
        for layer_id, layer in enumerate(self.layers):
            x = layer(x, paged_kv_cache, layer_id)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    """The exported model. Entry functions follow MLC-LLM's runtime names.

    Args:
        cfg: the parsed config.
        dtype: activation and unquantized-weight dtype, ``"float32"`` or ``"float16"``.
        target: the ``tvm.target.Target`` the KV-cache kernels are generated for.
    """

    def __init__(self, cfg: LlamaConfig, dtype: str, target):
        self.cfg = cfg
        self.dtype = dtype
        self.target = target
        self.model = LlamaModel(cfg, dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False, dtype=dtype)

    def _logits(self, x: Tensor) -> Tensor:
        if self.cfg.tie_word_embeddings:
            logits = self.model.embed_tokens.lm_head_forward(x)
        else:
            logits = self.lm_head(x)
        return logits.astype("float32") if logits.dtype != "float32" else logits

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token ids ``[s]`` int32 -> embeddings ``[s, d]`` of the model dtype."""
        return self.model.embed_tokens(input_ids)

    def prefill(self, input_embed: Tensor, paged_kv_cache: PagedKVCache):
        """One sequence's prompt chunk ``[1, s, d]`` -> last-token logits ``[1, 1, vocab]`` float32."""
        hidden = self.model(input_embed, paged_kv_cache)
        return self._logits(last_token(hidden)), paged_kv_cache

    def decode(self, input_embed: Tensor, paged_kv_cache: PagedKVCache):
        """One token ``[1, 1, d]`` -> logits ``[1, 1, vocab]`` float32."""
        return self._logits(self.model(input_embed, paged_kv_cache)), paged_kv_cache

    def batch_prefill(self, input_embeds: Tensor, logit_positions: Tensor, paged_kv_cache: PagedKVCache):
        """Concatenated prompts ``[1, s, d]`` and per-sequence last positions ``[n]`` int32
        -> logits ``[1, n, vocab]`` float32."""
        hidden = self.model(input_embeds, paged_kv_cache)
        hidden = op.take(hidden, logit_positions, axis=1)
        return self._logits(hidden), paged_kv_cache

    def batch_decode(self, input_embeds: Tensor, paged_kv_cache: PagedKVCache):
        """One token per sequence ``[n, 1, d]`` -> logits ``[n, 1, vocab]`` float32."""
        return self._logits(self.model(input_embeds, paged_kv_cache)), paged_kv_cache

    def create_paged_kv_cache(self, max_batch_size, max_total_seq_len, prefill_chunk_size, page_size, support_sliding_window) -> PagedKVCache:
        """A fresh paged KV cache; sizes in sequences, tokens, tokens, tokens per page, 0/1."""
        return create_tir_paged_kv_cache(
            self.cfg.kv_cache_spec(), self.dtype, self.target,
            max_batch_size, max_total_seq_len, prefill_chunk_size, page_size, support_sliding_window,
        )

    def get_default_spec(self) -> nn.spec.ModuleSpec:
        d = self.cfg.hidden_size
        kv = nn.spec.Object(object_type=PagedKVCache)
        packed = {"param_mode": "packed", "effect_mode": "none"}
        spec = {
            "embed": {"input_ids": nn.spec.Tensor(["seq_len"], "int32"), "$": packed},
            "prefill": {"input_embed": nn.spec.Tensor([1, "seq_len", d], self.dtype), "paged_kv_cache": kv, "$": packed},
            "decode": {"input_embed": nn.spec.Tensor([1, 1, d], self.dtype), "paged_kv_cache": kv, "$": packed},
            "batch_prefill": {
                "input_embeds": nn.spec.Tensor([1, "seq_len", d], self.dtype),
                "logit_positions": nn.spec.Tensor(["batch_size"], "int32"),
                "paged_kv_cache": kv,
                "$": packed,
            },
            "batch_decode": {"input_embeds": nn.spec.Tensor(["batch_size", 1, d], self.dtype), "paged_kv_cache": kv, "$": packed},
            "create_paged_kv_cache": {
                "max_batch_size": int,
                "max_total_seq_len": int,
                "prefill_chunk_size": int,
                "page_size": int,
                "support_sliding_window": int,
                "$": {"param_mode": "none", "effect_mode": "none"},
            },
        }
        return nn.spec.ModuleSpec.from_raw(spec, self)


def hf_param_map(cfg: LlamaConfig) -> dict[str, tuple[list[str], Callable[..., np.ndarray]]]:
    """How our parameters are made from the checkpoint's tensors.

    Returns:
        ``our_name -> ([hf_name, ...], combine)``; ``combine(*arrays)`` returns our
        tensor (q/k/v and gate/up are concatenated along the output axis 0).
    """
    ident = lambda x: x  # noqa: E731
    cat = lambda *xs: np.concatenate(xs, axis=0)  # noqa: E731
    out: dict[str, tuple[list[str], Callable[..., np.ndarray]]] = {
        "model.embed_tokens.weight": (["model.embed_tokens.weight"], ident),
        "model.norm.weight": (["model.norm.weight"], ident),
    }
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        out[f"{p}.input_layernorm.weight"] = ([f"{p}.input_layernorm.weight"], ident)
        out[f"{p}.post_attention_layernorm.weight"] = ([f"{p}.post_attention_layernorm.weight"], ident)
        out[f"{p}.self_attn.qkv_proj.weight"] = ([f"{p}.self_attn.{x}_proj.weight" for x in "qkv"], cat)
        out[f"{p}.self_attn.o_proj.weight"] = ([f"{p}.self_attn.o_proj.weight"], ident)
        out[f"{p}.mlp.gate_up_proj.weight"] = ([f"{p}.mlp.gate_proj.weight", f"{p}.mlp.up_proj.weight"], cat)
        out[f"{p}.mlp.down_proj.weight"] = ([f"{p}.mlp.down_proj.weight"], ident)
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = (["lm_head.weight"], ident)
    return out
