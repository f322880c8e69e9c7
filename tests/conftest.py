"""Shared fixtures: a session build cache, tiny random Llama checkpoints, compiled host models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One build cache for the whole session, so tests share compiled tiny models."""
    d = tmp_path_factory.mktemp("mlcbuild-cache")
    os.environ["MLCBUILD_CACHE"] = str(d)
    return d


def tiny_config(**overrides) -> dict:
    """A tiny Llama config.json (GQA 2, untied) with overrides."""
    cfg = dict(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=131,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        max_position_embeddings=256,
        hidden_act="silu",
        initializer_range=0.1,
        model_type="llama",
    )
    cfg.update(overrides)
    return cfg


def recipe_data(cfg: dict, scheme: str = "q0f32", name: str = "tiny", **build) -> dict:
    """Recipe data (as parsed from TOML) for a config."""
    b = {"context_window_size": 128, "prefill_chunk_size": 32, "max_batch_size": 1}
    b.update(build)
    return {
        "model": {"name": name, "architecture": "llama", "source": "local/none", "config": cfg},
        "quantization": {"scheme": scheme},
        "build": b,
    }


def hf_llama(cfg: dict, seed: int = 0):
    """A ``transformers.LlamaForCausalLM`` with random weights (fp32, eval mode)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg)).eval()


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def make_checkpoint(directory, cfg: dict, seed: int = 0, max_shard_size: str | None = None):
    """Save a random ``LlamaForCausalLM`` and a small trained BPE tokenizer as a Hugging Face checkpoint."""
    from pathlib import Path

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    d = Path(directory)
    hf = hf_llama(cfg, seed)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    hf.save_pretrained(d, safe_serialization=True, **kwargs)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(cfg["vocab_size"], 90), special_tokens=["<unk>", "<s>", "</s>"])
    import pydoc_data.topics

    text = list(pydoc_data.topics.topics.values())[:50]
    tok.train_from_iterator(text, trainer)
    tok.save(str(d / "tokenizer.json"))
    return hf
