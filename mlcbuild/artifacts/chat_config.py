"""``mlc-chat-config.json``: what MLC-LLM's engine and apps read beside a library and its weights
(schema of MLC-LLM's ``python/mlc_llm/interface/gen_config.py``). Written by ``compile`` and,
with the tokenizer fields filled, by ``convert``."""

from __future__ import annotations

from typing import Any

from mlcbuild.spec.recipe import Recipe


def chat_config(recipe: Recipe) -> dict[str, Any]:
    """``mlc-chat-config.json`` in MLC-LLM's schema (tokenizer fields are filled by ``convert``)."""
    cfg = recipe.config
    mcfg = recipe.model_config
    return {
        "version": "0.1.0",
        "model_type": recipe.architecture,
        "quantization": recipe.scheme,
        **({"quantization_overrides": dict(recipe.overrides)} if recipe.overrides else {}),
        "model_config": {**cfg, "context_window_size": recipe.build.context_window_size},
        "vocab_size": mcfg.vocab_size,
        "context_window_size": recipe.build.context_window_size,
        "sliding_window_size": -1,
        "prefill_chunk_size": recipe.build.prefill_chunk_size,
        "attention_sink_size": -1,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "max_batch_size": recipe.build.max_batch_size,
        "active_vocab_size": mcfg.vocab_size,
        "temperature": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": 1.0,
        "top_p": 1.0,
        "tokenizer_files": [],
        "tokenizer_info": {},
        "conv_template": "LM",
        "pad_token_id": cfg.get("pad_token_id") if cfg.get("pad_token_id") is not None else 0,
        "bos_token_id": cfg.get("bos_token_id", 1),
        "eos_token_id": cfg.get("eos_token_id", 2),
        "model_task": "chat",
    }
