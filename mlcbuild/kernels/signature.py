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


def group_prefill_kernel(n: int, k: int, words: int, groups: int, scale_dtype: str, has_min: bool, body):
    """The signature the prefill kernels of packed group weights share, around ``body``.

    Buffers: x ``[1, m, k]`` float32 (``m`` symbolic), q_weight ``[n, words]`` uint32, q_scale
    ``[n, groups]`` ``scale_dtype``, q_min (the same; dropped unless ``has_min``), y ``[1, m, n]``
    float32. ``body(x, q_weight, q_scale, q_min, y, m)``: a ``T.macro`` computing ``y``.
    Returns the PrimFunc without a global symbol (Relax names each call site).
    """
    from tvm.script import tirx as T

    @T.prim_func(s_tir=False)
    def prefill(
        var_x: T.handle,
        q_weight: T.Buffer((n, words), "uint32"),
        q_scale: T.Buffer((n, groups), scale_dtype),
        q_min: T.Buffer((n, groups), scale_dtype),
        var_y: T.handle,
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        m = T.int64()
        x = T.match_buffer(var_x, (T.int64(1), m, k), "float32")
        y = T.match_buffer(var_y, (T.int64(1), m, n), "float32")
        body(x, q_weight, q_scale, q_min, y, m)

    func = prefill if has_min else without_params(prefill, {"q_min"})
    return func.without_attr("global_symbol")


def float_prefill_kernel(n: int, k: int, body):
    """The signature of the fp32 (q0f32) prefill kernels, around ``body``.

    Buffers: x ``[1, m, k]`` (``m`` symbolic), weight ``[n, k]`` (``nn.Linear``'s layout),
    y ``[1, m, n]``, float32. ``body(x, weight, y, m)``: a ``T.macro`` computing ``y``.
    Returns the PrimFunc without a global symbol (Relax names each call site).
    """
    from tvm.script import tirx as T

    @T.prim_func(s_tir=False)
    def prefill(var_x: T.handle, weight: T.Buffer((n, k), "float32"), var_y: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        m = T.int64()
        x = T.match_buffer(var_x, (T.int64(1), m, k), "float32")
        y = T.match_buffer(var_y, (T.int64(1), m, n), "float32")
        body(x, weight, y, m)

    return prefill.without_attr("global_symbol")
