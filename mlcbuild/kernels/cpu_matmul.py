"""Prefill matmuls of the group schemes on x86 CPUs: register-blocked fp32 tiles.

``y [1, m, n] = x [1, m, k] @ dequant(q_weight [n, kp * bits / 32], q_scale [n, kp / 32])^T``
for a symbolic number of tokens ``m``. Parallel over tiles of 64 output features; per tile
the weights are dequantized once into a transposed ``[kp, 64]`` fp32 buffer, then blocks
of 4 token rows x 16 features run through ``k``: per ``k`` two tile loads, four activation
broadcasts and eight FMAs into eight accumulator registers (AVX2 has 16), so the loop is
bound by the FMA units rather than by loads (the dlight-style rule in
:mod:`mlcbuild.compiler.schedules`, one row at a time, does one broadcast and 8 loads per
8 FMAs, and a symbolic row tail kept its accumulators in memory when blocked). Rows past
the last multiple of 4 run one at a time.

Used by :mod:`.group_nn` for ``[1, tokens, K]`` inputs of NK-layout group schemes computing
in fp32 on x86 targets with AVX2 (:func:`mlcbuild.compiler.target.int8_dot_isa` ``"avx2"`` or
``"avxvnni"``), and by :mod:`.none` for unquantized fp32 weights (:func:`prefill_matmul_float`;
on AVX-512 targets with ``k >= 2048``, :func:`prefill_matmul_float_dot`).
"""

from __future__ import annotations

import functools
import math

from tvm import tirx
from tvm.script import tirx as T

from mlcbuild.kernels import int8_dot as D
from mlcbuild.kernels.signature import float_prefill_kernel, group_prefill_kernel

TILE = 64  # output features dequantized together
FEATS = 16  # features per register block: 2 x 8 fp32 lanes
ROWS = 4  # token rows per register block


def supports(weight: dict | None, n: int, isa: str | None, dtype: str) -> bool:
    """Whether :func:`prefill_matmul` runs an ``n``-output linear whose weight is stored as
    ``weight`` (a scheme's ``dequantize_info``, see :func:`mlcbuild.kernels.int8_gemv.supports`)
    with ``dtype`` activations on ``isa``."""
    return (
        weight is not None
        and isa in ("avx2", "avxvnni")
        and dtype == "float32"
        and weight["kind"] == "group"
        and weight["layout"] == "NK"
        and weight["bits"] in (4, 8)
        and n % TILE == 0
    )


