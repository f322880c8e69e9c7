"""Decode GEMV for unquantized fp32 weights (``q0f32``) on x86: ``y [1, 1, n] = x [1, 1, k] @ W [n, k]^T``.

The layout of the int8 GEMV (:mod:`.group_int8_gemv`): parallel over groups of 4 rows, one
from each of 4 far-apart stretches of the weight (4 independent memory streams per thread:
one stream of consecutive rows reads DRAM at ~8 GB/s here, several at 25+), two 8-lane FMA
accumulators per row (8 independent FMA chains), the activation row loaded once for the 4
rows, and a software prefetch 1 KiB ahead on each row. dlight's CPU GEMV reads one row at a
time: SmolLM-135M q0f32 decoded at llama.cpp's speed with it (0.96-1.10x, 540 MB a token).
"""

from __future__ import annotations

import functools
import math

from tvm import tirx
from tvm.script import tirx as T

LANES = 16  # floats per row and step: two 8-lane accumulators
PREFETCH = 256  # floats ahead (1 KiB), as the int8 GEMV


def supports(n: int, k: int, dtype: str) -> bool:
    """Whether :func:`float_gemv` runs an ``n x k`` fp32 weight (``k`` a multiple of 16, ``n >= 4``)."""
    return dtype == "float32" and k % LANES == 0 and n >= 4


@functools.lru_cache(maxsize=None)
def float_gemv(n: int, k: int) -> tirx.PrimFunc:
    """The kernel: x ``[1, 1, k]``, weight ``[n, k]`` (``nn.Linear``'s layout), y ``[1, 1, n]``, float32.

    Raises:
        ValueError: ``k`` not a multiple of 16 or fewer than 4 rows (:func:`supports`).
    """
    if not supports(n, k, "float32"):
        raise ValueError(f"no fp32 GEMV for {n} x {k} (k a multiple of {LANES}, n >= 4)")
    rows, per_task = 4, 4
    stretch = n // rows
    tasks = max(1, math.ceil(stretch / per_task))
    steps = k // LANES

    def row_at(task, blk, r):
        return r * stretch + task * per_task + blk

    def prefetch(w, row, col):
        return T.call_intrin(
            "void", "tirx.prefetch", T.address_of(w[row, col + PREFETCH]), T.int32(0), T.int32(3), T.int32(1)
        )

    def fma(acc, r, h, x, w, row, s):
        lanes = T.ramp(h * 8, 1, 8)
        return acc[r, lanes] + x[0, 0, T.ramp(s * LANES + h * 8, 1, 8)] * w[row, T.ramp(s * LANES + h * 8, 1, 8)]

    def hsum(acc, r):
        return (
            (acc[r, 0] + acc[r, 8])
            + (acc[r, 1] + acc[r, 9])
            + (acc[r, 2] + acc[r, 10])
            + (acc[r, 3] + acc[r, 11])
            + (acc[r, 4] + acc[r, 12])
            + (acc[r, 5] + acc[r, 13])
            + (acc[r, 6] + acc[r, 14])
            + (acc[r, 7] + acc[r, 15])
        )

    @T.prim_func(s_tir=False)
    def gemv_f32(
        x: T.Buffer((1, 1, k), "float32"), weight: T.Buffer((n, k), "float32"), y: T.Buffer((1, 1, n), "float32")
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for task in T.parallel(tasks):
            acc = T.decl_buffer((rows, LANES), "float32")
            for blk in range(per_task):
                if task * per_task + blk < stretch:
                    for r in T.unroll(rows):
                        acc[r, T.ramp(0, 1, LANES)] = T.broadcast(T.float32(0), LANES)
                    for s in range(steps):
                        for r in T.unroll(rows):
                            T.evaluate(prefetch(weight, row_at(task, blk, r), s * LANES))
                            for h in T.unroll(2):
                                acc[r, T.ramp(h * 8, 1, 8)] = fma(acc, r, h, x, weight, row_at(task, blk, r), s)
                    for r in T.unroll(rows):
                        y[0, 0, row_at(task, blk, r)] = hsum(acc, r)
        # the last n % rows rows, one at a time
        for t in range(n - stretch * rows):
            acc1 = T.decl_buffer((1, LANES), "float32")
            acc1[0, T.ramp(0, 1, LANES)] = T.broadcast(T.float32(0), LANES)
            for s in range(steps):
                for h in T.unroll(2):
                    acc1[0, T.ramp(h * 8, 1, 8)] = fma(acc1, 0, h, x, weight, stretch * rows + t, s)
            y[0, 0, stretch * rows + t] = hsum(acc1, 0)

    return gemv_f32.without_attr("global_symbol")  # Relax names each call site
