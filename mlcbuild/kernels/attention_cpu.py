"""How our attention kernels (:mod:`.attention`) run one (query, head) task on a CPU:
vectorized over the head dim, with online softmax (Milakov & Gimelshein 2018, as in
FlashAttention, Dao et al. 2022): per key one dot product, then the running maximum,
denominator and output vector are rescaled; no score matrix is stored.

TVM's ``_attention_prefill_ragged_cpu`` runs every query, head and key in one serial loop
nest, scalar: 7-11 ms of SmolLM-135M's ~25 ms per layer at a 128-token prefill on host; its
decode kernel is scalar and serial too (~6.9 ms of SmolLM-135M's ~17 ms per decoded token
at a 200-token context). Ours run the tasks in parallel (:mod:`.attention`) and each task as
below.
"""

from __future__ import annotations

from tvm.script import tirx as T

from mlcbuild.kernels.attention_common import NEG, logit, q_factor
from mlcbuild.kernels.tir_math import fast_exp2

KEYS = 8  # keys per block of the ragged prefill: their scores and 2^x at once, one rescale


def dot8(qv, d: int, key8):
    """``q . k`` as 8 partial sums (float32x8): ``qv`` the ``d``-wide query (float32),
    ``key8(j0)`` the key's values ``[8 j0, 8 j0 + 8)`` as float32x8."""
    total = None
    for j0 in range(d // 8):
        term = qv[T.ramp(j0 * 8, 1, 8)] * key8(j0)
        total = term if total is None else total + term
    return total


@T.macro
def key_score(part, score, u, dot, softcap: float):
    """``score[u]``: the soft-capped logit (:func:`.attention_common.logit`) of a key whose
    8 partial sums are ``dot``, summed in 3 steps through ``part``."""
    part[T.ramp(0, 1, 8)] = dot
    part[T.ramp(0, 1, 4)] = part[T.ramp(0, 1, 4)] + part[T.ramp(4, 1, 4)]
    score[u] = logit((part[0] + part[2]) + (part[1] + part[3]), softcap)


@T.macro
def rescale(score, stats, acc, keys: int, d: int):
    """The online-softmax step of a block of ``keys`` scores (base 2; ``NEG`` where no key):
    ``stats`` = [running max, denominator, block max, new max]; the scores become
    ``2^(score - new max)`` (one vectorized polynomial), the denominator and the ``d``-wide
    running output ``acc`` are rescaled to the new max. The caller then adds the block's
    scores to the denominator and their weighted values to ``acc``, and sets the running max."""
    stats[2] = T.float32(NEG)
    for t in range(keys):
        stats[2] = T.max(stats[2], score[t])
    stats[3] = T.max(stats[0], stats[2])
    for t in T.vectorized(keys):
        score[t] = fast_exp2(score[t] - stats[3])
    stats[1] = stats[1] * fast_exp2(stats[0] - stats[3])
    for j in T.vectorized(d):
        acc[j] = acc[j] * fast_exp2(stats[0] - stats[3])


def ragged_attend_cpu(h_kv: int, h_q: int, d: int, dtype: str, window: int, softcap: float):
    """One (query, head) task of the ragged prefill (a chunk against its own keys), as a
    TVMScript macro with the interface of :func:`.gpu_attention.attend_gpu`.

    ``attend(q, row, head, sm_scale, k, v, base, lo, hi, output, lse, tx)`` (``tx`` unused): query ``q[row, head]``
    against keys ``k/v[base + lo : base + hi]``; writes ``output[row, head]`` and
    ``lse[row, head]`` (base 2). :data:`KEYS` keys at a time, as :func:`paged_attend_cpu` does a
    page: their scores (per key one 8-lane dot product and a 3-step horizontal sum,
    :func:`.attention_common.logit`), their ``2^x`` as one vectorized polynomial, then one
    rescale of the running output (online softmax). One key at a time (a scalar ``2^x`` and a
    rescale per key) took 111 ms of the Llama-3.2-1B shape's 2.95 s q0f32 prefill of 128 tokens
    on one Zen 4 thread (2026-12-07).
    """
    group = h_q // h_kv
    chunks = d // 8

    def key_dot(qv, k, key, head):
        """``q . k_key`` as 8 partial sums (float32x8)."""
        return dot8(qv, d, lambda j0: T.Cast("float32x8", k[key, head // group, T.ramp(j0 * 8, 1, 8)]))

    @T.macro
    def attend(q, row, head, sm_scale, k, v, base, lo, hi, output, lse, tx):  # noqa: ARG001 - tx: GPU only
        # default (global) scope and under 1 KiB: stack allocations, not workspace calls
        acc = T.decl_buffer((d,), "float32")
        qv = T.decl_buffer((d,), "float32")
        part = T.decl_buffer((8,), "float32")
        score = T.decl_buffer((KEYS,), "float32")
        stats = T.decl_buffer((4,), "float32")  # running max, denominator, block max, new max
        for j in T.vectorized(d):
            qv[j] = T.Cast("float32", q[row, head, j]) * q_factor(sm_scale, window, softcap)
            acc[j] = T.float32(0)
        stats[0] = T.float32(NEG)
        stats[1] = T.float32(0)
        for b in range((hi - lo + KEYS - 1) // KEYS):
            for t in T.vectorized(KEYS):
                score[t] = T.float32(NEG)
            for u in range(T.min(hi - lo - b * KEYS, KEYS)):
                key_score(part, score, u, key_dot(qv, k, base + lo + b * KEYS + u, head), softcap)
            rescale(score, stats, acc, KEYS, d)
            for u in range(T.min(hi - lo - b * KEYS, KEYS)):
                stats[1] = stats[1] + score[u]
                for j0 in T.unroll(chunks):
                    acc[T.ramp(j0 * 8, 1, 8)] = acc[T.ramp(j0 * 8, 1, 8)] + T.broadcast(score[u], 8) * T.Cast(
                        "float32x8", v[base + lo + b * KEYS + u, head // group, T.ramp(j0 * 8, 1, 8)]
                    )
            stats[0] = stats[3]
        for j in T.vectorized(d):
            output[row, head, j] = T.Cast(dtype, acc[j] / stats[1])
        lse[row, head] = stats[0] + T.log2(stats[1])

    return attend


def paged_attend_cpu(h_kv: int, h_q: int, d: int, page_size: int, dtype: str, window: int, softcap: float):
    """One (query, head) task over a sequence's cached keys (the paged prefill and decode
    kernels of :mod:`.attention`), as a TVMScript macro.

    ``attend(q, row, head, sm_scale, pages, values, first, lo, hi, output, lse, tx)`` (``tx`` unused): query
    ``q[row, head]`` against keys ``[lo, hi)`` of the sequence whose pages are
    ``values[first:]`` (key ``t`` in page ``t // page_size``, slot ``t % page_size``); writes
    ``output[row, head]`` and ``lse[row, head]`` (base 2; zeros and -5e4 where no key is seen).
    One page of keys at a time: its scores (per key one 8-lane dot product and a 3-step
    horizontal sum, :func:`logit`), their ``2^x`` as one vectorized polynomial
    (:func:`.tir_math.fast_exp2`), then one rescale of the running output per page (online
    softmax, Milakov & Gimelshein 2018).
    """
    group = h_q // h_kv
    chunks = d // 8

    def kv_at(pages, values, first, head, pg, kv, t, j0):
        """8 values ``[8 j0, 8 j0 + 8)`` of key (``kv`` 0) or value (1) ``t`` of page ``pg``, float32x8."""
        return T.Cast("float32x8", pages[values[first + pg], kv, head // group, t, T.ramp(j0 * 8, 1, 8)])

    def key_dot(qv, pages, values, first, head, pg, t):
        """``q . k_t`` as 8 partial sums (float32x8)."""
        return dot8(qv, d, lambda j0: kv_at(pages, values, first, head, pg, 0, t, j0))

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
    def attend(q, row, head, sm_scale, pages, values, first, lo, hi, output, lse, tx):  # noqa: ARG001 - tx: GPU only
        acc = T.decl_buffer((d,), "float32")
        qv = T.decl_buffer((d,), "float32")
        part = T.decl_buffer((8,), "float32")
        score = T.decl_buffer((page_size,), "float32")
        stats = T.decl_buffer((4,), "float32")  # running max, denominator, page max, new max
        for j in T.vectorized(d):
            qv[j] = T.Cast("float32", q[row, head, j]) * q_factor(sm_scale, window, softcap)
            acc[j] = T.float32(0)
        stats[0] = T.float32(NEG)
        stats[1] = T.float32(0)
        for p in range((hi + page_size - 1) // page_size - lo // page_size):
            for t in T.vectorized(page_size):
                score[t] = T.float32(NEG)
            for u in range(end(page(lo, p), hi) - begin(page(lo, p), lo)):
                key_score(
                    part,
                    score,
                    slot(lo, p, u),
                    key_dot(qv, pages, values, first, head, page(lo, p), slot(lo, p, u)),
                    softcap,
                )
            rescale(score, stats, acc, page_size, d)
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
        lse[row, head] = T.if_then_else(stats[1] > T.float32(0), stats[0] + T.log2(stats[1]), T.float32(NEG))

    return attend
