"""The model metadata a library carries for MLC-LLM's engine (``_metadata``: the keys
``cpp/metadata/model.cc`` reads; MLC-LLM's ``python/mlc_llm/interface/compile.py`` writes them).

Sliding windows: our attention kernels apply a model's window per layer (Gemma 2 and 3's
local layers, Mistral), on a KV cache that keeps the whole context; ``sliding_window_size``
is therefore -1, so that MLC's engine does not turn on the KV cache's own window (which would
cut the global layers' context too).
"""

from __future__ import annotations

from typing import Any

from mlcbuild.spec.recipe import Recipe


def model_metadata(recipe: Recipe, params: list[tuple[str, tuple[int, ...], str]]) -> dict[str, Any]:
    """``_metadata``'s JSON object without ``memory_usage`` (the pipeline measures it).

    Args:
        params: ``[(name, shape, dtype)]`` in the entry functions' order, named as the
            converted weights' ``tensor-cache.json`` records name them.
    """
    cfg, build = recipe.model_config, recipe.build
    return {
        "model_type": recipe.architecture,
        "quantization": recipe.scheme,
        "context_window_size": build.context_window_size,
        "sliding_window_size": -1,
        "attention_sink_size": -1,
        "prefill_chunk_size": build.prefill_chunk_size,
        "max_batch_size": build.max_batch_size,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "disaggregation": False,
        "kv_state_kind": "kv_cache",
        "model_task": "chat",
        "kv_cache": {
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads,
            "head_dim": cfg.head_dim,
        },
        "params": [
            {"name": n, "shape": list(s), "dtype": d, "preprocs": [], "pipeline_stages": [0]} for n, s, d in params
        ],
    }
