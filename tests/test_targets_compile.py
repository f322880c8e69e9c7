"""A tiny model compiles for every target in targets/, in that target's output form."""

from __future__ import annotations

import json
import tarfile

import pytest
from factories import recipe_data, tiny_config
from test_parity import GEMMA2, GEMMA3

from mlcbuild.artifacts.cache import Cache
from mlcbuild.artifacts.compile import compile_recipe
from mlcbuild.artifacts.info import read_build
from mlcbuild.artifacts.stamp import read_library_stamp
from mlcbuild.errors import CompileError
from mlcbuild.spec.recipe import parse_recipe
from mlcbuild.spec.target import list_targets

TARGETS = [d.name for d in list_targets()]
# Shapes a user might bring: 5 heads of 16 with 1 KV head (GQA 5), a vocabulary of 1001,
# an MLP width (136) that is a multiple of neither group size (32, 40) so q3/q4 pad K.
ODD = tiny_config(hidden_size=80, num_attention_heads=5, num_key_value_heads=1, intermediate_size=136, vocab_size=1001)
ENTRY_FUNCTIONS = ("embed", "prefill", "decode", "batch_prefill", "batch_decode", "create_tir_paged_kv_cache", "_metadata",
                   "alloc_embedding_tensor", "softmax_with_temperature", "apply_logit_bias_inplace",
                   "apply_penalty_inplace", "apply_bitmask_inplace")  # fmt: skip


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("scheme", ["q4f16_1", "q3f16_1"])
def test_tiny_model_compiles_for_every_target(target, scheme, cache_dir):
    recipe = parse_recipe(recipe_data(ODD, scheme, name="Odd-Tiny"))
    desc = next(d for d in list_targets() if d.name == target)
    if desc.device.get("float16") is False:  # pocl: no cl_khr_fp16; the float32 form is named
        with pytest.raises(CompileError, match=scheme.replace("f16", "f32")):
            compile_recipe(recipe, desc, cache=Cache(cache_dir))
        return
    res = compile_recipe(recipe, desc, cache=Cache(cache_dir))
    build = read_build(res.artifact).to_json()
    lib = res.artifact / build["library"]["file"]
    assert lib.is_file() and lib.stat().st_size > 0
    assert build["stamp"]["tvm"] == "0.27.0.post1" and build["stamp"]["llvm"]
    assert read_library_stamp(lib) == build["abi_stamp"]  # readable from the library file alone
    assert build["inputs"]["target"]["tvm"]["kind"] == desc.kind
    chat = json.loads((res.artifact / "mlc-chat-config.json").read_text())
    assert chat["quantization"] == scheme and chat["vocab_size"] == 1001 and chat["model_type"] == "llama"
    from mlcbuild.artifacts.mlc_contract import check_artifact

    assert [f for f in check_artifact(res.artifact) if f.level == "missing"] == []  # verify --mlc
    if desc.output_format == "tar":
        prefix = f"odd_tiny_{scheme}_"
        assert build["library"]["system_lib_prefix"] == prefix
        with tarfile.open(lib) as tf:
            blob = b"".join(tf.extractfile(m).read() for m in tf.getmembers() if m.isfile())
        assert f"{prefix}__tvm_ffi__library_bin".encode() in blob
        for fn in ENTRY_FUNCTIONS:
            assert fn.encode() in blob
        if desc.is_gpu:  # device code is in the library (OpenCL C / Metal source)
            assert (b"__kernel" if desc.kind == "opencl" else b"kernel void") in blob
    else:
        import tvm
        from tvm import relax

        vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
        for fn in ENTRY_FUNCTIONS:
            assert vm.module.get_function(fn, query_imports=True) is not None  # MLC: GetFunction(name, true)


# The architectures whose graphs differ most from Llama's (Phi-3 and Mistral export the same
# graph as Llama, Qwen2 adds only a bias add to it: left out for suite time).
ARCH_CONFIGS = {
    "qwen3": tiny_config(model_type="qwen3", head_dim=32),  # q/k norm, head_dim != hidden / heads
    # Gemma 3: RoPE in the model (per-layer bases), GeGLU, four norms, soft-capped logits,
    # local layers with a window (8) under the context (128): our attention kernels
    "gemma3_text": GEMMA3,
    # Gemma 2: windowed layers and soft-capped attention in our attention kernels
    "gemma2": GEMMA2,
}


# One target per code generator beyond host (which the parity tests build for every
# architecture): OpenCL (s24; pixel8 is the same codegen), Metal, aarch64 CPU. Every target
# for every architecture doubled the suite's compile time for the same kernels. Gemma 3 and
# Gemma 2 (windows, soft-caps: our GPU attention kernels) share the GPU code generators.
ARCH_TARGETS = [
    (arch, t)
    for arch, targets in (
        ("qwen3", ("s24", "iphone15pro", "android-cpu")),
        ("gemma3_text", ("s24",)),
        ("gemma2", ("iphone15pro", "android-cpu")),
    )
    for t in targets
    if t in TARGETS
]


@pytest.mark.parametrize("arch,target", ARCH_TARGETS)
def test_every_architecture_compiles_for_every_codegen(arch, target, cache_dir):
    """Each architecture beyond Llama, tiny, at q4f16_1, for each code generator."""
    recipe = parse_recipe(recipe_data(ARCH_CONFIGS[arch], "q4f16_1", name=f"tiny-{arch}"))
    desc = next(d for d in list_targets() if d.name == target)
    res = compile_recipe(recipe, desc, cache=Cache(cache_dir))
    build = read_build(res.artifact).to_json()
    assert (res.artifact / build["library"]["file"]).stat().st_size > 0
    assert json.loads((res.artifact / "mlc-chat-config.json").read_text())["model_type"] == arch
    extra = {
        "qwen3": "q_norm.weight",
        "gemma3_text": "pre_feedforward_layernorm.weight",
        "gemma2": "pre_feedforward_layernorm.weight",
    }.get(arch)
    assert extra is None or any(p["name"].endswith(extra) for p in build["params"])
    if arch.startswith("gemma") and desc.is_gpu:  # our GPU attention (its host-side check's message)
        with tarfile.open(res.artifact / build["library"]["file"]) as tf:
            blob = b"".join(tf.extractfile(m).read() for m in tf.getmembers() if m.isfile())
        assert b"mlcbuild's GPU decode attention" in blob
