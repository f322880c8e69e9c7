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
own tensor expression (:mod:`.group_nn`); :mod:`mlcbuild.compiler.passes` fuses it into the consuming
matmul/GEMV so that kernels read packed weights directly.
"""

from __future__ import annotations

import math

import numpy as np

from mlcbuild.quant.base import Scheme


class GroupQuant(Scheme):
    """Symmetric ``bits``-bit group quantization with ``group_size`` weights per scale.

    Args:
        name: registry name.
        bits: 3 or 4 (8 also packs, 4 per uint32).
        group_size: weights per scale; a multiple of ``32 // bits``.
        model_dtype: activation and scale dtype.
        layout: ``"NK"`` or ``"KN"`` for linear weights.
        calibration: ``"gptq"``: the decoder linears' codes come from GPTQ (:mod:`.gptq`),
            same layout and kernels; ``"awq"`` / ``"smoothquant"``: the float weights are
            first scaled (:mod:`.awq`, :mod:`.smoothquant`), then rounded; ``None``:
            round-to-nearest.
    """

    packed = True

    def __init__(
        self, name: str, bits: int, group_size: int, model_dtype: str, layout: str, calibration: str | None = None
    ):
        assert layout in ("NK", "KN")
        self.name = name
        self.calibration = calibration
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
            "calibration": self.calibration or "round-to-nearest",
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
        """Quantize a ``[N, K]`` float weight, in blocks of rows (bounded temporaries).

        Returns:
            ``(q_weight uint32, q_scale model_dtype)`` in ``layout`` (default: the scheme's).
        """
        w = np.asarray(w)
        n, k = w.shape
        rows = max(1, (1 << 22) // max(k, 1))  # ~16 MiB of float32 temporaries per block
        if n > rows:
            parts = [self.quantize(w[i : i + rows], layout="NK") for i in range(0, n, rows)]
            packed, scale = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            if (layout or self.layout) == "KN":
                return np.ascontiguousarray(packed.T), np.ascontiguousarray(scale.T)
            return packed, scale
        w = w.astype(np.float32, copy=False)
        kp = self.padded_k(k)
        if kp != k:
            w = np.pad(w, ((0, 0), (0, kp - k)))
        scale = self.scales(w)
        return self.pack(self.codes(w, scale), scale, layout)

    def scales(self, w: np.ndarray) -> np.ndarray:
        """Per-group scales ``max|w| / max_int`` of a ``[N, K_pad]`` float32 weight:
        ``[N, K_pad / group_size]`` in ``model_dtype``."""
        n, kp = w.shape
        groups = w.reshape(n, kp // self.group_size, self.group_size)
        return (np.abs(groups).max(axis=-1) / self.max_int).astype(self.model_dtype)

    def codes(self, w: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Unsigned codes ``clip(round(w / scale) + max_int, 0, 2 max_int)`` of ``[N, K_pad]``
        float32 weights under ``scale`` (:meth:`scales`' shape; a zero scale codes 0 as
        ``max_int``): ``[N, K_pad]`` uint32."""
        n, kp = w.shape
        s32 = np.repeat(scale.astype(np.float32), self.group_size, axis=1)
        safe = np.where(s32 == 0, 1.0, s32)
        return np.clip(np.rint(w / safe) + self.max_int, 0, 2 * self.max_int).astype(np.uint32)

    def pack(self, codes: np.ndarray, scale: np.ndarray, layout: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pack ``[N, K_pad]`` codes (``bits`` wide) ``32 // bits`` per uint32, low bits first:
        ``(q_weight, q_scale)`` in ``layout`` (default: the scheme's). Quantizers that choose
        their own codes (GPTQ, :mod:`.gptq`) store them through this."""
        n, kp = codes.shape
        q = codes.astype(np.uint32).reshape(n, kp // self.elems_per_word, self.elems_per_word)
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

    def dequantize_info(self, layout: str | None = None) -> dict:
        """``{"kind": "group", bits, group_size, max_int, layout, scale_dtype, has_min: 0}`` (see :class:`.base.Scheme`)."""
        return {
            "kind": "group",
            "bits": self.bits,
            "group_size": self.group_size,
            "max_int": self.max_int,
            "layout": layout or self.layout,
            "scale_dtype": self.model_dtype,
            "has_min": 0,
        }

    # ---- model rewriting ----------------------------------------------------------------
    def quantize_module(self, module, compute_dtype: str):
        """``nn.Linear`` -> :class:`.group_nn.GroupQuantLinear`, ``nn.Embedding`` ->
        :class:`.group_nn.GroupQuantEmbedding`; anything else ``None``."""
        from mlcbuild.quant.group_nn import quantize_module

        return quantize_module(self, module, compute_dtype)
