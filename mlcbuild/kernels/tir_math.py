"""Math for hand-written CPU kernels: expressions LLVM can vectorize.

TVM lowers ``T.exp``/``T.exp2`` to libm calls, one per lane inside a vectorized loop
(``expf``/``exp2f``, ~8 ns each on host). :func:`fast_exp` is the Cephes ``expf``
(S. L. Moshier, Cephes Math Library, ``expf.c``: range reduction by ``ln 2`` in two parts,
degree-5 polynomial, exponent bits set directly), which TVM's ``topi.fast_exp`` also follows;
pure arithmetic, so a vectorized loop stays vector code.
"""

from __future__ import annotations

import math

from tvm.script import tirx as T

LOG2E = math.log2(math.e)
# ln 2 split so that n * _LN2_HI is exact for |n| <= 128 (Cephes C1, C2)
_LN2_HI = 0.693359375
_LN2_LO = -2.12194440e-4
_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
_MAX_ARG = 88.0  # arguments clamped to +-88: 2^n stays a normal float (n in [-127, 127])


def fast_exp(x):
    """``e^x`` of a float32 TIR expression: relative error under 2e-7 on [-87, 88] (measured
    against float64 in ``tests/test_cpu_linear.py``); arguments clamped to +-88
    (``e^88`` = 1.65e38; below -88 the result is 0)."""
    xc = T.max(T.min(x, T.float32(_MAX_ARG)), T.float32(-_MAX_ARG))
    n = T.floor(xc * T.float32(LOG2E) + T.float32(0.5))
    r = xc - n * T.float32(_LN2_HI) - n * T.float32(_LN2_LO)
    p = T.float32(_POLY[0])
    for c in _POLY[1:]:
        p = p * r + T.float32(c)
    p = p * r * r + r + T.float32(1)
    two_n = T.reinterpret("float32", T.shift_left(T.Cast("int32", n) + 127, 23))
    return p * two_n


def fast_exp2(x):
    """``2^x`` of a float32 TIR expression (:func:`fast_exp` of ``x ln 2``)."""
    return fast_exp(x * T.float32(math.log(2)))


def fast_silu(x):
    """``x * sigmoid(x) = x / (1 + e^-x)`` of a float32 TIR expression (HF ``ACT2FN["silu"]``)."""
    return x / (T.float32(1) + fast_exp(-x))


def fast_tanh(x):
    """``tanh x = 1 - 2 / (e^(2x) + 1)`` of a float32 TIR expression, from :func:`fast_exp`:
    absolute error under 3e-7 (measured against float64 in ``tests/test_attention.py``);
    +-1 beyond |x| = 44 (the clamp of ``fast_exp``)."""
    return T.float32(1) - T.float32(2) / (fast_exp(x * T.float32(2)) + T.float32(1))
