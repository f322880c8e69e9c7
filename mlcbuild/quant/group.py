"""Symmetric group quantization (MLC-LLM's ``q3f16_*``, ``q4f16_*``, ``q4f32_1``).

For ``b`` bits, ``max_int = 2**(b-1) - 1``; per group of ``group_size`` consecutive
weights along the reduction axis ``K``::

    scale = max|w| / max_int
    q     = clip(round(w / scale) + max_int, 0, 2 * max_int)      # unsigned, b bits
    w'    = (q - max_int) * scale

``32 // b`` values are packed little end first into each ``uint32`` along ``K``
(8 for int4, 10 for int3). ``K`` is zero-padded to a multiple of ``group_size``.
Layouts for a linear weight of logical shape ``[N, K]`` (out, in):

- ``NK`` (``_1``): ``q_weight [N, K_pad / epw]``, ``q_scale [N, K_pad / group_size]``.
- ``KN`` (``_0``, the one MLC-LLM recommends for Adreno): the transposes,
  ``q_weight [K_pad / epw, N]``, ``q_scale [K_pad / group_size, N]``.

Embeddings always use ``NK`` (rows are tokens). Dequantization is written as its
own tensor expression; :mod:`mlcbuild.compiler.passes` fuses it into the consuming
matmul/GEMV so that kernels read packed weights directly.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from .base import Scheme, replace_modules

DEQUANTIZE_PREFIX = "dequantize"


class GroupQuant(Scheme):
    """Symmetric ``bits``-bit group quantization with ``group_size`` weights per scale.

    Args:
        name: registry name.
        bits: 3 or 4 (8 also packs, 4 per uint32).
        group_size: weights per scale; a multiple of ``32 // bits``.
        model_dtype: activation and scale dtype.
        layout: ``"NK"`` or ``"KN"`` for linear weights.
    """

    def __init__(self, name: str, bits: int, group_size: int, model_dtype: str, layout: str):
        assert layout in ("NK", "KN")
        self.name = name
        self.bits = bits
        self.group_size = group_size
        self.model_dtype = model_dtype
        self.layout = layout
        self.elems_per_word = 32 // bits
        self.max_int = 2 ** (bits - 1) - 1
        assert group_size % self.elems_per_word == 0

    def describe(self):
        return {
            "name": self.name,
            "model_dtype": self.model_dtype,
            "kind": "group",
            "bits": self.bits,
            "group_size": self.group_size,
            "storage": "uint32",
            "elems_per_word": self.elems_per_word,
            "layout": self.layout,
            "symmetric": True,
        }

    # ---- shapes --------------------------------------------------------------------------
    def padded_k(self, k: int) -> int:
        """``K`` rounded up to a multiple of ``group_size``."""
        return math.ceil(k / self.group_size) * self.group_size

    def packed_shapes(self, n: int, k: int, layout: str | None = None) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(q_weight shape, q_scale shape)`` for a logical ``[n, k]`` weight."""
        kp = self.padded_k(k)
        w, s = (n, kp // self.elems_per_word), (n, kp // self.group_size)
        if (layout or self.layout) == "KN":
            return (w[1], w[0]), (s[1], s[0])
        return w, s

    # ---- NumPy reference ----------------------------------------------------------------
    def quantize(self, w: np.ndarray, layout: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Quantize a ``[N, K]`` float weight.

        Returns:
            ``(q_weight uint32, q_scale model_dtype)`` in ``layout`` (default: the scheme's).
        """
        w = np.asarray(w, dtype=np.float32)
        n, k = w.shape
        kp = self.padded_k(k)
        if kp != k:
            w = np.pad(w, ((0, 0), (0, kp - k)))
        groups = w.reshape(n, kp // self.group_size, self.group_size)
        scale = (np.abs(groups).max(axis=-1) / self.max_int).astype(self.model_dtype)
        s32 = scale.astype(np.float32)[..., None]
        safe = np.where(s32 == 0, 1.0, s32)
        q = np.clip(np.rint(groups / safe) + self.max_int, 0, 2 * self.max_int).astype(np.uint32)
        q = q.reshape(n, kp // self.elems_per_word, self.elems_per_word)
        shifts = (np.arange(self.elems_per_word, dtype=np.uint32) * self.bits)[None, None, :]
        packed = np.bitwise_or.reduce(q << shifts, axis=-1).astype(np.uint32)
        if (layout or self.layout) == "KN":
            return np.ascontiguousarray(packed.T), np.ascontiguousarray(scale.T)
        return packed, scale

    def dequantize(self, q_weight: np.ndarray, q_scale: np.ndarray, k: int, layout: str | None = None) -> np.ndarray:
        """Inverse of :meth:`quantize`: ``[N, K]`` float32 (the reference for kernel tests)."""
        if (layout or self.layout) == "KN":
            q_weight, q_scale = q_weight.T, q_scale.T
        n = q_weight.shape[0]
        shifts = (np.arange(self.elems_per_word, dtype=np.uint32) * self.bits)[None, None, :]
        mask = np.uint32((1 << self.bits) - 1)
        q = ((q_weight[:, :, None] >> shifts) & mask).reshape(n, -1).astype(np.float32)
        scale = np.repeat(q_scale.astype(np.float32), self.group_size, axis=1)
        return ((q - self.max_int) * scale)[:, :k]

    # ---- tensor expressions -------------------------------------------------------------
    def _dequant_value(self, word, scale, k):
        """One dequantized weight from its packed word and group scale (TIR expressions)."""
        epw, bits = self.elems_per_word, self.bits
        shift = tirx.Cast("uint32", k % epw * bits)
        q = tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const((1 << bits) - 1, "uint32"))
        return (tirx.Cast(self.model_dtype, q) - tirx.const(self.max_int, self.model_dtype)) * scale

    def te_dequantize(self, q_weight: te.Tensor, q_scale: te.Tensor, n: int, k: int, layout: str) -> te.Tensor:
        """Dequantize to ``[N, K]`` (``NK``) or ``[K, N]`` (``KN``), model dtype."""
        epw, g = self.elems_per_word, self.group_size
        if layout == "KN":
            return te.compute(
                (k, n),
                lambda i, j: self._dequant_value(q_weight[i // epw, j], q_scale[i // g, j], i),
                name=DEQUANTIZE_PREFIX,
            )
        return te.compute(
            (n, k),
            lambda i, j: self._dequant_value(q_weight[i, j // epw], q_scale[i, j // g], j),
            name=DEQUANTIZE_PREFIX,
        )

    # ---- model rewriting ----------------------------------------------------------------
    def quantize_model(self, model: nn.Module) -> nn.Module:
        """Replace every ``nn.Linear`` and ``nn.Embedding`` with a group-quantized one."""

        def swap(m: nn.Module):
            if isinstance(m, nn.Linear):
                if m.bias is not None:
                    raise NotImplementedError("group-quantized linear with bias")
                return GroupQuantLinear(m.in_features, m.out_features, self)
            if isinstance(m, nn.Embedding):
                return GroupQuantEmbedding(m.num, m.dim, self)
            return None

        return replace_modules(model, swap)


class GroupQuantLinear(nn.Module):
    """``y = x @ dequant(q_weight, q_scale)^T``: ``[b, s, K]`` -> ``[b, s, N]``."""

    def __init__(self, in_features: int, out_features: int, scheme: GroupQuant):
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        wshape, sshape = scheme.packed_shapes(out_features, in_features)
        self.q_weight = nn.Parameter(wshape, "uint32")
        self.q_scale = nn.Parameter(sshape, scheme.model_dtype)

    def quantize_weight(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """``[N, K]`` float -> ``{"q_weight": ..., "q_scale": ...}``."""
        q, s = self.scheme.quantize(w)
        return {"q_weight": q, "q_scale": s}

    def forward(self, x: Tensor) -> Tensor:
        s, n, k = self.scheme, self.out_features, self.in_features
        w = op.tensor_expr_op(
            lambda qw, qs: s.te_dequantize(qw, qs, n, k, s.layout),
            name_hint=DEQUANTIZE_PREFIX,
            args=[self.q_weight, self.q_scale],
        )
        if s.layout == "NK":
            w = op.permute_dims(w)
        return op.matmul(x, w)


class GroupQuantEmbedding(nn.Module):
    """Quantized ``[vocab, d]`` table (NK layout); lookup dequantizes only the rows gathered."""

    def __init__(self, num: int, dim: int, scheme: GroupQuant):
        self.num, self.dim, self.scheme = num, dim, scheme
        wshape, sshape = scheme.packed_shapes(num, dim, layout="NK")
        self.q_weight = nn.Parameter(wshape, "uint32")
        self.q_scale = nn.Parameter(sshape, scheme.model_dtype)

    def quantize_weight(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """``[vocab, d]`` float -> ``{"q_weight": ..., "q_scale": ...}`` (NK)."""
        q, s = self.scheme.quantize(w, layout="NK")
        return {"q_weight": q, "q_scale": s}

    def forward(self, ids: Tensor) -> Tensor:
        """Token ids ``[s]`` int32 -> ``[s, d]`` model dtype; gather and dequantize in one kernel."""
        s, d = self.scheme, self.dim
        epw, g = s.elems_per_word, s.group_size

        def gather(qw: te.Tensor, qs: te.Tensor, idx: te.Tensor):
            return te.compute(
                (idx.shape[0], d),
                lambda i, j: s._dequant_value(qw[idx[i], j // epw], qs[idx[i], j // g], j),
                name="dequantize_take",
            )

        return op.tensor_expr_op(gather, name_hint="dequantize_take", args=[self.q_weight, self.q_scale, ids])

    def lm_head_forward(self, x: Tensor) -> Tensor:
        """Tied LM head: ``[b, s, d]`` -> ``[b, s, vocab]`` model dtype."""
        s, n, k = self.scheme, self.num, self.dim
        w = op.tensor_expr_op(
            lambda qw, qs: s.te_dequantize(qw, qs, n, k, "NK"),
            name_hint=DEQUANTIZE_PREFIX,
            args=[self.q_weight, self.q_scale],
        )
        return op.matmul(x, op.permute_dims(w))
