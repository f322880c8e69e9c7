"""Our GPU kernels for the paged KV cache's attention, for models whose math TVM's GPU
kernels do not do: sliding-window attention (Mistral, Phi-3, Gemma's local layers) and
attention logit soft-capping (Gemma 2).

TVM 0.27's GPU kernels (``batch_prefill_ragged_kv``, ``batch_prefill_paged_kv``,
``batch_decode_paged_kv``) have no soft-cap, and their sliding window is the KV cache's
own per-sequence one (pages evicted behind an attention sink), not a per-layer mask that is
exact for any window and chunking. These kernels take their signatures and results (outputs
and log-sum-exp in base 2, RoPE applied before them) and apply the same window and cap as
the CPU kernels (:mod:`.attention_common`: :func:`.attention_common.window_start`,
:func:`.attention_common.logit`).

They are written for correctness first: one GPU thread per (query token, query head), which
walks the keys it sees with online softmax (Milakov & Gimelshein 2018, as in
FlashAttention, Dao et al. 2022: per key one dot product over the head dim, then the running
maximum, denominator and output are rescaled), holding its output row in private memory.
Scalar code, no shared memory, no vector types: the same kernel compiles for OpenCL,
Metal, WebGPU and CUDA. A decode step of one sequence runs ``h_q`` threads, so these are far
slower than TVM's tiled kernels; :func:`replace_gpu_attention` puts them in only where a
model needs the window or the cap. ``tests/test_attention.py`` runs the generated OpenCL C
on PoCL (a CPU OpenCL driver from PyPI) against TVM's CPU kernels and a NumPy reference, in
float32: PoCL's CPU build has no ``cl_khr_fp16``, so the float16 variants (loads widened to
float32, outputs narrowed) are compiled in the target tests, not run.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.script import tirx as T

from ..errors import CompileError
from .attention_common import SOFTCAP_ATTR, WINDOW_ATTR, logit, q_factor, window_start

THREADS = 64
"""Threads per block (work-group): a multiple of the warp/wave/SIMD width of every GPU
target (32 NVIDIA/Apple, 64 Adreno/Mali waves are 16-64)."""

NEG = -5e4
"""The running maximum before any key, and the lse of a query that sees none (TVM's value)."""

KERNELS = ("batch_prefill_ragged_kv", "batch_prefill_paged_kv", "batch_decode_paged_kv")
"""TVM's GPU kernels these replace, by name."""


def _attend(h_kv: int, h_q: int, d: int, dtype: str, window: int, softcap: float, load):
    """One (query, head) task over keys ``[lo, hi)``, as a TVMScript macro shared by the
    three kernels.

    ``attend(q, row, head, sm_scale, a, b, base, lo, hi, output, lse)``: query ``q[row, head]``
    against the keys ``load(a, b, base, t, kv_head, j, kv)`` (``kv`` 0 key, 1 value; element
    ``j`` of key ``t`` of KV head ``kv_head``); writes ``output[row, head]`` (zeros where no
    key is seen) and ``lse[row, head]`` (base 2; :data:`NEG` where no key is seen).
    """
    group = h_q // h_kv

    @T.macro
    def attend(q, row, head, sm_scale, a, b, base, lo, hi, output, lse):
        acc = T.decl_buffer((d,), "float32", scope="local")
        qv = T.decl_buffer((d,), "float32", scope="local")
        st = T.decl_buffer((6,), "float32", scope="local")  # max, denominator, score, new max, p, rescale
        for j in range(d):
            qv[j] = T.Cast("float32", q[row, head, j]) * q_factor(sm_scale, window, softcap)
            acc[j] = T.float32(0)
        st[0] = T.float32(NEG)
        st[1] = T.float32(0)
        for u in range(hi - lo):
            st[2] = T.float32(0)
            for j in range(d):
                st[2] = st[2] + qv[j] * T.Cast("float32", load(a, b, base, lo + u, head // group, j, 0))
            st[2] = logit(st[2], softcap)
            st[3] = T.max(st[0], st[2])
            st[4] = T.exp2(st[2] - st[3])
            st[5] = T.exp2(st[0] - st[3])
            st[1] = st[1] * st[5] + st[4]
            for j in range(d):
                acc[j] = acc[j] * st[5] + st[4] * T.Cast("float32", load(a, b, base, lo + u, head // group, j, 1))
            st[0] = st[3]
        for j in range(d):
            output[row, head, j] = T.Cast(dtype, T.if_then_else(st[1] > T.float32(0), acc[j] / st[1], T.float32(0)))
        lse[row, head] = T.if_then_else(st[1] > T.float32(0), st[0] + T.log2(st[1]), T.float32(NEG))

    return attend


def _ragged_kv(k, v, base, t, kv_head, j, kv):
    """Key (``kv`` 0) or value element of the ragged prefill: row ``base + t`` of ``k``/``v``."""
    return k[base + t, kv_head, j] if kv == 0 else v[base + t, kv_head, j]


def _paged_kv(page_size: int):
    """The element loader of the paged kernels: key ``t`` of a sequence whose pages are
    ``values[base:]`` lies in page ``t // page_size``, slot ``t % page_size``."""

    def load(pages, values, base, t, kv_head, j, kv):
        return pages[values[base + t // page_size], kv, kv_head, t % page_size, j]

    return load


def ragged_prefill_gpu(h_kv: int, h_q: int, d: int, dtype: str, window: int = 0, softcap: float = 0.0) -> tirx.PrimFunc:
    """Prefill attention of a chunk against itself (TVM's ``batch_prefill_ragged_kv``).

    Buffers (``total`` = tokens of all sequences): q ``[total, h_q, d]``, k/v
    ``[total, h_kv, d]`` ``dtype``, sequence ``b``'s rows ``q_indptr[b]:q_indptr[b + 1]``
    (keys ``kv_indptr[b]:kv_indptr[b + 1]``); output ``[total, h_q, d]`` ``dtype``, lse
    ``[total, h_q]`` float32 (base 2). Causal: query ``i`` sees keys ``j <= kv_len - q_len + i``;
    ``window`` (tokens, 0 none) and ``softcap`` (0 none) as in :mod:`.attention_common`.
    """
    attend = _attend(h_kv, h_q, d, dtype, window, softcap, _ragged_kv)

    @T.prim_func(s_tir=False)
    def batch_prefill_ragged_kv(
        var_q: T.handle,
        var_q_indptr: T.handle,
        var_k: T.handle,
        var_v: T.handle,
        var_kv_indptr: T.handle,
        var_q_rope_position: T.handle,
        var_k_rope_pos_offset: T.handle,
        var_output: T.handle,
        var_lse: T.handle,
        causal: T.int32,
        rotary_mode: T.int32,
        rope_scale: T.float32,
        rope_theta: T.float32,
        sm_scale: T.float32,
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch_size = T.int32()
        qo_len = T.int32()
        kv_len = T.int32()
        q_off = T.int32()
        kv_off = T.int32()
        qr_off = T.int32()
        kr_off = T.int32()
        q = T.match_buffer(var_q, (qo_len, h_q, d), dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch_size + 1,), "int32", elem_offset=q_off)
        k = T.match_buffer(var_k, (kv_len, h_kv, d), dtype)
        v = T.match_buffer(var_v, (kv_len, h_kv, d), dtype)
        kv_indptr = T.match_buffer(var_kv_indptr, (batch_size + 1,), "int32", elem_offset=kv_off)
        q_rope_position = T.match_buffer(var_q_rope_position, (qo_len,), "int32", elem_offset=qr_off)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=kr_off)
        output = T.match_buffer(var_output, (qo_len, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (qo_len, h_q), "float32")

        assert rotary_mode == 0, "mlcbuild's GPU ragged prefill attention expects RoPE applied before it"
        for bx in T.thread_binding((qo_len * h_q + THREADS - 1) // THREADS, thread="blockIdx.x"):
            for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                if bx * THREADS + tx < qo_len * h_q:
                    seq = T.decl_buffer((1,), "int32", scope="local")
                    seq[0] = 0
                    for i in range(batch_size):  # the sequence of this row
                        if q_indptr[i + 1] <= (bx * THREADS + tx) // h_q:
                            seq[0] = i + 1
                    attend(
                        q,
                        (bx * THREADS + tx) // h_q,
                        (bx * THREADS + tx) % h_q,
                        sm_scale,
                        k,
                        v,
                        kv_indptr[seq[0]],
                        window_start(
                            sm_scale, window, q_rope_position[(bx * THREADS + tx) // h_q], k_rope_pos_offset[seq[0]]
                        ),
                        T.if_then_else(
                            causal > 0,
                            T.min(
                                kv_indptr[seq[0] + 1]
                                - kv_indptr[seq[0]]
                                - q_indptr[seq[0] + 1]
                                + (bx * THREADS + tx) // h_q
                                + 1,
                                kv_indptr[seq[0] + 1] - kv_indptr[seq[0]],
                            ),
                            kv_indptr[seq[0] + 1] - kv_indptr[seq[0]],
                        ),
                        output,
                        lse,
                    )

    return batch_prefill_ragged_kv


def paged_prefill_gpu(
    h_kv: int, h_q: int, d: int, page_size: int, dtype: str, window: int = 0, softcap: float = 0.0
) -> tirx.PrimFunc:
    """Prefill attention of a chunk's queries over the keys already in the paged KV cache
    (TVM's ``batch_prefill_paged_kv``).

    q ``[total, h_q, d]`` with sequence ``b``'s rows ``q_indptr[b]:q_indptr[b + 1]``; pages
    ``[max_pages, 2 (K, V), h_kv, page_size, d]``, the sequence's pages
    ``page_values[page_indptr[b]:page_indptr[b + 1]]``, its last holding ``length_info[b]``
    keys (``kv_len`` in all). Causal: query ``i`` of ``q_len`` sees keys
    ``j <= kv_len - q_len + i``. Output ``[total, h_q, d]``, lse ``[total, h_q]`` (base 2).
    ``window``, ``softcap``: as in :func:`ragged_prefill_gpu`.
    """
    attend = _attend(h_kv, h_q, d, dtype, window, softcap, _paged_kv(page_size))

    def kv_len(page_indptr, length_info, b):
        return (page_indptr[b + 1] - page_indptr[b] - 1) * page_size + length_info[b]

    @T.prim_func(s_tir=False)
    def batch_prefill_paged_kv(
        var_q: T.handle,
        var_q_indptr: T.handle,
        var_pages: T.handle,
        var_page_indptr: T.handle,
        var_page_values: T.handle,
        var_length_info: T.handle,
        var_k_rope_pos_offset: T.handle,
        var_q_rope_position: T.handle,
        var_output: T.handle,
        var_lse: T.handle,
        causal: T.int32,
        rotary_mode: T.int32,
        rope_scale: T.float32,
        rope_theta: T.float32,
        sm_scale: T.float32,
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch_size = T.int32()
        total_len = T.int32()
        nnz_pages = T.int32()
        max_pages = T.int32()
        q_off = T.int32()
        ip_off = T.int32()
        pv_off = T.int32()
        kr_off = T.int32()
        qr_off = T.int32()
        li_off = T.int32()
        q = T.match_buffer(var_q, (total_len, h_q, d), dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch_size + 1,), "int32", elem_offset=q_off)
        pages = T.match_buffer(var_pages, (max_pages, 2, h_kv, page_size, d), dtype)
        page_indptr = T.match_buffer(var_page_indptr, (batch_size + 1,), "int32", elem_offset=ip_off)
        values = T.match_buffer(var_page_values, (nnz_pages,), "int32", elem_offset=pv_off)
        length_info = T.match_buffer(var_length_info, (batch_size,), "int32", elem_offset=li_off)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=kr_off)
        q_rope_position = T.match_buffer(var_q_rope_position, (total_len,), "int32", elem_offset=qr_off)
        output = T.match_buffer(var_output, (total_len, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (total_len, h_q), "float32")

        assert rotary_mode == 0, "mlcbuild's GPU prefill attention expects RoPE applied before it"
        for bx in T.thread_binding((total_len * h_q + THREADS - 1) // THREADS, thread="blockIdx.x"):
            for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                if bx * THREADS + tx < total_len * h_q:
                    seq = T.decl_buffer((1,), "int32", scope="local")
                    seq[0] = 0
                    for i in range(batch_size):  # the sequence of this row
                        if q_indptr[i + 1] <= (bx * THREADS + tx) // h_q:
                            seq[0] = i + 1
                    attend(
                        q,
                        (bx * THREADS + tx) // h_q,
                        (bx * THREADS + tx) % h_q,
                        sm_scale,
                        pages,
                        values,
                        page_indptr[seq[0]],
                        window_start(
                            sm_scale, window, q_rope_position[(bx * THREADS + tx) // h_q], k_rope_pos_offset[seq[0]]
                        ),
                        T.if_then_else(
                            causal > 0,
                            T.min(
                                kv_len(page_indptr, length_info, seq[0])
                                - q_indptr[seq[0] + 1]
                                + (bx * THREADS + tx) // h_q
                                + 1,
                                kv_len(page_indptr, length_info, seq[0]),
                            ),
                            kv_len(page_indptr, length_info, seq[0]),
                        ),
                        output,
                        lse,
                    )

    return batch_prefill_paged_kv


def paged_decode_gpu(
    h_kv: int, h_q: int, d: int, page_size: int, dtype: str, window: int = 0, softcap: float = 0.0
) -> tirx.PrimFunc:
    """Decode attention over the paged KV cache, one query token per sequence (TVM's
    ``batch_decode_paged_kv``): q ``[B, h_q, d]``, pages and page table as in
    :func:`paged_prefill_gpu` (sequence ``b``'s pages ``values[indptr[b]:indptr[b + 1]]``),
    output ``[B, h_q, d]``, lse ``[B, h_q]`` (base 2). ``window``, ``softcap``: as in
    :func:`ragged_prefill_gpu`.
    """
    attend = _attend(h_kv, h_q, d, dtype, window, softcap, _paged_kv(page_size))

    @T.prim_func(s_tir=False)
    def batch_decode_paged_kv(
        var_q: T.handle,
        var_pages: T.handle,
        var_indptr: T.handle,
        var_values: T.handle,
        var_length_info: T.handle,
        var_k_rope_pos_offset: T.handle,
        var_q_rope_position: T.handle,
        var_output: T.handle,
        var_lse: T.handle,
        rotary_mode: T.int32,
        rope_scale: T.float32,
        rope_theta: T.float32,
        sm_scale: T.float32,
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch = T.int32()
        nnz_pages = T.int32()
        max_pages = T.int32()
        ip_off = T.int32()
        pv_off = T.int32()
        kr_off = T.int32()
        qr_off = T.int32()
        li_off = T.int32()
        q = T.match_buffer(var_q, (batch, h_q, d), dtype)
        pages = T.match_buffer(var_pages, (max_pages, 2, h_kv, page_size, d), dtype)
        indptr = T.match_buffer(var_indptr, (batch + 1,), "int32", elem_offset=ip_off)
        values = T.match_buffer(var_values, (nnz_pages,), "int32", elem_offset=pv_off)
        length_info = T.match_buffer(var_length_info, (batch,), "int32", elem_offset=li_off)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch,), "int32", elem_offset=kr_off)
        q_rope_position = T.match_buffer(var_q_rope_position, (batch,), "int32", elem_offset=qr_off)
        output = T.match_buffer(var_output, (batch, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (batch, h_q), "float32")

        assert rotary_mode == 0, "mlcbuild's GPU decode attention expects RoPE applied before it"
        for bx in T.thread_binding((batch * h_q + THREADS - 1) // THREADS, thread="blockIdx.x"):
            for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                if bx * THREADS + tx < batch * h_q:
                    attend(
                        q,
                        (bx * THREADS + tx) // h_q,
                        (bx * THREADS + tx) % h_q,
                        sm_scale,
                        pages,
                        values,
                        indptr[(bx * THREADS + tx) // h_q],
                        window_start(
                            sm_scale,
                            window,
                            q_rope_position[(bx * THREADS + tx) // h_q],
                            k_rope_pos_offset[(bx * THREADS + tx) // h_q],
                        ),
                        (indptr[(bx * THREADS + tx) // h_q + 1] - indptr[(bx * THREADS + tx) // h_q] - 1) * page_size
                        + length_info[(bx * THREADS + tx) // h_q],
                        output,
                        lse,
                    )

    return batch_decode_paged_kv


@tvm.transform.module_pass(opt_level=0, name="ReplaceAttentionGPU")
def replace_gpu_attention(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Put our kernels in place of TVM's three GPU attention kernels (:data:`KERNELS`) when
    the module carries a sliding window (:data:`.attention_common.WINDOW_ATTR`) or a logit
    soft-cap (:data:`.attention_common.SOFTCAP_ATTR`); otherwise the module is returned as it is.

    Head counts, head dim, page size and dtype are read from the replaced kernel's buffers.

    Raises:
        CompileError: one of the three kernels cannot be replaced (different q/k and v
            widths, as in MLA; a window-shaped ``length_info``), so TVM's would ignore the
            window or cap.
    """
    attrs = mod.attrs if mod.attrs is not None else {}
    window = int(attrs[WINDOW_ATTR]) if WINDOW_ATTR in attrs else 0
    softcap = float(attrs[SOFTCAP_ATTR]) if SOFTCAP_ATTR in attrs else 0.0
    if not window and not softcap:
        return mod
    out = tvm.IRModule(mod.functions, attrs=mod.attrs)
    kept = []
    for gv, func in mod.functions_items():
        name = gv.name_hint
        if not isinstance(func, tirx.PrimFunc) or name not in KERNELS:
            continue
        q = func.params[0]
        h_q, d = int(q.shape[1]), int(q.shape[2])
        if name == "batch_prefill_ragged_kv":
            k, v = func.params[2], func.params[3]
            if int(k.shape[2]) != d or int(v.shape[2]) != d:
                kept.append(name)
                continue
            ours = ragged_prefill_gpu(int(k.shape[1]), h_q, d, str(q.dtype), window, softcap)
        else:
            decode = name == "batch_decode_paged_kv"
            pages = func.params[1] if decode else func.params[2]
            length_info = func.params[4] if decode else func.params[5]
            if int(pages.shape[4]) != d or len(length_info.shape) != 1:
                kept.append(name)
                continue
            make = paged_decode_gpu if decode else paged_prefill_gpu
            ours = make(int(pages.shape[2]), h_q, d, int(pages.shape[3]), str(q.dtype), window, softcap)
        out[gv] = ours.with_attr("global_symbol", func.attrs["global_symbol"])
    if kept:
        what = "sliding-window attention" if window else "attention logit soft-capping"
        raise CompileError(
            f"{what} needs mlcbuild's GPU attention kernels, which do not cover {kept} of this model "
            "(different q/k and v widths)",
            fix="build this model for a CPU target (host, android-cpu)",
        )
    return out
