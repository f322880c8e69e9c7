"""Checkpoint names -> our parameter names for Llama (NumPy only)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from .config import LlamaConfig


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
