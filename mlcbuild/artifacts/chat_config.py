"""``mlc-chat-config.json``: what MLC-LLM's engine and apps read beside a library and its weights
(schema of MLC-LLM's ``python/mlc_llm/interface/gen_config.py``). Written by ``compile`` and,
with the tokenizer fields filled, by ``convert``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlcbuild.errors import MlcbuildError
from mlcbuild.spec.recipe import Recipe


def chat_config(recipe: Recipe, tokenizer_dir: Path | None = None) -> dict[str, Any]:
    """``mlc-chat-config.json`` in MLC-LLM's schema (``python/mlc_llm/protocol/mlc_chat_config.py``).

    With ``tokenizer_dir`` (``convert``: the tokenizer files beside the weights) the
    ``conv_template`` is the model's chat template as MLC's Conversation
    (:func:`mlcbuild.artifacts.conv_template.conversation`; MLC's plain ``LM`` template where it
    is not expressible, or without a template) and ``tokenizer_info`` is what MLC's runtime
    would detect; without it (``compile``) ``tokenizer_info`` is left out (MLC detects it).
    """
    cfg = recipe.config
    mcfg = recipe.model_config
    build = recipe.build
    out = {
        "version": "0.1.0",
        "model_type": recipe.architecture,
        "quantization": recipe.scheme,
        **({"quantization_overrides": dict(recipe.overrides)} if recipe.overrides else {}),
        "model_config": {
            **cfg,
            "context_window_size": build.context_window_size,
            "prefill_chunk_size": build.prefill_chunk_size,
            "max_batch_size": build.max_batch_size,
            "tensor_parallel_shards": 1,
        },
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
        "pad_token_id": cfg.get("pad_token_id") if cfg.get("pad_token_id") is not None else 0,
        "bos_token_id": cfg.get("bos_token_id", 1),
        "eos_token_id": cfg.get("eos_token_id", 2),
        "model_task": "chat",
    }
    out["conv_template"], info = conv_template(recipe, out, tokenizer_dir)
    if info is not None:
        out["tokenizer_info"] = info
    return out


def conv_template(recipe: Recipe, chat: dict[str, Any], tokenizer_dir: Path | None):
    """``(conv_template, tokenizer_info or None)`` for :func:`chat_config`."""
    from mlcbuild.artifacts.chat_template import ChatTemplate, stop_ids
    from mlcbuild.artifacts.conv_template import NotExpressible, conversation, plain_lm, tokenizer_info

    tok_json = tokenizer_dir / "tokenizer.json" if tokenizer_dir else None
    if tok_json is None or not tok_json.is_file():
        eos = chat["eos_token_id"]
        return plain_lm([(i, "") for i in (eos if isinstance(eos, list) else [eos])]), None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_json))
    info = tokenizer_info(tok_json)
    try:
        template = ChatTemplate.load(tokenizer_dir)
    except MlcbuildError:
        template = None
    stop = sorted((i, tok.id_to_token(i) or "") for i in stop_ids(chat, tok, template))
    if template is None:
        return plain_lm(stop), info
    try:
        return conversation(template, stop, recipe.name), info
    except NotExpressible:
        return plain_lm(stop), info
