"""The x86/Arm linear kernels of the group schemes against NumPy: the int8-activation decode
GEMV (``group_int8_gemv``) and the x86 prefill matmul (``group_cpu_matmul``)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm

from mlcbuild.compiler.target import int8_dot_isa, tvm_target
from mlcbuild.kernels.int8_dot import activation_reference
from mlcbuild.kernels.int8_gemv import int8_gemv
from mlcbuild.quant import get_scheme
from mlcbuild.spec.target import load_target

HOST = tvm_target(load_target("host"))
HOST_ISA = int8_dot_isa(HOST)


def _needs(isa: str) -> None:
    """Skip unless this host runs ``isa``'s code (a VNNI x86 CPU also runs the AVX2 path)."""
    runs = {"avxvnni": ("avxvnni",), "avx2": ("avx2", "avxvnni")}[isa]
    if HOST_ISA not in runs:
        pytest.skip(f"this CPU has no {isa}")


def _gemv_lib(n, k, s, isa, target):
    from mlcbuild.compiler.target import has_gfni

    gfni = has_gfni(target)
    func = int8_gemv(n, k, s.bits, s.max_int, "float32", s.model_dtype, isa, gfni=gfni).with_attr(
        "global_symbol", "main"
    )
    return tvm.tirx.build(tvm.IRModule({"main": func}), target=target)


