"""AttachVariableBounds: upper bounds of the symbolic sizes, which let static memory planning
allocate fixed buffers."""

from __future__ import annotations

import tvm
from tvm import relax


def attach_variable_bounds(bounds: dict[str, int]):
    """A pass setting ``tir_var_upper_bound`` on every Relax function.

    Args:
        bounds: symbolic size name -> largest value at run time, e.g.
            ``{"seq_len": prefill_chunk_size, "batch_size": max_batch_size}``.
    """

    @tvm.transform.module_pass(opt_level=0, name="AttachVariableBounds")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        out = tvm.IRModule(mod.functions, attrs=mod.attrs)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                func = func.with_attr("tir_var_upper_bound", bounds).with_attr("tir_non_negative_var", list(bounds))
                out[gv] = func
        return out

    return _pass
