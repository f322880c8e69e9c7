"""Checkpoints already quantized by GPTQ tools (with and without act-order ``g_idx``) and by
AutoAWQ (GEMM): written here in those tools' tensor layouts from the trained tiny model,
imported without re-quantizing, and checked against transformers running their dequantized
weights: the compiled model's held-out perplexity equals the reference's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cache import _toml
from test_convert_run import cli
from test_quality import HELDOUT, MODEL

from mlcbuild.errors import RecipeError
from mlcbuild.runtime.evaluate import reference_perplexity, text_ids
from mlcbuild.spec.recipe import parse_recipe

pytestmark = pytest.mark.skipif(not MODEL.is_dir(), reason="quality/tiny-kjv not trained")

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
TOKENS, CONTEXT = 768, 256


def quantize_asym(w: np.ndarray, g_idx: np.ndarray, bits: int):
    """Asymmetric min/max quantization per (row, group of ``g_idx``), as GPTQ tools' and AutoAWQ's
    quantizers set scale and zero: ``(codes [N, K], zeros [N, ng], scales [N, ng] fp16)``."""
    maxq = 2**bits - 1
    ng = int(g_idx.max()) + 1
    n = w.shape[0]
    codes = np.zeros(w.shape, np.int64)
    zeros, scales = np.zeros((n, ng), np.int64), np.zeros((n, ng), np.float16)
    for g in range(ng):
        cols = np.flatnonzero(g_idx == g)
        lo, hi = np.minimum(w[:, cols].min(1), 0), np.maximum(w[:, cols].max(1), 0)
        s = ((hi - lo) / maxq).astype(np.float16)
        s[s == 0] = 1
        z = np.clip(np.round(-lo / s.astype(np.float32)), 0, maxq)
        codes[:, cols] = np.clip(np.round(w[:, cols] / s.astype(np.float32)[:, None]) + z[:, None], 0, maxq)
        zeros[:, g], scales[:, g] = z, s
    return codes, zeros, scales


def pack_rows(values: np.ndarray, bits: int, order=None) -> np.ndarray:
    """Pack ``[R, C]`` codes along C, ``32 // bits`` per int32, nibble ``i`` holding column ``order[i]``."""
    p = 32 // bits
    order = order or list(range(p))
    v = values.astype(np.uint64).reshape(values.shape[0], -1, p)
    words = sum(v[:, :, order[i]] << np.uint64(bits * i) for i in range(p))
    return words.astype(np.uint32).view(np.int32)


def dequantize(codes, zeros, scales, g_idx) -> np.ndarray:
    return ((codes - zeros[:, g_idx]) * scales[:, g_idx].astype(np.float32)).astype(np.float32)


def quantize_into(directory, hf, fmt: str, act_order: bool, group: int = 128, bits: int = 4) -> dict:
    """Quantize ``hf``'s decoder linears into ``fmt``'s layout ("gptq" v1 or "awq" GEMM) as
    ``directory/model.safetensors``, everything else fp16, and add the ``quantization_config``
    to ``directory/config.json``; ``hf`` then holds the dequantized (and fp16-rounded) weights.
    Returns the config."""
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    packed: dict[str, torch.Tensor] = {}
    shared_input = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "gate_proj": "mlp", "up_proj": "mlp"}
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(p.half().float())
        for i, layer in enumerate(hf.model.layers):
            perms = {}  # linears that share an input share its act-order
            for name, lin in layer.named_modules():
                if not isinstance(lin, torch.nn.Linear):
                    continue
                w = lin.weight.detach().numpy()
                k = w.shape[1]
                if act_order:
                    perm = perms.setdefault(shared_input.get(name.split(".")[-1], name), rng.permutation(k))
                    g_idx = np.empty(k, np.int64)
                    g_idx[perm] = np.arange(k) // group
                else:
                    g_idx = np.arange(k) // group
                codes, zeros, scales = quantize_asym(w, g_idx, bits)
                prefix = f"model.layers.{i}.{name}"
                if fmt == "gptq":
                    # [K / 8, N] along K; zero points [ng, N / 8] along N, stored minus one (v1)
                    packed[prefix + ".qweight"] = torch.from_numpy(pack_rows(codes, bits).T.copy())
                    packed[prefix + ".qzeros"] = torch.from_numpy(pack_rows((zeros - 1).T.copy(), bits))
                    packed[prefix + ".g_idx"] = torch.from_numpy(g_idx.astype(np.int32))
                else:
                    # [K, N / 8] and [ng, N / 8], along N in AutoAWQ's interleaved order
                    packed[prefix + ".qweight"] = torch.from_numpy(pack_rows(codes.T.copy(), bits, AWQ_ORDER))
                    packed[prefix + ".qzeros"] = torch.from_numpy(pack_rows(zeros.T.copy(), bits, AWQ_ORDER))
                packed[prefix + ".scales"] = torch.from_numpy(scales.T.copy())
                lin.weight.copy_(torch.from_numpy(dequantize(codes, zeros, scales, g_idx)))
    tied = hf.config.tie_word_embeddings
    sd = {k: v.half() for k, v in hf.state_dict().items() if not (tied and k == "lm_head.weight")}
    sd = {k: v for k, v in sd.items() if k.removesuffix(".weight") + ".qweight" not in packed} | packed
    for f in Path(directory).glob("*.safetensors*"):
        f.unlink()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(Path(directory) / "model.safetensors"))
    cfg = json.loads((Path(directory) / "config.json").read_text())
    cfg["quantization_config"] = (
        {"quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": act_order, "sym": False,
         "checkpoint_format": "gptq"}
        if fmt == "gptq"
        else {"quant_method": "awq", "bits": bits, "group_size": group, "version": "gemm", "zero_point": True}
    )  # fmt: skip
    (Path(directory) / "config.json").write_text(json.dumps(cfg))
    return cfg


