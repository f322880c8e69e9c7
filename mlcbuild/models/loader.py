"""Checkpoint names -> our parameter names for the decoder of :mod:`.decoder` (NumPy only)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from mlcbuild.models.config import DecoderConfig

ParamMap = dict[str, tuple[list[str], Callable[..., np.ndarray]]]


def identity(x: np.ndarray) -> np.ndarray:
    """A checkpoint tensor used as it is."""
    return x


def _cat(*xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=0)


def decoder_param_map(cfg: DecoderConfig) -> ParamMap:
    """How our parameters are made from a Llama-layout checkpoint (Llama, Qwen2, Qwen3, ...).

    Returns:
        ``our_name -> ([hf_name, ...], combine)``; ``combine(*arrays)`` returns our tensor:
        q/k/v (weights, and biases with ``attention_bias``) and gate/up are concatenated
        along the output axis 0; Qwen3's per-head ``q_norm``/``k_norm`` with ``qk_norm``.
    """
    out: ParamMap = {
        "model.embed_tokens.weight": (["model.embed_tokens.weight"], identity),
        "model.norm.weight": (["model.norm.weight"], identity),
    }
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        out[f"{p}.input_layernorm.weight"] = ([f"{p}.input_layernorm.weight"], identity)
        out[f"{p}.post_attention_layernorm.weight"] = ([f"{p}.post_attention_layernorm.weight"], identity)
        out[f"{p}.self_attn.qkv_proj.weight"] = ([f"{p}.self_attn.{x}_proj.weight" for x in "qkv"], _cat)
        if cfg.attention_bias:
            out[f"{p}.self_attn.qkv_proj.bias"] = ([f"{p}.self_attn.{x}_proj.bias" for x in "qkv"], _cat)
        if cfg.qk_norm:
            for x in "qk":
                out[f"{p}.self_attn.{x}_norm.weight"] = ([f"{p}.self_attn.{x}_norm.weight"], identity)
        out[f"{p}.self_attn.o_proj.weight"] = ([f"{p}.self_attn.o_proj.weight"], identity)
        out[f"{p}.mlp.gate_up_proj.weight"] = ([f"{p}.mlp.gate_proj.weight", f"{p}.mlp.up_proj.weight"], _cat)
        out[f"{p}.mlp.down_proj.weight"] = ([f"{p}.mlp.down_proj.weight"], identity)
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = (["lm_head.weight"], identity)
    return out
