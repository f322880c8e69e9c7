"""Our CPU kernels for the paged KV cache's attention: ragged prefill (the first prefill
chunk) and decode.

TVM's ``_attention_prefill_ragged_cpu`` runs every query, head and key in one serial loop
nest, scalar: 7-11 ms of SmolLM-135M's ~25 ms per layer at a 128-token prefill on host.
This kernel has the same signature and results (outputs and log-sum-exp in base 2), and is
parallel over (query, head) pairs with online softmax (Milakov & Gimelshein 2018, as in
FlashAttention, Dao et al. 2022): per key one dot product over the head dim, then the
running maximum, denominator and output vector are rescaled; no score matrix is stored.
Queries and keys arrive with RoPE already applied (``RopeMode.NORMAL``: the cache's
``tir_split_rotary`` does it); the inline-rope mode is refused at run time.

:func:`replace_cpu_attention` swaps them into CPU builds (the schedule phase of the pipeline).
TVM's decode kernel is scalar and serial too: ~6.9 ms of SmolLM-135M's ~17 ms per decoded
token at a 200-token context on host went to the attention step.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.script import tirx as T

from .tir_math import LOG2E, fast_exp2


def ragged_prefill_cpu(h_kv: int, h_q: int, d: int, dtype: str) -> tirx.PrimFunc:
    """The kernel for ``h_q`` query heads over ``h_kv`` KV heads of width ``d`` (q/k/v), ``dtype``.

    Buffers (``total`` = tokens of all sequences): q ``[total, h_q, d]``, k/v
    ``[total, h_kv, d]``, output ``[total, h_q, d]`` ``dtype``, lse ``[total, h_q]`` float32;
    causal: query ``i`` of a sequence sees keys ``j <= kv_len - q_len + i``.
    """
    group = h_q // h_kv
    lanes = next(x for x in (16, 8, 4, 2, 1) if d % x == 0)  # partial sums of the q.k dot product

    # No TVMScript assignments (`v = expr`) in the kernel: TVM 0.27 lowers each into a
    # one-element buffer from TVMBackendAllocWorkspace, once per parallel iteration. These
    # helpers inline the expressions instead.
    def n_q(q_indptr, b):
        return q_indptr[b + 1] - q_indptr[b]

    def row(q_indptr, b, task):
        """The query token of ``task`` (``task = i * h_q + head``)."""
        return q_indptr[b] + task // h_q

    def last(q_indptr, kv_indptr, b, task, causal):
        """Keys the query sees: ``kv_len - q_len + i + 1`` when causal."""
        n_kv = kv_indptr[b + 1] - kv_indptr[b]
        return T.if_then_else(causal > 0, T.min(n_kv - n_q(q_indptr, b) + task // h_q + 1, n_kv), n_kv)

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
        q_rope_position = T.match_buffer(var_q_rope_position, (qo_len,), "int32", elem_offset=qr_off)  # noqa: F841 (the signature binds it)
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch_size,), "int32", elem_offset=kr_off)  # noqa: F841
        output = T.match_buffer(var_output, (qo_len, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (qo_len, h_q), "float32")

        assert rotary_mode == 0, "mlcbuild's CPU ragged prefill attention expects RoPE applied before it"
        for b in range(batch_size):
            for task in T.parallel(n_q(q_indptr, b) * h_q):
                # default (global) scope and under 1 KiB: stack allocations, not workspace calls
                acc = T.decl_buffer((d,), "float32")
                stats = T.decl_buffer((5,), "float32")  # running max, denominator, score, new max, p
                qv = T.decl_buffer((d,), "float32")
                part = T.decl_buffer((lanes,), "float32")
                for j in T.vectorized(d):
                    acc[j] = T.float32(0)
                    qv[j] = T.Cast("float32", q[row(q_indptr, b, task), task % h_q, j])
                stats[0] = T.float32(-5e4)
                stats[1] = T.float32(0)
                for t in range(last(q_indptr, kv_indptr, b, task, causal)):
                    for lane in T.vectorized(lanes):
                        part[lane] = T.float32(0)
                    for j0 in range(d // lanes):
                        for lane in T.vectorized(lanes):
                            part[lane] = part[lane] + qv[j0 * lanes + lane] * T.Cast(
                                "float32", k[kv_indptr[b] + t, task % h_q // group, j0 * lanes + lane]
                            )
                    stats[2] = T.float32(0)
                    for lane in range(lanes):
                        stats[2] = stats[2] + part[lane]
                    stats[2] = stats[2] * (sm_scale * T.float32(LOG2E))
                    stats[3] = T.max(stats[0], stats[2])
                    stats[4] = T.exp2(stats[2] - stats[3])
                    stats[1] = stats[1] * T.exp2(stats[0] - stats[3]) + stats[4]
                    for j in T.vectorized(d):
                        acc[j] = acc[j] * T.exp2(stats[0] - stats[3]) + stats[4] * T.Cast(
                            "float32", v[kv_indptr[b] + t, task % h_q // group, j]
                        )
                    stats[0] = stats[3]
                for j in T.vectorized(d):
                    output[row(q_indptr, b, task), task % h_q, j] = T.Cast(dtype, acc[j] / stats[1])
                lse[row(q_indptr, b, task), task % h_q] = stats[0] + T.log2(stats[1])

    return batch_prefill_ragged_kv


def paged_decode_cpu(h_kv: int, h_q: int, d: int, page_size: int, dtype: str) -> tirx.PrimFunc:
    """Decode attention over the paged KV cache: one query token per sequence.

    Same signature and results as TVM's ``batch_decode_paged_kv_cpu`` (without sliding
    window): q ``[B, h_q, d]``, pages ``[max_pages, 2 (K, V), h_kv, page_size, d]``, the
    sequence's pages ``page_table_values[indptr[b]:indptr[b + 1]]``, its last page holding
    ``length_info[b]`` tokens; output ``[B, h_q, d]`` and lse ``[B, h_q]`` (base 2, -5e4 for an
    empty sequence). Parallel over (sequence, query head); one page of keys at a time: its
    scores (per key one 8-lane dot product and a 3-step horizontal sum), their ``2^x`` as
    one vectorized polynomial (:func:`.tir_math.fast_exp2`), then one rescale of the running
    output per page instead of one per key (online softmax as in the prefill kernel).
    ``d`` a multiple of 8 (else TVM's kernel stays).
    """
    group = h_q // h_kv
    neg = -5e4
    chunks = d // 8

    def seq(task):
        return task // h_q

    def n_pages(indptr, task):
        return indptr[seq(task) + 1] - indptr[seq(task)]

    def in_page(indptr, length_info, task, pg):
        """Tokens in page ``pg`` of the sequence: ``page_size``, the last one ``length_info``."""
        return T.if_then_else(pg == n_pages(indptr, task) - 1, length_info[seq(task)], page_size)

    def kv_at(pages, indptr, values, task, pg, kv, t, j0):
        """8 values ``[8 j0, 8 j0 + 8)`` of key (``kv`` 0) or value (1) ``t`` of page ``pg``, float32x8."""
        page = values[indptr[seq(task)] + pg]
        return T.Cast("float32x8", pages[page, kv, task % h_q // group, t, T.ramp(j0 * 8, 1, 8)])

    def dot8(qv, pages, indptr, values, task, pg, t):
        """``q . k_t`` as 8 partial sums (float32x8)."""
        total = None
        for j0 in range(chunks):
            term = qv[T.ramp(j0 * 8, 1, 8)] * kv_at(pages, indptr, values, task, pg, 0, t, j0)
            total = term if total is None else total + term
        return total

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
        k_rope_pos_offset = T.match_buffer(var_k_rope_pos_offset, (batch,), "int32", elem_offset=kr_off)  # noqa: F841
        q_rope_position = T.match_buffer(var_q_rope_position, (batch,), "int32", elem_offset=qr_off)  # noqa: F841
        output = T.match_buffer(var_output, (batch, h_q, d), dtype)
        lse = T.match_buffer(var_lse, (batch, h_q), "float32")

        assert rotary_mode == 0, "mlcbuild's CPU decode attention expects RoPE applied before it"
        for task in T.parallel(batch * h_q):
            acc = T.decl_buffer((d,), "float32")
            qv = T.decl_buffer((d,), "float32")
            part = T.decl_buffer((8,), "float32")
            score = T.decl_buffer((page_size,), "float32")
            stats = T.decl_buffer((4,), "float32")  # running max, denominator, page max, new max
            for j in T.vectorized(d):
                acc[j] = T.float32(0)
                qv[j] = T.Cast("float32", q[seq(task), task % h_q, j]) * (sm_scale * T.float32(LOG2E))
            stats[0] = T.float32(neg)
            stats[1] = T.float32(0)
            for pg in range(n_pages(indptr, task)):
                for t in T.vectorized(page_size):
                    score[t] = T.float32(neg)
                for t in range(in_page(indptr, length_info, task, pg)):
                    part[T.ramp(0, 1, 8)] = dot8(qv, pages, indptr, values, task, pg, t)
                    part[T.ramp(0, 1, 4)] = part[T.ramp(0, 1, 4)] + part[T.ramp(4, 1, 4)]
                    score[t] = (part[0] + part[2]) + (part[1] + part[3])
                stats[2] = T.float32(neg)
                for t in range(page_size):
                    stats[2] = T.max(stats[2], score[t])
                stats[3] = T.max(stats[0], stats[2])
                for t in T.vectorized(page_size):
                    score[t] = fast_exp2(score[t] - stats[3])
                stats[1] = stats[1] * fast_exp2(stats[0] - stats[3])
                for j in T.vectorized(d):
                    acc[j] = acc[j] * fast_exp2(stats[0] - stats[3])
                for t in range(in_page(indptr, length_info, task, pg)):
                    stats[1] = stats[1] + score[t]
                    for j0 in T.unroll(chunks):
                        acc[T.ramp(j0 * 8, 1, 8)] = acc[T.ramp(j0 * 8, 1, 8)] + T.broadcast(score[t], 8) * kv_at(
                            pages, indptr, values, task, pg, 1, t, j0
                        )
                stats[0] = stats[3]
            for j in T.vectorized(d):
                output[seq(task), task % h_q, j] = T.Cast(
                    dtype, T.if_then_else(stats[1] > T.float32(0), acc[j] / stats[1], T.float32(0))
                )
            lse[seq(task), task % h_q] = T.if_then_else(
                stats[1] > T.float32(0), stats[0] + T.log2(stats[1]), T.float32(neg)
            )

    return batch_decode_paged_kv


@tvm.transform.module_pass(opt_level=0, name="ReplaceAttentionCPU")
def replace_cpu_attention(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Put our kernels in place of TVM's ``batch_prefill_ragged_kv`` (:func:`ragged_prefill_cpu`)
    and ``batch_decode_paged_kv_cpu`` (:func:`paged_decode_cpu`) in CPU builds.

    Head counts, head dim, page size and dtype are read from the replaced kernel's buffers;
    a kernel with different q/k and v widths (MLA) is left alone, as is the sliding-window
    decode kernel.
    """
    out = tvm.IRModule(mod.functions, attrs=mod.attrs)
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        if gv.name_hint == "batch_prefill_ragged_kv":
            q, _, k, v = func.params[:4]  # TVM 0.27: buffer parameters carry shape and dtype
            h_q, d = int(q.shape[1]), int(q.shape[2])
            if int(k.shape[2]) != d or int(v.shape[2]) != d:
                continue
            ours = ragged_prefill_cpu(int(k.shape[1]), h_q, d, str(q.dtype))
        elif gv.name_hint == "batch_decode_paged_kv_cpu":
            q, pages = func.params[:2]
            h_q, d = int(q.shape[1]), int(q.shape[2])
            if int(pages.shape[4]) != d or d % 8 or len(func.params[4].shape) != 1:
                continue
            ours = paged_decode_cpu(int(pages.shape[2]), h_q, d, int(pages.shape[3]), str(q.dtype))
        else:
            continue
        out[gv] = ours.with_attr("global_symbol", func.attrs["global_symbol"])
    return out
