"""Group quantization with zero points, for checkpoints already quantized elsewhere
(``q4f16_autogptq``, ``q4f16_autoawq``, ...): converted without re-quantizing.

GPTQ tools (AutoGPTQ, GPTQModel) and AutoAWQ store per group of ``G`` inputs a scale and an
integer zero point: ``w = (q - z) * s`` with ``q`` in ``0 .. 2**b - 1``. Our symmetric layout
(:mod:`.group`, codes centred on ``max_int``) cannot hold those codes exactly, so these schemes
keep the checkpoint's codes, scales and zero points, repacked into our orientation
(:mod:`.checkpoint_formats` reads theirs)::

    q_weight [N, K_pad / (32 / b)] uint32   codes packed along K, low bits first (as ``_1``)
    q_scale  [N, K_pad / G]        model dtype
    q_zero   [N, K_pad / G]        model dtype (small integers, exact in fp16)
    perm     [K] int32             act-order GPTQ only (``desc_act``): input order that makes
                                   the groups contiguous; the linear reads ``x[..., perm]``

``y = x[..., perm] @ ((q - z) * s)^T``. The embedding and the LM head, which these tools leave
in float16, stay float (``keeps_float``). The kernels are TVM's dequantize + matmul (fused by
:mod:`mlcbuild.compiler.passes`, dlight-scheduled): our int8 GEMV and x86 prefill kernels are
written for the symmetric layout only.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from mlcbuild.errors import MlcbuildError, RecipeError
from mlcbuild.quant.base import Scheme

# the recipe's quantization_config.quant_method for each source
_METHODS = {"gptq": "gptq", "awq": "awq"}


class ZeroPointGroupQuant(Scheme):
    """``bits``-bit codes with per-group scales and zero points, imported from ``source``
    (``"gptq"`` or ``"awq"``) checkpoints whose ``quantization_config`` has the same bits and
    group size.

    Attributes:
        act_order: the checkpoint's ``desc_act`` (GPTQ): the linears carry ``perm``. Set per
            recipe by :meth:`for_config`.
        keeps_float: module-name globs the checkpoint leaves unquantized (``mlcbuild.quant.mixed``
            gives them the float scheme of ``model_dtype``).
    """

    packed = True

    keeps_float = ("lm_head", "model.embed_tokens")

    def __init__(self, name: str, bits: int, group_size: int, model_dtype: str, source: str):
        assert source in _METHODS and 32 % bits == 0
        self.name, self.bits, self.group_size, self.model_dtype, self.source = (
            name,
            bits,
            group_size,
            model_dtype,
            source,
        )
        self.elems_per_word = 32 // bits
        self.act_order = False
        self.v1_zeros = True  # GPTQ checkpoint_format "gptq": zero points stored minus one

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_dtype": self.model_dtype,
            "kind": "group-zero-point",
            "bits": self.bits,
            "group_size": self.group_size,
            "storage": "uint32",
            "elems_per_word": self.elems_per_word,
            "layout": "NK",
            "symmetric": False,
            "imported_from": self.source,
        }

    # ---- the checkpoint's quantization_config ----------------------------------------------
    def check_config(self, config: dict, where) -> None:
        """Check the recipe's ``[model.config]`` (the checkpoint's config.json) says this format.

        Raises:
            RecipeError: no ``quantization_config``, another method, bits, group size, a GPTQ
                ``checkpoint_format`` other than ``gptq``/``gptq_v2``, or AWQ other than GEMM
                with zero points.
        """
        qc = config.get("quantization_config")
        if not isinstance(qc, dict):
            raise RecipeError(
                f"scheme {self.name} imports a {self.source.upper()}-quantized checkpoint, but [model.config] has "
                "no quantization_config",
                path=where,
                fix="copy the checkpoint's config.json (with its quantization_config) into [model.config], or use a "
                "scheme that quantizes a float checkpoint (q4f16_1, q4f16_gptq)",
            )
        method = qc.get("quant_method")
        if method != _METHODS[self.source]:
            raise RecipeError(
                f"scheme {self.name} imports {self.source} checkpoints; quantization_config.quant_method is {method!r}",
                path=where,
                fix=f"use the scheme for {method} checkpoints" if method in _METHODS else "use a float checkpoint",
            )
        bits, group = qc.get("bits", qc.get("w_bit")), qc.get("group_size", qc.get("q_group_size"))
        if bits != self.bits or group != self.group_size:
            same = [
                n for n, s in _registered().items() if (s.source, s.bits, s.group_size) == (self.source, bits, group)
            ]
            raise RecipeError(
                f"the checkpoint is quantized with {bits} bits in groups of {group} (quantization_config), scheme "
                f"{self.name} reads {self.bits} bits in groups of {self.group_size}",
                path=where,
                fix=f"use scheme {same[0]}"
                if same
                else "no scheme reads this layout: re-quantize from the float model",
            )
        if self.source == "gptq" and qc.get("checkpoint_format", "gptq") not in ("gptq", "gptq_v2"):
            raise RecipeError(
                f"GPTQ checkpoint_format {qc.get('checkpoint_format')!r} is not supported (gptq, gptq_v2 are)",
                path=where,
                fix="save the checkpoint in the gptq format (GPTQModel's default)",
            )
        if self.source == "awq" and (
            str(qc.get("version", "gemm")).lower() != "gemm" or not qc.get("zero_point", True)
        ):
            raise RecipeError(
                f"AWQ checkpoints in the {qc.get('version')!r} layout (zero_point {qc.get('zero_point')}) are not "
                "supported: GEMM with zero points is",
                path=where,
                fix="export the AutoAWQ checkpoint with version='gemm', zero_point=True",
            )

    def for_config(self, config: dict) -> ZeroPointGroupQuant:
        """This scheme for one checkpoint: ``act_order`` from ``quantization_config.desc_act``."""
        qc = config.get("quantization_config") or {}
        out = copy.copy(self)
        out.act_order = self.source == "gptq" and bool(qc.get("desc_act", False))
        out.v1_zeros = qc.get("checkpoint_format", "gptq") == "gptq"
        return out

    # ---- shapes and packing ------------------------------------------------------------------
    def padded_k(self, k: int) -> int:
        return math.ceil(k / self.group_size) * self.group_size

    def packed_shapes(self, n: int, k: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(q_weight shape, q_scale/q_zero shape)`` of a logical ``[n, k]`` weight."""
        kp = self.padded_k(k)
        return (n, kp // self.elems_per_word), (n, kp // self.group_size)

    def pack(
        self, codes: np.ndarray, zeros: np.ndarray, scales: np.ndarray, g_idx: np.ndarray | None, where=None
    ) -> dict[str, np.ndarray]:
        """Codes ``[N, K]``, zeros and scales ``[N, ng]`` and the inputs' groups ``g_idx [K]``
        (``None``: ``k // G``) -> ``{"q_weight", "q_scale", "q_zero"[, "perm"]}``.

        Raises:
            MlcbuildError: ``g_idx`` is not ``k // G`` without act-order, or with act-order its
                groups are not ``G`` inputs each (the checkpoint and its config disagree).
        """
        n, k = codes.shape
        g = self.group_size
        natural = np.arange(k) // g
        out = {}
        if g_idx is None:
            g_idx = natural
        g_idx = np.asarray(g_idx).astype(np.int64)
        if self.act_order:
            perm = np.argsort(g_idx, kind="stable")
            if not np.array_equal(g_idx[perm], natural):
                raise MlcbuildError(
                    f"act-order g_idx does not put {g} inputs in each group", path=where, fix="re-export the checkpoint"
                )
            codes = codes[:, perm]
            out["perm"] = perm.astype(np.int32)
        elif not np.array_equal(g_idx, natural):
            raise MlcbuildError(
                "the checkpoint's g_idx is permuted (act-order) but its quantization_config has desc_act false",
                path=where,
                fix="set desc_act = true in the recipe's [model.config.quantization_config], as the checkpoint was made",
            )
        kp = self.padded_k(k)
        codes = np.pad(codes.astype(np.uint32), ((0, 0), (0, kp - k)))
        q = codes.reshape(n, kp // self.elems_per_word, self.elems_per_word)
        shifts = (np.arange(self.elems_per_word, dtype=np.uint32) * self.bits)[None, None, :]
        out["q_weight"] = np.bitwise_or.reduce(q << shifts, axis=-1).astype(np.uint32)
        out["q_scale"] = scales.astype(self.model_dtype)
        out["q_zero"] = zeros.astype(self.model_dtype)
        return out

    def dequantize(self, q_weight, q_scale, q_zero, k: int) -> np.ndarray:
        """``[N, K]`` float32 ``(q - z) * s`` in the stored input order (``perm`` applied)."""
        n = q_weight.shape[0]
        shifts = (np.arange(self.elems_per_word, dtype=np.uint32) * self.bits)[None, None, :]
        q = ((q_weight[:, :, None] >> shifts) & np.uint32((1 << self.bits) - 1)).reshape(n, -1).astype(np.float32)
        rep = lambda a: np.repeat(a.astype(np.float32), self.group_size, axis=1)  # noqa: E731
        return ((q - rep(q_zero)) * rep(q_scale))[:, :k]

    # ---- model rewriting -----------------------------------------------------------------------
    def quantize_module(self, module, compute_dtype: str):
        """``nn.Linear`` -> :class:`.zeropoint_nn.ZeroPointLinear`; anything else ``None``."""
        from tvm.relax.frontend import nn

        from mlcbuild.quant.zeropoint_nn import ZeroPointLinear

        if isinstance(module, nn.Linear):
            return ZeroPointLinear(
                module.in_features, module.out_features, self, compute_dtype, module.bias is not None
            )
        return None


def _registered() -> dict[str, ZeroPointGroupQuant]:
    from mlcbuild.quant import SCHEMES

    return {n: s for n, s in SCHEMES.items() if isinstance(s, ZeroPointGroupQuant)}


def check_checkpoint_quantization(config: dict, scheme: Scheme, where) -> None:
    """A recipe's scheme against its checkpoint's ``quantization_config``.

    Raises:
        RecipeError: a pre-quantized checkpoint (GPTQ, AWQ) with a scheme that would quantize
            float weights (naming the importing scheme to use), or an importing scheme whose
            format the config contradicts (:meth:`ZeroPointGroupQuant.check_config`).
    """
    if isinstance(scheme, ZeroPointGroupQuant):
        scheme.check_config(config, where)
        return
    qc = config.get("quantization_config")
    if isinstance(qc, dict) and qc.get("quant_method") in _METHODS:
        method = qc["quant_method"]
        bits, group = qc.get("bits", qc.get("w_bit")), qc.get("group_size", qc.get("q_group_size"))
        same = [n for n, s in _registered().items() if (s.source, s.bits, s.group_size) == (method, bits, group)]
        raise RecipeError(
            f"the checkpoint is already quantized ({method}, {bits} bits, groups of {group}); scheme {scheme.name} "
            "quantizes float weights",
            path=where,
            fix=f"use scheme {' or '.join(same)} to import it as it is" if same else "start from the float checkpoint",
        )
