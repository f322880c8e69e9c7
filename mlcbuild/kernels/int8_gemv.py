"""Decode GEMVs with int8 activations and integer dot products (CPU builds).

A group-quantized weight (4 or 8 bits, group of 32 along ``K``, ``NK`` layout) times one
activation row. The activation row is quantized to int8 per block of 32, the same blocks
as the weight groups, as llama.cpp does for its ``Q4_0 x Q8_0`` dot product
(``ggml-quants.c``)::

    d_x[g] = max_{k in g} |x[k]| / 127,     xq[k] = round(x[k] / d_x[g])          (int8)
    y[n]   = sum_g d_w[n, g] * d_x[g] * (sum_{k in g} q[n, k] * xq[k] - Z * sum_{k in g} xq[k])

with ``q`` the stored unsigned weight and ``Z`` the scheme's zero point (``max_int``: 7 for
int4, 127 for int8; GGML's Q4_0 8, Q8_0 128). A weight with a per-group minimum (GGML's
Q4_1, ``w = q d_w + m``, ``Z = 0``) adds ``sum_g m[n, g] * d_x[g] * sum_{k in g} xq[k]``, as
llama.cpp's ``Q4_1 x Q8_1`` dot product does with the activation block's stored sum. The inner
sums are integer dot products of unsigned weight bytes and signed activation bytes:

- ``vpdpbusd`` with AVX-VNNI / AVX512-VNNI;
- AVX2: ``vpmaddubsw`` (16-bit sums of byte pairs), then one ``vpmaddwd`` by ones per step
  (int4: the step's low- and high-nibble pair sums added in 16 bits first, at most
  ``2 * 2 * 15 * 127``). Int8 weights by llama.cpp's sign trick (``mul_sum_i8_pairs_float`` in
  ``ggml-cpu/arch/x86/quants.c``): the weight byte made signed (``s = q - 128``: XOR ``0x80``),
  its magnitude ``|s|`` (``vpsignb s, s``: -128 gives the unsigned byte 128) times the
  activation with the weight's sign (``vpsignb xq, s``), so ``|s| * sign(s) * xq = s * xq``
  and a pair sums to at most ``2 * 128 * 127 < 2^15`` (``vpmaddubsw`` of the unsigned code
  would saturate); the zero-point term becomes ``(128 - Z) * sum xq``;
- ``sdot`` on aarch64 with the dot-product extension (int4 only: signed x signed).

The zero-point term rides in the accumulator the dot product starts from.

The loop runs in steps of one 256-bit load of weight words (int32 lanes ``4 j .. 4 j + 3`` of
a dot product summing one group), each step's activation bytes in the matching order:

- int4 on AVX2, group count divisible by 4: a step is 4 groups, two of the loads below; each
  load's pair sums (low + high nibbles) in 16 bits, the two joined by ``vphaddw``, so one
  ``vpmaddwd``, convert and FMA serve 4 groups (2 lanes each: groups 0 and 2 in the low 128
  bits, 1 and 3 in the high ones, the scales spread by one permute). ``K = 576`` keeps 2.
- int4, even group count: a step is 2 groups, 8 packed words (8 nibbles each, ``k = 8 j + t``
  in nibble ``t`` of word ``j``): one dot product with the words' low nibbles
  (``w & 0x0F0F0F0F``: ``t = 0, 2, 4, 6``), one with their high nibbles (a shift and a mask, or
  one GFNI ``vgf2p8affineqb``); lanes 0-3 sum the first group, 4-7 the second, the per-lane
  scale the pair of combined scales spread by one permute. ``xq``: low-nibble bytes of both
  groups, then their high-nibble bytes.
- int4, odd group count: a step is 1 group, 4 words in both halves: low nibbles in the first, high in the second.
- int8: a step is 1 group of 8 words whose bytes are already ``k`` in order.

The activation quantization is the kernel's first (serial) loop into a scratch buffer (a group's
bytes stored as vectors: the int4 orders above are its even, then odd elements), and may compute
its row (RMSNorm or SwiGLU: ``prologue``) and add a residual to the output, as
``passes.fuse_decode_gemv`` fuses (a decode layer's ~10 kernel launches become 5). The GEMV is
parallel over groups of 4 rows, one from each of 4 far-apart stretches of the weight (4 memory
streams, the activation loaded once for all), prefetching 512 B ahead on each row and 4 rows
ahead on its scales; ``d_w * d_x`` vectorized per chunk of groups; on x86 the 4 rows' lane sums
are 3 ``vhaddps`` and an add. Per row and int4 pair of groups the VNNI loop is 11 instructions
(load, 2 masks, shift, acc. copy, 2 ``vpdpbusd``, convert, scale load + permute, FMA). Timings: ``docs/internals.md``.

Used for every decode-shaped (``[1, 1, K]``) linear of a group scheme it :func:`supports` on a target with
an :func:`mlcbuild.compiler.target.int8_dot_isa`, the tied LM head included; prefill runs :mod:`.int8_matmul` (x86).
"""

