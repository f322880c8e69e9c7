"""FuseDequantizeMatmul: TVM's ``FuseOps`` does not fuse an injective producer into a matmul (an
out-elementwise-fusable op), so the dequantized weight would be materialized in full before
every matmul. This pass finds ``call_tir(dequantize*) -> call_tir(matmul*)`` pairs and merges
each into one PrimFunc, so the kernel reads the packed ``uint32`` weights directly (what
MLC-LLM's ``FuseDequantizeMatmulEwise`` does)."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl.pattern import GlobalVarPattern, TuplePattern, is_op, wildcard

_DEQUANT_PREFIXES = ("dequantize", "fused_dequantize")


def _dequant_matmul_patterns():
    patterns = []
    for n_aux in (1, 2, 3):
        for n_extra in (0, 1, 2):
            dequant = is_op("relax.call_tir")(
                GlobalVarPattern(), TuplePattern([wildcard() for _ in range(n_aux)]), add_constraint=False
            )
            matmul = is_op("relax.call_tir")(
                GlobalVarPattern(),
                TuplePattern([wildcard(), dequant] + [wildcard() for _ in range(n_extra)]),
                add_constraint=False,
            )

            def check(ctx) -> bool:
                dq = ctx.annotated_expr["dequant"]
                mm = ctx.annotated_expr["matmul"]
                dq_name = dq.args[0].name_hint
                mm_name = mm.args[0].name_hint
                return dq_name.startswith(_DEQUANT_PREFIXES) and "matmul" in mm_name

            patterns.append(("dequantize_matmul", matmul, {"dequant": dequant, "matmul": matmul}, check))
    return patterns


@tvm.transform.module_pass(opt_level=0, name="FuseDequantizeMatmul")
def fuse_dequantize_matmul(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Merge each dequantize PrimFunc into the matmul/GEMV that consumes it (after ``FuseTIR``)."""
    mod = relax.transform.FuseOpsByPattern(_dequant_matmul_patterns())(mod)
    return relax.transform.FuseTIR()(mod)
