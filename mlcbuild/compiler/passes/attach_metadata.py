"""AttachMetadata: ``_metadata() -> str``, the JSON MLC-LLM's engine reads a library's model
from (``cpp/metadata/model.cc`` ``ModelMetadata::FromModule``: model_type, quantization, sizes,
KV cache shape, parameters by name, memory use), with the bytes each Relax function's planned
temporaries take (MLC-LLM's ``python/mlc_llm/compiler_pass/estimate_memory_usage.py``).

:func:`estimate_memory_usage` runs after ``StaticPlanBlockMemory`` and fills a dict;
:func:`with_string_function` adds the function after the pipeline (TVM 0.27's VM lowering
passes reject a function whose body is a string constant).
"""

from __future__ import annotations

import json
import math

import tvm
from tvm import relax

NAME = "_metadata"


def estimate_memory_usage(usage: dict[str, int]):
    """A pass (changing nothing) that sets ``usage[function] = bytes`` of the storage its
    statically planned allocations take (``relax.memory.alloc_storage`` of a constant size,
    ``relax.builtin.alloc_tensor`` of a constant shape)."""
    alloc_storage = tvm.ir.Op.get("relax.memory.alloc_storage")
    alloc_tensor = tvm.ir.Op.get("relax.builtin.alloc_tensor")

    @relax.expr_functor.visitor
    class _Count(relax.PyExprVisitor):
        total = 0

        def visit_call_(self, call: relax.Call) -> None:  # pylint: disable=arguments-renamed
            if call.op == alloc_storage:
                self.total += _static_numel(call.args[0], "uint8")
            elif call.op == alloc_tensor:
                self.total += _static_numel(call.args[0], call.args[1].value)
            super().visit_call_(call)

    @tvm.transform.module_pass(opt_level=0, name="EstimateMemoryUsage")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                counter = _Count()
                counter.visit_expr(func)
                usage[gv.name_hint] = int(counter.total)
        return mod

    return _pass


def _static_numel(shape, dtype) -> int:
    """Bytes of a constant ``shape`` of ``dtype``; 0 for a symbolic one."""
    if not isinstance(shape, relax.ShapeExpr) or not all(isinstance(d, tvm.tirx.IntImm) for d in shape.values):
        return 0
    dt = tvm.DataType(str(dtype))
    return math.prod(int(d.value) for d in shape.values) * ((dt.bits * dt.lanes + 7) // 8)


def with_string_function(mod: tvm.IRModule, name: str, text: str) -> tvm.IRModule:
    """``mod`` plus a public Relax function ``name`` taking nothing and returning ``text``
    (a constant of the VM executable)."""
    func = relax.Function([], tvm.ir.expr.StringImm(text), relax.ObjectType(), is_pure=True)
    mod = mod.clone()
    mod[name] = func.with_attr("global_symbol", name)
    return mod


def with_metadata(mod: tvm.IRModule, metadata: dict) -> tvm.IRModule:
    """``mod`` plus :data:`NAME` returning ``metadata`` as JSON."""
    return with_string_function(mod, NAME, json.dumps(metadata, sort_keys=True))