def _run_gemv(lib, n, k, s, seed):
    """``(got, ref, exact)``: the GEMV on random W [n, k] and x [1, 1, k] float32; the reference
    ``dequant(W) @ activation_reference(x)`` and the float ``dequant(W) @ x``, each [n]."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = (rng.standard_normal((1, 1, k)) * 3).astype(np.float32)
    qw, qs = s.quantize(w)
    dev = tvm.cpu()
    y = tvm.runtime.empty((1, 1, n), "float32", dev)
    lib["main"](*(tvm.runtime.tensor(a, dev) for a in (x, qw, qs)), y)
    dequant = s.dequantize(qw, qs, k)
    return y.numpy().reshape(n), dequant @ activation_reference(x.reshape(k)), dequant @ x.reshape(k)


@pytest.mark.parametrize(
    "n,k,scheme,isa",
    [
        (97, 100, "q4f32_1", "avx2"),  # rows not a multiple of 4, K zero-padded to 128
        (45, 96, "q4f32_1", "avxvnni"),  # 3 groups: one group per step (odd group count)
        (256, 576, "q4f16_1", "avxvnni"),  # fp16 scales
        (101, 96, "q8f32_1", "avxvnni"),
        (101, 96, "q8f32_1", "avx2"),  # int8 weights by the sign trick
        (64, 2048, "q4f32_1", "avx2"),  # two groups per step, pair sums added in 16 bits
        (64, 2048, "q4f32_1", "avxvnni"),  # 64 groups: two chunks of combined scales
    ],
)
def test_int8_gemv_matches_numpy(n, k, scheme, isa):
    """``y = dequant(W) @ activation_reference(x)`` within 1e-5 x max |y| (float summation order only)."""
    _needs(isa)
    s = get_scheme(scheme)
    got, ref, exact = _run_gemv(_gemv_lib(n, k, s, isa, HOST), n, k, s, n + k)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    # and the activation quantization is what separates it from the float GEMV (~0.5 %)
    assert 1e-4 < np.abs(got - exact).max() / np.abs(exact).max() < 2e-2


def _ggml_weight(scheme: str, n: int, k: int, seed: int):
    """A random ``[n, k]`` weight through llama.cpp's reference quantizer: ``(scheme, info,
    tensors in kernel order, dequantized [n, k] float32)``."""
    s = get_scheme(scheme)
    w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
    t = s.quantize(w)
    tensors = [t["q_weight"], t["q_scale"]] + ([t["q_min"]] if s.has_min else [])
    return s, s.dequantize_info(), tensors, s.dequantize(*tensors)


@pytest.mark.parametrize(
    "scheme,n,k",
    [
        ("q4f32_ggml_q4_0", 97, 576),  # zero point 8; 3 rows past 4 stretches
        ("q4f32_ggml_q4_1", 256, 576),  # the minimum, two groups per step
        ("q4f32_ggml_q4_1", 45, 96),  # one group per step, a tail
        ("q4f32_ggml_q4_1", 64, 1536),  # four groups per step on AVX2 (vphaddw)
        ("q8f32_ggml_q8_0", 101, 64),  # zero point 128
    ],
)
def test_int8_gemv_of_ggml_blocks_matches_numpy(scheme, n, k):
    """GGML's Q4_0 / Q4_1 / Q8_0 blocks (exact GGUF imports) run the int8 GEMV: ``y`` equals
    ``gguf``-style dequantization ``@ activation_reference(x)`` within 1e-5 x max |y|."""
    _needs("avx2")
    s, info, tensors, dequant = _ggml_weight(scheme, n, k, n * k)
    isa = HOST_ISA
    func = int8_gemv(n, k, s.bits, info["max_int"], "float32", "float16", isa, has_min=s.has_min)
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=HOST)
    x = (np.random.default_rng(k).standard_normal((1, 1, k)) * 3).astype(np.float32)
    dev = tvm.cpu()
    y = tvm.runtime.empty((1, 1, n), "float32", dev)
    lib["main"](*(tvm.runtime.tensor(a, dev) for a in (x, *tensors)), y)
    ref = dequant @ activation_reference(x.reshape(k))
    assert np.abs(y.numpy().reshape(n) - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("scheme", ["q4f32_ggml_q4_0", "q4f32_ggml_q4_1", "q8f32_ggml_q8_0"])
def test_prefill_matmul_of_ggml_blocks_matches_numpy(scheme):
    """The x86 prefill kernel on GGML blocks equals ``x @ dequant(W)^T`` in fp32 (1e-5 x max)."""
    from mlcbuild.kernels.cpu_matmul import prefill_matmul

    if HOST_ISA not in ("avx2", "avxvnni"):
        pytest.skip("x86 with AVX2 only")
    m, n, k = 7, 128, 96
    s, info, tensors, dequant = _ggml_weight(scheme, n, k, 5)
    func = prefill_matmul(n, k, s.bits, 32, info["max_int"], "float16", has_min=s.has_min)
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=HOST)
    x = np.random.default_rng(6).standard_normal((1, m, k)).astype(np.float32)
    dev = tvm.cpu()
    y = tvm.runtime.empty((1, m, n), "float32", dev)
    lib["main"](*(tvm.runtime.tensor(a, dev) for a in (x, *tensors)), y)
    ref = x[0] @ dequant.T
    assert np.abs(y.numpy()[0] - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize(
    "prologue,residual,scheme",
    [
        ("rms_norm", False, "q4f32_1"),
        ("swiglu", True, "q4f32_1"),
        ("swiglu", False, "q4f32_1"),
        (None, True, "q4f32_1"),
        ("rms_norm", False, "q4f32_ggml_q4_1"),  # the minimum term carries the norm's factor too
        ("swiglu", True, "q4f32_ggml_q4_1"),
    ],
)
def test_fused_int8_gemv_matches_numpy(prologue, residual, scheme):
    """The decode GEMV with its neighbours fused in (``passes.fuse_decode_gemv``): RMSNorm
    before it, SiLU x up before it, the residual add after. Reference: the kernel's float32
    input row (``x * w`` for RMSNorm, whose ``rsqrt`` factor scales the output; SiLU in float64),
    ``activation_reference``, the GEMV, + residual; within 1e-5 x max |y|."""
    _needs("avx2")
    n, k, eps = 200, 576, 1e-5
    rng = np.random.default_rng(7)
    if "ggml" in scheme:
        s, info, weights, dequant = _ggml_weight(scheme, n, k, 7)
        func = int8_gemv(n, k, 4, info["max_int"], "float32", "float16", HOST_ISA, prologue, eps, "float32",
                         residual, has_min=True)  # fmt: skip
    else:
        s = get_scheme(scheme)
        weights = list(s.quantize(rng.standard_normal((n, k)).astype(np.float32)))
        dequant = s.dequantize(*weights, k)
        func = int8_gemv(n, k, s.bits, s.max_int, "float32", "float32", HOST_ISA, prologue, eps, "float32", residual)
    x = (rng.standard_normal((1, 1, 2 * k if prologue == "swiglu" else k)) * 3).astype(np.float32)
    nw = (1 + 0.3 * rng.standard_normal(k)).astype(np.float32)
    res = rng.standard_normal((1, 1, n)).astype(np.float32)
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=HOST)
    dev = tvm.cpu()
    args = [x] + ([nw] if prologue == "rms_norm" else []) + weights + ([res] if residual else [])
    y = tvm.runtime.empty((1, 1, n), "float32", dev)
    lib["main"](*(tvm.runtime.tensor(a, dev) for a in args), y)
    row, scale = x.reshape(-1), 1.0
    if prologue == "rms_norm":
        scale = 1 / np.sqrt((row.astype(np.float64) ** 2).mean() + eps)
        row = row * nw
    elif prologue == "swiglu":
        gate = row[:k].astype(np.float64)
        row = (gate / (1 + np.exp(-gate)) * row[k:]).astype(np.float32)
    ref = dequant @ activation_reference(row) * scale + (res.reshape(n) if residual else 0)
    assert np.abs(y.numpy().reshape(n) - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("n,k", [(97, 64), (256, 576)])  # 97: a tail of 1 row past 4 stretches
def test_float_gemv_matches_numpy(n, k):
    """The q0f32 decode GEMV (``float_gemv``) within 1e-5 x max |y| of NumPy (summation order only)."""
    from mlcbuild.kernels.float_gemv import float_gemv

    _needs("avx2")
    rng = np.random.default_rng(n)
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((1, 1, k)).astype(np.float32)
    lib = tvm.tirx.build(tvm.IRModule({"main": float_gemv(n, k).with_attr("global_symbol", "main")}), target=HOST)
    y = tvm.runtime.empty((1, 1, n), "float32", tvm.cpu())
    lib["main"](tvm.runtime.tensor(x, tvm.cpu()), tvm.runtime.tensor(w, tvm.cpu()), y)
    ref = w @ x.reshape(k)
    assert np.abs(y.numpy().reshape(n) - ref).max() <= 1e-5 * np.abs(ref).max()


def _vectorized(fn, xs: np.ndarray) -> np.ndarray:
    """``fn`` (a TIR expression builder from ``tir_math``) over float32 ``xs`` in an 8-lane
    vectorized loop on host; asserts no libm call per lane."""
    from tvm.script import tirx as T

    n = len(xs)

    @T.prim_func(s_tir=False)
    def main(x: T.Buffer((n,), "float32"), y: T.Buffer((n,), "float32")):
        for i0 in range(n // 8):
            for i1 in T.vectorized(8):
                y[i0 * 8 + i1] = fn(x[i0 * 8 + i1])

    lib = tvm.tirx.build(tvm.IRModule({"main": main}), target=HOST)
    assert "expf" not in lib.inspect_source("s")
    y = tvm.runtime.empty((n,), "float32", tvm.cpu())
    lib["main"](tvm.runtime.tensor(xs, tvm.cpu()), y)
    return y.numpy()


def test_fast_exp_relative_error():
    """``tir_math.fast_exp`` (Cephes expf) within 2e-7 of float64 ``exp`` on [-87, 88]; vectorized."""
    from mlcbuild.kernels.tir_math import fast_exp

    xs = np.linspace(-87, 88, 1 << 16).astype(np.float32)
    ref = np.exp(xs.astype(np.float64))
    assert (np.abs(_vectorized(fast_exp, xs) - ref) / ref).max() < 2e-7


def test_fast_tanh_absolute_error():
    """``tir_math.fast_tanh`` within 3e-7 of float64 ``tanh`` on [-60, 60] (the attention
    soft-cap's: scores / cap); exactly +-1 far out."""
    from mlcbuild.kernels.tir_math import fast_tanh

    xs = np.concatenate([np.linspace(-60, 60, 1 << 16), np.linspace(-1e-3, 1e-3, 1 << 10)]).astype(np.float32)
    ys = _vectorized(fast_tanh, xs)
    assert np.abs(ys - np.tanh(xs.astype(np.float64))).max() < 3e-7
    assert ys[0] == -1 and ys[(1 << 16) - 1] == 1


def test_activation_reference_is_exact_on_int8_grid():
    x = np.array([[127.0, -3.0, 0.0, 5.0] * 8 + [0.0] * 32], np.float32)
    np.testing.assert_array_equal(activation_reference(x), x)


def test_arm_dotprod_kernel_compiles_to_sdot():
    """aarch64 with the dot-product extension (android-cpu): sdot in the machine code, no
    workspace calls. Compiled only: this project has no Arm machine to run it on."""
    target = tvm_target(load_target("android-cpu"))
    assert int8_dot_isa(target) == "dotprod"
    func = int8_gemv(97, 100, 4, 7, "float16", "float16", "dotprod").with_attr("global_symbol", "main")
    asm = tvm.tirx.build(tvm.IRModule({"main": func}), target=target).inspect_source("s")
    assert asm.count("sdot") >= 8 and "AllocWorkspace" not in asm


# /proc/cpuinfo Features of an Arm Neoverse V1 (Graviton 3) and a Cortex-A55-class core
NEOVERSE_V1 = frozenset("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp sve i8mm bf16".split())
CORTEX_A53 = frozenset("fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid".split())


@pytest.mark.parametrize(
    "flags,mattr,isa",
    [(NEOVERSE_V1, ["+dotprod", "+i8mm", "+sve", "+fullfp16"], "dotprod"), (CORTEX_A53, [], None)],
    ids=["neoverse-v1", "cortex-a53"],
)
def test_arm_host_features_from_cpuinfo(flags, mattr, isa):
    """An aarch64 host's ISA comes from the kernel's ``Features`` (dotprod, i8mm, SVE, fp16),
    never from a vendor or LLVM's CPU name; the int8 GEMVs take ``sdot`` only where
    ``asimddp`` is reported."""
    from mlcbuild.compiler.target import arm_host_features

    assert arm_host_features(flags) == mattr
    attrs = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "generic"}
    assert int8_dot_isa(tvm.target.Target({**attrs, **({"mattr": mattr} if mattr else {})})) == isa


