"""DispatchKernels: our hand-written CPU kernels (:mod:`mlcbuild.kernels`) in place of the
generic ``x @ W^T`` the models and schemes emit, chosen by target and shape.

Models and schemes know nothing of targets: a group-quantized linear is
``matmul(x, permute_dims(call_tir(dequantize, (q_weight, q_scale))))`` whose dequantize kernel
carries the scheme's ``dequantize_info`` (:data:`mlcbuild.quant.group_nn.DEQUANTIZE_ATTR`); a
float linear is ``matmul(x, permute_dims(weight))``. On an ``llvm`` target, before ``FuseOps``:

=====================  ==============================  =====================================
weight                 ``x`` ``[1, 1, K]`` (decode)    ``x`` ``[1, tokens, K]`` (prefill)
=====================  ==============================  =====================================
group, NK, int8 ISA    :func:`.int8_gemv.int8_gemv`    x86 AVX2 fp32: :func:`.cpu_matmul.prefill_matmul`
float32, x86 AVX2      :func:`.float_gemv.float_gemv`  :func:`.cpu_matmul.prefill_matmul_float`
=====================  ==============================  =====================================

Anything else (GPUs, zero-point schemes, shapes the kernels do not cover) is left to the
schedule phase. MLC-LLM's ``DispatchTIROperator`` picks kernels by target the same way.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx
from tvm.relax.dpl import rewrite_call
from tvm.relax.dpl.pattern import GlobalVarPattern, TuplePattern, is_op, wildcard

from mlcbuild.kernels import cpu_matmul, float_gemv, int8_gemv
from mlcbuild.quant.group_nn import DEQUANTIZE_ATTR

FLOAT_ISAS = ("avx2", "avxvnni")  # where the fp32 kernels beat dlight's schedules


def _static(d) -> int | None:
    return int(d) if isinstance(d, tirx.IntImm) else None


def _row_kind(x: relax.Expr) -> str | None:
    """``"decode"`` for a static ``[1, 1, K]``, ``"prefill"`` for ``[1, tokens, K]`` with a
    symbolic token count, else ``None``."""
    ty = x.ty  # TVM 0.27: relax.TensorType (struct info before)
    if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    dims = list(ty.shape.values)
    if len(dims) != 3 or _static(dims[0]) != 1 or _static(dims[2]) is None:
        return None
    if _static(dims[1]) == 1:
        return "decode"
    return "prefill" if _static(dims[1]) is None else None


def _weight_info(mod: tvm.IRModule, call: relax.Call) -> dict | None:
    """The ``dequantize_info`` a dequantize kernel was tagged with, as plain data."""
    func = mod.functions.get(call.args[0]) if isinstance(call.args[0], relax.GlobalVar) else None
    attrs = getattr(func, "attrs", None)
    if attrs is None or DEQUANTIZE_ATTR not in attrs:
        return None
    a = attrs[DEQUANTIZE_ATTR]
    return {
        **{k: int(a[k]) for k in ("bits", "group_size", "max_int")},
        **{k: str(a[k]) for k in ("kind", "layout", "scale_dtype")},
    }


def group_kernel(weight: dict, rows: str, n: int, k: int, x_dtype: str, isa: str | None):
    """``(name, PrimFunc)`` of our kernel for a group-quantized ``[n, k]`` weight, or ``None``."""
    if rows == "decode" and int8_gemv.supports(weight, isa):
        return "gemv_int8", int8_gemv.int8_gemv(
            n, k, weight["bits"], weight["max_int"], x_dtype, weight["scale_dtype"], isa
        )
    if rows == "prefill" and cpu_matmul.supports(weight, n, isa, x_dtype):
        return "prefill_matmul", cpu_matmul.prefill_matmul(
            n, k, weight["bits"], weight["group_size"], weight["max_int"], weight["scale_dtype"]
        )
    return None


def float_kernel(rows: str, n: int, k: int, x_dtype: str, isa: str | None):
    """``(name, PrimFunc)`` of our kernel for an fp32 ``[n, k]`` weight, or ``None``."""
    if isa not in FLOAT_ISAS:
        return None
    if rows == "decode" and float_gemv.supports(n, k, x_dtype):
        return "gemv_f32", float_gemv.float_gemv(n, k)
    if rows == "prefill" and cpu_matmul.supports_float(n, x_dtype):
        return "prefill_matmul", cpu_matmul.prefill_matmul_float(n, k)
    return None


def _is_weight(func: relax.Function, e: relax.Expr) -> bool:
    """``e`` is one of the model's weights: a parameter of ``func``, or an element of its packed
    parameter tuple (the pattern matcher sees through bindings to the ``TupleGetItem``)."""
    if isinstance(e, relax.TupleGetItem):
        e = e.tuple_value
    return any(e.same_as(p) for p in func.params)


def dispatch_kernels(isa: str | None):
    """The pass for an ``llvm`` target whose integer dot product is ``isa``
    (:func:`mlcbuild.compiler.target.int8_dot_isa`)."""

    @tvm.transform.module_pass(opt_level=0, name="DispatchKernels")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        bb = relax.BlockBuilder(mod)

        def call(name: str, kernel, x: relax.Expr, args: list, n: int) -> relax.Call:
            gv = bb.add_func(kernel, name)
            dims = list(x.ty.shape.values)
            return relax.call_tir(gv, relax.Tuple([x, *args]), relax.TensorType([1, dims[1], n], str(x.ty.dtype)))

        x, qw, qs, w = wildcard(), wildcard(), wildcard(), wildcard()
        dq = is_op("relax.call_tir")(GlobalVarPattern(), TuplePattern([qw, qs]), add_constraint=False)
        grouped = is_op("relax.matmul")(x, is_op("relax.permute_dims")(dq))
        plain = is_op("relax.matmul")(x, is_op("relax.permute_dims")(w))

        def rewrite(func: relax.Function) -> relax.Function:
            def on_group(orig, m):
                info = _weight_info(mod, m[dq])
                rows = _row_kind(m[x])
                shape = [_static(d) for d in m[dq].ty.shape.values]
                if info is None or rows is None or info["layout"] != "NK" or None in shape:
                    return orig
                (n, k), x_dtype = shape, str(m[x].ty.dtype)
                found = group_kernel(info, rows, n, k, x_dtype, isa)
                return orig if found is None else call(*found, m[x], [m[qw], m[qs]], n)

            def on_float(orig, m):
                weight, rows = m[w], _row_kind(m[x])
                ty = weight.ty
                if (
                    not _is_weight(func, weight)
                    or rows is None
                    or str(ty.dtype) != "float32"
                    or str(m[x].ty.dtype) != "float32"
                ):
                    return orig
                shape = [_static(d) for d in ty.shape.values]
                if len(shape) != 2 or None in shape:
                    return orig
                found = float_kernel(rows, shape[0], shape[1], "float32", isa)
                return orig if found is None else call(*found, m[x], [weight], shape[0])

            func = rewrite_call(grouped, on_group, func)
            return rewrite_call(plain, on_float, func)

        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                bb.update_func(gv, rewrite(func))
        return relax.transform.DeadCodeElimination()(bb.finalize())

    return _pass
