"""How our attention kernels (:mod:`.attention`) run one (query, head) task on a GPU, for
models whose math TVM's GPU kernels do not do: sliding-window attention (Mistral, Phi-3,
Gemma's local layers) and attention logit soft-capping (Gemma 2).

TVM 0.27's GPU kernels (``batch_prefill_ragged_kv``, ``batch_prefill_paged_kv``,
``batch_decode_paged_kv``) have no soft-cap, and their sliding window is the KV cache's
own per-sequence one (pages evicted behind an attention sink), not a per-layer mask that is
exact for any window and chunking. Ours apply the same window and cap as on CPU
(:func:`.attention_common.window_start`, :func:`.attention_common.logit`).

They are written for correctness first: one GPU thread per (query token, query head), which
walks the keys it sees with online softmax (Milakov & Gimelshein 2018, as in
FlashAttention, Dao et al. 2022: per key one dot product over the head dim, then the running
maximum, denominator and output are rescaled), holding its output row in private memory.
Scalar code, no shared memory, no vector types: the same kernel compiles for OpenCL,
Metal, WebGPU and CUDA. A decode step of one sequence runs ``h_q`` threads, so these are far
slower than TVM's tiled kernels; :func:`.attention.replace_attention` puts them in only
where a model needs the window or the cap. ``tests/test_attention.py`` runs the generated OpenCL C
on PoCL (a CPU OpenCL driver from PyPI) against TVM's CPU kernels and a NumPy reference, in
float32: PoCL's CPU build has no ``cl_khr_fp16``, so the float16 variants (loads widened to
float32, outputs narrowed) are compiled in the target tests, not run.
"""

from __future__ import annotations

from tvm.script import tirx as T

from .attention_common import NEG, logit, q_factor

THREADS = 64
"""Threads per block (work-group): a multiple of the warp/wave/SIMD width of every GPU
target (32 NVIDIA/Apple, 64 Adreno/Mali waves are 16-64)."""


def attend_gpu(h_kv: int, h_q: int, d: int, dtype: str, window: int, softcap: float, load):
    """One (query, head) task over keys ``[lo, hi)``, as a TVMScript macro: the task of every
    GPU kernel of :mod:`.attention`.

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


def ragged_kv(k, v, base, t, kv_head, j, kv):
    """Key (``kv`` 0) or value element of the ragged prefill: row ``base + t`` of ``k``/``v``."""
    return k[base + t, kv_head, j] if kv == 0 else v[base + t, kv_head, j]


def paged_kv(page_size: int):
    """The element loader of the paged kernels: key ``t`` of a sequence whose pages are
    ``values[base:]`` lies in page ``t // page_size``, slot ``t % page_size``."""

    def load(pages, values, base, t, kv_head, j, kv):
        return pages[values[base + t // page_size], kv, kv_head, t % page_size, j]

    return load
