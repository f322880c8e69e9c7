"""Legalizations that replace TVM's defaults in CPU builds: SiLU with TVM's polynomial
``fast_exp``."""

from __future__ import annotations

from tvm import relax


def _fast_silu(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """``silu(x) = x / (1 + exp(-x))`` with ``topi.fast_exp`` (range reduction + degree-5
    polynomial, vectorizable) computed in float32; relative error under 4e-7 over
    [-100, 100] against float64, measured. The default legalization calls libm's scalar
    ``expf`` per element (~8 ns each on host: 69 us of a Llama-3.2-1B decode layer)."""
    from tvm import te, topi

    def compute(x: te.Tensor) -> te.Tensor:
        xf = topi.cast(x, "float32") if x.dtype != "float32" else x
        e = topi.fast_exp(topi.negative(xf))
        return te.compute(x.shape, lambda *i: (xf(*i) / (1 + e(*i))).astype(x.dtype), name="silu")

    return bb.call_te(compute, call.args[0], primfunc_name_hint="silu")


def cpu_legalize_map() -> dict:
    """Legalizations that replace TVM's defaults in CPU (``llvm``) builds: ``relax.nn.silu``."""
    return {"relax.nn.silu": _fast_silu}