from __future__ import annotations

import functools
import math

from tvm import tirx
from tvm.script import tirx as T

from mlcbuild.kernels import int8_dot as D
from mlcbuild.kernels.signature import without_params
from mlcbuild.kernels.tir_math import fast_silu

GROUP = D.GROUP
# software prefetch distance along a weight row, 512 B: on Zen 4 (2026-12-07) 1-11 % faster from
# DRAM than 1 KiB at every SmolLM2 and 1B shape, decode +2-7 %; 1 KiB was chosen on 2026-11-22
PREFETCH_WORDS = 128
SCALE_PREFETCH_ROWS = 4  # scales' prefetch distance in rows (0: none): 1B q4f32_1 decode +9 % (docs/benchmarks.md)
# weight bits each instruction set runs: sdot is signed x signed (unsigned int8 weights do not
# fit); AVX2 runs int8 weights by llama.cpp's sign trick (see int8_gemv)
BITS = {"avxvnni": (4, 8), "avx2": (4, 8), "dotprod": (4,)}
# what may produce the activation row inside the kernel (see int8_gemv)
PROLOGUES = (None, "rms_norm", "swiglu")
GEMV_ATTR = "mlcbuild.int8_gemv"  # PrimFunc attribute: int8_gemv's arguments (n, k, bits, ...)


def supports(weight: dict | None, isa: str | None) -> bool:
    """Whether :func:`int8_gemv` runs a weight with ``isa``.

    ``weight``: how the weight is stored, as a scheme's ``dequantize_info`` gives it
    (``{"kind": "group", "bits", "group_size", "max_int", "layout", "scale_dtype", "has_min"}``),
    or ``None``.
    """
    return (
        weight is not None
        and isa in BITS
        and weight["kind"] == "group"
        and weight["layout"] == "NK"
        and weight["group_size"] == GROUP
        and weight["bits"] in BITS[isa]
    )


def _span(bits: int, k: int, isa: str) -> int:
    """Groups per step of the GEMV loop. int4: 2 for an even group count (one 256-bit load of 8
    packed words, two dot products), on AVX2 4 for a group count divisible by 4 (two such
    loads, their 16-bit pair sums joined by ``vphaddw``), else 1; int8: 1."""
    groups = math.ceil(k / GROUP)
    if bits != 4:
        return 1
    if isa == "avx2" and groups % 4 == 0:
        return 4
    return 2 if groups % 2 == 0 else 1


