"""The integer dot-product instructions of the int8 kernels, one TIR expression each.

Shared by :mod:`.int8_gemv` (decode) and :mod:`.int8_matmul` (prefill). Operands are 256-bit
vectors: 32 bytes as ``int32x8`` (4 bytes per lane) or ``int8x32``. Lane ``i`` of a dot product
sums the 4 products of bytes ``4 i .. 4 i + 3``.

- :func:`vnni_dot`: ``vpdpbusd`` (AVX-VNNI, or AVX512-VNNI with AVX512-VL), unsigned x signed
  bytes accumulated into int32;
- AVX2 has no byte dot product into int32: :func:`pair_sums` (``vpmaddubsw``, 16-bit sums of
  adjacent unsigned x signed products, saturating) then :func:`widen` (``vpmaddwd`` by ones),
  as llama.cpp's AVX2 dot products do (``ggml-cpu/arch/x86/quants.c``); for signed weights
  (int8 codes made signed by :func:`to_signed`) :func:`signed_pair_sums`, llama.cpp's sign trick;
- :func:`sdot`: aarch64 ``sdot`` (signed x signed), two 128-bit halves.

Both kernels quantize the activation the same way, per block of :data:`GROUP` along ``K``:
:func:`activation_reference` is its NumPy reference.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

GROUP = 32  # activation block = weight group (llama.cpp's QK8_0)
SIGN_BITS = -0x7F7F7F80  # 0x80808080 as int32: XOR turns unsigned code bytes q into q - 128


def _i8(v):
    return T.reinterpret("int8x32", v)


def _u8(v):
    return T.reinterpret("uint8x32", v)


def vnni_dot(acc, w, x):
    """``acc + sum of 4 byte products`` per int32 lane: ``vpdpbusd`` (``w`` unsigned, ``x`` signed).

    LLVM >= 22 types the byte operands as ``<32 x i8>`` (older releases: ``<8 x i32>``).
    """
    return T.call_llvm_pure_intrin("int32x8", "llvm.x86.avx512.vpdpbusd.256", acc, _i8(w), _i8(x))


GF2_SHIFT_RIGHT_4 = 0x1020408000000000  # GF(2) bit matrix of each byte's x >> 4 (vgf2p8affineqb)


def high_nibbles(w):
    """Each byte's high nibble moved to its low 4 bits, the high 4 zero (``w`` 32 bytes, the
    result int32x8): one GFNI ``vgf2p8affineqb`` in place of a 32-bit shift and a mask.
    Bit ``i`` of a result byte is the parity of (matrix byte ``7 - i`` AND the source byte)
    (Intel SDM, ``GF2P8AFFINEQB``): bytes 7..4 of :data:`GF2_SHIFT_RIGHT_4` pick source bits 4..7."""
    matrix = T.reinterpret("int8x32", T.broadcast(T.int64(GF2_SHIFT_RIGHT_4), 4))
    out = T.call_llvm_pure_intrin("int8x32", "llvm.x86.vgf2p8affineqb.256", _i8(w), matrix, T.int8(0))
    return T.reinterpret("int32x8", out)


def pair_sums(w, x):
    """AVX2 ``vpmaddubsw``: int16x16, lane ``j`` = ``w[2j] x[2j] + w[2j+1] x[2j+1]`` (``w``
    unsigned, ``x`` signed bytes). Saturates past ``2^15 - 1``: exact for int4 codes (at most
    ``2 * 15 * 127``), not for unsigned int8 ones (:func:`signed_pair_sums`)."""
    return T.call_llvm_pure_intrin("int16x16", "llvm.x86.avx2.pmadd.ub.sw", _u8(w), _i8(x))


def to_signed(w, lanes: int = 8):
    """Code bytes ``q`` (0..255) as signed bytes ``q - 128``: one XOR (``w``: ``lanes`` int32 lanes)."""
    return T.bitwise_xor(w, T.broadcast(T.int32(SIGN_BITS), lanes) if lanes > 1 else T.int32(SIGN_BITS))


def magnitude(s):
    """``|s|`` of signed bytes as unsigned bytes (``vpsignb s, s``; -128 gives 128)."""
    return T.call_llvm_pure_intrin("int8x32", "llvm.x86.avx2.psign.b", _i8(s), _i8(s))


def signed_pair_sums(s, x, abs_s=None):
    """AVX2 pair sums of signed weight bytes ``s`` (-128..127) and activation bytes ``x``
    (-127..127): ``vpmaddubsw(|s|, sign(s) * x)`` with ``vpsignb``, exact (a pair is at most
    ``2 * 128 * 127 < 2^15``); ``abs_s``: ``|s|`` computed beforehand (:func:`magnitude`)."""
    signed_x = T.call_llvm_pure_intrin("int8x32", "llvm.x86.avx2.psign.b", _i8(x), _i8(s))
    return pair_sums(magnitude(s) if abs_s is None else abs_s, signed_x)


def join_pairs(a, b):
    """``vphaddw``: int16x16 of adjacent sums, per 128-bit half ``a``'s 4 then ``b``'s 4."""
    return T.call_llvm_pure_intrin("int16x16", "llvm.x86.avx2.phadd.w", a, b)


def widen(pairs):
    """``vpmaddwd`` by ones: int32x8, lane ``i`` = ``pairs[2i] + pairs[2i+1]``."""
    return T.call_llvm_pure_intrin("int32x8", "llvm.x86.avx2.pmadd.wd", pairs, T.broadcast(T.int16(1), 16))


def sdot(acc, w, x):
    """aarch64: ``acc + sum of 4 byte products`` per int32 lane, signed x signed: two 128-bit
    ``sdot`` on the halves (int4 codes 0..15 fit in signed bytes)."""

    def half(v, hi):
        return T.reinterpret("int8x16", tirx.vectorhigh("int32x4", v) if hi else tirx.vectorlow("int32x4", v))

    return tirx.vectorcombine(
        "int32x8",
        *(
            T.call_llvm_pure_intrin(
                "int32x4",
                "llvm.aarch64.neon.sdot.v4i32.v16i8",
                tirx.vectorhigh("int32x4", acc) if hi else tirx.vectorlow("int32x4", acc),
                half(w, hi),
                half(x, hi),
            )
            for hi in (False, True)
        ),
    )


def row_sums4(rows):
    """x86: the lane sums of 4 float32x8 vectors, float32x4 (3 ``vhaddps``, one add)."""

    def hadd(a, b):
        return T.call_llvm_pure_intrin("float32x8", "llvm.x86.avx.hadd.ps.256", a, b)

    t = hadd(hadd(rows[0], rows[1]), hadd(rows[2], rows[3]))  # [r0 r1 r2 r3 | r0 r1 r2 r3]: lanes 0-3 | 4-7
    return tirx.vectorlow("float32x4", t) + tirx.vectorhigh("float32x4", t)


def rounded_group(buf, base, inv_d, parity=None):
    """``round(buf[base + i] * inv_d)`` of a block of 32 float32 values (``parity`` ``None``), or
    of its even (``0``) or odd (``1``) ones, float32x32 or x16: one contiguous load, the lanes
    picked by a shuffle (a strided ramp loads element by element)."""
    row = buf[T.ramp(base, 1, GROUP)] * T.broadcast(inv_d, GROUP)
    if parity is None:
        return T.round(row)
    return T.round(T.Shuffle([row], [parity + 2 * i for i in range(GROUP // 2)]))


def activation_reference(x: np.ndarray) -> np.ndarray:
    """NumPy reference of the activation quantization: ``[..., K]`` float -> dequantized ``xq * d_x``.

    Blocks of 32 along the last axis (zero-padded), ``d_x = max|x| / 127``, ``xq = round(x * (127 /
    max|x|))`` in float32, halves away from zero: the kernel's arithmetic step for step (``x / d_x``
    rounds differently and moves a value near a rounding boundary to the other side).
    """
    x = np.asarray(x, dtype=np.float32)
    k = x.shape[-1]
    kp = math.ceil(k / GROUP) * GROUP
    xp = np.zeros(x.shape[:-1] + (kp,), np.float32)
    xp[..., :k] = x
    blocks = xp.reshape(x.shape[:-1] + (kp // GROUP, GROUP))
    m = np.abs(blocks).max(axis=-1, keepdims=True)
    inv = np.where(m > 0, np.float32(127) / np.where(m > 0, m, 1), np.float32(0)).astype(np.float32)
    v = (blocks * inv).astype(np.float32)
    q = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
    return (q * (m / np.float32(127))).reshape(xp.shape)[..., :k].astype(np.float32)
