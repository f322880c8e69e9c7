"""What every attention kernel of ours (:mod:`.attention`) shares, CPU and GPU: which keys a query sees under a sliding window, the score scale, and
the soft-capped logit; plus the IRModule attributes that carry a model's window and cap to
the pass that swaps the kernels in.
"""

from __future__ import annotations

from tvm.script import tirx as T

from mlcbuild.kernels.tir_math import LOG2E, fast_tanh

WINDOW_ATTR = "mlcbuild.attention_window"
"""IRModule attribute: the model's sliding window in tokens (``DecoderConfig.sliding_window``)
when some layers attend within one; the pass that puts our kernels in place reads it
(:func:`.attention.replace_attention`)."""
NEG = -5e4
"""The running maximum before any key, and the lse of a query that sees none (TVM's value)."""
SOFTCAP_ATTR = "mlcbuild.attention_softcap"
"""IRModule attribute: the attention logit soft-cap (``DecoderConfig.attn_logit_softcapping``)."""


def window_start(sm_scale, window: int, q_pos, k_pos0):
    """Index of the first key (from the one at position ``k_pos0``) that a query at position
    ``q_pos`` sees: under sliding-window attention a query sees the ``window`` positions up to
    and including its own (HF ``sliding_window_overlay``: ``kv_idx > q_idx - window``).

    Which layers use the window travels with the call: the model passes a negative
    ``sm_scale`` for them (:class:`mlcbuild.models.common.PagedAttention`), since TVM's KV
    cache calls one kernel for every layer and passes no layer id. ``window`` 0: the kernel
    has no window code and a scale is taken as it is.
    """
    if not window:
        return 0
    return T.if_then_else(sm_scale < T.float32(0), T.max(q_pos - (window - 1) - k_pos0, 0), 0)


def q_factor(sm_scale, window: int, softcap: float):
    """What ``q . k`` is multiplied by: the score scale (``|sm_scale|`` in a kernel with a
    window, whose sign marks a windowed layer: :func:`window_start`) times ``log2 e`` (the
    kernels' softmax is in base 2), or over ``softcap`` when logits are soft-capped (:func:`logit`)."""
    scale = T.max(sm_scale, -sm_scale) if window else sm_scale
    return scale * T.float32(1 / softcap if softcap else LOG2E)


def logit(x, softcap: float):
    """The base-2 attention logit from ``x = q . k * q_factor``: ``x`` itself, or with
    soft-capping ``cap * tanh(s / cap) * log2 e`` for the score ``s`` (Gemma 2: HF
    ``modeling_gemma2.eager_attention_forward`` caps the scaled scores before the mask)."""
    return x if not softcap else T.float32(softcap * LOG2E) * fast_tanh(x)
