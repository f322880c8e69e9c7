"""The driver the rewriting passes share: a ``PyExprMutator`` over every Relax function of a module."""

from __future__ import annotations

import tvm
from tvm import relax


def rewrite_functions(mutator: relax.PyExprMutator, mod: tvm.IRModule) -> tvm.IRModule:
    """Every Relax function of ``mod`` visited by ``mutator`` (built on ``mod``); the module of
    its builder, finalized, so that the kernels it added keep their global-symbol names."""
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.finalize()
