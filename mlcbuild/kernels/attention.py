"""Our kernels for the paged KV cache's attention, CPU and GPU: ragged prefill (a prefill
chunk against itself), paged prefill (a chunk against the keys cached before it) and decode.

Each has the signature and results of the TVM kernel it replaces (outputs, and log-sum-exp
in base 2, for TVM's state merging; queries and keys arrive with RoPE applied, the cache's
``tir_split_rotary`` or the model does it, and the inline-rope mode is refused at run time)
and runs one task per (query token, query head): in parallel over the TVM thread pool on a
CPU (:mod:`.cpu_attention`: vectorized over the head dim), one work-group each on a GPU
(:mod:`.gpu_attention`: its threads split the keys, then merge). Both do what TVM's kernels cannot: sliding-window attention
exact for any window and chunking (Mistral, Phi-3, Gemma's local layers;
:func:`.attention_common.window_start`) and attention logit soft-capping (Gemma 2;
:func:`.attention_common.logit`). :func:`replace_attention` swaps them into a build (the
schedule phase of the pipeline).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from mlcbuild.kernels.attention_common import window_start
from mlcbuild.kernels.attention_cpu import paged_attend_cpu, ragged_attend_cpu
from mlcbuild.kernels.attention_gpu import THREADS, attend_gpu, paged_kv, ragged_kv


@T.macro
def _find_sequence(indptr, batch_size, row, seq):
    """``seq[0]`` = the sequence whose rows ``indptr[b]:indptr[b + 1]`` hold ``row`` (a GPU
    thread's; on a CPU the loop over sequences gives it)."""
    seq[0] = 0
    for i in range(batch_size):
        if indptr[i + 1] <= row:
            seq[0] = i + 1


def _rope_applied(kernel: str, gpu: bool) -> str:
    return f"mlcbuild's {'GPU' if gpu else 'CPU'} {kernel} attention expects RoPE applied before it"


def ragged_prefill(
    h_kv: int, h_q: int, d: int, dtype: str, window: int = 0, softcap: float = 0.0, gpu: bool = False
) -> tirx.PrimFunc:
    """Prefill attention of a chunk against itself (TVM's ``batch_prefill_ragged_kv``), for
    ``h_q`` query heads over ``h_kv`` KV heads of width ``d``, ``dtype``.

    Buffers (``total`` = tokens of all sequences): q ``[total, h_q, d]``, k/v
    ``[total, h_kv, d]`` ``dtype``, sequence ``b``'s rows ``q_indptr[b]:q_indptr[b + 1]``
    (keys ``kv_indptr[b]:kv_indptr[b + 1]``); output ``[total, h_q, d]`` ``dtype``, lse
    ``[total, h_q]`` float32 (base 2). Causal: query ``i`` sees keys ``j <= kv_len - q_len + i``.
    ``window`` (tokens, 0 none): :func:`.attention_common.window_start` (key ``j`` of sequence
    ``b`` at position ``k_rope_pos_offset[b] + j``); ``softcap`` (0 none):
    :func:`.attention_common.logit`. ``gpu``: thread-bound, else CPU-parallel.
    """
    attend = (
        attend_gpu(h_kv, h_q, d, dtype, window, softcap, ragged_kv)
        if gpu
        else ragged_attend_cpu(h_kv, h_q, d, dtype, window, softcap)
    )
    message = _rope_applied("ragged prefill", gpu)

    def n_kv(kv_indptr, b):
        return kv_indptr[b + 1] - kv_indptr[b]

    @T.macro
    def task(
        q,
        q_indptr,
        k,
        v,
        kv_indptr,
        q_rope_position,
        k_rope_pos_offset,
        output,
        lse,
        causal,
        sm_scale,
        b,
        row,
        head,
        tx,
    ):
        """Query row ``row`` (of sequence ``b``), head ``head``."""
        attend(
            q,
            row,
            head,
            sm_scale,
            k,
            v,
            kv_indptr[b],
            window_start(sm_scale, window, q_rope_position[row], k_rope_pos_offset[b]),
            T.if_then_else(
                causal > 0,
                T.min(n_kv(kv_indptr, b) - q_indptr[b + 1] + row + 1, n_kv(kv_indptr, b)),
                n_kv(kv_indptr, b),
            ),
            output,
            lse,
            tx,
        )

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

        assert rotary_mode == 0, message
        if gpu:
            for bx in T.thread_binding(qo_len * h_q, thread="blockIdx.x"):
                for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                    seq = T.decl_buffer((1,), "int32", scope="local")
                    _find_sequence(q_indptr, batch_size, bx // h_q, seq)
                    task(q, q_indptr, k, v, kv_indptr, q_rope_position, k_rope_pos_offset, output, lse, causal,
                         sm_scale, seq[0], bx // h_q, bx % h_q, tx)  # fmt: skip
        else:
            for b in range(batch_size):
                for t in T.parallel((q_indptr[b + 1] - q_indptr[b]) * h_q):
                    task(q, q_indptr, k, v, kv_indptr, q_rope_position, k_rope_pos_offset, output, lse, causal,
                         sm_scale, b, q_indptr[b] + t // h_q, t % h_q, 0)  # fmt: skip

    return batch_prefill_ragged_kv


def paged_prefill(
    h_kv: int, h_q: int, d: int, page_size: int, dtype: str, window: int = 0, softcap: float = 0.0, gpu: bool = False
) -> tirx.PrimFunc:
    """Prefill attention of a chunk's queries over the keys already in the paged KV cache
    (every prefill chunk after the first; TVM's ``batch_prefill_paged_kv`` and
    ``batch_prefill_paged_kv_cpu``).

    q ``[total, h_q, d]`` with sequence ``b``'s rows ``q_indptr[b]:q_indptr[b + 1]``; pages
    ``[max_pages, 2 (K, V), h_kv, page_size, d]``, the sequence's pages
    ``page_values[page_indptr[b]:page_indptr[b + 1]]``, its last holding ``length_info[b]``
    keys (``kv_len`` in all). Causal: query ``i`` of ``q_len`` sees keys
    ``j <= kv_len - q_len + i``. Output ``[total, h_q, d]``, lse ``[total, h_q]`` (base 2,
    -5e4 where a query sees no key). ``window``, ``softcap``, ``gpu``: as in
    :func:`ragged_prefill`; on a CPU ``d`` a multiple of 8.
    """
    attend = (
        attend_gpu(h_kv, h_q, d, dtype, window, softcap, paged_kv(page_size))
        if gpu
        else paged_attend_cpu(h_kv, h_q, d, page_size, dtype, window, softcap)
    )
    message = _rope_applied("prefill", gpu)

    def kv_len(page_indptr, length_info, b):
        return (page_indptr[b + 1] - page_indptr[b] - 1) * page_size + length_info[b]

    @T.macro
    def task(q, q_indptr, pages, page_indptr, values, length_info, q_rope_position, k_rope_pos_offset, output, lse,
             causal, sm_scale, b, row, head, tx):  # fmt: skip
        """Query row ``row`` (of sequence ``b``), head ``head``."""
        attend(
            q,
            row,
            head,
            sm_scale,
            pages,
            values,
            page_indptr[b],
            window_start(sm_scale, window, q_rope_position[row], k_rope_pos_offset[b]),
            T.if_then_else(
                causal > 0,
                T.min(
                    kv_len(page_indptr, length_info, b) - q_indptr[b + 1] + row + 1, kv_len(page_indptr, length_info, b)
                ),
                kv_len(page_indptr, length_info, b),
            ),
            output,
            lse,
            tx,
        )

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

        assert rotary_mode == 0, message
        if gpu:
            for bx in T.thread_binding(total_len * h_q, thread="blockIdx.x"):
                for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                    seq = T.decl_buffer((1,), "int32", scope="local")
                    _find_sequence(q_indptr, batch_size, bx // h_q, seq)
                    task(q, q_indptr, pages, page_indptr, values, length_info, q_rope_position, k_rope_pos_offset,
                         output, lse, causal, sm_scale, seq[0], bx // h_q, bx % h_q, tx)  # fmt: skip
        else:
            for b in range(batch_size):
                for t in T.parallel((q_indptr[b + 1] - q_indptr[b]) * h_q):
                    task(q, q_indptr, pages, page_indptr, values, length_info, q_rope_position, k_rope_pos_offset,
                         output, lse, causal, sm_scale, b, q_indptr[b] + t // h_q, t % h_q, 0)  # fmt: skip

    return batch_prefill_paged_kv


def paged_decode(
    h_kv: int, h_q: int, d: int, page_size: int, dtype: str, window: int = 0, softcap: float = 0.0, gpu: bool = False
) -> tirx.PrimFunc:
    """Decode attention over the paged KV cache, one query token per sequence (TVM's
    ``batch_decode_paged_kv`` and ``batch_decode_paged_kv_cpu``): q ``[B, h_q, d]``, pages
    and page table as in :func:`paged_prefill` (sequence ``b``'s pages
    ``values[indptr[b]:indptr[b + 1]]``, its last holding ``length_info[b]`` keys); output
    ``[B, h_q, d]``, lse ``[B, h_q]`` (base 2, -5e4 for an empty sequence). ``window``,
    ``softcap``, ``gpu``: as in :func:`ragged_prefill`; on a CPU ``d`` a multiple of 8.
    """
    attend = (
        attend_gpu(h_kv, h_q, d, dtype, window, softcap, paged_kv(page_size))
        if gpu
        else paged_attend_cpu(h_kv, h_q, d, page_size, dtype, window, softcap)
    )
    message = _rope_applied("decode", gpu)

    @T.macro
    def task(
        q, pages, indptr, values, length_info, k_rope_pos_offset, q_rope_position, output, lse, sm_scale, s, head, tx
    ):
        """Sequence ``s``'s query, head ``head``."""
        attend(
            q,
            s,
            head,
            sm_scale,
            pages,
            values,
            indptr[s],
            window_start(sm_scale, window, q_rope_position[s], k_rope_pos_offset[s]),
            (indptr[s + 1] - indptr[s] - 1) * page_size + length_info[s],
            output,
            lse,
            tx,
        )

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

        assert rotary_mode == 0, message
        if gpu:
            for bx in T.thread_binding(batch * h_q, thread="blockIdx.x"):
                for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                    task(q, pages, indptr, values, length_info, k_rope_pos_offset, q_rope_position, output, lse,
                         sm_scale, bx // h_q, bx % h_q, tx)  # fmt: skip
        else:
            for t in T.parallel(batch * h_q):
                task(q, pages, indptr, values, length_info, k_rope_pos_offset, q_rope_position, output, lse,
                     sm_scale, t // h_q, t % h_q, 0)  # fmt: skip

    return batch_decode_paged_kv


KERNELS = {
    False: {
        "batch_prefill_ragged_kv": ragged_prefill,
        "batch_prefill_paged_kv_cpu": paged_prefill,
        "batch_decode_paged_kv_cpu": paged_decode,
    },
    True: {
        "batch_prefill_ragged_kv": ragged_prefill,
        "batch_prefill_paged_kv": paged_prefill,
        "batch_decode_paged_kv": paged_decode,
    },
}
"""TVM's kernels ours replace, by name, for CPU (``False``) and GPU (``True``) builds."""
