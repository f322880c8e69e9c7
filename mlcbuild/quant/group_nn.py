"""TVM side of group quantization: dequantize tensor expressions and the quantized ``nn`` modules."""

from __future__ import annotations

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from mlcbuild.quant.base import swap_linear_or_embedding
from mlcbuild.quant.group import GroupQuant

DEQUANTIZE_PREFIX = "dequantize"
DEQUANTIZE_ATTR = "mlcbuild.dequantize"
"""Attribute of a dequantize kernel: the scheme's ``dequantize_info``, what the compiler's kernel
dispatch (:mod:`mlcbuild.compiler.passes.dispatch_kernels`) needs to run ``x @ W^T`` in one
kernel of :mod:`mlcbuild.kernels` instead."""


def dequantized(scheme: GroupQuant, q_weight, q_scale, n: int, k: int, layout: str, dtype: str) -> Tensor:
    """The ``[N, K]`` (``NK``) or ``[K, N]`` (``KN``) weight in ``dtype``, as one tagged kernel
    (:data:`DEQUANTIZE_ATTR`)."""
    return op.tensor_expr_op(
        lambda qw, qs: te_dequantize(scheme, qw, qs, n, k, layout, dtype),
        name_hint=DEQUANTIZE_PREFIX,
        args=[q_weight, q_scale],
        attrs={DEQUANTIZE_ATTR: scheme.dequantize_info(layout)},
    )


def dequant_value(scheme: GroupQuant, word, scale, k, dtype: str | None = None):
    """One dequantized weight from its packed word and group scale (TIR expressions).

    ``dtype``: the compute dtype (default the scheme's); the scale is cast to it when it is
    stored narrower (fp16 scales, fp32 compute on hosts without fp16 arithmetic).
    """
    dtype = dtype or scheme.model_dtype
    epw, bits = scheme.elems_per_word, scheme.bits
    shift = tirx.Cast("uint32", k % epw * bits)
    q = tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const((1 << bits) - 1, "uint32"))
    if scale.dtype != dtype:
        scale = tirx.Cast(dtype, scale)
    return (tirx.Cast(dtype, q) - tirx.const(scheme.max_int, dtype)) * scale


def te_dequantize(
    scheme: GroupQuant, q_weight: te.Tensor, q_scale: te.Tensor, n: int, k: int, layout: str, dtype: str | None = None
) -> te.Tensor:
    """Dequantize to ``[N, K]`` (``NK``) or ``[K, N]`` (``KN``), in ``dtype`` (default the model dtype)."""
    epw, g = scheme.elems_per_word, scheme.group_size
    if layout == "KN":
        return te.compute(
            (k, n),
            lambda i, j: dequant_value(scheme, q_weight[i // epw, j], q_scale[i // g, j], i, dtype),
            name=DEQUANTIZE_PREFIX,
        )
    return te.compute(
        (n, k),
        lambda i, j: dequant_value(scheme, q_weight[i, j // epw], q_scale[i, j // g], j, dtype),
        name=DEQUANTIZE_PREFIX,
    )


def quantize_module(scheme: GroupQuant, m: nn.Module, compute_dtype: str):
    """The group-quantized replacement of an ``nn.Linear`` or ``nn.Embedding``, else ``None``.

    ``compute_dtype``: the activations' dtype (fp32 compute of an fp16 scheme,
    :func:`mlcbuild.compiler.export.compute_dtype`); scales keep the scheme's dtype, so the
    converted weights are the same for every target.
    """
    return swap_linear_or_embedding(
        m,
        lambda m: GroupQuantLinear(m.in_features, m.out_features, scheme, compute_dtype, bias=m.bias is not None),
        lambda m: GroupQuantEmbedding(m.num, m.dim, scheme, compute_dtype),
    )


class GroupQuantLinear(nn.Module):
    """``y = x @ dequant(q_weight, q_scale)^T (+ bias)``: ``[b, s, K]`` -> ``[b, s, N]``.

    The dequantize kernel is tagged (:data:`DEQUANTIZE_ATTR`): on CPUs the compiler puts one
    kernel of :mod:`mlcbuild.kernels` in place of dequantize + matmul where one fits. ``bias``: an
    unquantized ``[N]`` bias stored in the scheme's dtype (Qwen2's q/k/v), added in the
    compute dtype.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        scheme: GroupQuant,
        compute_dtype: str | None = None,
        bias: bool = False,
    ):
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        self.compute_dtype = compute_dtype or scheme.model_dtype
        wshape, sshape = scheme.packed_shapes(out_features, in_features)
        self.q_weight = nn.Parameter(wshape, "uint32")
        self.q_scale = nn.Parameter(sshape, scheme.model_dtype)
        self.bias = nn.Parameter((out_features,), scheme.model_dtype) if bias else None

    def quantize_weight(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """``[N, K]`` float -> ``{"q_weight": ..., "q_scale": ...}``."""
        q, s = self.scheme.quantize(w)
        return {"q_weight": q, "q_scale": s}

    def pack_weight(self, codes: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
        """Codes ``[N, K_pad]`` and scales chosen elsewhere (GPTQ) -> ``{"q_weight", "q_scale"}``."""
        q, s = self.scheme.pack(codes, scale)
        return {"q_weight": q, "q_scale": s}

    def forward(self, x: Tensor) -> Tensor:
        s, n, k = self.scheme, self.out_features, self.in_features
        w = dequantized(s, self.q_weight, self.q_scale, n, k, s.layout, self.compute_dtype)
        y = op.matmul(x, op.permute_dims(w) if s.layout == "NK" else w)
        if self.bias is None:
            return y
        bias = self.bias if self.bias.dtype == y.dtype else self.bias.astype(y.dtype)
        return y + bias


class GroupQuantEmbedding(nn.Module):
    """Quantized ``[vocab, d]`` table (NK layout); lookup dequantizes only the rows gathered."""

    def __init__(self, num: int, dim: int, scheme: GroupQuant, compute_dtype: str | None = None):
        self.num, self.dim, self.scheme = num, dim, scheme
        self.compute_dtype = compute_dtype or scheme.model_dtype
        wshape, sshape = scheme.packed_shapes(num, dim, layout="NK")
        self.q_weight = nn.Parameter(wshape, "uint32")
        self.q_scale = nn.Parameter(sshape, scheme.model_dtype)

    def quantize_weight(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """``[vocab, d]`` float -> ``{"q_weight": ..., "q_scale": ...}`` (NK)."""
        q, s = self.scheme.quantize(w, layout="NK")
        return {"q_weight": q, "q_scale": s}

    def forward(self, ids: Tensor) -> Tensor:
        """Token ids ``[s]`` int32 -> ``[s, d]`` compute dtype; gather and dequantize in one kernel."""
        s, d = self.scheme, self.dim
        epw, g = s.elems_per_word, s.group_size

        def gather(qw: te.Tensor, qs: te.Tensor, idx: te.Tensor):
            return te.compute(
                (idx.shape[0], d),
                lambda i, j: dequant_value(s, qw[idx[i], j // epw], qs[idx[i], j // g], j, self.compute_dtype),
                name="dequantize_take",
            )

        return op.tensor_expr_op(gather, name_hint="dequantize_take", args=[self.q_weight, self.q_scale, ids])

    def lm_head_forward(self, x: Tensor) -> Tensor:
        """Tied LM head: ``[b, s, d]`` -> ``[b, s, vocab]`` compute dtype (a tagged dequantize, as linears)."""
        w = dequantized(self.scheme, self.q_weight, self.q_scale, self.num, self.dim, "NK", self.compute_dtype)
        return op.matmul(x, op.permute_dims(w))
