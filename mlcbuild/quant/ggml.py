"""llama.cpp's block formats Q4_0, Q4_1 and Q8_0, imported from GGUF files exactly.

A GGML block holds 32 consecutive weights of a row (``ggml/src/ggml-common.h``:
``block_q4_0``, ``block_q4_1``, ``block_q8_0``)::

    Q4_0  d: f16, qs: 16 bytes (weight j: low nibble of qs[j], weight j + 16: high)   w = (q - 8) * d
    Q4_1  d: f16, m: f16, qs: 16 bytes (same nibble order)                              w = q * d + m
    Q8_0  d: f16, qs: 32 int8                                                           w = q * d

These schemes keep every code, scale and minimum as the file stores it, repacked into our
orientation (no requantization)::

    q_weight [N, K / (32 / b)] uint32   codes packed along K, low bits first (as q4f16_1);
                                        Q8_0's int8 codes stored as q + 128
    q_scale  [N, K / 32]       float16  the blocks' d
    q_min    [N, K / 32]       float16  Q4_1's m

``w = (q - offset) * d (+ m)`` in the compute dtype, offset 8 (Q4_0), 0 (Q4_1), 128 (Q8_0):
:meth:`GGMLQuant.dequantize` equals ``gguf.quants.dequantize`` bit for bit (tests). Float
tensors of a checkpoint are quantized by llama.cpp's reference quantizer as the ``gguf``
package implements it (``gguf/quants.py``), the same blocks ``llama-quantize`` writes
without an importance matrix. The dequantize kernel is tagged as a group format
(:meth:`GGMLQuant.dequantize_info`: zero point = the offset, Q4_1's minimum as ``has_min``), so on
CPUs the compiler runs the same int8 GEMVs and prefill matmuls as for q4f16_1 / q8f16_1; elsewhere
TVM's dequantize + matmul (dlight-scheduled).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlcbuild.errors import MlcbuildError
from mlcbuild.quant.base import Scheme

# GGML type -> (bits, code offset, keeps a minimum, bytes per block of 32)
FORMATS = {"Q4_0": (4, 8, False, 18), "Q4_1": (4, 0, True, 20), "Q8_0": (8, 128, False, 34)}
FLOAT_TYPES = ("F32", "F16", "BF16")
BLOCK = 32


class GGMLQuant(Scheme):
    """A GGML block format (``ggml_type``: ``"Q4_0"``, ``"Q4_1"`` or ``"Q8_0"``), computing in ``model_dtype``."""

    packed = True
    group_size = BLOCK

    def __init__(self, name: str, ggml_type: str, model_dtype: str):
        self.name, self.ggml_type, self.model_dtype = name, ggml_type, model_dtype
        self.bits, self.offset, self.has_min, self.block_bytes = FORMATS[ggml_type]
        self.elems_per_word = 32 // self.bits

    def describe(self) -> dict[str, Any]:
        fields = ("ggml_type", "bits", "group_size", "elems_per_word")
        return {"name": self.name, "model_dtype": self.model_dtype, "kind": "ggml", "storage": "uint32",
                "layout": "NK", **{f: getattr(self, f) for f in fields}}  # fmt: skip

    # ---- shapes and the block layout ----------------------------------------------------------
    def packed_shapes(self, n: int, k: int) -> dict[str, tuple[int, int]]:
        """The stored tensors' shapes of a logical ``[n, k]`` weight.

        Raises:
            MlcbuildError: ``k`` is not a multiple of 32 (GGML blocks do not pad).
        """
        if k % BLOCK:
            raise MlcbuildError(
                f"{self.name}: rows of {k} weights are not whole GGML blocks of {BLOCK}",
                fix="use a group scheme such as q4f16_1 for this model",
            )
        out = {"q_weight": (n, k // self.elems_per_word), "q_scale": (n, k // BLOCK)}
        return out | ({"q_min": (n, k // BLOCK)} if self.has_min else {})

    def from_blocks(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        """GGML blocks ``uint8 [N, K / 32 * block bytes]`` of this type -> our tensors, exactly."""
        n = raw.shape[0]
        b = np.ascontiguousarray(raw).reshape(n, -1, self.block_bytes)
        d = b[..., 0:2].copy().view(np.float16)[..., 0]
        out = {"q_scale": d}
        if self.ggml_type == "Q8_0":
            codes = b[..., 2:34] ^ np.uint8(0x80)  # int8 q -> q + 128, as unsigned
        else:
            start = 4 if self.has_min else 2
            if self.has_min:
                out["q_min"] = b[..., 2:4].copy().view(np.float16)[..., 0]
            qs = b[..., start : start + 16]
            codes = np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=-1)
        out["q_weight"] = self.pack(codes.reshape(n, -1))
        return out

    def pack(self, codes: np.ndarray) -> np.ndarray:
        """Unsigned codes ``[N, K]`` -> ``uint32 [N, K / (32 / bits)]``, low bits first."""
        n, k = codes.shape
        q = codes.astype(np.uint32).reshape(n, k // self.elems_per_word, self.elems_per_word)
        shifts = (np.arange(self.elems_per_word, dtype=np.uint32) * self.bits)[None, None, :]
        return np.bitwise_or.reduce(q << shifts, axis=-1).astype(np.uint32)

    def quantize(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """A float ``[N, K]`` weight by llama.cpp's reference quantizer (``gguf.quants.quantize``)."""
        import gguf

        blocks = gguf.quants.quantize(
            np.ascontiguousarray(w, dtype=np.float32), gguf.GGMLQuantizationType[self.ggml_type]
        )
        return self.from_blocks(blocks)

    def dequantize(self, q_weight: np.ndarray, q_scale: np.ndarray, q_min: np.ndarray | None = None) -> np.ndarray:
        """``[N, K]`` float32, as ``gguf.quants.dequantize`` computes it."""
        n = q_weight.shape[0]
        shifts = (np.arange(self.elems_per_word, dtype=np.uint32) * self.bits)[None, None, :]
        q = ((q_weight[:, :, None] >> shifts) & np.uint32((1 << self.bits) - 1)).reshape(n, -1, BLOCK)
        d = q_scale.astype(np.float32)[..., None]
        if self.has_min:
            w = d * q.astype(np.float32) + q_min.astype(np.float32)[..., None]
        else:
            w = d * (q.astype(np.int32) - self.offset).astype(np.float32)
        return w.reshape(n, -1)

    def stored(self, name: str, ggml_type: str, raw: np.ndarray, read) -> dict[str, np.ndarray]:
        """Our tensors of checkpoint weight ``name`` stored as ``ggml_type`` blocks ``raw``:
        exact for this scheme's type, quantized from ``read(name)`` for a float type.

        Raises:
            MlcbuildError: another quantized type (it would be requantized: lossy).
        """
        if ggml_type == self.ggml_type:
            return self.from_blocks(raw)
        if ggml_type in FLOAT_TYPES:
            return self.quantize(read(name))
        if ggml_type in FORMATS:
            act = self.model_dtype.removeprefix("float")
            fix = (f'give that module the scheme of its blocks: [quantization.overrides] "<module>" = '
                   f'"q{FORMATS[ggml_type][0]}f{act}_ggml_{ggml_type.lower()}"')  # fmt: skip
        else:
            fix = f"use a GGUF file of {self.ggml_type}, F32 or F16 tensors (llama-quantize), or the float checkpoint"
        raise MlcbuildError(
            f"{name} is stored as {ggml_type}; {self.name} imports {self.ggml_type} blocks exactly and would "
            "requantize it",
            fix=fix,
        )

    def dequantize_info(self, layout: str | None = None) -> dict[str, Any]:
        """``{"kind": "group", bits, group_size 32, max_int: the code offset, layout "NK",
        scale_dtype "float16", has_min}``: a group format with zero point 8 (Q4_0), 128 (Q8_0) or 0
        plus a minimum (Q4_1), see :class:`.base.Scheme`."""
        return {
            "kind": "group",
            "bits": self.bits,
            "group_size": BLOCK,
            "max_int": self.offset,
            "layout": "NK",
            "scale_dtype": "float16",
            "has_min": int(self.has_min),
        }

    # ---- model rewriting -----------------------------------------------------------------------
    def quantize_module(self, module, compute_dtype: str):
        """``nn.Linear`` -> :class:`.ggml_nn.GGMLLinear`, ``nn.Embedding`` -> :class:`.ggml_nn.GGMLEmbedding`."""
        from mlcbuild.quant.ggml_nn import quantize_module

        return quantize_module(self, module, compute_dtype)
