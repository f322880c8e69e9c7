"""Compiled models against ``transformers``' own model of each architecture (Llama, Qwen2,
Qwen3, Phi-3, Mistral, Gemma 2, Gemma 3) with the same random weights; prompts longer than the
sliding windows of Mistral and Gemma 3's local layers.

Bound: max |ours - reference| <= 1e-4 x max |reference logits|, for the prefill's
last-token logits and each greedy decode step (16 at q0f32, 8 for the group schemes; with
int8 decode activations, 5e-2 after an int8 rounding flip: see :func:`check_against`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import hf_model, recipe_data, state_dict_numpy, tiny_config
from helpers import compile_and_load, emulate_int8_activations

from mlcbuild.quant import get_scheme

LLAMA3_ROPE = {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}

GEMMA3 = {k: v for k, v in tiny_config(model_type="gemma3_text").items() if k not in ("rope_theta", "hidden_act")} | {
    "hidden_activation": "gelu_pytorch_tanh",
    "num_hidden_layers": 3,
    "head_dim": 32,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
    "sliding_window": 8,  # shorter than the prompts: the local layers' window applies
    "rope_parameters": {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000000.0},
    },
    "query_pre_attn_scalar": 24,
    "final_logit_softcapping": 2.0,
    "tie_word_embeddings": True,
}

# Gemma 2: Gemma 3's blocks without q/k norms, one RoPE (in the KV cache), attention logits
# soft-capped (a cap small enough to bend these scores), every second layer windowed
GEMMA2 = {k: v for k, v in GEMMA3.items() if k not in ("rope_parameters", "model_type")} | {
    "model_type": "gemma2",
    "rope_theta": 10000.0,
    "attn_logit_softcapping": 0.5,
}

# Mistral v0.1-style: every layer attends within a window shorter than the prompts; GQA 2,
# explicit head_dim
MISTRAL = tiny_config(model_type="mistral", head_dim=32, sliding_window=6)

CASES = {
    # GQA ratio 2, untied LM head
    "gqa2-untied": tiny_config(),
    # MHA with an odd head count (3 heads of 16), tied embeddings, vocab not a multiple of 32
    "mha3-tied": tiny_config(
        hidden_size=48, num_attention_heads=3, num_key_value_heads=3, vocab_size=97, tie_word_embeddings=True
    ),
    # GQA ratio 4, Llama 3.2 rope scaling and theta, explicit head_dim, tied
    "gqa4-llama3": tiny_config(
        hidden_size=128,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=257,
        rope_theta=500000.0,
        rope_scaling=LLAMA3_ROPE,
        max_position_embeddings=131072,
        tie_word_embeddings=True,
    ),
    # MLP width 100: not a multiple of the group size (32), so quantized K is zero-padded
    "pad-untied": tiny_config(intermediate_size=100, vocab_size=97),
    # Qwen2: q/k/v bias, tied
    "qwen2-tied": tiny_config(model_type="qwen2", tie_word_embeddings=True),
    # Qwen3: per-head q/k RMSNorm, head_dim 32 != hidden / heads (16), GQA 2, untied
    "qwen3-hd32": tiny_config(model_type="qwen3", head_dim=32, rope_theta=1000000.0),
    # Phi-3 128k-style: fused qkv_proj / gate_up_proj in the checkpoint, MHA, a window the
    # context fits in, LongRoPE with its long factors (context 128 > 8; the prompt too, so HF
    # uses them on every call) and attention factor sqrt(1 + ln 128 / ln 8)
    "phi3-longrope": tiny_config(
        model_type="phi3",
        num_key_value_heads=4,
        pad_token_id=0,
        eos_token_id=2,
        sliding_window=128,
        max_position_embeddings=1024,
        original_max_position_embeddings=8,
        rope_scaling={
            "type": "longrope",
            "short_factor": [1.0 + 0.3 * i for i in range(8)],
            "long_factor": [4.0 + 0.5 * i for i in range(8)],
        },
    ),
    "mistral": MISTRAL,
    # Gemma 3: local (windowed) and global layers with their own RoPE (linear scaling on the
    # global one), q/k norm, score scale from query_pre_attn_scalar, GeGLU, final soft-capping
    "gemma3": GEMMA3,
    "gemma2": GEMMA2,
}
PROMPT = [1, 5, 9, 22, 7, 60, 3, 44, 17, 2, 31]  # 11 tokens: longer than a KV page is not needed, odd length is


def reference_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].float().numpy()


def check_against(hf, ours, n_decode: int = 8, int8_activations: bool = False) -> None:
    """Ours within ``1e-4 x max |ref|`` of the reference at the prefill and each greedy step.

    ``int8_activations``: ours quantizes linear inputs to int8 (the reference emulates it). Ours and the reference compute each activation in float32 in a different
    order (~1e-7 apart); where one lands that close to a rounding boundary of
    ``round(x / d_x)`` the two int8 values differ by one, ``d_x = max|x| / 127`` of its
    block, and the logits by far more than float noise; a flipped value written to the KV
    cache stays there for the later steps. Measured: steps 1e-7..1e-6 apart until such a
    flip, 3e-3..3e-2 after it. So with int8 activations the bound holds until the first
    step that exceeds it, and ``5e-2 x max |ref|`` from there on (the kernels themselves
    are checked exactly against NumPy in ``test_cpu_linear``).
    """
    ours.reset()
    seq = list(PROMPT)
    got = ours.prefill(seq)
    flipped = False
    for step in range(n_decode + 1):
        ref = reference_logits(hf, seq)
        scale = float(np.abs(ref).max())
        err = float(np.abs(got - ref).max())
        flipped = flipped or (int8_activations and err > 1e-4 * scale)
        bound = (5e-2 if flipped else 1e-4) * scale
        assert err <= bound, f"step {step}: max abs error {err:.3g} > {bound:.3g}"
        if step == n_decode:
            break
        tok = int(np.argmax(ref))
        seq.append(tok)
        got = ours.decode(tok)


@pytest.mark.parametrize(
    "case",
    [
        "gqa2-untied",
        "mha3-tied",
        "gqa4-llama3",
        "qwen2-tied",
        "qwen3-hd32",
        "phi3-longrope",
        "mistral",
        "gemma3",
        "gemma2",
    ],
)
def test_q0f32_matches_transformers(case, cache_dir):
    """Logits within the bound at the prefill and each of 16 greedy decode steps."""
    cfg = CASES[case]
    hf = hf_model(cfg)
    ours = compile_and_load(recipe_data(cfg, "q0f32", name=f"tiny-{case}"), state_dict_numpy(hf), cache_dir)
    check_against(hf, ours, n_decode=16)


def test_the_reference_sees_windows_caps_and_long_factors():
    """The cases above would catch a model that ignores a window, a soft-cap or LongRoPE's long
    factors: each changes transformers' logits for PROMPT by over half their range."""
    changed = {
        "mistral": {"sliding_window": 1000},
        "gemma3": {"sliding_window": 1000},
        "gemma2": {"attn_logit_softcapping": None},
        "phi3-longrope": {
            "rope_scaling": CASES["phi3-longrope"]["rope_scaling"]
            | {"long_factor": CASES["phi3-longrope"]["rope_scaling"]["short_factor"]}
        },
    }
    for case, override in changed.items():
        ref = reference_logits(hf_model(CASES[case]), PROMPT)
        other = reference_logits(hf_model(CASES[case] | override), PROMPT)
        assert np.abs(ref - other).max() > 0.5 * np.abs(ref).max(), case


