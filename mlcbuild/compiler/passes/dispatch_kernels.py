"""DispatchKernels: our hand-written CPU kernels (:mod:`mlcbuild.kernels`) in place of the
generic ``x @ W^T`` the models and schemes emit, chosen by target and shape.

Models and schemes know nothing of targets: a group-quantized linear is
``matmul(x, permute_dims(call_tir(dequantize, (q_weight, q_scale))))`` whose dequantize kernel
carries the scheme's ``dequantize_info`` (:data:`mlcbuild.quant.group_nn.DEQUANTIZE_ATTR`); a
float linear is ``matmul(x, permute_dims(weight))``. On an ``llvm`` target, before ``FuseOps``:

=====================  ==============================  =====================================
weight                 ``x`` ``[1, 1, K]`` (decode)    ``x`` ``[1, tokens, K]`` (prefill)
=====================  ==============================  =====================================
group/GGML, int8 ISA   :func:`.int8_gemv.int8_gemv`    x86 (VNNI or AVX2): :func:`.int8_matmul.prefill_matmul_int8`,
                                                       else fp32 :func:`.cpu_matmul.prefill_matmul`
float32, x86 AVX2      :func:`.float_gemv.float_gemv`  :func:`.cpu_matmul.prefill_matmul_float`
                                                       (AVX-512, k >= 2048: ``prefill_matmul_float_dot``)
=====================  ==============================  =====================================

Anything else (GPUs, zero-point schemes, shapes the kernels do not cover) is left to the
schedule phase. MLC-LLM's ``DispatchTIROperator`` picks kernels by target the same way.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx

from mlcbuild.compiler.passes.rewrite import rewrite_functions
from mlcbuild.kernels import cpu_matmul, float_gemv, int8_gemv, int8_matmul
from mlcbuild.quant.group_nn import DEQUANTIZE_ATTR

FLOAT_ISAS = ("avx2", "avxvnni")  # where the fp32 kernels beat dlight's schedules
CALL_TIR, MATMUL, PERMUTE_DIMS = (tvm.ir.Op.get(f"relax.{n}") for n in ("call_tir", "matmul", "permute_dims"))


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
        **{k: int(a[k]) for k in ("bits", "group_size", "max_int", "has_min")},
        **{k: str(a[k]) for k in ("kind", "layout", "scale_dtype")},
    }


def group_kernel(weight: dict, rows: str, n: int, k: int, x_dtype: str, isa: str | None, gfni: bool = False):
    """``(name, PrimFunc)`` of our kernel for a group-quantized ``[n, k]`` weight, or ``None``
    (``gfni``: the target has GFNI, :func:`mlcbuild.compiler.target.has_gfni`)."""
    if rows == "decode" and int8_gemv.supports(weight, isa):
        return "gemv_int8", int8_gemv.int8_gemv(
            n, k, weight["bits"], weight["max_int"], x_dtype, weight["scale_dtype"], isa,
            has_min=bool(weight["has_min"]), gfni=gfni,
        )  # fmt: skip
    if rows == "prefill" and int8_matmul.supports(weight, n, isa, x_dtype):
        return "prefill_matmul_int8", int8_matmul.prefill_matmul_int8(
            n, k, weight["bits"], weight["max_int"], weight["scale_dtype"], has_min=bool(weight["has_min"]), isa=isa
        )
    if rows == "prefill" and cpu_matmul.supports(weight, n, isa, x_dtype):
        return "prefill_matmul", cpu_matmul.prefill_matmul(
            n, k, weight["bits"], weight["group_size"], weight["max_int"], weight["scale_dtype"],
            has_min=bool(weight["has_min"]),
        )  # fmt: skip
    return None


def float_kernel(rows: str, n: int, k: int, x_dtype: str, isa: str | None, avx512: bool = False):
    """``(name, PrimFunc)`` of our kernel for an fp32 ``[n, k]`` weight, or ``None`` (``avx512``:
    the target has AVX-512 F and VL, :func:`mlcbuild.compiler.target.has_avx512`)."""
    if isa not in FLOAT_ISAS:
        return None
    if rows == "decode" and float_gemv.supports(n, k, x_dtype):
        return "gemv_f32", float_gemv.float_gemv(n, k)
    if rows == "prefill" and avx512 and x_dtype == "float32" and cpu_matmul.supports_float_dot(n, k):
        return "prefill_matmul", cpu_matmul.prefill_matmul_float_dot(n, k)
    if rows == "prefill" and cpu_matmul.supports_float(n, x_dtype):
        return "prefill_matmul", cpu_matmul.prefill_matmul_float(n, k)
    return None


def _is_weight(func: relax.Function, e: relax.Expr) -> bool:
    """``e`` (a var's bound value) is one of the model's weights: a parameter of ``func``, or an
    element of its packed parameter tuple."""
    if isinstance(e, relax.TupleGetItem):
        e = e.tuple_value
    return any(e.same_as(p) for p in func.params)


def dispatch_kernels(isa: str | None, gfni: bool = False, avx512: bool = False):
    """The pass for an ``llvm`` target whose integer dot product is ``isa``
    (:func:`mlcbuild.compiler.target.int8_dot_isa`), with GFNI or not (:func:`.group_kernel`),
    with AVX-512 or not (:func:`float_kernel`)."""

    @relax.expr_functor.mutator
    class _Dispatch(relax.PyExprMutator):
        def __init__(self, mod: tvm.IRModule):
            super().__init__(mod)
            self.mod = mod

        def _bound(self, e: relax.Expr) -> relax.Expr:
            """What a var is bound to (``e`` itself for anything else)."""
            value = self.lookup_binding(e) if isinstance(e, relax.Var) else None
            return e if value is None else value

        def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
            call = super().visit_call_(call)
            if not call.op.same_as(MATMUL):
                return call
            x, transposed = call.args[0], self._bound(call.args[1])
            if not (isinstance(transposed, relax.Call) and transposed.op.same_as(PERMUTE_DIMS)):
                return call
            w_var = transposed.args[0]
            weight, rows = self._bound(w_var), _row_kind(x)
            ty = w_var.ty
            shape = [_static(d) for d in ty.shape.values] if isinstance(ty, relax.TensorType) else []
            if rows is None or len(shape) != 2 or None in shape:
                return call
            n, k = shape
            x_dtype = str(x.ty.dtype)
            if isinstance(weight, relax.Call) and weight.op.same_as(CALL_TIR):  # a tagged dequantize
                info, args = _weight_info(self.mod, weight), list(weight.args[1].fields)
                if info is None or info["layout"] != "NK" or len(args) != 2 + info["has_min"]:
                    return call
                found = group_kernel(info, rows, n, k, x_dtype, isa, gfni)
            elif _is_weight(self.current_function, weight) and str(ty.dtype) == "float32" and x_dtype == "float32":
                found, args = float_kernel(rows, n, k, x_dtype, isa, avx512), [w_var]
            else:
                return call
            if found is None:
                return call
            name, kernel = found
            gv = self.builder_.add_func(kernel, name)
            out = relax.TensorType([1, x.ty.shape.values[1], n], x_dtype)
            return relax.call_tir(gv, relax.Tuple([x, *args]), out)

        def visit_function_(self, func: relax.Function) -> relax.Expr:  # pylint: disable=arguments-renamed
            self.current_function = func
            return super().visit_function_(func)

    @tvm.transform.module_pass(opt_level=0, name="DispatchKernels")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return relax.transform.DeadCodeElimination()(rewrite_functions(_Dispatch(mod), mod))

    return _pass
