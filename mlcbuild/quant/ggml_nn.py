"""TVM side of :mod:`.ggml`: the linear and the embedding that dequantize GGML blocks."""

from __future__ import annotations

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from mlcbuild.quant.base import swap_linear_or_embedding
from mlcbuild.quant.ggml import BLOCK, GGMLQuant
from mlcbuild.quant.group_nn import DEQUANTIZE_ATTR, DEQUANTIZE_PREFIX


def quantize_module(scheme: GGMLQuant, m: nn.Module, compute_dtype: str):
    """The GGML-block replacement of an ``nn.Linear`` or ``nn.Embedding``, else ``None``."""
    return swap_linear_or_embedding(
        m,
        lambda m: GGMLLinear(m.in_features, m.out_features, scheme, compute_dtype, bias=m.bias is not None),
        lambda m: GGMLEmbedding(m.num, m.dim, scheme, compute_dtype),
    )


class _GGMLWeight(nn.Module):
    """The stored tensors of one ``[N, K]`` weight (:mod:`.ggml` lists them) and their import."""

    def _params(self, n: int, k: int):
        shapes = self.scheme.packed_shapes(n, k)
        self.q_weight = nn.Parameter(shapes["q_weight"], "uint32")
        self.q_scale = nn.Parameter(shapes["q_scale"], "float16")
        self.q_min = nn.Parameter(shapes["q_min"], "float16") if "q_min" in shapes else None

    def import_blocks(self, hf_names: list[str], combine, blocks, read) -> dict[str, np.ndarray]:
        """The checkpoint's blocks of ``hf_names`` (fused along rows by ``combine``) -> our tensors
        (:meth:`.ggml.GGMLQuant.stored`: exact, or quantized from a float tensor)."""
        parts = [self.scheme.stored(name, *blocks(name), read) for name in hf_names]
        return {key: combine(*(p[key] for p in parts)) for key in parts[0]}

    def quantize_weight(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """``[N, K]`` float -> our tensors, by llama.cpp's reference quantizer."""
        return self.scheme.quantize(w)

    def _args(self) -> list:
        return [self.q_weight, self.q_scale] + ([self.q_min] if self.q_min is not None else [])

    def _value(self, qw, qs, qm, row, j, dtype: str):
        s = self.scheme
        shift = tirx.Cast("uint32", j % s.elems_per_word * s.bits)
        word = qw[row, j // s.elems_per_word]
        q = tirx.Cast(dtype, tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const((1 << s.bits) - 1, "uint32")))
        d = tirx.Cast(dtype, qs[row, j // BLOCK])
        if qm is not None:
            return q * d + tirx.Cast(dtype, qm[row, j // BLOCK])
        return (q - tirx.const(s.offset, dtype)) * d

    def _dequantized(self, n: int, k: int, dtype: str) -> Tensor:
        def dequantize(qw: te.Tensor, qs: te.Tensor, qm: te.Tensor | None = None):
            return te.compute((n, k), lambda i, j: self._value(qw, qs, qm, i, j, dtype), name=DEQUANTIZE_PREFIX)

        return op.tensor_expr_op(
            dequantize,
            name_hint=DEQUANTIZE_PREFIX,
            args=self._args(),
            attrs={DEQUANTIZE_ATTR: self.scheme.dequantize_info()},  # for the CPU kernels' dispatch
        )


class GGMLLinear(_GGMLWeight):
    """``y = x @ dequant(blocks)^T (+ bias)``: ``[b, s, K]`` -> ``[b, s, N]`` in ``compute_dtype``."""

    def __init__(self, in_features: int, out_features: int, scheme: GGMLQuant, compute_dtype: str, bias: bool = False):
        self.in_features, self.out_features, self.scheme, self.compute_dtype = (
            in_features, out_features, scheme, compute_dtype,
        )  # fmt: skip
        self._params(out_features, in_features)
        self.bias = nn.Parameter((out_features,), scheme.model_dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y = op.matmul(x, op.permute_dims(self._dequantized(self.out_features, self.in_features, self.compute_dtype)))
        if self.bias is None:
            return y
        return y + (self.bias if self.bias.dtype == y.dtype else self.bias.astype(y.dtype))


class GGMLEmbedding(_GGMLWeight):
    """A ``[vocab, d]`` table of GGML blocks; lookup dequantizes only the rows gathered."""

    def __init__(self, num: int, dim: int, scheme: GGMLQuant, compute_dtype: str):
        self.num, self.dim, self.scheme, self.compute_dtype = num, dim, scheme, compute_dtype
        self._params(num, dim)

    def forward(self, ids: Tensor) -> Tensor:
        """Token ids ``[s]`` int32 -> ``[s, d]`` compute dtype."""
        dtype, d = self.compute_dtype, self.dim

        def gather(qw: te.Tensor, qs: te.Tensor, *rest: te.Tensor):
            qm, idx = (rest[0], rest[1]) if len(rest) == 2 else (None, rest[0])
            return te.compute(
                (idx.shape[0], d), lambda i, j: self._value(qw, qs, qm, idx[i], j, dtype), name="dequantize_take"
            )

        return op.tensor_expr_op(gather, name_hint="dequantize_take", args=[*self._args(), ids])

    def lm_head_forward(self, x: Tensor) -> Tensor:
        """Tied LM head: ``[b, s, d]`` -> ``[b, s, vocab]`` compute dtype."""
        return op.matmul(x, op.permute_dims(self._dequantized(self.num, self.dim, self.compute_dtype)))