def write_checkpoint(directory, fmt: str, act_order: bool):
    """The trained tiny model quantized by :func:`quantize_into`: ``(transformers model with the
    dequantized weights, config)``."""
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    directory.mkdir()
    for f in ("config.json", "tokenizer.json"):
        shutil.copy(MODEL / f, directory)
    return hf, quantize_into(directory, hf, fmt, act_order)


def recipe_file(tmp_path, cfg, scheme):
    data = {
        "model": {"name": f"imported-{cfg['model_type']}", "architecture": cfg["model_type"], "source": "local/none",
                  "config": {k: v for k, v in cfg.items() if v is not None}},
        "quantization": {"scheme": scheme},
        "build": {"context_window_size": CONTEXT, "prefill_chunk_size": 64, "max_batch_size": 1},
    }  # fmt: skip
    p = tmp_path / f"{scheme}.toml"
    p.write_text(_toml(data))
    return p


def test_pack_rows_is_the_gptq_layout():
    """The packer above against hand-packed words: 8 codes per int32 little end first (GPTQ),
    AutoAWQ's interleaved order puts column 2 in the second nibble."""
    codes = np.arange(8)[None, :]
    assert pack_rows(codes, 4)[0, 0] == 0x76543210
    assert pack_rows(codes, 4, AWQ_ORDER)[0, 0] == 0x75316420


@pytest.mark.parametrize(
    "fmt, act_order, scheme",
    [("gptq", True, "q4f16_autogptq"), ("awq", False, "q4f16_autoawq")],  # GPTQ without act-order: Qwen2 below
)
def test_imported_checkpoint_has_the_perplexity_of_its_dequantized_weights(fmt, act_order, scheme, tmp_path, cache_dir):
    hf, cfg = write_checkpoint(tmp_path / "ckpt", fmt, act_order)
    ids = text_ids(MODEL, HELDOUT, TOKENS)
    ref = reference_perplexity(hf, ids, CONTEXT)
    recipe = recipe_file(tmp_path, cfg, scheme)
    conv = cli("convert", recipe, "--weights", tmp_path / "ckpt", "--json", "--cache-dir", cache_dir)
    assert conv.exit_code == 0, conv.output
    weights = json.loads(conv.stdout)["weights"]
    ev = cli("eval", recipe, "--weights", weights, "--text", HELDOUT, "--context", CONTEXT,
             "--max-tokens", TOKENS, "--json", "--cache-dir", cache_dir)  # fmt: skip
    assert ev.exit_code == 0, ev.output
    ours = json.loads(ev.stdout.strip().splitlines()[-1])["perplexity"]
    print(
        f"{fmt} act_order={act_order}: transformers (dequantized) {ref:.5f}, ours {ours:.5f}"
    )  # 2048 tokens: equal to 5 digits
    assert abs(ours - ref) <= 1e-4 * ref
    index = json.loads((Path(weights) / "tensor-cache.json").read_text())
    recs = {r["name"]: r for s in index["records"] for r in s["records"]}
    assert recs["model.layers.0.self_attn.qkv_proj.q_zero"]["quantization"] == scheme
    assert recs["model.embed_tokens.weight"]["quantization"] == "q0f16"  # left fp16 by the tools
    assert ("model.layers.0.mlp.down_proj.perm" in recs) == act_order
    # bits per weight: 4-bit codes + fp16 scale and zero per 128 (the embedding fp16)
    assert 4.0 < index["metadata"]["BitsPerParam"] < 16.0


