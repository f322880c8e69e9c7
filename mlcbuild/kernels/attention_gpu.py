"""How our attention kernels (:mod:`.attention`) run one (query, head) task on a GPU, for
models whose math TVM's GPU kernels do not do: sliding-window attention (Mistral, Phi-3,
Gemma's local layers) and attention logit soft-capping (Gemma 2).

TVM 0.27's GPU kernels (``batch_prefill_ragged_kv``, ``batch_prefill_paged_kv``,
``batch_decode_paged_kv``) have no soft-cap, and their sliding window is the KV cache's
own per-sequence one (pages evicted behind an attention sink), not a per-layer mask that is
exact for any window and chunking. Ours apply the same window and cap as on CPU
(:func:`.attention_common.window_start`, :func:`.attention_common.logit`).

They are written for correctness first: one work-group of :data:`THREADS` threads per
(query token, query head), each thread walking every ``THREADS``-th key it sees with online
softmax (Milakov & Gimelshein 2018, as in FlashAttention, Dao et al. 2022: per key one dot
product over the head dim, then the running maximum, denominator and output are rescaled),
then one merge of the threads' states through shared memory (split-K, as flash decoding).
Scalar code, no vector types: the same kernel compiles for OpenCL, Metal, WebGPU and CUDA.
A decode step of one sequence runs ``h_q`` work-groups, without the tiling of TVM's kernels; :func:`.attention.replace_attention` puts them in only
where a model needs the window or the cap. ``tests/test_attention.py`` runs the generated OpenCL C
on PoCL (a CPU OpenCL driver from PyPI) against TVM's CPU kernels and a NumPy reference, in
float32: PoCL's CPU build has no ``cl_khr_fp16``, so the float16 variants (loads widened to
float32, outputs narrowed) are compiled in the target tests, not run.
"""

from __future__ import annotations

from tvm.script import tirx as T

from mlcbuild.kernels.attention_common import NEG, logit, q_factor

THREADS = 32
"""Threads per work-group, one work-group per (query token, query head) task: each thread
walks every ``THREADS``-th key, then the work-group merges the partial softmax states. A
multiple of the SIMD width of NVIDIA and Apple GPUs (32); Adreno and Mali waves are 16-64."""


def attend_gpu(h_kv: int, h_q: int, d: int, dtype: str, window: int, softcap: float, load):
    """One (query, head) task over keys ``[lo, hi)`` by a work-group of :data:`THREADS`
    threads, as a TVMScript macro: the task of every GPU kernel of :mod:`.attention`.

    ``attend(q, row, head, sm_scale, a, b, base, lo, hi, output, lse, tx)``, ``tx`` the
    thread's index in the work-group (every thread of it calls this: it has barriers): query
    ``q[row, head]`` against the keys ``load(a, b, base, t, kv_head, j, kv)`` (``kv`` 0 key,
    1 value; element ``j`` of key ``t`` of KV head ``kv_head``); writes ``output[row, head]``
    (zeros where no key is seen) and ``lse[row, head]`` (base 2; :data:`NEG` where none is).

    Thread ``tx`` keeps an online-softmax state (running max ``m``, denominator ``l``,
    output row ``acc``) over keys ``lo + tx``, ``lo + tx + THREADS``, ...; the states merge
    as in split-K "flash decoding": ``M = max m_i``, ``L = sum l_i 2^(m_i - M)``, output
    ``sum acc_i 2^(m_i - M) / L``, the sum over threads done ``THREADS`` output columns at a
    time through 4 KiB of shared memory.
    """
    group = h_q // h_kv
    chunks = (d + THREADS - 1) // THREADS

    @T.macro
    def attend(q, row, head, sm_scale, a, b, base, lo, hi, output, lse, tx):
        m_sh = T.decl_buffer((THREADS,), "float32", scope="shared")
        l_sh = T.decl_buffer((THREADS,), "float32", scope="shared")
        part = T.decl_buffer((THREADS, THREADS), "float32", scope="shared")
        acc = T.decl_buffer((d,), "float32", scope="local")
        qv = T.decl_buffer((d,), "float32", scope="local")
        st = T.decl_buffer((8,), "float32", scope="local")  # max, denominator, score, new max, p, rescale, M, L
        for j in range(d):
            qv[j] = T.Cast("float32", q[row, head, j]) * q_factor(sm_scale, window, softcap)
            acc[j] = T.float32(0)
        st[0] = T.float32(NEG)
        st[1] = T.float32(0)
        for u in range((hi - lo - tx + THREADS - 1) // THREADS):
            st[2] = T.float32(0)
            for j in range(d):
                st[2] = st[2] + qv[j] * T.Cast("float32", load(a, b, base, lo + tx + u * THREADS, head // group, j, 0))
            st[2] = logit(st[2], softcap)
            st[3] = T.max(st[0], st[2])
            st[4] = T.exp2(st[2] - st[3])
            st[5] = T.exp2(st[0] - st[3])
            st[1] = st[1] * st[5] + st[4]
            for j in range(d):
                acc[j] = acc[j] * st[5] + st[4] * T.Cast(
                    "float32", load(a, b, base, lo + tx + u * THREADS, head // group, j, 1)
                )
            st[0] = st[3]
        m_sh[tx] = st[0]
        l_sh[tx] = st[1]
        T.tvm_storage_sync("shared")
        st[6] = T.float32(NEG)
        for i in range(THREADS):
            st[6] = T.max(st[6], m_sh[i])
        st[7] = T.float32(0)
        for i in range(THREADS):
            st[7] = st[7] + l_sh[i] * T.exp2(m_sh[i] - st[6])
        st[5] = T.exp2(st[0] - st[6])  # this thread's share of the merged state
        for c in range(chunks):
            for j in range(THREADS):
                part[tx, j] = T.if_then_else(
                    c * THREADS + j < d, acc[T.min(c * THREADS + j, d - 1)] * st[5], T.float32(0)
                )
            T.tvm_storage_sync("shared")
            if c * THREADS + tx < d:
                st[4] = T.float32(0)
                for i in range(THREADS):
                    st[4] = st[4] + part[i, tx]
                output[row, head, c * THREADS + tx] = T.Cast(
                    dtype, T.if_then_else(st[7] > T.float32(0), st[4] / st[7], T.float32(0))
                )
            T.tvm_storage_sync("shared")
        if tx == 0:
            lse[row, head] = T.if_then_else(st[7] > T.float32(0), st[6] + T.log2(st[7]), T.float32(NEG))

    return attend


def ragged_kv(k, v, base, t, kv_head, j, kv):
    """Key (``kv`` 0) or value element of the ragged prefill: row ``base + t`` of ``k``/``v``."""
    return k[base + t, kv_head, j] if kv == 0 else v[base + t, kv_head, j]


def paged_kv(page_size: int):
    """The element loader of the paged kernels: key ``t`` of a sequence whose pages are
    ``values[base:]`` lies in page ``t // page_size``, slot ``t % page_size``."""

    def load(pages, values, base, t, kv_head, j, kv):
        return pages[values[base + t // page_size], kv, kv_head, t % page_size, j]

    return load