@pytest.mark.parametrize(
    "m,n,k,scheme",
    [
        (7, 128, 100, "q4f32_1"),  # 4-row blocks + 3 tail rows, K zero-padded to 128
        (4, 64, 576, "q4f16_1"),  # fp16 scales
        (9, 192, 96, "q8f32_1"),
        (1, 64, 64, "q8f16_1"),  # a single row: tail only
    ],
)
def test_prefill_matmul_matches_numpy(m, n, k, scheme):
    """The x86 prefill kernel (``group_cpu_matmul``) equals ``x @ dequant(W)^T`` in fp32 (1e-5 x max)."""
    from mlcbuild.kernels.cpu_matmul import prefill_matmul

    if HOST_ISA not in ("avx2", "avxvnni"):
        pytest.skip("x86 with AVX2 only")
    s = get_scheme(scheme)
    rng = np.random.default_rng(m * n + k)
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((1, m, k)).astype(np.float32)
    qw, qs = s.quantize(w)
    func = prefill_matmul(n, k, s.bits, s.group_size, s.max_int, str(qs.dtype)).with_attr("global_symbol", "main")
    lib = tvm.tirx.build(tvm.IRModule({"main": func}), target=HOST)
    dev = tvm.cpu()
    y = tvm.runtime.empty((1, m, n), "float32", dev)
    lib["main"](*(tvm.runtime.tensor(a, dev) for a in (x, qw, qs)), y)
    ref = x[0] @ s.dequantize(qw, qs, k).T
    assert np.abs(y.numpy()[0] - ref).max() <= 1e-5 * np.abs(ref).max()


