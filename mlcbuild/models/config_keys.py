"""The ``config.json`` keys each architecture knows (no TVM import), for the warning on an
unknown ``[model.config]`` key (a typo such as ``rms_norm_esp`` would silently take the
default) and the typed checks of the keys the math uses.

The lists are those of ``transformers``' config classes (``PretrainedConfig`` and the
architecture's ``configuration_*.py``, 4.x and 5.x spellings), read from transformers 5.24
and the 4.x configs the hub serves.
"""

from __future__ import annotations

import difflib
from typing import Any

from mlcbuild.errors import RecipeError

# PretrainedConfig's own keys (4.x and 5.x) and what checkpoints' config.json files carry besides
HF_COMMON = frozenset(
    """_name_or_path architectures chunk_size_feed_forward dtype torch_dtype id2label label2id
    is_encoder_decoder is_decoder model_type output_attentions output_hidden_states problem_type
    return_dict transformers_version use_cache bos_token_id eos_token_id pad_token_id sep_token_id
    decoder_start_token_id tie_encoder_decoder pruned_heads torchscript add_cross_attention
    cross_attention_hidden_size finetuning_task tokenizer_class prefix task_specific_params
    use_bfloat16 tf_legacy_loss output_scores return_dict_in_generate max_length min_length
    do_sample early_stopping num_beams num_beam_groups diversity_penalty temperature top_k top_p
    typical_p repetition_penalty length_penalty no_repeat_ngram_size encoder_no_repeat_ngram_size
    bad_words_ids num_return_sequences forced_bos_token_id forced_eos_token_id
    remove_invalid_values exponential_decay_length_penalty suppress_tokens begin_suppress_tokens
    initializer_range attention_dropout pretraining_tp quantization_config auto_map
    cache_implementation _attn_implementation_autoset""".split()
)
DECODER = frozenset(
    """hidden_size intermediate_size num_hidden_layers num_attention_heads num_key_value_heads
    head_dim vocab_size rms_norm_eps rope_theta rope_scaling rope_parameters tie_word_embeddings
    max_position_embeddings hidden_act""".split()
)
ARCH_KEYS: dict[str, frozenset] = {
    "llama": DECODER | {"attention_bias", "mlp_bias", "rope_interleaved", "is_llama_config"},
    "mistral": DECODER | {"sliding_window"},
    "qwen2": DECODER | {"sliding_window", "use_sliding_window", "max_window_layers", "layer_types", "use_mrope"},
    "qwen3": DECODER | {"sliding_window", "use_sliding_window", "max_window_layers", "layer_types", "attention_bias"},
    "phi3": DECODER
    | {"sliding_window", "original_max_position_embeddings", "embd_pdrop", "resid_pdrop", "attention_bias",
       "partial_rotary_factor"},
    "gemma2": DECODER
    | {"sliding_window", "layer_types", "sliding_window_pattern", "attention_bias", "attn_logit_softcapping",
       "final_logit_softcapping", "query_pre_attn_scalar", "hidden_activation", "use_bidirectional_attention"},
    "gemma3_text": DECODER
    | {"sliding_window", "layer_types", "sliding_window_pattern", "_sliding_window_pattern", "attention_bias",
       "attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar", "hidden_activation",
       "rope_local_base_freq", "use_bidirectional_attention"},
}  # fmt: skip


def unknown_keys(arch: str, cfg: dict[str, Any]) -> list[str]:
    """One line per ``[model.config]`` key the architecture does not know, with a
    did-you-mean where a known key is close (``difflib``)."""
    known = ARCH_KEYS.get(arch, DECODER) | HF_COMMON
    out = []
    for key in sorted(set(cfg) - known):
        near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        hint = f"did you mean {near[0]}?" if near else "it is not read"
        out.append(f"model.config.{key} is not a key the {arch} definition knows ({hint}); ignored")
    return out


# key -> what it must be (None: may be absent or null)
_KINDS = {
    "num_key_value_heads": "positive integer",
    "head_dim": "positive integer",
    "max_position_embeddings": "positive integer",
    "rms_norm_eps": "positive number",
    "rope_theta": "positive number",
    "rope_local_base_freq": "positive number",
    "query_pre_attn_scalar": "positive number",
    "sliding_window_pattern": "positive integer",
    "original_max_position_embeddings": "positive integer",
    "tie_word_embeddings": "boolean",
    "attention_bias": "boolean",
    "mlp_bias": "boolean",
    "use_sliding_window": "boolean",
    "bos_token_id": "token id",
    "eos_token_id": "token id",
    "pad_token_id": "token id",
}


def _is(value: Any, kind: str) -> bool:
    integer = isinstance(value, int) and not isinstance(value, bool)
    if kind == "positive integer":
        return integer and value > 0
    if kind == "positive number":
        return (integer or isinstance(value, float)) and value > 0 and value != float("inf")
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "token id":  # an id or a list of ids (Llama 3's eos_token_id)
        ids = value if isinstance(value, list) else [value]
        return bool(ids) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
    raise AssertionError(kind)


def check_types(cfg: dict[str, Any], where) -> None:
    """Every typed key present (and not null) is of its kind: positive integers that are
    integers (``head_dim = 16.7`` is not 16), booleans that are booleans (``"false"`` is not
    false), positive finite numbers.

    Raises:
        RecipeError: naming the key, the value, the file and the fix.
    """
    for key, kind in _KINDS.items():
        value = cfg.get(key)
        if value is not None and not _is(value, kind):
            raise RecipeError(
                f"model.config.{key} must be a {kind}, got {type(value).__name__} {value!r}",
                path=where,
                fix=f"write model.config.{key} as the checkpoint's config.json has it (a {kind})",
            )