def _permuted_position(g, i, bits: int, span: int):
    """Position of ``x[32 g + i]`` within its step's activation bytes (TIR expression).

    int8: ``k`` order. int4, one group per step: the group's low-nibble bytes (16), then its
    high-nibble bytes. int4, two groups per step: low-nibble bytes of group ``2s``, of
    ``2s + 1``, then the high-nibble bytes of both. Four groups per step: that for groups
    ``4s, 4s + 1``, then for ``4s + 2, 4s + 3``.
    """
    if bits == 8:
        return i
    word, nib = i // 8, i % 8
    pair = min(span, 2)  # groups per 256-bit load
    return ((g % span) // 2) * 64 + (nib % 2) * 16 * pair + (g % pair) * 16 + word * 4 + nib // 2


def _first_lane(j: int, span: int) -> int:
    """The first int32 lane of a step's dot product that sums the step's group ``j``; each
    group has ``8 / span`` lanes. Four groups per step: ``vphaddw`` of the two loads' pair sums
    puts groups ``0, 2`` in the low 128 bits and ``1, 3`` in the high ones."""
    return (j % 2) * 4 + (j // 2) * 2 if span == 4 else j * (8 // span)


@functools.lru_cache(maxsize=None)  # TVMScript parsing costs ~0.1 s; shapes repeat per layer
def int8_gemv(
    n: int,
    k: int,
    bits: int,
    max_int: int,
    x_dtype: str,
    scale_dtype: str,
    isa: str,
    prologue: str | None = None,
    eps: float = 0.0,
    norm_dtype: str = "float32",
    residual: bool = False,
    has_min: bool = False,
    gfni: bool = False,
) -> tirx.PrimFunc:
    """The kernel ``y [1, 1, n] = x [1, 1, k] @ dequant(q_weight [n, kp * bits / 32], q_scale [n, kp / 32])^T``.

    Args:
        n, k: output and input features (``k`` is padded to ``kp``, a multiple of 32, in the weight).
        bits: 4 or 8; ``max_int`` the zero point.
        x_dtype: dtype of ``x`` and ``y`` (the compute dtype); ``scale_dtype`` of ``q_scale``.
        isa: ``"avxvnni"`` (``vpdpbusd``, AVX-VNNI or AVX512-VNNI with VL), ``"avx2"``, or
            ``"dotprod"`` (aarch64 ``sdot``; run on an emulated Arm CPU: ``benches/arm_emulated.py``).
        prologue: what produces the GEMV's input inside the kernel (:data:`PROLOGUES`, used by
            :func:`mlcbuild.compiler.passes.fuse_decode_gemv`): ``None`` (the parameters are
            ``x, q_weight, q_scale``); ``"rms_norm"``: ``x, norm_weight [k] norm_dtype, q_weight,
            q_scale`` and the input is ``RMSNorm(x)`` with ``eps`` (HF ``LlamaRMSNorm``:
            ``x * rsqrt(mean(x^2) + eps) * w``; the ``rsqrt`` factor, one per row, is folded into the
            activation scales: quantizing ``x * w`` with it and without gives the same int8 values);
            ``"swiglu"``: ``gate_up [1, 1, 2 k], q_weight, q_scale`` and the input is
            ``silu(gate_up[:k]) * gate_up[k:]`` (HF ``LlamaMLP``).
        residual: a last input ``residual [1, 1, n]`` is added to the output.
        has_min: the weight has a per-group minimum, an input ``q_min [n, kp / 32]``
            ``scale_dtype`` after ``q_scale``: ``w = q * d_w + m`` (GGML Q4_1; ``max_int`` 0).
        gfni: x86 with GFNI: int4 high nibbles by :func:`.int8_dot.high_nibbles` (one instruction, not two).

    Raises:
        ValueError: an unsupported ``bits``/``isa`` pair, an unknown prologue, or a fused prologue with ``k`` % 32.
    """
    if bits not in BITS.get(isa, ()):
        raise ValueError(f"no int8 GEMV for {bits}-bit weights with {isa}")
    if prologue not in PROLOGUES or (prologue is not None and k % GROUP):
        raise ValueError(f"no int8 GEMV prologue {prologue!r} for k={k} (known: {PROLOGUES}; k a multiple of {GROUP})")
    epw = 32 // bits
    kp = math.ceil(k / GROUP) * GROUP
    groups, words = kp // GROUP, kp // epw
    wpg = GROUP // epw  # packed words per group: 4 (int4) or 8 (int8)
    span = _span(bits, k, isa)  # groups per step
    steps = groups // span
    rows, per_task = 4, 4  # rows interleaved; row groups per parallel task
    stretch = n // rows
    tasks = max(1, math.ceil(stretch / per_task))
    nibble_mask = 0x0F0F0F0F
    # groups per chunk of combined scales: the largest divisor of `groups` up to 32 that is a
    # whole number of steps (a [rows, chunk] float32 buffer under TVM's 1 KiB stack limit)
    chunk = max(c for c in range(span, min(groups, 32) + 1, span) if groups % c == 0)
    signed8 = bits == 8 and isa == "avx2"  # the sign trick: weights q - 128
    zero_offset = 128 if signed8 else 0  # sum (q - Z) xq = sum (q - offset) xq + (offset - Z) sum xq

    def high(w8, mask):  # each byte's high nibble of w8 (uint32x8) in its low bits, int32x8
        if gfni:
            return D.high_nibbles(w8)
        return T.reinterpret("int32x8", T.bitwise_and(T.shift_right(w8, T.broadcast(T.uint32(4), 8)), mask))

    def step_terms(qw, row, s):
        """The step's ``(weight bytes, activation offset)`` pairs, int32x8 each (32 bytes)."""
        if bits == 8:
            return [(T.reinterpret("int32x8", qw[row, T.ramp(s * wpg, 1, 8)]), 0)]
        mask = T.broadcast(T.uint32(nibble_mask), 8)
        if span >= 2:  # 8 words = 2 groups: their low nibbles, then their high nibbles (per load)
            out = []
            for h in range(span // 2):
                w8 = qw[row, T.ramp(s * span * wpg + 8 * h, 1, 8)]
                out += [
                    (T.reinterpret("int32x8", T.bitwise_and(w8, mask)), 64 * h),
                    (high(w8, mask), 64 * h + 32),
                ]
            return out
        # one 128-bit load broadcast to both halves, then low nibbles | high nibbles
        w8 = tirx.vectorcombine("uint32x8", qw[row, T.ramp(s * wpg, 1, 4)], qw[row, T.ramp(s * wpg, 1, 4)])
        shifts = tirx.vectorcombine("uint32x8", T.broadcast(T.uint32(0), 4), T.broadcast(T.uint32(4), 4))
        return [(T.reinterpret("int32x8", T.bitwise_and(T.shift_right(w8, shifts), mask)), 0)]

    def step_scale(scale_of, g):
        """The combined scale ``d_w * d_x`` per int32 lane of the step starting at group ``g``
        (``scale_of(g, dtype)`` gives one group's, or a ramp's): float32x8."""
        if span == 1:
            return T.broadcast(scale_of(g, "float32"), 8)
        if span == 4:  # lanes as _first_lane lays them out
            quad = scale_of(T.ramp(g, 1, 4), "float32x4")
            return T.Shuffle([quad, quad], [0, 0, 2, 2, 1, 1, 3, 3])
        pair = scale_of(T.ramp(g, 1, 2), "float32x2")  # (TIR checks the index count against the inputs' lanes)
        return T.Shuffle([pair, pair, pair, pair], [0, 0, 0, 0, 1, 1, 1, 1])

    def pair_sums(wb, xb):
        """AVX2: 16-bit sums of adjacent byte products (weight ``wb`` int32x8, activation ``xb``
        int8x32), int16x16; int8 codes by the sign trick."""
        return D.signed_pair_sums(D.to_signed(wb), xb) if signed8 else D.pair_sums(wb, xb)

    def step_dot(qw, row, xq, xz, s):
        """Integer dot products of step ``s`` of ``row`` with the activation, started from the
        zero-point term ``xz[s]``: int32x8, the ``8 / span`` lanes from :func:`_first_lane` on
        summing group ``span s + j``."""
        acc = xz[s, T.ramp(0, 1, 8)]
        terms = step_terms(qw, row, s)
        at = lambda buf, off: buf[T.ramp(s * span * GROUP + off, 1, 32)]  # noqa: E731
        if isa == "avx2":
            per_load = [pair_sums(wb, at(xq, off)) for wb, off in terms]
            if span >= 2:  # a load's low- and high-nibble pair sums: at most 2 * 2 * 15 * 127 in 16 bits
                per_load = [per_load[i] + per_load[i + 1] for i in range(0, len(per_load), 2)]
            # span 4: 4 pair sums of a group in adjacent 16-bit lanes, at most 4 * 2 * 15 * 127
            pairs = D.join_pairs(per_load[0], per_load[1]) if span == 4 else per_load[0]
            return acc + D.widen(pairs)
        dot = D.sdot if isa == "dotprod" else D.vnni_dot
        for wb, off in terms:
            acc = dot(acc, wb, at(xq, off))
        return acc

    # No TVMScript assignments (`v = expr`) below: TVM 0.27 lowers each into a one-element
    # buffer from TVMBackendAllocWorkspace, inside the parallel loop once per iteration
    # (~1,100 allocations per call of a 3072-row GEMV). Python helpers inline the expressions.
    def act_at(x, nw, j):
        """Element ``j < k`` of the activation row before quantization, float32 (for
        ``"rms_norm"`` without the ``rsqrt`` factor)."""
        f32 = lambda v: T.Cast("float32", v)  # noqa: E731
        if prologue == "swiglu":
            return fast_silu(f32(x[0, 0, j])) * f32(x[0, 0, k + j])
        if prologue == "rms_norm":
            return f32(x[0, 0, j]) * f32(nw[j])
        return f32(x[0, 0, j])

    def with_residual(v, res, row):
        return v if res is None else v + res[0, 0, row]

    def out(acc, r, res, row):
        """Row ``row`` of the output: the sum of ``acc[r]``'s lanes (+ the residual)."""
        return with_residual(hsum(acc, r), res, row)

    def row_at(task, blk, r):
        """Row ``r`` of row group ``task * per_task + blk``: one per stretch of ``stretch`` rows."""
        return r * stretch + task * per_task + blk

    def ahead(task, blk, r):
        return row_at(task, blk, r) + SCALE_PREFETCH_ROWS

    def prefetch(buf, row, col):
        """Software prefetch of ``buf[row, col]`` (read, keep in all caches). x86 only (where it
        was measured): a prefetch call in the kernel breaks TVM 0.27's system-library builds
        (``AttachGlobalSymbol``: "Cannot treat type ir.Call as type ir.Expr"), which is how the
        Arm targets are packaged.
        """
        if isa == "dotprod":
            return T.int32(0)
        return T.call_intrin("void", "tirx.prefetch", T.address_of(buf[row, col]), T.int32(0), T.int32(3), T.int32(1))

    # a prefetch per line's worth of a chunk's scales and one at its last reach every line it touches
    per_line = 64 // (2 if scale_dtype == "float16" else 4)  # scales per 64-byte cache line
    scale_lines = -(-chunk // per_line) + 1 if SCALE_PREFETCH_ROWS else 0
    scale_col = lambda c, line: c * chunk + T.min(line * per_line, chunk - 1)  # noqa: E731

    def xq_at(g, i):
        """Where ``x[32 g + i]`` goes in the int8 activation buffer."""
        return (g // span) * span * GROUP + _permuted_position(g, i, bits, span)

    def fma(acc, r, prod, scale, extra=None):
        """``acc[r] + float(prod) * scale (+ extra)``, float32x8."""
        out = acc[r, T.ramp(0, 1, 8)] + T.Cast("float32x8", prod) * scale
        return out if extra is None else out + extra

    def hsum(acc, r):
        return T.Cast(
            x_dtype, acc[r, 0] + acc[r, 1] + acc[r, 2] + acc[r, 3] + acc[r, 4] + acc[r, 5] + acc[r, 6] + acc[r, 7]
        )

    @T.macro
    def activation(x, nw, xq, xd, xz, xs):
        """The activation row into int8 blocks (``xq``), their scales (``xd``), zero-point
        terms (``xz``) and, for a weight with minima, ``xs[g] = d_x[g] * sum xq`` divided by the
        group's lanes in a step (each lane adds its share): serial, a group's maximum and sum
        over 8 lanes (scalar chains of 32 took ~5 us at k = 1536 while the other threads waited)."""
        xf = T.decl_buffer((kp,), "float32")  # the row before quantization
        st = T.decl_buffer((4,), "float32")  # max |x|, 1 / d_x, sum xq; RMSNorm's rsqrt factor
        if k == kp:
            for j0 in range(kp // 8):
                for j1 in T.vectorized(8):
                    xf[j0 * 8 + j1] = act_at(x, nw, j0 * 8 + j1)
        else:
            for j in range(kp):
                xf[j] = T.if_then_else(j < k, act_at(x, nw, j), T.float32(0))
        st[3] = T.float32(1)
        if prologue == "rms_norm":
            part = T.decl_buffer((8,), "float32")  # lanes of sum x^2
            for j1 in T.vectorized(8):
                part[j1] = T.float32(0)
            for j0 in range(k // 8):
                for j1 in T.vectorized(8):
                    part[j1] = part[j1] + T.Cast("float32", x[0, 0, j0 * 8 + j1]) * T.Cast(
                        "float32", x[0, 0, j0 * 8 + j1]
                    )
            st[3] = T.float32(1) / T.sqrt(
                (part[0] + part[1] + part[2] + part[3] + part[4] + part[5] + part[6] + part[7]) / T.float32(k)
                + T.float32(eps)
            )
        lanes = T.decl_buffer((8,), "float32")  # per lane: max |x|, then sum xq, over 4 of a group's values
        for g in range(groups):
            for lane in T.vectorized(8):
                lanes[lane] = T.max(
                    T.max(T.abs(xf[g * GROUP + lane]), T.abs(xf[g * GROUP + 8 + lane])),
                    T.max(T.abs(xf[g * GROUP + 16 + lane]), T.abs(xf[g * GROUP + 24 + lane])),
                )
            st[0] = T.max(
                T.max(T.max(lanes[0], lanes[1]), T.max(lanes[2], lanes[3])),
                T.max(T.max(lanes[4], lanes[5]), T.max(lanes[6], lanes[7])),
            )
            xd[g] = st[0] / T.float32(127) * st[3]
            st[1] = T.if_then_else(st[0] > T.float32(0), T.float32(127) / st[0], T.float32(0))
            for lane in T.vectorized(8):  # sums of small integers: exact in float32, in any order
                lanes[lane] = (
                    T.round(xf[g * GROUP + lane] * st[1])
                    + T.round(xf[g * GROUP + 8 + lane] * st[1])
                    + T.round(xf[g * GROUP + 16 + lane] * st[1])
                    + T.round(xf[g * GROUP + 24 + lane] * st[1])
                )
            st[2] = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
            if bits == 8:  # k order: one 32-byte store; int4: even elements (low nibbles), odd ones
                xq[T.ramp(g * GROUP, 1, GROUP)] = T.Cast("int8x32", D.rounded_group(xf, g * GROUP, st[1], None))
            else:
                xq[T.ramp(xq_at(g, 0), 1, GROUP // 2)] = T.Cast("int8x16", D.rounded_group(xf, g * GROUP, st[1], 0))
                xq[T.ramp(xq_at(g, 1), 1, GROUP // 2)] = T.Cast("int8x16", D.rounded_group(xf, g * GROUP, st[1], 1))
            if has_min:
                xs[g] = xd[g] * st[2] * T.float32(span / 8)
            for j in range(span):  # the group's lanes of the step's dot product: the term in its first
                for lane in range(8 // span):
                    if g % span == j:
                        xz[g // span, _first_lane(j, span) + lane] = T.if_then_else(
                            lane == 0, T.Cast("int32", st[2]) * (zero_offset - max_int), 0
                        )

    @T.macro
    def gemv(x, nw, q_weight, q_scale, q_min, res, y):
        xq = T.decl_buffer((kp,), "int8")
        xd = T.decl_buffer((groups,), "float32")
        xz = T.decl_buffer((steps, 8), "int32")
        xs = T.decl_buffer((groups if has_min else 1,), "float32")
        activation(x, nw, xq, xd, xz, xs)
        # ---- GEMV, parallel over groups of `rows` rows, one from each of `rows` far-apart stretches
        # of the weight: independent memory streams (one stream reads DRAM at ~8 GB/s here, several at 25+)
        for task in T.parallel(tasks):
            acc = T.decl_buffer((rows, 8), "float32")
            cs = T.decl_buffer((rows, chunk), "float32")  # d_w * d_x of a chunk of groups
            ms = T.decl_buffer((rows, chunk if has_min else 1), "float32")  # m * xs (has_min)
            sums = T.decl_buffer((rows,), "float32")  # the rows' outputs (x86)
            for blk in range(per_task):
                if task * per_task + blk < stretch:
                    for r in T.unroll(rows):
                        acc[r, T.ramp(0, 1, 8)] = T.broadcast(T.float32(0), 8)
                    for c in range(groups // chunk):
                        for r in T.unroll(rows):
                            for line in T.unroll(scale_lines):  # this chunk's scales (minima) a few rows on
                                T.evaluate(prefetch(q_scale, ahead(task, blk, r), scale_col(c, line)))
                                if has_min:
                                    T.evaluate(prefetch(q_min, ahead(task, blk, r), scale_col(c, line)))
                            for gi in T.vectorized(chunk):
                                cs[r, gi] = (
                                    T.Cast("float32", q_scale[row_at(task, blk, r), c * chunk + gi])
                                    * xd[c * chunk + gi]
                                )
                        if has_min:
                            for r in T.unroll(rows):
                                for gi in T.vectorized(chunk):
                                    ms[r, gi] = (
                                        T.Cast("float32", q_min[row_at(task, blk, r), c * chunk + gi])
                                        * xs[c * chunk + gi]
                                    )
                        for si in range(chunk // span):
                            for r in T.unroll(rows):
                                T.evaluate(
                                    prefetch(
                                        q_weight,
                                        row_at(task, blk, r),
                                        (c * (chunk // span) + si) * span * wpg + PREFETCH_WORDS,
                                    )
                                )
                                acc[r, T.ramp(0, 1, 8)] = fma(
                                    acc,
                                    r,
                                    step_dot(q_weight, row_at(task, blk, r), xq, xz, c * (chunk // span) + si),
                                    step_scale(lambda gi, _: cs[r, gi], si * span),  # noqa: B023 (called at once)
                                    step_scale(lambda gi, _: ms[r, gi], si * span) if has_min else None,  # noqa: B023
                                )
                    if isa == "dotprod":
                        for r in T.unroll(rows):
                            y[0, 0, row_at(task, blk, r)] = out(acc, r, res, row_at(task, blk, r))
                    else:  # the 4 rows' lane sums at once: 3 vhaddps and one add, not 28 scalar adds
                        sums[T.ramp(0, 1, 4)] = D.row_sums4([acc[r, T.ramp(0, 1, 8)] for r in range(rows)])
                        for r in T.unroll(rows):
                            y[0, 0, row_at(task, blk, r)] = with_residual(
                                T.Cast(x_dtype, sums[r]), res, row_at(task, blk, r)
                            )
        # the last n % rows rows, one at a time
        for t in range(n - stretch * rows):
            acc1 = T.decl_buffer((1, 8), "float32")
            acc1[0, T.ramp(0, 1, 8)] = T.broadcast(T.float32(0), 8)
            for s in range(steps):
                acc1[0, T.ramp(0, 1, 8)] = fma(
                    acc1,
                    0,
                    step_dot(q_weight, stretch * rows + t, xq, xz, s),
                    step_scale(lambda g, f32: T.Cast(f32, q_scale[stretch * rows + t, g]) * xd[g], s * span),  # noqa: B023
                    step_scale(lambda g, f32: T.Cast(f32, q_min[stretch * rows + t, g]) * xs[g], s * span)  # noqa: B023
                    if has_min
                    else None,
                )
            y[0, 0, stretch * rows + t] = out(acc1, 0, res, stretch * rows + t)

    x_shape = (1, 1, 2 * k) if prologue == "swiglu" else (1, 1, k)
    W, S, Y = (n, words), (n, groups), (1, 1, n)
    if prologue == "rms_norm":
        assert not residual  # (no pattern needs it)

    @T.prim_func(s_tir=False)
    def gemv_int8(
        x: T.Buffer(x_shape, x_dtype),
        norm_weight: T.Buffer((k,), norm_dtype),
        q_weight: T.Buffer(W, "uint32"),
        q_scale: T.Buffer(S, scale_dtype),
        q_min: T.Buffer(S, scale_dtype),
        res: T.Buffer(Y, x_dtype),
        y: T.Buffer(Y, x_dtype),
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        gemv(
            x,
            norm_weight if prologue == "rms_norm" else None,
            q_weight,
            q_scale,
            q_min if has_min else None,
            res if residual else None,
            y,
        )

    unread = {"norm_weight"} if prologue != "rms_norm" else set()
    unread |= ({"q_min"} if not has_min else set()) | ({"res"} if not residual else set())
    gemv_int8 = without_params(gemv_int8, unread)
    config = {
        "n": n, "k": k, "bits": bits, "max_int": max_int, "x_dtype": x_dtype, "scale_dtype": scale_dtype,
        "isa": isa, "prologue": prologue or "", "eps": float(eps), "norm_dtype": norm_dtype, "residual": int(residual),
        "has_min": int(has_min), "gfni": int(gfni),
    }  # fmt: skip
    # Relax names each call site; the pass that fuses neighbours reads the arguments back (gemv_arguments)
    return gemv_int8.without_attr("global_symbol").with_attr(GEMV_ATTR, config)


def gemv_arguments(func) -> dict | None:
    """The :func:`int8_gemv` arguments a PrimFunc was made with (its ``GEMV_ATTR``), or ``None``."""
    attrs = getattr(func, "attrs", None)
    if attrs is None or GEMV_ATTR not in attrs:
        return None
    a = attrs[GEMV_ATTR]
    out = {key: int(a[key]) for key in ("n", "k", "bits", "max_int")}
    out.update({key: str(a[key]) for key in ("x_dtype", "scale_dtype", "isa", "norm_dtype")})
    out.update(prologue=str(a["prologue"]) or None, eps=float(a["eps"]), residual=bool(int(a["residual"])))
    out.update(has_min=bool(int(a["has_min"])), gfni=bool(int(a["gfni"])))
    return out