# k = 1024: the staged weight copy (rows 4 KiB apart, see prefill_matmul_float)
@pytest.mark.parametrize("m,n,k", [(7, 128, 100), (1, 64, 64), (130, 192, 96), (5, 128, 1024)])
def test_prefill_matmul_float_matches_numpy(m, n, k):
    """The q0f32 prefill kernel (``prefill_matmul_float``) equals ``x @ W^T`` (1e-5 x max)."""
    from mlcbuild.kernels.cpu_matmul import prefill_matmul_float

    if HOST_ISA not in ("avx2", "avxvnni"):
        pytest.skip("x86 with AVX2 only")
    rng = np.random.default_rng(m + n + k)
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((1, m, k)).astype(np.float32)
    lib = tvm.tirx.build(
        tvm.IRModule({"main": prefill_matmul_float(n, k).with_attr("global_symbol", "main")}), target=HOST
    )
    dev = tvm.cpu()
    y = tvm.runtime.empty((1, m, n), "float32", dev)
    lib["main"](tvm.runtime.tensor(x, dev), tvm.runtime.tensor(w, dev), y)
    ref = x[0] @ w.T
    assert np.abs(y.numpy()[0] - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("m,n,k", [(13, 16, 2048), (1, 8, 2056), (6, 24, 4096)])
def test_prefill_matmul_float_dot_matches_numpy(m, n, k):
    """The AVX-512 q0f32 prefill kernel (``prefill_matmul_float_dot``: 6 x 4 blocks of FMAs in 24
    accumulators) equals ``x @ W^T`` (1e-5 x max), its tail rows included; compiled for an
    AVX-512 target anywhere (its assembly checked for FMAs into ymm16-31, which only AVX-512
    encodes), run where the CPU has AVX-512."""
    from mlcbuild.compiler.target import has_avx512
    from mlcbuild.kernels.cpu_matmul import prefill_matmul_float_dot

    avx512 = ["+avx512f", "+avx512vl", "+prefer-256-bit"]
    target = tvm.target.Target(
        {"kind": "llvm", "mtriple": "x86_64-unknown-linux-gnu", "mcpu": "x86-64-v3", "mattr": avx512}
    )
    lib = tvm.tirx.build(
        tvm.IRModule({"main": prefill_matmul_float_dot(n, k).with_attr("global_symbol", "main")}), target=target
    )
    assert re.search(r"vfmadd231ps\t%ymm\d+, %ymm\d+, %ymm(1[6-9]|2\d|3[01])\b", lib.inspect_source("asm"))
    if not has_avx512(HOST):
        pytest.skip("the CPU has no AVX-512 (compiled and checked only)")
    rng = np.random.default_rng(m + n + k)
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.standard_normal((1, m, k)).astype(np.float32)
    dev = tvm.cpu()
    y = tvm.runtime.empty((1, m, n), "float32", dev)
    lib["main"](tvm.runtime.tensor(x, dev), tvm.runtime.tensor(w, dev), y)
    ref = x[0] @ w.T
    assert np.abs(y.numpy()[0] - ref).max() <= 1e-5 * np.abs(ref).max()


# /proc/cpuinfo flags of the three x86 kinds the project meets (a subset: what decides)
ZEN4 = frozenset("avx2 fma avx512f avx512bw avx512vl avx512dq avx512_vnni avx512_bf16".split())  # no avx_vnni
CLIENT_INTEL = frozenset("avx2 fma avx_vnni".split())
AVX2_ONLY = frozenset("avx2 fma".split())


@pytest.mark.parametrize(
    "flags,isa,needs",
    [
        (ZEN4, "avxvnni", {"avx512_vnni", "avx512vl"}),
        (ZEN4 | {"gfni"}, "avxvnni", {"avx512_vnni", "avx512vl", "gfni"}),
        (CLIENT_INTEL, "avxvnni", {"avx_vnni"}),
        (AVX2_ONLY, "avx2", set()),
    ],
    ids=["avx512-vnni", "avx512-vnni-gfni", "avx-vnni", "avx2"],
)
@pytest.mark.parametrize("scheme", ["q4f32_1", "q8f32_1"])
def test_int8_gemv_on_each_x86_isa(flags, isa, needs, scheme):
    """The host target of a Zen 4 / Intel server (AVX512-VNNI, no AVX-VNNI; with and without
    GFNI), a client Intel (AVX-VNNI) and an AVX2-only CPU: the int8 path chosen by instruction
    set, the GEMV's assembly has that path's instructions (EVEX/VEX ``vpdpbusd`` on ymm, or
    ``vpmaddubsw``, with ``vpsignb`` for int8 weights; int4 high nibbles by ``vgf2p8affineqb``
    with GFNI), and where this CPU has the instructions the result equals NumPy's within the
    bound above."""
    from mlcbuild.compiler.target import x86_host_features
    from mlcbuild.spec.target import linux_cpu_flags

    if "x86" not in str(HOST.attrs["mtriple"]):
        pytest.skip("an x86 host")
    mattr = x86_host_features(flags)
    attrs = {"kind": "llvm", "mtriple": str(HOST.attrs["mtriple"]), "mcpu": "x86-64-v3", "num-cores": 2}
    target = tvm.target.Target({**attrs, **({"mattr": mattr} if mattr else {})})
    assert int8_dot_isa(target) == isa
    n, k, s = 64, 256, get_scheme(scheme)
    lib = _gemv_lib(n, k, s, isa, target)
    asm = lib.inspect_source("asm")
    assert ("vpdpbusd" if isa == "avxvnni" else "vpmaddubsw") in asm
    if isa == "avx2":
        assert "vpdpbusd" not in asm and ("vpsignb" in asm) == (s.bits == 8)
    dots = [ln for ln in asm.splitlines() if "vpdpbusd" in ln]
    assert all("ymm" in ln for ln in dots)  # the 256-bit form, also on AVX-512 machines
    assert ("vgf2p8affineqb" in asm) == ("gfni" in flags and s.bits == 4)
    if not needs <= linux_cpu_flags():
        return  # compiled and inspected only
    got, ref, _ = _run_gemv(lib, n, k, s, 3)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize(
    "scheme,m,n,k",
    [
        ("q4f32_1", 7, 128, 100),  # 4-row block + 3 tail rows, K zero-padded to 128
        ("q4f16_1", 130, 192, 576),  # fp16 scales; 32 blocks + 2 tail rows
        ("q8f32_1", 9, 64, 96),
        ("q4f32_ggml_q4_0", 5, 64, 64),  # zero point 8
        ("q4f32_ggml_q4_1", 6, 128, 1536),  # the minimum term
        ("q8f32_ggml_q8_0", 1, 64, 64),  # zero point 128, a single row
    ],
)
def test_int8_prefill_matmul_matches_numpy(scheme, m, n, k):
    """The int8 prefill kernel (``int8_matmul``, this host's ISA: VNNI or AVX2) equals
    ``activation_reference(x) @ dequant(W)^T`` (every row quantized as the decode GEMV quantizes
    its one) within 1e-5 x max |y|."""
    from mlcbuild.kernels.int8_matmul import prefill_matmul_int8

    _needs("avx2")
    if "ggml" in scheme:
        s, info, tensors, dequant = _ggml_weight(scheme, n, k, m + n)
        max_int, has_min, scale_dtype = info["max_int"], s.has_min, "float16"
    else:
        s = get_scheme(scheme)
        tensors = list(s.quantize(np.random.default_rng(m + n).standard_normal((n, k)).astype(np.float32)))
        dequant, max_int, has_min, scale_dtype = s.dequantize(*tensors, k), s.max_int, False, str(tensors[1].dtype)
    func = prefill_matmul_int8(n, k, s.bits, max_int, scale_dtype, has_min, HOST_ISA).with_attr("global_symbol", "main")
    lib = tvm.tirx.build(tvm.IRModule({"main": func}), target=HOST)
    x = (np.random.default_rng(k).standard_normal((1, m, k)) * 2).astype(np.float32)
    dev = tvm.cpu()
    y = tvm.runtime.empty((1, m, n), "float32", dev)
    lib["main"](*(tvm.runtime.tensor(a, dev) for a in (x, *tensors)), y)
    ref = activation_reference(x[0]) @ dequant.T
    assert np.abs(y.numpy()[0] - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("scheme", ["q4f32_1", "q8f32_1"])
@pytest.mark.parametrize("flags", [ZEN4, CLIENT_INTEL, AVX2_ONLY], ids=["avx512-vnni", "avx-vnni", "avx2"])
def test_int8_prefill_matmul_on_each_x86_isa(flags, scheme):
    """Every x86 host kind gets the int8 prefill matmul (dispatch by instruction set), and its
    assembly has that path's dot products: 256-bit ``vpdpbusd`` with VNNI; ``vpmaddubsw`` +
    ``vpmaddwd`` with AVX2 (and ``vpsignb`` for int8 weights, the sign trick). The numbers are
    checked on this host's path by ``test_int8_prefill_matmul_matches_numpy``."""
    from mlcbuild.compiler.passes.dispatch_kernels import group_kernel
    from mlcbuild.compiler.target import x86_host_features

    if "x86" not in str(HOST.attrs["mtriple"]):
        pytest.skip("an x86 host")
    attrs = {"kind": "llvm", "mtriple": str(HOST.attrs["mtriple"]), "mcpu": "x86-64-v3", "num-cores": 2}
    mattr = x86_host_features(flags)
    target = tvm.target.Target({**attrs, **({"mattr": mattr} if mattr else {})})
    isa = int8_dot_isa(target)
    name, func = group_kernel(get_scheme(scheme).dequantize_info(), "prefill", 64, 256, "float32", isa)
    assert name == "prefill_matmul_int8"
    asm = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target).inspect_source(
        "asm"
    )
    if isa == "avxvnni":
        dots = [ln for ln in asm.splitlines() if "vpdpbusd" in ln]
        assert dots and all("ymm" in ln for ln in dots)
    else:
        assert "vpdpbusd" not in asm and "vpmaddubsw" in asm and "vpmaddwd" in asm
        assert ("vpsignb" in asm) == scheme.startswith("q8")
