"""Dequantization is fused into the matmul/GEMV kernels: no kernel writes a dequantized weight."""

from __future__ import annotations

import re

import pytest
from factories import recipe_data, tiny_config
from tvm import tirx

from mlcbuild.compiler.export import lower_module
from mlcbuild.spec.recipe import parse_recipe
from mlcbuild.spec.target import load_target

REDUCTION = re.compile(r'T\.axis\.reduce|T\.axis\.remap\("[SR]*R')


@pytest.mark.parametrize(
    "scheme,target",
    [("q4f16_1", "host"), ("q4f32_1", "host"), ("q4f16_1", "s24"), ("q4f16_0", "s24"), ("q3f16_1", "iphone15pro")],
)
def test_dequantize_fused_into_consumers(scheme, target):
    cfg = tiny_config(tie_word_embeddings=True)
    mod = lower_module(parse_recipe(recipe_data(cfg, scheme)), load_target(target))
    kernels = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    standalone = [n for n in kernels if n.startswith("dequantize") and n != "dequantize_take"]
    assert not standalone, f"dequantize kernels not fused: {standalone}"
    packed = {n: f.script() for n, f in kernels.items() if '"uint32"' in f.script()}
    # 2 layers x (qkv, o, gate_up, down) at prefill, decode and batch_* + the tied LM head + the embedding gather
    assert len(packed) >= 8
    for name, text in packed.items():
        if name == "dequantize_take":  # the embedding: gathers rows and dequantizes only those
            assert not REDUCTION.search(text)
            continue
        if name.startswith("gemv_int8"):  # one-token linears with int8 activations: dot products on packed bytes
            assert re.search(r"vpdpbusd|pmadd|sdot", text), name
            continue
        if name.startswith("prefill_matmul"):  # x86 prefill: our kernel dequantizes tiles of packed words
            assert "q_weight[" in text, name
            continue
        assert "matmul" in name and "dequantize" in name, name
        assert REDUCTION.search(text), f"{name} reads packed weights but does no reduction"


@pytest.mark.parametrize("target", ["host", "s24"])
def test_zero_point_dequantize_fused_into_consumers(target):
    """An imported act-order GPTQ model (zero points, input permutation): dequantize + matmul
    fused into one kernel per linear, the permutation a gather of the activations."""
    cfg = tiny_config(tie_word_embeddings=True)
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": True, "sym": False}
    mod = lower_module(parse_recipe(recipe_data(cfg, "q4f16_autogptq_g32")), load_target(target))
    names = [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]
    assert not [n for n in names if n.startswith("dequantize")], names
    fused = [n for n in names if "dequantize" in n and "matmul" in n]
    assert len(fused) >= 12 and any(n.startswith("take") for n in names), names  # 4 linears x 3 entry shapes


def test_cpu_kernels_keep_per_buffer_alias_info():
    """Every host kernel is ``noalias``, so LLVM keeps distinct alias tags per buffer.

    One function without it (the KV cache's ``tree_attn_paged_kv_cpu``) makes TVM's codegen
    tag every buffer access of the module ``tvm-alias`` and kernels store their
    accumulators every step (``passes.mark_noalias``).
    """
    import tvm

    from mlcbuild.compiler.target import tvm_target

    desc = load_target("host")
    mod = lower_module(parse_recipe(recipe_data(tiny_config(), "q4f32_1")), desc)
    prims = {gv: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    device = [gv.name_hint for gv, f in prims.items() if not f.attrs.get("tirx.is_host_func")]
    assert "tree_attn_paged_kv_cpu" in device
    assert all(prims[gv].attrs.get("tirx.noalias") for gv in prims if gv.name_hint in device)
    ll = tvm.tirx.build(tvm.IRModule(prims), target=tvm_target(desc)).inspect_source("ll")
    assert '!"tvm-alias"' not in ll
