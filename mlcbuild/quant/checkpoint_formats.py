"""Unpacking pre-quantized checkpoints: the GPTQ (AutoGPTQ / GPTQModel) and AutoAWQ (GEMM)
tensor layouts, to plain codes, zero points and scales in our orientation (rows = outputs).

Per quantized linear of logical weight ``[N, K]`` (out, in), ``b`` bits, ``p = 32 // b`` codes
per int32, groups of ``G`` inputs (``ng = ceil(K / G)``):

GPTQ (``quant_method = "gptq"``), as the AutoGPTQ ``QuantLinear.pack`` writes it:
    ``qweight`` int32 ``[K / p, N]``: codes packed along ``K``, low bits first;
    ``qzeros`` int32 ``[ng, N / p]``: zero points packed along ``N``, stored minus one in the
    ``checkpoint_format = "gptq"`` (v1) layout, as they are in ``"gptq_v2"``;
    ``scales`` fp16 ``[ng, N]``; ``g_idx`` int32 ``[K]``: each input's group (act-order
    checkpoints permute it; otherwise ``k // G``);
    ``w[n, k] = scales[g_idx[k], n] * (q[k, n] - zero[g_idx[k], n])``.
AutoAWQ GEMM (``quant_method = "awq"``, ``version = "gemm"``), as ``WQLinear_GEMM`` writes it:
    ``qweight`` int32 ``[K, N / p]`` and ``qzeros`` int32 ``[ng, N / p]``: packed along ``N``
    in the interleaved order ``[0, 2, 4, 6, 1, 3, 5, 7]`` (nibble ``i`` of a word holds
    column ``8 c + order[i]``); ``scales`` fp16 ``[ng, N]``;
    ``w[n, k] = scales[k // G, n] * (q[k, n] - zero[k // G, n])``.
"""

from __future__ import annotations

import numpy as np

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble i of a packed word holds column order[i]


def unpack_along_last(packed: np.ndarray, bits: int) -> np.ndarray:
    """int32 ``[..., M / p]`` -> uint32 codes ``[..., M]``, value ``j`` of a word in bits
    ``j b .. j b + b - 1`` (low first)."""
    p = 32 // bits
    words = packed.astype(np.int64) & 0xFFFFFFFF
    shifts = np.arange(p, dtype=np.int64) * bits
    codes = (words[..., None] >> shifts) & ((1 << bits) - 1)
    return codes.reshape(*packed.shape[:-1], packed.shape[-1] * p).astype(np.uint32)


def unpack_gptq(
    qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, g_idx: np.ndarray | None, bits: int, v1: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A GPTQ linear's tensors -> ``(codes [N, K] uint32, zeros [N, ng] float32,
    scales [N, ng] float32, g_idx [K] int64)`` (``g_idx`` ``None``: ``k // G`` is not known
    here, so pass it; the loader fills ``k // G`` from the config's group size).

    ``v1``: zero points stored minus one (``checkpoint_format = "gptq"``).
    """
    codes = unpack_along_last(np.ascontiguousarray(qweight.T), bits)  # [N, K]
    zeros = unpack_along_last(qzeros, bits).astype(np.float32) + (1.0 if v1 else 0.0)  # [ng, N]
    return codes, np.ascontiguousarray(zeros.T), np.ascontiguousarray(scales.astype(np.float32).T), g_idx


def unpack_awq(
    qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, bits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An AutoAWQ GEMM linear's tensors -> ``(codes [N, K] uint32, zeros [N, ng] float32,
    scales [N, ng] float32)``.

    Raises:
        ValueError: ``bits`` other than 4 (the interleaved order is defined for 8 per word).
    """
    if bits != 4:
        raise ValueError("AutoAWQ GEMM packs 4-bit codes only")
    inverse = np.argsort(AWQ_ORDER)  # column 8c + j sits in nibble inverse[j]

    def natural(packed):
        raw = unpack_along_last(packed, bits)
        raw = raw.reshape(*packed.shape[:-1], packed.shape[-1], 8)[..., inverse]
        return raw.reshape(*packed.shape[:-1], packed.shape[-1] * 8)

    codes = np.ascontiguousarray(natural(qweight).T)  # [N, K]
    zeros = np.ascontiguousarray(natural(qzeros).astype(np.float32).T)  # [N, ng]
    return codes, zeros, np.ascontiguousarray(scales.astype(np.float32).T)