def _cfg(**qc):
    cfg = json.loads((MODEL / "config.json").read_text())
    cfg = {k: v for k, v in cfg.items() if v is not None}
    base = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}
    cfg["quantization_config"] = base | qc
    return cfg


@pytest.mark.parametrize(
    "scheme, qc, words",
    [
        ("q4f16_autogptq", {"group_size": 64}, ["groups of 64", "groups of 128"]),
        ("q4f16_autogptq", {"bits": 8}, ["8 bits", "q8f16_autogptq"]),
        ("q4f16_autogptq_g32", {}, ["groups of 128", "use scheme q4f16_autogptq"]),
        ("q4f16_1", {}, ["already quantized", "q4f16_autogptq"]),
        ("q4f16_autoawq", {}, ["imports awq", "'gptq'"]),
        ("q4f16_autoawq", {"quant_method": "awq", "version": "gemv"}, ["GEMM"]),
        ("q4f16_autogptq", {"checkpoint_format": "marlin"}, ["checkpoint_format"]),
    ],
)
def test_checkpoint_and_scheme_disagreeing_is_named(scheme, qc, words):
    data = {
        "model": {"name": "t", "architecture": "llama", "source": "x", "config": _cfg(**qc)},
        "quantization": {"scheme": scheme},
    }
    with pytest.raises(RecipeError) as e:
        parse_recipe(data, path="imp.toml")
    assert all(w in str(e.value) for w in words) and "imp.toml" in str(e.value), str(e.value)


def test_no_quantization_config_for_an_importing_scheme_is_an_error():
    cfg = _cfg()
    del cfg["quantization_config"]
    with pytest.raises(RecipeError, match="no quantization_config"):
        parse_recipe({"model": {"name": "t", "architecture": "llama", "source": "x", "config": cfg},
                      "quantization": {"scheme": "q4f16_autogptq"}})  # fmt: skip


def test_permuted_g_idx_without_desc_act_is_an_error(tmp_path):
    _, cfg = write_checkpoint(tmp_path / "ckpt", "gptq", act_order=True)
    cfg["quantization_config"]["desc_act"] = False
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    recipe = recipe_file(tmp_path, cfg, "q4f16_autogptq")
    r = cli("convert", recipe, "--weights", tmp_path / "ckpt", "--cache-dir", tmp_path / "c")
    assert r.exit_code != 0 and "desc_act" in r.output, r.output
    assert not list((tmp_path / "c").glob("**/tensor-cache.json"))


@pytest.mark.parametrize("case", ["qwen2", "phi3", "gemma3"])
def test_imported_gptq_checkpoint_of_each_layout_matches_transformers(case, tmp_path, cache_dir):
    """GPTQ checkpoints (act-order but Qwen2's) of architectures with q/k/v biases (Qwen2), checkpoint-fused
    qkv/gate_up (Phi-3) and Gemma's norms and GeGLU: prefill logits within 1e-4 x max of
    transformers on the dequantized weights (group 32: the tiny models' K is 64). Gemma's norm
    weights are stored as fp16(1 + w) by our loader (transformers computes 1 + fp16(w) in fp32;
    up to 2**-11 relative apart): the reference rounds them so."""
    from factories import make_checkpoint
    from test_convert_run import CASES, PROMPT

    from mlcbuild.runtime.artifact import open_local

    cfg = CASES[case]
    hf = make_checkpoint(tmp_path / "ckpt", cfg)
    qcfg = quantize_into(tmp_path / "ckpt", hf, "gptq", act_order=case != "qwen2", group=32)
    recipe = recipe_file(tmp_path, qcfg, "q4f16_autogptq_g32")
    conv = cli("convert", recipe, "--weights", tmp_path / "ckpt", "--json", "--cache-dir", cache_dir)
    assert conv.exit_code == 0, conv.output
    comp = cli("compile", recipe, "--target", "host", "--json", "--cache-dir", cache_dir)
    model, _ = open_local(json.loads(comp.stdout)["artifact"], json.loads(conv.stdout)["weights"])
    model.reset()
    got = model.prefill(PROMPT)
    with torch.no_grad():
        if case.startswith("gemma"):  # Gemma's norms multiply by 1 + w, which we store in fp16
            for name, p in hf.named_parameters():
                if "norm" in name:
                    p.copy_((1 + p).half().float() - 1)
        ref = hf(torch.tensor([PROMPT])).logits[0, -1].numpy()
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
