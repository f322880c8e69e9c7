"""Blocks shared by the decoder-only architectures, in ``tvm.relax.frontend.nn``.

Shapes use ``b`` = batch, ``s`` = sequence length (symbolic), ``d`` = hidden size,
``h``/``h_kv`` = query/KV heads, ``hd`` = head dim.  Mirrors the structure of
Hugging Face ``transformers/models/llama/modeling_llama.py``, with q/k/v and
gate/up projections fused (the loader concatenates the checkpoint's tensors).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from tvm import relax as rx
from tvm import te
from tvm.ir.expr import StringImm
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache


class Embedding(nn.Embedding):
    """Token embedding ``[vocab, d]`` that can also serve as a tied LM head."""

    def lm_head_forward(self, x: Tensor) -> Tensor:
        """Logits with the embedding as the output projection.

        Args:
            x: hidden states ``[b, s, d]`` of the model dtype.
        Returns:
            ``[b, s, vocab]`` of the model dtype.
        """
        return op.matmul(x, op.permute_dims(self.weight))


class GatedMLP(nn.Module):
    """Gated feed-forward: ``down(act(gate(x)) * up(x))`` with gate and up fused; ``act``
    ``"silu"`` (SwiGLU) or ``"gelu_pytorch_tanh"`` (GeGLU with the tanh approximation of GELU).

    Source: ``LlamaMLP`` in Hugging Face ``modeling_llama.py``, ``Gemma3MLP`` in
    ``modeling_gemma3.py`` (Shazeer 2020, GLU variants).
    """

    def __init__(self, hidden_size: int, intermediate_size: int, dtype: str, act: str = "silu"):
        self.intermediate_size = intermediate_size
        self.gate_up_proj = nn.Linear(hidden_size, 2 * intermediate_size, bias=False, dtype=dtype)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False, dtype=dtype)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        """``[b, s, d]`` -> ``[b, s, d]``."""
        gate_up = self.gate_up_proj(x)
        gate, up = op.split(gate_up, 2, axis=-1)
        act = op.silu(gate) if self.act == "silu" else op.gelu(gate, approximate="tanh")
        return self.down_proj(act * up)


class PagedAttention(nn.Module):
    """Multi-head attention with grouped KV heads on TVM's paged KV cache.

    RoPE is applied inside the KV cache's fused attention kernel
    (``vm.builtin.attention_kv_cache_attention_with_fused_qkv``), as MLC-LLM does.
    ``bias``: the q/k/v projections carry one (Qwen2's ``Qwen2Attention``). ``qk_norm_eps``:
    RMSNorm over each head's q and k before RoPE, Qwen3's ``q_norm``/``k_norm``
    (``transformers/models/qwen3/modeling_qwen3.py``). ``sm_scale``: the attention score scale
    (default ``head_dim ** -0.5``; Gemma's ``query_pre_attn_scalar ** -0.5``). ``rope``:
    a :class:`~.rope.RopeSpec`: this layer's RoPE applied here (:func:`rotate`) instead of in
    the KV cache, for models whose layers use different bases (Gemma 3); the cache is then
    built with ``RopeMode.NONE``. ``windowed``: the layer attends within the model's sliding
    window; the KV cache's attention is called with ``-sm_scale``, the mark our CPU kernels
    read (:func:`mlcbuild.kernels.attention_common.window_start`: TVM's cache passes no layer id).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: str,
        bias: bool = False,
        qk_norm_eps: float | None = None,
        sm_scale: float | None = None,
        rope=None,
        windowed: bool = False,
    ):
        self.sm_scale = sm_scale if sm_scale is not None else head_dim**-0.5
        self.windowed = windowed
        self.rope = rope
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.qkv_proj = nn.Linear(hidden_size, (num_heads + 2 * num_kv_heads) * head_dim, bias=bias, dtype=dtype)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=False, dtype=dtype)
        self.q_norm = self.k_norm = None
        if qk_norm_eps is not None:
            self.q_norm = nn.RMSNorm(head_dim, -1, qk_norm_eps, bias=False, dtype=dtype)
            self.k_norm = nn.RMSNorm(head_dim, -1, qk_norm_eps, bias=False, dtype=dtype)

    def forward(self, x: Tensor, paged_kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        """``[b, s, d]`` -> ``[b, s, d]``; appends this step's K/V to the cache for ``layer_id``."""
        b, s, _ = x.shape
        h, h_kv = self.num_heads, self.num_kv_heads
        qkv = op.reshape(self.qkv_proj(x), (b, s, h + 2 * h_kv, self.head_dim))
        if self.q_norm is not None or self.rope is not None:
            q, k, v = op.split(qkv, [h, h + h_kv], axis=2)
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            if self.rope is not None:
                positions = paged_kv_cache.get_query_positions(b * s)
                q, k = (rotate(t, positions, self.rope) for t in (q, k))
            qkv = op.concat([q, k, v], dim=2)
        scale = -self.sm_scale if self.windowed else self.sm_scale
        out = paged_kv_cache.attention_with_fused_qkv(layer_id, qkv, h, sm_scale=scale)
        return self.o_proj(op.reshape(out, (b, s, h * self.head_dim)))


def rotate(x: Tensor, positions: Tensor, spec) -> Tensor:
    """RoPE (Su et al. 2021) in the rotate-half layout: ``x`` ``[b, s, heads, d]``, ``positions``
    ``[b * s]`` int32 (the KV cache's query positions) -> ``x``'s shape and dtype.

    ``angle = pos * inv_freq[i]`` (``spec``: a :class:`~.rope.RopeSpec`, whose inverse
    frequencies are a constant computed as HF does), ``cos``/``sin`` times
    ``spec.attention_factor``, all in float32; ``out[i] = x[i] cos - x[i + d/2] sin``,
    ``out[i + d/2] = x[i + d/2] cos + x[i] sin`` (HF ``apply_rotary_pos_emb`` with ``rotate_half``).
    """
    from tvm import tirx

    d = int(x.shape[-1])
    inv_freq = Tensor.from_const(spec.inv_freq(d))
    att = tirx.const(spec.attention_factor, "float32")

    def compute(t: te.Tensor, pos: te.Tensor, inv: te.Tensor):
        _, s, _, _ = t.shape
        half = d // 2

        def value(i, j, hh, c):
            angle = tirx.Cast("float32", pos[i * s + j]) * inv[tirx.if_then_else(c < half, c, c - half)]
            xf = tirx.Cast("float32", t[i, j, hh, c])
            other = tirx.if_then_else(
                c < half, -t[i, j, hh, tirx.min(c + half, d - 1)], t[i, j, hh, tirx.max(c - half, 0)]
            )
            out = xf * (tirx.cos(angle) * att) + tirx.Cast("float32", other) * (tirx.sin(angle) * att)
            return tirx.Cast(t.dtype, out)

        return te.compute(t.shape, value, name="rope")

    return op.tensor_expr_op(compute, name_hint="rope", args=[x, positions, inv_freq])


@dataclasses.dataclass(frozen=True)
class KVCacheSpec:
    """What the paged KV cache needs to know about a model."""

    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_theta: float
    rope_scaling: dict[str, Any]
    rope_in_model: bool = False  # RoPE applied by the model (PagedAttention.rope): RopeMode.NONE


KV_CACHE_GENERIC = "mlcbuild.create_paged_kv_cache_generic"
"""The extern a model's ``create_paged_kv_cache`` calls: a placeholder that the compiler's
:mod:`mlcbuild.compiler.passes.dispatch_kv_cache` replaces with TVM's ``TIRPagedKVCache``
built for the target (MLC-LLM's ``mlc.create_paged_kv_cache_generic`` and its
``DispatchKVCacheCreation`` pass work the same way): models know nothing of targets."""


def create_generic_paged_kv_cache(
    spec: KVCacheSpec,
    dtype: str,
    max_batch_size: Any,
    max_total_seq_len: Any,
    prefill_chunk_size: Any,
    page_size: Any,
    support_sliding_window: Any,
) -> PagedKVCache:
    """A paged KV cache of ``spec`` in ``dtype``, target-independent: one call of
    :data:`KV_CACHE_GENERIC` with the five symbolic sizes (sequences, total tokens, tokens per
    prefill, tokens per page, 0/1 sliding window) as a shape and the spec as a JSON string."""
    data = {**dataclasses.asdict(spec), "dtype": dtype}
    sizes = rx.ShapeExpr([max_batch_size, max_total_seq_len, prefill_chunk_size, page_size, support_sliding_window])
    expr = rx.call_pure_packed(
        KV_CACHE_GENERIC, sizes, StringImm(json.dumps(data, sort_keys=True)), ty_args=rx.ObjectType()
    )
    return PagedKVCache(_expr=expr, _name="paged_kv_cache")


def last_token(x: Tensor) -> Tensor:
    """``[b, s, d]`` -> ``[b, 1, d]``: the hidden state of the last position."""

    def _index(t: te.Tensor):
        b, s, d = t.shape
        return te.compute((b, 1, d), lambda i, _, k: t[i, s - 1, k], name="index")

    return op.tensor_expr_op(_index, name_hint="index", args=[x])


class StoredRMSNorm(nn.Module):
    """RMSNorm whose weight is stored in ``storage_dtype`` and cast to the input's dtype at use.

    For fp16 schemes computed in fp32 (hosts without fp16 arithmetic): the parameter keeps the
    dtype the converted weights have; ``x`` ``[..., d]`` fp32 -> fp32. Same math as ``nn.RMSNorm``
    (``x * rsqrt(mean(x^2) + eps) * weight``, HF ``LlamaRMSNorm``).
    """

    def __init__(self, hidden_size: int, epsilon: float, storage_dtype: str):
        self.epsilon = epsilon
        self.weight = nn.Parameter((hidden_size,), dtype=storage_dtype)

    def forward(self, x):
        return op.rms_norm(x, op.astype(self.weight, x.dtype), axes=-1, epsilon=self.epsilon)
