"""Prefill matmuls with int8 activations and integer dot products (x86: ``vpdpbusd`` with AVX-VNNI
or AVX512-VNNI, ``vpmaddubsw`` with AVX2).

``y [1, m, n] = x [1, m, k] @ dequant(q_weight, q_scale (, q_min))^T`` for a symbolic number of
tokens ``m``, by the arithmetic of :mod:`.int8_gemv` (llama.cpp's ``Q4_0 x Q8_0`` dot product,
``ggml-quants.c``) on every row: each row quantized to int8 once per call, per block of 32
(``d_x = max|x| / 127``), and per group ``g``::

    y[r, n] = sum_g d_w[n, g] * d_x[r, g] * (sum_{k in g} q[n, k] xq[r, k] - Z sum_{k in g} xq[r, k])
              (+ m[n, g] * d_x[r, g] * sum_{k in g} xq[r, k]   for a weight with minima, GGML Q4_1)

Two parallel loops:

1. over rows: the activation into int8 quads (an ``int32`` holds the 4 bytes one
   ``vpdpbusd`` lane multiplies), the block scales and the zero-point (or minimum) terms;
2. over tiles of 64 output features: the tile's weight codes unpacked once into the same quads
   (``[kp / 4, 64]`` int32, 4 bytes of one feature per lane: 9 KiB per 16 features at
   ``k = 576``, in L1 while every row block passes), their scales into ``[groups, 64]`` float32;
   then blocks of 4 rows x 16 features: per quad two weight loads, four activation broadcasts
   and eight ``vpdpbusd`` (32 multiply-adds each, against 8 for an fp32 FMA), per group eight
   int32 -> float32 conversions and FMAs with ``d_w * d_x``. 8 int32 and 8 float32 accumulators:
   AVX512-VL's 32 ymm registers hold them (AVX-VNNI's 16 spill some).

AVX2 has no ``vpdpbusd``; a quad's dot product is ``vpmaddubsw`` (16-bit sums of byte pairs)
then ``vpmaddwd`` by ones (pairs of those into int32), as llama.cpp's AVX2 dot products do
(``ggml-cpu/arch/x86/quants.c``). Int4 weights (codes 0..15) keep a group's 8 quads in 16-bit
sums (at most ``8 * 2 * 15 * 127 = 30480 < 2^15``) and widen once per group. Int8 weights use
the sign trick of :mod:`.int8_gemv`: unpacked as ``s = q - 128`` with ``|s|`` beside it, each
dot product ``vpmaddubsw(|s|, vpsignb(xq, s))`` widened at once (a pair reaches
``2 * 128 * 127``), the zero-point term ``(128 - Z) * sum xq``.

An int4 word holds ``k = 8 j .. 8 j + 7`` in its nibbles; ``w & 0x0F0F0F0F`` gives the bytes of
``k = 8 j + 0, 2, 4, 6`` and ``(w >> 4) & 0x0F0F0F0F`` those of ``8 j + 1, 3, 5, 7``, so the
activation quads are packed in that order (a dot product's lane sums its 4 products in any
order). An int8 word is one quad in ``k`` order.
"""

from __future__ import annotations

import functools
import math

from tvm import tirx
from tvm.script import tirx as T

from mlcbuild.kernels import int8_dot as D
from mlcbuild.kernels.signature import group_prefill_kernel

GROUP = D.GROUP
TILE = 64  # output features unpacked together
FEATS = 16  # features per register block: 2 x 8 int32 lanes
ROWS = 4  # token rows per register block
ISAS = ("avxvnni", "avx2")


def supports(weight: dict | None, n: int, isa: str | None, dtype: str) -> bool:
    """Whether :func:`prefill_matmul_int8` runs an ``n``-output linear whose weight is stored as
    ``weight`` (a scheme's ``dequantize_info``) with ``dtype`` activations on ``isa``."""
    return (
        weight is not None
        and isa in ISAS
        and dtype == "float32"
        and weight["kind"] == "group"
        and weight["layout"] == "NK"
        and weight["group_size"] == GROUP
        and weight["bits"] in (4, 8)
        and n % TILE == 0
    )


