"""One TVMScript kernel, several signatures: the parameters a variant does not read, dropped.

A kernel with optional inputs (a fused norm weight, a residual, a GGML block minimum) is
written once with every input as a parameter; the variant's macro never reads the ones it
lacks, and :func:`without_params` drops those from the signature (TVM 0.27 ``tirx``: a
parameter is its buffer's data variable, so an unread one leaves nothing behind).
"""

from __future__ import annotations

from tvm import tirx


def without_params(func: tirx.PrimFunc, names: set[str]) -> tirx.PrimFunc:
    """``func`` without the parameters called ``names`` (the body must not read them).

    Raises:
        ValueError: a name is not a parameter of ``func``.
    """
    params = [p.name for p in func.params]
    if not names <= set(params):
        raise ValueError(f"{sorted(names - set(params))} are not parameters of {params}")
    return tirx.PrimFunc([p for p in func.params if p.name not in names], func.body, func.ret_type, func.attrs)