def _register_blocked(k: int):
    """The macro that multiplies every token row by one ``[TILE // FEATS, kp, FEATS]`` float32
    weight tile ``wt`` (transposed: features innermost) into ``y[.., tile * TILE : + TILE]``."""

    def fma(acc, i, f, x, row, kk, wt, sub):
        return acc[i, T.ramp(f * 8, 1, 8)] + T.broadcast(x[0, row, kk], 8) * wt[sub, kk, T.ramp(f * 8, 1, 8)]

    @T.macro
    def tile_rows(x, y, m, wt, acc, tile):
        for sub in range(TILE // FEATS):
            for rb in range(m // ROWS):
                for i in T.unroll(ROWS):
                    for f in T.unroll(FEATS // 8):
                        acc[i, T.ramp(f * 8, 1, 8)] = T.broadcast(T.float32(0), 8)
                for kk in range(k):
                    for i in T.unroll(ROWS):
                        for f in T.unroll(FEATS // 8):
                            acc[i, T.ramp(f * 8, 1, 8)] = fma(acc, i, f, x, rb * ROWS + i, kk, wt, sub)
                for i in T.unroll(ROWS):
                    for f in T.unroll(FEATS // 8):
                        y[0, rb * ROWS + i, T.ramp(tile * TILE + sub * FEATS + f * 8, 1, 8)] = acc[
                            i, T.ramp(f * 8, 1, 8)
                        ]
            for r in range(m - m // ROWS * ROWS):
                for f in T.unroll(FEATS // 8):
                    acc[0, T.ramp(f * 8, 1, 8)] = T.broadcast(T.float32(0), 8)
                for kk in range(k):
                    for f in T.unroll(FEATS // 8):
                        acc[0, T.ramp(f * 8, 1, 8)] = fma(acc, 0, f, x, m // ROWS * ROWS + r, kk, wt, sub)
                for f in T.unroll(FEATS // 8):
                    y[0, m // ROWS * ROWS + r, T.ramp(tile * TILE + sub * FEATS + f * 8, 1, 8)] = acc[
                        0, T.ramp(f * 8, 1, 8)
                    ]

    return tile_rows


@functools.lru_cache(maxsize=None)  # TVMScript parsing costs ~0.1 s; shapes repeat per layer
def prefill_matmul(
    n: int, k: int, bits: int, group: int, max_int: int, scale_dtype: str, has_min: bool = False
) -> tirx.PrimFunc:
    """The kernel for ``n`` outputs (a multiple of 64) over ``k`` inputs, float32 activations.

    Buffers: x ``[1, m, k]`` float32 (``m`` symbolic), q_weight ``[n, kp / epw]`` uint32,
    q_scale ``[n, kp / group]`` ``scale_dtype`` (then, ``has_min``: q_min of the same shape, GGML
    Q4_1's ``w = q * d + m``), y ``[1, m, n]`` float32; ``w = (q - max_int) * scale`` otherwise.
    """
    epw = 32 // bits
    kp = math.ceil(k / group) * group
    words, groups = kp // epw, kp // group
    mask = (1 << bits) - 1
    tile_rows = _register_blocked(k)

    # No TVMScript assignments below (each becomes a workspace allocation in TVM 0.27, see
    # group_int8_gemv.py): helpers inline the expressions.
    def w_at(qw, qs, qm, row, kk):
        """Dequantized weight ``[row, kk]`` as float32 (zero in the padding past ``k``)."""
        q = T.bitwise_and(T.shift_right(qw[row, kk // epw], T.Cast("uint32", kk % epw * bits)), T.uint32(mask))
        if has_min:
            return T.Cast("float32", q) * T.Cast("float32", qs[row, kk // group]) + T.Cast(
                "float32", qm[row, kk // group]
            )
        return (T.Cast("float32", q) - T.float32(max_int)) * T.Cast("float32", qs[row, kk // group])

    @T.macro
    def body(x, q_weight, q_scale, q_min, y, m):
        for tile in T.parallel(n // TILE):
            wt = T.decl_buffer((TILE // FEATS, kp, FEATS), "float32")  # dequantized: [sub-tile, k, feature]
            acc = T.decl_buffer((ROWS, FEATS), "float32")
            # 16 rows' packed words gathered once per `epw` values of k, unpacked 16 lanes wide
            for sub in range(TILE // FEATS):
                for kw in range(words):
                    for e in T.unroll(epw):
                        for j in T.vectorized(FEATS):
                            wt[sub, kw * epw + e, j] = w_at(
                                q_weight, q_scale, q_min, tile * TILE + sub * FEATS + j, kw * epw + e
                            )
            tile_rows(x, y, m, wt, acc, tile)

    return group_prefill_kernel(n, k, words, groups, scale_dtype, has_min, body)


def supports_float(n: int, dtype: str) -> bool:
    """Whether :func:`prefill_matmul_float` runs an ``n``-output fp32 linear (q0f32) on an
    x86 AVX2 target (the caller, :mod:`mlcbuild.compiler.passes.dispatch_kernels`, checks the target)."""
    return dtype == "float32" and n % TILE == 0


@functools.lru_cache(maxsize=None)
def prefill_matmul_float(n: int, k: int) -> tirx.PrimFunc:
    """The same register-blocked kernel for an unquantized float32 weight (``q0f32``).

    Buffers: x ``[1, m, k]``, weight ``[n, k]`` (``nn.Linear``'s layout), y ``[1, m, n]``,
    float32. Per tile of 64 outputs the weight is copied once, transposed, into the
    ``[4, k, 16]`` buffer the FMA blocks read (dlight's rule, which this replaces on x86,
    measured 20.3-20.6 tokens/s at a 128-token Llama-3.2-1B prefill).
    """
    tile_rows = _register_blocked(k)
    # Weight rows a multiple of 4 KiB apart (k % 1024 == 0: Llama 3.2 1B's 2048 and 8192) share
    # one L1 set, and the 16-row gather per k missed on every row: one Zen 4 thread ran this
    # kernel at 86 GFLOP/s for k = 1024, 2048, 3072, 4096 against 100 for 512, 1040, 1536, 2064.
    # Copied through a 16 x 17 staging block instead: 97-98 (the 1B's 3072 x 2048 and
    # 2048 x 8192: 85 -> 94); for the other k the staging costs 1-3.5 %, so they keep the gather
    # (128 tokens, 2026-12-07).
    staged = k % 1024 == 0

    @T.macro
    def body(x, weight, y, m):
        for tile in T.parallel(n // TILE):
            wt = T.decl_buffer((TILE // FEATS, k, FEATS), "float32")  # [sub-tile, k, feature]
            acc = T.decl_buffer((ROWS, FEATS), "float32")
            if staged:  # 16 x 16 blocks: rows read contiguously, transposed from a padded L1 buffer
                stage = T.decl_buffer((FEATS, FEATS + 1), "float32")
                for sub in range(TILE // FEATS):
                    for kb in range(k // FEATS):
                        for j in range(FEATS):
                            for c in T.vectorized(FEATS):
                                stage[j, c] = weight[tile * TILE + sub * FEATS + j, kb * FEATS + c]
                        for c in T.unroll(FEATS):
                            for j in T.vectorized(FEATS):
                                wt[sub, kb * FEATS + c, j] = stage[j, c]
            else:  # a 16-row gather per k
                for sub in range(TILE // FEATS):
                    for kk in range(k):
                        for j in T.vectorized(FEATS):
                            wt[sub, kk, j] = weight[tile * TILE + sub * FEATS + j, kk]
            tile_rows(x, y, m, wt, acc, tile)

    return float_prefill_kernel(n, k, body)


DOT_LANES = 8  # float32 per 256-bit vector: 24 accumulators need AVX-512's 32 vector registers (VL encodes ymm16-31)
DOT_ROWS, DOT_OUTS = 6, 4  # token rows x weight rows per register block
DOT_BLOCKS = 2  # blocks of DOT_OUTS weight rows per parallel task (the token block read once for both)
DOT_MIN_K = 2048  # below it the final lane sums cost more than the block saves (see the kernel)
DOT_PAD = 16  # floats added to each token row of the copy of x: its rows and the weight's fall in other L1 sets


def supports_float_dot(n: int, k: int) -> bool:
    """Whether :func:`prefill_matmul_float_dot` runs an ``n x k`` fp32 weight (the caller checks AVX-512)."""
    return k % DOT_LANES == 0 and k >= DOT_MIN_K and n % (DOT_OUTS * DOT_BLOCKS) == 0


@functools.lru_cache(maxsize=None)
def prefill_matmul_float_dot(n: int, k: int) -> tirx.PrimFunc:
    """The q0f32 prefill matmul as dot products along ``k``, for x86 targets with AVX-512 (F and VL).

    Buffers as :func:`prefill_matmul_float`: x ``[1, m, k]`` (``m`` symbolic), weight ``[n, k]``,
    y ``[1, m, n]``, float32. The weight is read as it is stored (no transposed copy): a block
    of 6 token rows x 4 weight rows keeps 24 accumulators of 8 partial sums each; per 8 values
    of ``k`` 10 loads and 24 FMAs (29 of AVX-512's 32 vector registers), then a token row's 4
    accumulators are summed at once (3 ``vhaddps``, :func:`mlcbuild.kernels.int8_dot.row_sums4`)
    into 4 adjacent outputs. llamafile's ``tinyBLAS`` in llama.cpp
    (``ggml-cpu/llamafile/sgemm.cpp``) blocks the same way (4 x 6, 512-bit). Parallel over pairs
    of 4-row weight blocks, the 6-row token block shared by the pair; rows past the last
    multiple of 6 run one at a time against the 4 weight rows.

    ``x`` is first copied with its rows :data:`DOT_PAD` floats apart: in a Relax VM every tensor
    starts 64 bytes past a 4 KiB boundary, so with ``k % 1024 == 0`` each step's 6 token lines
    and 4 weight lines fell in one 8-way L1 set (one Zen 4 thread, 128 tokens, 2026-12-07:
    84-86 GFLOP/s unpadded against 99-104 with ``x`` elsewhere; the copy costs ~2 %). The 1B
    shape's q0f32 prefill (its four matmuls, both builds in one process) 38.5 -> 43.7 tokens/s on
    one thread, 73.9 -> 76.8 on two, against :func:`prefill_matmul_float`; 512-bit vectors
    measured no faster (98.5 against 100.0 GFLOP/s). At ``k = 576`` the lane sums make it slower, hence :data:`DOT_MIN_K`.

    Raises:
        ValueError: a shape :func:`supports_float_dot` rejects.
    """
    if not supports_float_dot(n, k):
        raise ValueError(
            f"no AVX-512 fp32 prefill matmul for {n} x {k} (k a multiple of {DOT_LANES}, at least {DOT_MIN_K}; "
            f"n a multiple of {DOT_OUTS * DOT_BLOCKS})"
        )
    lanes, rows, outs = DOT_LANES, DOT_ROWS, DOT_OUTS
    steps = k // lanes
    vec = lambda s: T.ramp(s * lanes, 1, lanes)  # noqa: E731

    stride = k + DOT_PAD  # floats between token rows in the padded copy

    @T.macro
    def block(acc, xp, weight, row, out0, width):
        """``acc[i * outs + j] += xp[row + i] * weight[out0 + j]`` over ``k`` for ``width`` token rows."""
        for a in T.unroll(width * outs):
            acc[a, vec(0)] = T.broadcast(T.float32(0), lanes)
        for s in range(steps):
            for i in T.unroll(width):
                for j in T.unroll(outs):
                    acc[i * outs + j, vec(0)] = (
                        acc[i * outs + j, vec(0)]
                        + xp[T.ramp((row + i) * stride + s * lanes, 1, lanes)] * weight[out0 + j, vec(s)]
                    )

    @T.macro
    def body(x, weight, y, m):
        xp = T.decl_buffer((m * stride,), "float32")  # x, rows padded (a workspace)
        for r in T.parallel(m):
            for c in range(k // lanes):
                for v in T.vectorized(lanes):
                    xp[r * stride + c * lanes + v] = x[0, r, c * lanes + v]
        for task in T.parallel(n // (outs * DOT_BLOCKS)):
            acc = T.decl_buffer((rows * outs, lanes), "float32")
            for tb in range(m // rows):
                for blk in range(DOT_BLOCKS):
                    block(acc, xp, weight, tb * rows, (task * DOT_BLOCKS + blk) * outs, rows)
                    for i in T.unroll(rows):
                        y[0, tb * rows + i, T.ramp((task * DOT_BLOCKS + blk) * outs, 1, outs)] = D.row_sums4(
                            [acc[i * outs + j, vec(0)] for j in range(outs)]
                        )
            for r in range(m - m // rows * rows):
                for blk in range(DOT_BLOCKS):
                    block(acc, xp, weight, m // rows * rows + r, (task * DOT_BLOCKS + blk) * outs, 1)
                    y[0, m // rows * rows + r, T.ramp((task * DOT_BLOCKS + blk) * outs, 1, outs)] = D.row_sums4(
                        [acc[j, vec(0)] for j in range(outs)]
                    )

    return float_prefill_kernel(n, k, body)
