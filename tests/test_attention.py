"""Our prefill and decode attention kernels equal TVM's kernels they replace (CPU), or a NumPy
reference with sliding window and soft-cap (CPU and GPU: the GPU kernels run as OpenCL C on
PoCL, :mod:`opencl`), and builds use them."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from factories import recipe_data, tiny_config
from tvm import tirx
from tvm.relax.frontend.nn.llm._decode_kernels import _attention_decode_cpu
from tvm.relax.frontend.nn.llm._prefill_kernels import _attention_prefill_cpu, _attention_prefill_ragged_cpu

from mlcbuild.compiler.export import lower_module
from mlcbuild.compiler.target import tvm_target
from mlcbuild.kernels.attention import paged_decode, paged_prefill, ragged_prefill
from mlcbuild.kernels.rope_cpu import split_rotary_cpu
from mlcbuild.spec.recipe import parse_recipe
from mlcbuild.spec.target import load_target


def _call(func, q, arrays, scalars):
    """Build ``func`` for host and call it: q, then ``arrays`` (NumPy), out, lse, then ``scalars``;
    a GPU kernel (thread-bound) runs on PoCL instead (:func:`opencl.run_opencl`)."""
    if "blockIdx.x" in func.script():
        from opencl import pocl_problem, run_opencl

        if problem := pocl_problem():
            pytest.skip(problem)

        rows, h_q, d = q.shape
        bufs = [p for p in func.params if isinstance(p.ty, tirx.BufferType)]
        names = [p.name for p in func.params if not isinstance(p.ty, tirx.BufferType)]
        out = np.zeros((rows, h_q, d), "float32"), np.zeros((rows, h_q), "float32")
        res = run_opencl(
            func,
            {b.name: a for b, a in zip(bufs, (q, *arrays, *out), strict=True)},
            dict(zip(names, scalars, strict=True)),
        )
        return res[bufs[-2].name], res[bufs[-1].name]
    target = tvm_target(load_target("host"))
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
    dev = tvm.cpu()
    rows, h_q, d = q.shape
    out = tvm.runtime.empty((rows, h_q, d), "float32", dev)
    lse = tvm.runtime.empty((rows, h_q), "float32", dev)
    lib["main"](*(tvm.runtime.tensor(a, dev) for a in (q, *arrays)), out, lse, *scalars)
    return out.numpy(), lse.numpy()


def _run(func, q, k, v, indptr, causal):
    zeros = np.zeros(q.shape[0], "int32")
    d = q.shape[2]
    return _call(
        func, q, [indptr, k, v, indptr, zeros, zeros[: len(indptr) - 1]], [causal, 0, 1.0, 10000.0, 1 / np.sqrt(d)]
    )


@pytest.mark.parametrize("gpu", [False, True])
@pytest.mark.parametrize("causal", [1, 0])
def test_matches_tvm_kernel(causal, gpu):
    h_kv, h_q, d = 2, 6, 24  # GQA 3, a head dim that is not a multiple of 16
    lens = [1, 7, 33]
    indptr = np.array([0, *np.cumsum(lens)], "int32")
    rng = np.random.default_rng(0)
    q = rng.standard_normal((indptr[-1], h_q, d)).astype("float32")
    k = rng.standard_normal((indptr[-1], h_kv, d)).astype("float32")
    v = rng.standard_normal((indptr[-1], h_kv, d)).astype("float32")
    ref = _run(_attention_prefill_ragged_cpu(h_kv, h_q, d, d, "float32", {}), q, k, v, indptr, causal)
    ours = _run(ragged_prefill(h_kv, h_q, d, "float32", gpu=gpu), q, k, v, indptr, causal)
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-5)
    np.testing.assert_allclose(ours[1], ref[1], atol=1e-5)


def _run_decode(func, q, pages, indptr, values, last_len):
    zeros = np.zeros(q.shape[0], "int32")
    return _call(func, q, [pages, indptr, values, last_len, zeros, zeros], [0, 1.0, 1e4, 0.3])


@pytest.mark.parametrize("gpu", [False, True])
def test_decode_matches_tvm_kernel(gpu):
    """Three sequences: 1 token, a full page plus 5, and an empty one; pages out of order."""
    h_kv, h_q, d, page = 2, 6, 24, 16
    rng = np.random.default_rng(1)
    pages = rng.standard_normal((6, 2, h_kv, page, d)).astype("float32")
    indptr = np.array([0, 1, 3, 3], "int32")
    values = np.array([4, 0, 2], "int32")
    last_len = np.array([1, 5, 0], "int32")
    q = rng.standard_normal((3, h_q, d)).astype("float32")
    ref = _run_decode(
        _attention_decode_cpu(h_kv, h_q, d, "float32", False, {}, page), q, pages, indptr, values, last_len
    )
    ours = _run_decode(paged_decode(h_kv, h_q, d, page, "float32", gpu=gpu), q, pages, indptr, values, last_len)
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-5)
    np.testing.assert_allclose(ours[1][:2], ref[1][:2], atol=1e-4)
    assert (ours[1][2] == -5e4).all() and (ours[0][2] == 0).all()  # empty: zeros, lse -5e4


def _paged(h_kv, d, page, lens, rng):
    """Pages for sequences of ``lens`` keys, shuffled: (pages, indptr, values, last_len, keys
    ``[sum lens, h_kv, d]`` and values in sequence order)."""
    n_pages = [-(-n // page) for n in lens]
    order = rng.permutation(sum(n_pages)).astype("int32")
    pages = rng.standard_normal((sum(n_pages) + 1, 2, h_kv, page, d)).astype("float32")
    indptr = np.array([0, *np.cumsum(n_pages)], "int32")
    last = np.array([n - (p - 1) * page if p else 0 for n, p in zip(lens, n_pages, strict=True)], "int32")
    kv = [[], []]
    for s, n in enumerate(lens):
        for t in range(n):
            page_id = order[indptr[s] + t // page]
            for i in (0, 1):
                kv[i].append(pages[page_id, i, :, t % page])
    return pages, indptr, order, last, np.array(kv[0]), np.array(kv[1])


@pytest.mark.parametrize("gpu", [False, True])
@pytest.mark.parametrize("causal", [0, 1])
def test_paged_prefill_matches_tvm_kernel(causal, gpu):
    """Two sequences (3 queries over 21 cached keys, 5 over 16), pages out of order."""
    h_kv, h_q, d, page = 2, 4, 32, 16
    rng = np.random.default_rng(2)
    pages, indptr, values, last, _, _ = _paged(h_kv, d, page, [21, 16], rng)
    q_indptr = np.array([0, 3, 8], "int32")
    q = rng.standard_normal((8, h_q, d)).astype("float32")
    zeros = np.zeros(8, "int32")
    arrays = [q_indptr, pages, indptr, values, last, zeros[:2], zeros]
    scalars = [causal, 0, 1.0, 1e4, 0.2]
    ref = _call(_attention_prefill_cpu(h_kv, h_q, d, "float32", False, {}, page), q, arrays, scalars)
    ours = _call(paged_prefill(h_kv, h_q, d, page, "float32", gpu=gpu), q, arrays, scalars)
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-5)
    np.testing.assert_allclose(ours[1], ref[1], atol=1e-4)


def _windowed_reference(q, q_pos, k, v, k_pos, window, scale, softcap):
    """NumPy attention of queries at ``q_pos`` over keys at ``k_pos``: key visible iff
    ``q_pos - window < k_pos <= q_pos`` (HF's sliding-window causal mask), scores soft-capped
    (``cap * tanh(s / cap)``, HF Gemma 2) if ``softcap``; (out, lse base 2)."""
    group = q.shape[1] // k.shape[1]
    kk, vv = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    s = np.einsum("qhd,khd->qhk", q.astype("float64"), kk) * scale
    if softcap:
        s = softcap * np.tanh(s / softcap)
    seen = (k_pos[None, :] <= q_pos[:, None]) & (k_pos[None, :] > q_pos[:, None] - window)
    s = np.where(seen[:, None, :], s, -np.inf)
    m = s.max(-1, keepdims=True)
    p = np.exp(s - m)
    out = np.einsum("qhk,khd->qhd", p / p.sum(-1, keepdims=True), vv)
    return out, (m[..., 0] + np.log(p.sum(-1))) / np.log(2)


@pytest.mark.parametrize("gpu", [False, True])
@pytest.mark.parametrize("softcap", [0.0, 0.5])
@pytest.mark.parametrize("kernel", ["ragged", "paged_prefill", "decode"])
def test_sliding_window_and_softcap(kernel, softcap, gpu):
    """With ``window``: a negative ``sm_scale`` (a windowed layer) restricts each query to the
    ``window`` positions up to its own, as NumPy does; a positive one attends to every key.
    With ``softcap``: scores capped as Gemma 2's. CPU kernels, and GPU kernels on PoCL."""
    h_kv, h_q, d, page, window, scale = 2, 4, 32, 16, 7, 0.2
    rng = np.random.default_rng(3)
    if kernel == "ragged":  # a 20-token chunk starting at position 30, itself causal
        q = rng.standard_normal((20, h_q, d)).astype("float32")
        k, v = (rng.standard_normal((20, h_kv, d)).astype("float32") for _ in range(2))
        q_pos = k_pos = np.arange(30, 50, dtype="int32")
        indptr = np.array([0, 20], "int32")
        func = ragged_prefill(h_kv, h_q, d, "float32", window, softcap, gpu)
        arrays, tail = [indptr, k, v, indptr, q_pos, np.array([30], "int32")], [1, 0, 1.0, 1e4]
    else:  # 37 cached keys at positions 0..36; prefill queries at 37..41, or one decode query
        pages, indptr, values, last, k, v = _paged(h_kv, d, page, [37], rng)
        k_pos = np.arange(37, dtype="int32")
        if kernel == "paged_prefill":
            q_pos = np.arange(37, 42, dtype="int32")
            q = rng.standard_normal((5, h_q, d)).astype("float32")
            func = paged_prefill(h_kv, h_q, d, page, "float32", window, softcap, gpu)
            arrays = [np.array([0, 5], "int32"), pages, indptr, values, last, np.zeros(1, "int32"), q_pos]
            tail = [0, 0, 1.0, 1e4]
        else:  # the decode query is the last key, appended before attention
            q_pos = np.array([36], "int32")
            q = rng.standard_normal((1, h_q, d)).astype("float32")
            func = paged_decode(h_kv, h_q, d, page, "float32", window, softcap, gpu)
            arrays, tail = [pages, indptr, values, last, np.zeros(1, "int32"), q_pos], [0, 1.0, 1e4]
    for sign, w in ((-1, window), (1, 10**6)):
        out, lse = _call(func, q, arrays, tail + [sign * scale])
        ref_out, ref_lse = _windowed_reference(q, q_pos, k, v, k_pos, w, scale, softcap)
        np.testing.assert_allclose(out, ref_out, atol=1e-5)
        np.testing.assert_allclose(lse, ref_lse, atol=1e-4)


def test_cpu_builds_use_it():
    mod = lower_module(parse_recipe(recipe_data(tiny_config(), "q4f32_1")), load_target("host"))
    funcs = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    assert "RoPE applied before it" in funcs["batch_prefill_ragged_kv"].script()
    assert "RoPE applied before it" in funcs["batch_decode_paged_kv_cpu"].script()
    assert "parallel" in funcs["fused_rope"].script()  # ours (cpu_rope); TVM's is a serial s_tir block


LLAMA3 = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


@pytest.mark.parametrize(
    "rope_scaling,dtype,positions,apply_rope",
    [
        ({}, "float32", [5], 1),  # decode: one token, serial path
        ({}, "float32", [0, 1, 2, 900, 7], 1),  # prefill, positions from a position map
        (LLAMA3, "float16", [3, 4000, 17], 1),
        ({}, "float32", [3, 9], 0),  # apply_rope = 0 copies
    ],
)
def test_rope_matches_tvm_kernel(rope_scaling, dtype, positions, apply_rope):
    """Our RoPE split (``cpu_rope``) equals TVM's ``llama_rope_with_position_map`` (1e-5 fp32; fp16 ulp)."""
    from tvm.relax.frontend.nn.llm.position_embedding import llama_rope_with_position_map

    h_q, h_kv, d, theta = 6, 2, 64, 500000.0
    target = tvm_target(load_target("host"))
    rng = np.random.default_rng(len(positions))
    qkv = rng.standard_normal((len(positions), h_q + 2 * h_kv, d)).astype(dtype)
    pos = np.array(positions, "int32")
    outs = []
    for func in (
        llama_rope_with_position_map(theta, 1.0, d, h_q, h_kv, dtype, rope_scaling),
        split_rotary_cpu(theta, h_q, h_kv, d, dtype, rope_scaling),
    ):
        lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
        dev = tvm.cpu()
        bufs = [tvm.runtime.empty((len(pos), h, d), dtype, dev) for h in (h_q, h_kv, h_kv)]
        lib["main"](tvm.runtime.tensor(qkv, dev), tvm.runtime.tensor(pos, dev), *bufs, apply_rope)
        outs.append([b.numpy().astype("float32") for b in bufs])
    tol = 1e-5 if dtype == "float32" else 2e-3
    for ref, ours in zip(*outs, strict=True):
        np.testing.assert_allclose(ours, ref, atol=tol * 4, rtol=tol)
    if not apply_rope:
        np.testing.assert_array_equal(outs[1][0], qkv[:, :h_q].astype("float32"))
