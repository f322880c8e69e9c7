"""Tiny models and recipes the tests build: Hugging Face configs, random checkpoints, recipe tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


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
    """Recipe data (as parsed from TOML) for a config; the architecture is its ``model_type``."""
    b = {"context_window_size": 128, "prefill_chunk_size": 32, "max_batch_size": 1}
    b.update(build)
    return {
        "model": {"name": name, "architecture": cfg.get("model_type", "llama"), "source": "local/none", "config": cfg},
        "quantization": {"scheme": scheme},
        "build": b,
    }


# transformers' classes per model_type: the references our architectures are checked against
HF_CLASSES = {
    "llama": ("LlamaForCausalLM", "LlamaConfig"),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config"),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config"),
    "phi3": ("Phi3ForCausalLM", "Phi3Config"),
    "mistral": ("MistralForCausalLM", "MistralConfig"),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config"),
    "gemma3_text": ("Gemma3ForCausalLM", "Gemma3TextConfig"),
}


def hf_model(cfg: dict, seed: int = 0, perturb: bool = True):
    """``transformers``' model of ``cfg["model_type"]`` (default llama) with random weights (fp32, eval mode).

    Biases (Qwen2's q/k/v) are zero and norm weights one at initialization in
    ``transformers``; with ``perturb`` they are drawn random (bias N(0, 0.5), norm
    1 + N(0, 0.2)) so that the loaders' bias and norm mappings are checked too.
    """
    import torch
    import transformers

    model_cls, config_cls = HF_CLASSES[cfg.get("model_type", "llama")]
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**cfg)
    if cfg.get("model_type") == "gemma2":  # soft-capped attention logits: only the eager path caps them
        config._attn_implementation = "eager"
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters() if perturb else ():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.5)
            elif name.endswith("norm.weight"):  # Gemma's norms scale by 1 + w: w starts at 0
                p.normal_(0.0 if "gemma" in cfg.get("model_type", "") else 1.0, 0.2)
    return model


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def make_checkpoint(directory, cfg: dict, seed: int = 0, max_shard_size: str | None = None):
    """Save a random model of ``cfg`` (:func:`hf_model`) and a small trained BPE tokenizer as a Hugging Face checkpoint."""
    from pathlib import Path

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    d = Path(directory)
    hf = hf_model(cfg, seed)
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
