"""Random Hugging Face ``LlamaForCausalLM`` weights of a recipe's shapes, for speed benchmarks
(speed does not depend on the values)."""

from __future__ import annotations

import numpy as np


def hf_llama_weights(cfg, seed: int = 0) -> dict[str, np.ndarray]:
    """Random Hugging Face ``LlamaForCausalLM`` tensors (float32, N(0, 0.02), norms 1) for ``cfg``."""
    rng = np.random.default_rng(seed)
    h, inter = cfg.hidden_size, cfg.intermediate_size
    hd = cfg.head_dim
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    out = {"model.embed_tokens.weight": w(cfg.vocab_size, h), "model.norm.weight": np.ones(h, np.float32)}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        out[f"{p}.input_layernorm.weight"] = np.ones(h, np.float32)
        out[f"{p}.post_attention_layernorm.weight"] = np.ones(h, np.float32)
        out[f"{p}.self_attn.q_proj.weight"] = w(q, h)
        out[f"{p}.self_attn.k_proj.weight"] = w(kv, h)
        out[f"{p}.self_attn.v_proj.weight"] = w(kv, h)
        out[f"{p}.self_attn.o_proj.weight"] = w(h, q)
        out[f"{p}.mlp.gate_proj.weight"] = w(inter, h)
        out[f"{p}.mlp.up_proj.weight"] = w(inter, h)
        out[f"{p}.mlp.down_proj.weight"] = w(h, inter)
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = w(cfg.vocab_size, h)
    return out
