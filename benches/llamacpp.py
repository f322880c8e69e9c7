"""llama.cpp's side of the host benchmark: the same checkpoint as GGUF, run through llama-cpp-python.

Benchmark-only: needs ``llama-cpp-python`` and ``gguf`` (``make bench-deps``), never the
package or its tests.

The GGUF is written with ``gguf`` (llama.cpp's own writer library) the way
llama.cpp's ``convert_hf_to_gguf.py`` writes a ``LlamaForCausalLM``: tensors renamed by
``gguf.get_tensor_name_map``, ``q_proj``/``k_proj`` rows permuted from Hugging Face's
rotate-half rope layout to llama.cpp's interleaved one (``LlamaModel.permute`` there),
norms in F32 and every 2-D weight (the embedding too, as our group schemes do) in the
requested GGML type, quantized by ``gguf.quants`` (the reference quantizers). The vocabulary
is a placeholder SentencePiece table of ``vocab_size`` pieces (``<unk> <s> </s>``, the 256
byte pieces, then fillers): the benchmark feeds token ids, never text.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

# Our scheme -> the GGML type of comparable bits (issue 5): Q4_0 is 4-bit, group 32, one f16 scale.
GGML_PAIR = {"q4f16_1": "Q4_0", "q4f32_1": "Q4_0", "q8f16_1": "Q8_0", "q8f32_1": "Q8_0", "q0f16": "F16", "q0f32": "F32"}


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


def _rope_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows from rotate-half (HF) to interleaved (llama.cpp) pairs; ``convert_hf_to_gguf.LlamaModel.permute``."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, cfg, weights: dict[str, np.ndarray], ggml_type: str) -> Path:
    """Write ``weights`` (HF names, float32) as a llama-architecture GGUF at ``path``.

    Args:
        cfg: our ``LlamaConfig``.
        ggml_type: ``"Q4_0"``, ``"Q8_0"``, ``"F16"`` or ``"F32"`` for every 2-D weight.
    Returns:
        ``path``.
    """
    import gguf

    qtype = gguf.GGMLQuantizationType[ggml_type]
    ftype = {
        "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
        "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "F16": gguf.LlamaFileType.MOSTLY_F16,
        "F32": gguf.LlamaFileType.ALL_F32,
    }[ggml_type]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    tmp = path.with_suffix(".partial")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name("mlcbuild-benchmark")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"t{i}" for i in range(cfg.vocab_size - len(tokens))]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    types += [gguf.TokenType.NORMAL] * (cfg.vocab_size - len(types))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * cfg.vocab_size)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    for hf_name, arr in weights.items():
        name = names.get_name(hf_name, try_suffixes=(".weight",))
        if hf_name.endswith("q_proj.weight"):
            arr = _rope_permute(arr, cfg.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            arr = _rope_permute(arr, cfg.num_key_value_heads)
        if arr.ndim == 1 or ggml_type == "F32":
            writer.add_tensor(name, arr.astype(np.float32))
        elif ggml_type == "F16":
            writer.add_tensor(name, arr.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.rename(path)
    return path


def cached_gguf(name: str, cfg, weights: dict[str, np.ndarray], ggml_type: str) -> Path:
    """:func:`write_gguf` into the user cache (``platformdirs``), once per model name, config and type.

    The file name carries a hash of the config and of the first tensor's bytes, so other
    weights never hit a stale file.
    """
    import dataclasses
    import hashlib
    import json

    import platformdirs

    h = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str).encode())
    h.update(next(iter(weights.values())).tobytes()[: 1 << 20])
    d = Path(platformdirs.user_cache_dir("mlcbuild")) / "bench-gguf"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}-{ggml_type}-{h.hexdigest()[:12]}.gguf"
    return path if path.exists() else write_gguf(path, cfg, weights, ggml_type)


class LlamaCppModel:
    """A GGUF loaded by llama-cpp-python, driven by token ids with greedy decoding.

    ``stats`` after :meth:`generate` holds ``prefill_tokens``, ``prefill_s``,
    ``decode_tokens``, ``decode_s`` (seconds, wall clock around llama.cpp's eval), the
    same fields as :class:`mlcbuild.runtime.engine.Engine`.
    """

    def __init__(self, path: Path, n_ctx: int, n_threads: int, n_batch: int):
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_batch=n_batch,
            n_ubatch=n_batch,
            verbose=False,
            use_mmap=False,
        )
        self.stats: dict[str, float] = {}

    def _argmax(self) -> int:
        # Only the last token of a batch asks for logits: llama_get_logits is that one row.
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),))
        return int(np.argmax(logits))

    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        """Prefill ``prompt_ids`` then greedily decode ``max_new_tokens`` (the first comes from prefill)."""
        llm = self.llm
        llm.reset()  # the next eval drops the KV cache from position 0
        t = time.perf_counter()
        llm.eval(prompt_ids)
        prefill_s = time.perf_counter() - t
        out = [self._argmax()]
        t = time.perf_counter()
        for _ in range(max_new_tokens - 1):
            llm.eval([out[-1]])
            out.append(self._argmax())
        self.stats = {
            "prefill_tokens": len(prompt_ids),
            "prefill_s": prefill_s,
            "decode_tokens": max_new_tokens - 1,
            "decode_s": time.perf_counter() - t,
        }
        return out
