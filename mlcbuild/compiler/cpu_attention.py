"""Our CPU kernels for the paged KV cache's attention: ragged prefill (a prefill chunk
against itself), paged prefill (a chunk against the keys cached before it) and decode.

TVM's ``_attention_prefill_ragged_cpu`` runs every query, head and key in one serial loop
nest, scalar: 7-11 ms of SmolLM-135M's ~25 ms per layer at a 128-token prefill on host.
These kernels have the same signatures and results (outputs and log-sum-exp in base 2), and
are parallel over (query, head) pairs with online softmax (Milakov & Gimelshein 2018, as in
FlashAttention, Dao et al. 2022): per key one dot product over the head dim, then the
running maximum, denominator and output vector are rescaled; no score matrix is stored.
Queries and keys arrive with RoPE already applied (``RopeMode.NORMAL``: the cache's
``tir_split_rotary`` does it, or the model); the inline-rope mode is refused at run time.
TVM's decode kernel is scalar and serial too: ~6.9 ms of SmolLM-135M's ~17 ms per decoded
token at a 200-token context on host went to the attention step.

They also do what TVM's CPU kernels cannot: sliding-window attention exact for any window
and chunking (Mistral, Phi-3, Gemma's local layers; :func:`window_start`) and attention logit
soft-capping (Gemma 2; :func:`logit`). :func:`replace_cpu_attention` swaps them into CPU
builds (the schedule phase of the pipeline).
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.script import tirx as T

from ..errors import CompileError
from .attention_common import SOFTCAP_ATTR, WINDOW_ATTR, logit, q_factor, window_start
from .tir_math import fast_exp2


def ragged_prefill_cpu(h_kv: int, h_q: int, d: int, dtype: str, window: int = 0, softcap: float = 0.0) -> tirx.PrimFunc:
    """The kernel for ``h_q`` query heads over ``h_kv`` KV heads of width ``d`` (q/k/v), ``dtype``.

    Buffers (``total`` = tokens of all sequences): q ``[total, h_q, d]``, k/v
    ``[total, h_kv, d]``, output ``[total, h_q, d]`` ``dtype``, lse ``[total, h_q]`` float32;
    causal: query ``i`` of a sequence sees keys ``j <= kv_len - q_len + i``; ``window``: see
    :func:`window_start` (key ``j`` of sequence ``b`` at position ``k_rope_pos_offset[b] + j``);
    ``softcap``: logit soft-capping (:func:`logit`), 0 for none.
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

    def first(sm_scale, q_rope_position, k_rope_pos_offset, q_indptr, b, task):
        """The first key the query sees (:func:`window_start`)."""
        return window_start(sm_scale, window, q_rope_position[row(q_indptr, b, task)], k_rope_pos_offset[b])

    # the key loop counts from 0 (see _paged_attend)
    def key(sm_scale, q_rope_position, k_rope_pos_offset, q_indptr, kv_indptr, b, task, u):
        """Row of the ``u``-th key the query sees in ``k``/``v``."""
        return kv_indptr[b] + first(sm_scale, q_rope_position, k_rope_pos_offset, q_indptr, b, task) + u

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
                for u in range(
                    last(q_indptr, kv_indptr, b, task, causal)
                    - first(sm_scale, q_rope_position, k_rope_pos_offset, q_indptr, b, task)
                ):
                    for lane in T.vectorized(lanes):
                        part[lane] = T.float32(0)
                    for j0 in range(d // lanes):
                        for lane in T.vectorized(lanes):
                            part[lane] = part[lane] + qv[j0 * lanes + lane] * T.Cast(
                                "float32",
                                k[
                                    key(sm_scale, q_rope_position, k_rope_pos_offset, q_indptr, kv_indptr, b, task, u),
                                    task % h_q // group,
                                    j0 * lanes + lane,
                                ],
                            )
                    stats[2] = T.float32(0)
                    for lane in range(lanes):
                        stats[2] = stats[2] + part[lane]
                    stats[2] = logit(stats[2] * q_factor(sm_scale, window, softcap), softcap)
                    stats[3] = T.max(stats[0], stats[2])
                    stats[4] = T.exp2(stats[2] - stats[3])
                    stats[1] = stats[1] * T.exp2(stats[0] - stats[3]) + stats[4]
                    for j in T.vectorized(d):
                        acc[j] = acc[j] * T.exp2(stats[0] - stats[3]) + stats[4] * T.Cast(
                            "float32",
                            v[
                                key(sm_scale, q_rope_position, k_rope_pos_offset, q_indptr, kv_indptr, b, task, u),
                                task % h_q // group,
                                j,
                            ],
                        )
                    stats[0] = stats[3]
                for j in T.vectorized(d):
                    output[row(q_indptr, b, task), task % h_q, j] = T.Cast(dtype, acc[j] / stats[1])
                lse[row(q_indptr, b, task), task % h_q] = stats[0] + T.log2(stats[1])

    return batch_prefill_ragged_kv


def _paged_attend(h_kv: int, h_q: int, d: int, page_size: int, dtype: str, window: int, softcap: float):
    """One (query, head) task over a sequence's cached keys, shared by :func:`paged_decode_cpu`
    and :func:`paged_prefill_cpu`, as a TVMScript macro.

    ``attend(q, row, head, sm_scale, pages, values, first, lo, hi, output, lse)``: query
    ``q[row, head]`` against keys ``[lo, hi)`` of the sequence whose pages are
    ``values[first:]`` (key ``t`` in page ``t // page_size``, slot ``t % page_size``); writes
    ``output[row, head]`` and ``lse[row, head]`` (base 2; zeros and -5e4 where no key is seen).
    One page of keys at a time: its scores (per key one 8-lane dot product and a 3-step
    horizontal sum, :func:`logit`), their ``2^x`` as one vectorized polynomial
    (:func:`.tir_math.fast_exp2`), then one rescale of the running output per page (online
    softmax, Milakov & Gimelshein 2018).
    """
    neg = -5e4
    group = h_q // h_kv
    chunks = d // 8

    def kv_at(pages, values, first, head, pg, kv, t, j0):
        """8 values ``[8 j0, 8 j0 + 8)`` of key (``kv`` 0) or value (1) ``t`` of page ``pg``, float32x8."""
        return T.Cast("float32x8", pages[values[first + pg], kv, head // group, t, T.ramp(j0 * 8, 1, 8)])

    def dot8(qv, pages, values, first, head, pg, t):
        """``q . k_t`` as 8 partial sums (float32x8)."""
        total = None
        for j0 in range(chunks):
            term = qv[T.ramp(j0 * 8, 1, 8)] * kv_at(pages, values, first, head, pg, 0, t, j0)
            total = term if total is None else total + term
        return total

    def begin(pg, lo):
        """The page's first slot holding a key in ``[lo, hi)``."""
        return T.max(lo - pg * page_size, 0)

    def end(pg, hi):
        """One past the page's last slot holding a key in ``[lo, hi)``."""
        return T.min(hi - pg * page_size, page_size)

    # Loops start at 0, with the page and slot as expressions of the counters: TVM 0.27 drops
    # the start of a loop whose bounds depend on an enclosing loop with a non-zero start
    # (a nest ``range(a, b)`` / ``range(f(pg), g(pg))`` ran 1 of 6 iterations).
    def page(lo, p):
        return lo // page_size + p

    def slot(lo, p, u):
        return begin(page(lo, p), lo) + u

    @T.macro
    def attend(q, row, head, sm_scale, pages, values, first, lo, hi, output, lse):
        acc = T.decl_buffer((d,), "float32")
        qv = T.decl_buffer((d,), "float32")
        part = T.decl_buffer((8,), "float32")
        score = T.decl_buffer((page_size,), "float32")
        stats = T.decl_buffer((4,), "float32")  # running max, denominator, page max, new max
        for j in T.vectorized(d):
            qv[j] = T.Cast("float32", q[row, head, j]) * q_factor(sm_scale, window, softcap)
            acc[j] = T.float32(0)
        stats[0] = T.float32(neg)
        stats[1] = T.float32(0)
        for p in range((hi + page_size - 1) // page_size - lo // page_size):
            for t in T.vectorized(page_size):
                score[t] = T.float32(neg)
            for u in range(end(page(lo, p), hi) - begin(page(lo, p), lo)):
                part[T.ramp(0, 1, 8)] = dot8(qv, pages, values, first, head, page(lo, p), slot(lo, p, u))
                part[T.ramp(0, 1, 4)] = part[T.ramp(0, 1, 4)] + part[T.ramp(4, 1, 4)]
                score[slot(lo, p, u)] = logit((part[0] + part[2]) + (part[1] + part[3]), softcap)
            stats[2] = T.float32(neg)
            for t in range(page_size):
                stats[2] = T.max(stats[2], score[t])
            stats[3] = T.max(stats[0], stats[2])
            for t in T.vectorized(page_size):
                score[t] = fast_exp2(score[t] - stats[3])
            stats[1] = stats[1] * fast_exp2(stats[0] - stats[3])
            for j in T.vectorized(d):
                acc[j] = acc[j] * fast_exp2(stats[0] - stats[3])
            for u in range(end(page(lo, p), hi) - begin(page(lo, p), lo)):
                stats[1] = stats[1] + score[slot(lo, p, u)]
                for j0 in T.unroll(chunks):
                    acc[T.ramp(j0 * 8, 1, 8)] = acc[T.ramp(j0 * 8, 1, 8)] + T.broadcast(
                        score[slot(lo, p, u)], 8
                    ) * kv_at(pages, values, first, head, page(lo, p), 1, slot(lo, p, u), j0)
            stats[0] = stats[3]
        for j in T.vectorized(d):
            output[row, head, j] = T.Cast(
                dtype, T.if_then_else(stats[1] > T.float32(0), acc[j] / stats[1], T.float32(0))
            )
        lse[row, head] = T.if_then_else(stats[1] > T.float32(0), stats[0] + T.log2(stats[1]), T.float32(neg))

    return attend


def paged_decode_cpu(
    h_kv: int, h_q: int, d: int, page_size: int, dtype: str, window: int = 0, softcap: float = 0.0
) -> tirx.PrimFunc:
    """Decode attention over the paged KV cache: one query token per sequence.

    Same signature and results as TVM's ``batch_decode_paged_kv_cpu`` (without sliding
    window): q ``[B, h_q, d]``, pages ``[max_pages, 2 (K, V), h_kv, page_size, d]``, the
    sequence's pages ``page_table_values[indptr[b]:indptr[b + 1]]``, its last page holding
    ``length_info[b]`` tokens; output ``[B, h_q, d]`` and lse ``[B, h_q]`` (base 2, -5e4 for an
    empty sequence). Parallel over (sequence, query head), keys as in :func:`_paged_attend`.
    ``window``, ``softcap``: as in :func:`ragged_prefill_cpu`. ``d`` a multiple of 8 (else
    TVM's kernel stays).
    """
    attend = _paged_attend(h_kv, h_q, d, page_size, dtype, window, softcap)

    def n_keys(indptr, length_info, s):
        return (indptr[s + 1] - indptr[s] - 1) * page_size + length_info[s]

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

        assert rotary_mode == 0, "mlcbuild's CPU decode attention expects RoPE applied before it"
        for task in T.parallel(batch * h_q):
            attend(
                q,
                task // h_q,
                task % h_q,
                sm_scale,
                pages,
                values,
                indptr[task // h_q],
                window_start(sm_scale, window, q_rope_position[task // h_q], k_rope_pos_offset[task // h_q]),
                n_keys(indptr, length_info, task // h_q),
                output,
                lse,
            )

    return batch_decode_paged_kv


def paged_prefill_cpu(
    h_kv: int, h_q: int, d: int, page_size: int, dtype: str, window: int = 0, softcap: float = 0.0
) -> tirx.PrimFunc:
    """Prefill attention of a chunk's queries over the keys already in the paged KV cache
    (every prefill chunk after the first): TVM's ``batch_prefill_paged_kv_cpu`` signature and
    results (without sliding window).

    q ``[total, h_q, d]`` with sequence ``b``'s rows ``q_indptr[b]:q_indptr[b + 1]``; its keys
    in pages as in :func:`paged_decode_cpu` (``kv_len`` of them); causal: query ``i`` of
    ``q_len`` sees keys ``j <= kv_len - q_len + i``. Output ``[total, h_q, d]``, lse
    ``[total, h_q]`` (base 2, -5e4 where a query sees no key). Parallel over (query, head).
    ``window``, ``softcap``: as in :func:`ragged_prefill_cpu`.
    """
    attend = _paged_attend(h_kv, h_q, d, page_size, dtype, window, softcap)

    def n_q(q_indptr, b):
        return q_indptr[b + 1] - q_indptr[b]

    def row(q_indptr, b, task):
        return q_indptr[b] + task // h_q

    def n_keys(page_indptr, length_info, q_indptr, b, task, causal):
        kv_len = (page_indptr[b + 1] - page_indptr[b] - 1) * page_size + length_info[b]
        return T.if_then_else(causal > 0, T.min(kv_len - n_q(q_indptr, b) + task // h_q + 1, kv_len), kv_len)

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

        assert rotary_mode == 0, "mlcbuild's CPU prefill attention expects RoPE applied before it"
        for b in range(batch_size):
            for task in T.parallel(n_q(q_indptr, b) * h_q):
                attend(
                    q,
                    row(q_indptr, b, task),
                    task % h_q,
                    sm_scale,
                    pages,
                    values,
                    page_indptr[b],
                    window_start(sm_scale, window, q_rope_position[row(q_indptr, b, task)], k_rope_pos_offset[b]),
                    n_keys(page_indptr, length_info, q_indptr, b, task, causal),
                    output,
                    lse,
                )

    return batch_prefill_paged_kv


@tvm.transform.module_pass(opt_level=0, name="ReplaceAttentionCPU")
def replace_cpu_attention(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Put our kernels in place of TVM's ``batch_prefill_ragged_kv`` (:func:`ragged_prefill_cpu`),
    ``batch_decode_paged_kv_cpu`` (:func:`paged_decode_cpu`) and ``batch_prefill_paged_kv_cpu``
    (:func:`paged_prefill_cpu`) in CPU builds, with the module's :data:`WINDOW_ATTR` window
    and :data:`SOFTCAP_ATTR` logit soft-cap.

    Head counts, head dim, page size and dtype are read from the replaced kernel's buffers;
    a kernel with different q/k and v widths (MLA) or a head dim not a multiple of 8 is left
    alone, as are TVM's sliding-window variants (our layers never use the cache's own).

    Raises:
        CompileError: the module has a window or a soft-cap and one of the three kernels
            cannot be replaced (TVM's would ignore it).
    """
    attrs = mod.attrs if mod.attrs is not None else {}
    window = int(attrs[WINDOW_ATTR]) if WINDOW_ATTR in attrs else 0
    softcap = float(attrs[SOFTCAP_ATTR]) if SOFTCAP_ATTR in attrs else 0.0
    out = tvm.IRModule(mod.functions, attrs=mod.attrs)
    kept = []
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        name = gv.name_hint
        if name not in ("batch_prefill_ragged_kv", "batch_decode_paged_kv_cpu", "batch_prefill_paged_kv_cpu"):
            continue
        if name == "batch_prefill_ragged_kv":
            q, _, k, v = func.params[:4]  # TVM 0.27: buffer parameters carry shape and dtype
            h_q, d = int(q.shape[1]), int(q.shape[2])
            if int(k.shape[2]) != d or int(v.shape[2]) != d:
                kept.append(name)
                continue
            ours = ragged_prefill_cpu(int(k.shape[1]), h_q, d, str(q.dtype), window, softcap)
        else:
            decode = name == "batch_decode_paged_kv_cpu"
            q, pages = (func.params[0], func.params[1]) if decode else (func.params[0], func.params[2])
            h_q, d = int(q.shape[1]), int(q.shape[2])
            length_info = func.params[4] if decode else func.params[5]
            if int(pages.shape[4]) != d or d % 8 or len(length_info.shape) != 1:
                kept.append(name)
                continue
            make = paged_decode_cpu if decode else paged_prefill_cpu
            ours = make(int(pages.shape[2]), h_q, d, int(pages.shape[3]), str(q.dtype), window, softcap)
        out[gv] = ours.with_attr("global_symbol", func.attrs["global_symbol"])
    if (window or softcap) and kept:
        what = "sliding-window attention" if window else "attention logit soft-capping"
        raise CompileError(
            f"{what} needs mlcbuild's CPU attention kernels, which do not cover {kept} of this model "
            "(head dim not a multiple of 8, or different q/k and v widths)",
            fix="use a model whose head dim is a multiple of 8",
        )
    return out
