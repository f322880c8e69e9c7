"""Our CPU kernel for the paged KV cache's RoPE split (``tir_split_rotary``).

TVM's ``llama_rope_with_position_map`` evaluates ``pow``, ``sin`` and ``cos`` (scalar libm
calls) for every element of every query and key head, and runs serial: ~0.5 ms of a
~7 ms SmolLM-135M decode token on host (perf: ``powf``, ``sincosf`` and the kernel 4 % of
the samples). This kernel has the same signature and results (``qkv [s, h_q + 2 h_kv, d]``
-> ``q``, ``k`` with RoPE applied, ``v`` copied), computes ``cos``/``sin`` once per token and
frequency (``d / 2`` values, from TVM's own ``switch_rope_freq_func``, so the frequency
formulas are TVM's: ``default``, ``llama3``), then rotates every head with vector
arithmetic; parallel over tokens when there is more than one (prefill), serial for decode.
The rotation is the non-interleaved ("rotate half") one of Hugging Face's
``apply_rotary_pos_emb`` (``transformers/models/llama/modeling_llama.py``)::

    out[i]         = x[i] cos(f_i p) - x[i + d/2] sin(f_i p)
    out[i + d/2]   = x[i + d/2] cos(f_i p) + x[i] sin(f_i p)        (i < d/2)
"""

from __future__ import annotations

from typing import Any

from tvm import tirx
from tvm.relax.frontend.nn.llm.position_embedding import switch_rope_freq_func
from tvm.script import tirx as T

SUPPORTED = ("default", "llama3")


def supports(rope_scaling: dict[str, Any], rotary_dim: int, head_dim: int) -> bool:
    """Whether :func:`split_rotary_cpu` replaces TVM's kernel for this RoPE (full rotary dim,
    ``default`` or ``llama3`` frequencies; ``{}`` is TVM's spelling of ``default``)."""
    return rope_scaling.get("rope_type", "default") in SUPPORTED and rotary_dim == head_dim and head_dim % 2 == 0


def split_rotary_cpu(
    theta: float, h_q: int, h_kv: int, d: int, dtype: str, rope_scaling: dict[str, Any]
) -> tirx.PrimFunc:
    """The kernel: ``qkv [s, h_q + 2 h_kv, d]`` ``dtype`` and ``position_map [s]`` int32 ->
    ``q [s, h_q, d]``, ``k [s, h_kv, d]`` (rotated at their positions), ``v [s, h_kv, d]``
    (copied); ``apply_rope = 0`` copies q and k unrotated. Math in float32.

    Raises:
        ValueError: a RoPE this kernel does not cover (see :func:`supports`).
    """
    if not supports(rope_scaling, d, d):
        raise ValueError(f"no CPU RoPE kernel for rope_scaling {rope_scaling!r}")
    half, heads = d // 2, h_q + 2 * h_kv
    freq_func = switch_rope_freq_func(dict(rope_scaling))

    def angle(pos, i, which):
        """``cos`` (which 0) or ``sin`` (which 1) of frequency ``i`` at position ``pos``."""
        cos, sin, lets = freq_func(T.Cast("float32", pos), i, d, theta, "float32")
        expr = cos if which == 0 else sin
        for var, value in lets.items():
            expr = tirx.Let(var, value, expr)
        return expr

    def x_at(qkv, s, h, j):
        return T.Cast("float32", qkv[s, h, j])

    @T.macro
    def token(qkv, position_map, q, k, v, apply_rope, s):
        cs = T.decl_buffer((2, half), "float32")  # cos, sin per frequency (stack: d * 4 bytes)
        for i in range(half):
            cs[0, i] = T.if_then_else(apply_rope > 0, angle(position_map[s], i, 0), T.float32(1))
            cs[1, i] = T.if_then_else(apply_rope > 0, angle(position_map[s], i, 1), T.float32(0))
        for h in range(h_q + h_kv):
            for i in T.vectorized(half):
                if h < h_q:
                    q[s, h, i] = T.Cast(dtype, x_at(qkv, s, h, i) * cs[0, i] - x_at(qkv, s, h, i + half) * cs[1, i])
                    q[s, h, i + half] = T.Cast(
                        dtype, x_at(qkv, s, h, i + half) * cs[0, i] + x_at(qkv, s, h, i) * cs[1, i]
                    )
                else:
                    k[s, h - h_q, i] = T.Cast(
                        dtype, x_at(qkv, s, h, i) * cs[0, i] - x_at(qkv, s, h, i + half) * cs[1, i]
                    )
                    k[s, h - h_q, i + half] = T.Cast(
                        dtype, x_at(qkv, s, h, i + half) * cs[0, i] + x_at(qkv, s, h, i) * cs[1, i]
                    )
        for h in range(h_kv):
            for j in T.vectorized(d):
                v[s, h, j] = qkv[s, h_q + h_kv + h, j]

    @T.prim_func(s_tir=False)
    def fused_rope(
        var_qkv: T.handle,
        var_position_map: T.handle,
        var_q: T.handle,
        var_k: T.handle,
        var_v: T.handle,
        apply_rope: T.int64,
    ):
        T.func_attr({"op_pattern": 8, "tirx.is_scheduled": True, "tirx.noalias": True})
        seq_len = T.int32()
        pm_off = T.int32()
        qkv = T.match_buffer(var_qkv, (seq_len, heads, d), dtype)
        q = T.match_buffer(var_q, (seq_len, h_q, d), dtype)
        k = T.match_buffer(var_k, (seq_len, h_kv, d), dtype)
        v = T.match_buffer(var_v, (seq_len, h_kv, d), dtype)
        position_map = T.match_buffer(var_position_map, (seq_len,), "int32", elem_offset=pm_off)
        if seq_len == 1:  # decode: a thread-pool launch costs more than the work
            token(qkv, position_map, q, k, v, apply_rope, 0)
        else:
            for s in T.parallel(seq_len):
                token(qkv, position_map, q, k, v, apply_rope, s)

    return fused_rope