@pytest.mark.parametrize("case", ["gqa2-untied", "mistral"])
def test_q0f32_prefill_in_chunks(case, cache_dir):
    """A prompt longer than prefill_chunk_size is fed in chunks and gives the same logits
    (Mistral: chunks of 4 under a window of 6, so a chunk's queries see part of the cache)."""
    cfg = CASES[case]
    hf = hf_model(cfg)
    ours = compile_and_load(recipe_data(cfg, "q0f32", name=f"tiny-{case}"), state_dict_numpy(hf), cache_dir)
    ours.prefill_chunk_size = 4  # the library allows up to 32; the driver may use less
    ours.reset()
    got = ours.prefill(PROMPT)
    ref = reference_logits(hf, PROMPT)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize(
    "scheme_name,case",
    [
        ("q4f32_1", "gqa2-untied"),
        ("q4f32_1", "gqa4-llama3"),
        ("q4f32_1", "pad-untied"),
        ("q8f32_1", "gqa2-untied"),
        ("q4f16_1", "gqa2-untied"),
        ("q4f32_1", "qwen2-tied"),  # quantized q/k/v with a float bias
        ("q4f32_1", "qwen3-hd32"),
    ],
)
def test_group_scheme_matches_numpy_quantization(scheme_name, case, cache_dir):
    """A group scheme equals transformers run on the NumPy reference's dequantized weights.

    q4f16_1 too: on x86 hosts it computes in fp32 with fp16 scales and norm weights
    (``lower.compute_dtype``), so the fp32 bound holds for it. Where the host CPU has an int8
    dot product, linears quantize their input to int8 (``int8_gemv``, ``int8_matmul``): the
    reference then does the same (:func:`helpers.emulate_int8_activations`), for prompt rows too
    where the int8 prefill matmul runs.
    """
    cfg = CASES[case]
    hf = hf_model(cfg)
    sd = state_dict_numpy(hf)
    ours = compile_and_load(recipe_data(cfg, scheme_name, name=f"tiny-{case}"), sd, cache_dir)
    scheme = get_scheme(scheme_name)
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 2:  # every linear and the embedding is quantized
                w = p.detach().numpy()
                q, s = scheme.quantize(w)
                p.copy_(torch.from_numpy(scheme.dequantize(q, s, w.shape[1])))
            elif scheme.model_dtype == "float16":  # norm weights and biases are stored in fp16
                p.copy_(p.half().float())
    int8 = bool(emulate_int8_activations(hf, scheme.dequantize_info(), len(PROMPT)))
    check_against(hf, ours, int8_activations=int8)