@functools.lru_cache(maxsize=None)  # TVMScript parsing costs ~0.1 s; shapes repeat per layer
def prefill_matmul_int8(
    n: int, k: int, bits: int, max_int: int, scale_dtype: str, has_min: bool = False, isa: str = "avxvnni"
) -> tirx.PrimFunc:
    """The kernel for ``n`` outputs (a multiple of 64) over ``k`` inputs, float32 activations,
    on ``isa`` (:data:`ISAS`: ``"avxvnni"``, AVX-VNNI or AVX512-VNNI with VL; ``"avx2"``).

    Buffers: x ``[1, m, k]`` float32 (``m`` symbolic), q_weight ``[n, kp * bits / 32]`` uint32
    (codes along ``k``, low bits first), q_scale ``[n, kp / 32]`` ``scale_dtype`` (then, ``has_min``,
    q_min of that shape: ``w = q * d + m``, ``max_int`` 0), y ``[1, m, n]`` float32; else
    ``w = (q - max_int) * d``. ``kp`` is ``k`` rounded up to 32 (zero padding).

    Raises:
        ValueError: ``bits`` not 4 or 8, ``n`` not a multiple of 64, or an unknown ``isa``.
    """
    if bits not in (4, 8) or n % TILE or isa not in ISAS:
        raise ValueError(f"no int8 prefill matmul for {bits}-bit weights with {n} outputs on {isa}")
    signed8 = bits == 8 and isa == "avx2"  # the sign trick: codes unpacked as q - 128
    sum16 = bits == 4 and isa == "avx2"  # a group's pair sums kept in 16 bits
    epw = 32 // bits
    kp = math.ceil(k / GROUP) * GROUP
    words, groups, quads = kp // epw, kp // GROUP, kp // 4
    qpg = GROUP // 4  # quads per group

    def x_at(x, row, i):
        return T.if_then_else(i < k, x[0, row, i], T.float32(0)) if k != kp else x[0, row, i]

    def element(g, quad, byte):
        """Index within the row of the element at ``(quad, byte)`` of group ``g``."""
        if bits == 8:
            return g * GROUP + quad * 4 + byte
        return g * GROUP + (quad // 2) * 8 + byte * 2 + quad % 2

    def byte_of(x, row, g, quad, byte, inv):
        """One activation byte, as int32 in ``[0, 255]`` (two's complement of the int8)."""
        q = T.Cast("int32", T.round(x_at(x, row, element(g, quad, byte)) * inv))
        return T.bitwise_and(q, T.int32(255))

    def packed(x, row, g, quad, inv):
        b = [byte_of(x, row, g, quad, t, inv) for t in range(4)]
        return T.bitwise_or(
            T.bitwise_or(b[0], T.shift_left(b[1], T.int32(8))),
            T.bitwise_or(T.shift_left(b[2], T.int32(16)), T.shift_left(b[3], T.int32(24))),
        )

    def weight_quad(qw, f, quad):
        """The 4 code bytes of quad ``quad`` of feature ``f`` as int32 (``signed8``: ``q - 128``)."""
        if signed8:
            return D.to_signed(T.reinterpret("int32", qw[f, quad]), lanes=1)
        if bits == 8:
            return T.reinterpret("int32", qw[f, quad])
        w = qw[f, quad // 2]
        w = T.if_then_else(quad % 2 == 0, w, T.shift_right(w, T.uint32(4)))
        return T.reinterpret("int32", T.bitwise_and(w, T.uint32(0x0F0F0F0F)))

    def pair_sums(wq, xq, wa=None):
        """AVX2: 16-bit sums of byte-product pairs (``wa``: ``|s|`` of the sign trick), int16x16."""
        return D.signed_pair_sums(wq, xq, wa) if signed8 else D.pair_sums(wq, xq)

    def dot(acc, wq, xq, wa=None):
        """``acc`` + the 4-byte dot product per int32 lane (the AVX2 int4 path adds 16-bit sums instead)."""
        return acc + D.widen(pair_sums(wq, xq, wa)) if isa == "avx2" else D.vnni_dot(acc, wq, xq)

    @T.macro
    def block(x, y, xq, xd, xz, xs, wt, wa, ws, wm, iacc, pacc, acc, tile, sub, row0, rows):
        """Rows ``row0 .. row0 + rows`` (``rows`` a Python int) x the 16 features of sub-tile ``sub``."""
        for i in T.unroll(rows):
            for f in T.unroll(2):
                acc[i, T.ramp(f * 8, 1, 8)] = T.broadcast(T.float32(0), 8)
        for g in range(groups):
            if sum16:
                for i in T.unroll(rows):
                    for f in T.unroll(2):
                        pacc[i, T.ramp(f * 16, 1, 16)] = T.broadcast(T.int16(0), 16)
                for qq in range(qpg):
                    for i in T.unroll(rows):
                        for f in T.unroll(2):
                            pacc[i, T.ramp(f * 16, 1, 16)] = pacc[i, T.ramp(f * 16, 1, 16)] + pair_sums(
                                wt[sub, g * qpg + qq, T.ramp(f * 8, 1, 8)],
                                T.broadcast(xq[row0 + i, g * qpg + qq], 8),
                            )
                for i in T.unroll(rows):
                    for f in T.unroll(2):
                        iacc[i, T.ramp(f * 8, 1, 8)] = T.broadcast(xz[row0 + i, g], 8) + D.widen(
                            pacc[i, T.ramp(f * 16, 1, 16)]
                        )
            else:
                for i in T.unroll(rows):
                    for f in T.unroll(2):
                        iacc[i, T.ramp(f * 8, 1, 8)] = T.broadcast(xz[row0 + i, g], 8)
                for qq in range(qpg):
                    for i in T.unroll(rows):
                        for f in T.unroll(2):
                            iacc[i, T.ramp(f * 8, 1, 8)] = dot(
                                iacc[i, T.ramp(f * 8, 1, 8)],
                                wt[sub, g * qpg + qq, T.ramp(f * 8, 1, 8)],
                                T.broadcast(xq[row0 + i, g * qpg + qq], 8),
                                wa[sub, g * qpg + qq, T.ramp(f * 8, 1, 8)] if signed8 else None,
                            )
            for i in T.unroll(rows):
                for f in T.unroll(2):
                    acc[i, T.ramp(f * 8, 1, 8)] = acc[i, T.ramp(f * 8, 1, 8)] + T.Cast(
                        "float32x8", iacc[i, T.ramp(f * 8, 1, 8)]
                    ) * (ws[sub, g, T.ramp(f * 8, 1, 8)] * T.broadcast(xd[row0 + i, g], 8))
                    if has_min:
                        acc[i, T.ramp(f * 8, 1, 8)] = acc[i, T.ramp(f * 8, 1, 8)] + wm[
                            sub, g, T.ramp(f * 8, 1, 8)
                        ] * T.broadcast(xs[row0 + i, g], 8)
        for i in T.unroll(rows):
            for f in T.unroll(2):
                y[0, row0 + i, T.ramp(tile * TILE + sub * FEATS + f * 8, 1, 8)] = acc[i, T.ramp(f * 8, 1, 8)]

    @T.macro
    def body(x, q_weight, q_scale, q_min, y, m):
        xq = T.decl_buffer((m, quads), "int32")  # packed int8 quads (a workspace: m is symbolic)
        xd = T.decl_buffer((m, groups), "float32")  # d_x
        xz = T.decl_buffer((m, groups), "int32")  # -Z * sum xq
        xs = T.decl_buffer((m, groups if has_min else 1), "float32")  # d_x * sum xq (weights with minima)
        # ---- 1. every row's activation, quantized once
        for r in T.parallel(m):
            st = T.decl_buffer((4,), "float32")  # max |x|, 127 / max, sum of xq
            part = T.decl_buffer((8,), "float32")
            for g in range(groups):
                for lane in T.vectorized(8):
                    part[lane] = T.max(
                        T.max(T.abs(x_at(x, r, g * GROUP + lane)), T.abs(x_at(x, r, g * GROUP + 8 + lane))),
                        T.max(T.abs(x_at(x, r, g * GROUP + 16 + lane)), T.abs(x_at(x, r, g * GROUP + 24 + lane))),
                    )
                st[0] = T.max(
                    T.max(T.max(part[0], part[1]), T.max(part[2], part[3])),
                    T.max(T.max(part[4], part[5]), T.max(part[6], part[7])),
                )
                xd[r, g] = st[0] / T.float32(127)
                st[1] = T.if_then_else(st[0] > T.float32(0), T.float32(127) / st[0], T.float32(0))
                for lane in T.vectorized(8):
                    part[lane] = (
                        T.round(x_at(x, r, g * GROUP + lane) * st[1])
                        + T.round(x_at(x, r, g * GROUP + 8 + lane) * st[1])
                        + T.round(x_at(x, r, g * GROUP + 16 + lane) * st[1])
                        + T.round(x_at(x, r, g * GROUP + 24 + lane) * st[1])
                    )
                st[2] = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]))
                xz[r, g] = T.Cast("int32", st[2]) * ((128 if signed8 else 0) - max_int)
                if has_min:
                    xs[r, g] = xd[r, g] * st[2]
                for qq in range(qpg):
                    xq[r, g * qpg + qq] = packed(x, r, g, qq, st[1])
        # ---- 2. tiles of 64 features: codes unpacked once, then 4 x 16 register blocks
        for tile in T.parallel(n // TILE):
            wt = T.decl_buffer((TILE // FEATS, quads, FEATS), "int32")
            wa = T.decl_buffer((TILE // FEATS, quads if signed8 else 1, FEATS), "int32")  # |s| (signed8)
            ws = T.decl_buffer((TILE // FEATS, groups, FEATS), "float32")
            wm = T.decl_buffer((TILE // FEATS, groups if has_min else 1, FEATS), "float32")
            iacc = T.decl_buffer((ROWS, FEATS), "int32")
            pacc = T.decl_buffer((ROWS, 2 * FEATS if sum16 else 1), "int16")  # 16-bit pair sums (sum16)
            acc = T.decl_buffer((ROWS, FEATS), "float32")
            for sub in range(TILE // FEATS):
                for qd in range(quads):
                    for j in T.vectorized(FEATS):
                        wt[sub, qd, j] = weight_quad(q_weight, tile * TILE + sub * FEATS + j, qd)
                if signed8:
                    for qd in range(quads):
                        for j0 in range(FEATS // 8):
                            wa[sub, qd, T.ramp(j0 * 8, 1, 8)] = T.reinterpret(
                                "int32x8", D.magnitude(wt[sub, qd, T.ramp(j0 * 8, 1, 8)])
                            )
                for g in range(groups):
                    for j in T.vectorized(FEATS):
                        ws[sub, g, j] = T.Cast("float32", q_scale[tile * TILE + sub * FEATS + j, g])
                if has_min:
                    for g in range(groups):
                        for j in T.vectorized(FEATS):
                            wm[sub, g, j] = T.Cast("float32", q_min[tile * TILE + sub * FEATS + j, g])
            for sub in range(TILE // FEATS):
                for rb in range(m // ROWS):
                    block(x, y, xq, xd, xz, xs, wt, wa, ws, wm, iacc, pacc, acc, tile, sub, rb * ROWS, ROWS)
                for r in range(m - m // ROWS * ROWS):  # the last rows, one at a time
                    block(x, y, xq, xd, xz, xs, wt, wa, ws, wm, iacc, pacc, acc, tile, sub, m // ROWS * ROWS + r, 1)

    return group_prefill_kernel(n, k, words, groups, scale_dtype, has_min, body)
