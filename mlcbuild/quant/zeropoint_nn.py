"""TVM side of :mod:`.zeropoint`: the linear that dequantizes ``(q - z) * s`` and multiplies."""

from __future__ import annotations

from typing import Callable

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from mlcbuild.errors import MlcbuildError
from mlcbuild.quant.checkpoint_formats import unpack_awq, unpack_gptq
from mlcbuild.quant.group_nn import DEQUANTIZE_PREFIX
from mlcbuild.quant.zeropoint import ZeroPointGroupQuant


class ZeroPointLinear(nn.Module):
    """``y = x[..., perm] @ ((q - z) * s)^T (+ bias)``: ``[b, s, K]`` -> ``[b, s, N]`` in
    ``compute_dtype`` (scales, zero points and bias stored in the scheme's dtype, cast in the
    kernel). Parameters as :mod:`.zeropoint` lists them."""

    def __init__(
        self, in_features: int, out_features: int, scheme: ZeroPointGroupQuant, compute_dtype: str, bias: bool = False
    ):
        self.in_features, self.out_features, self.scheme, self.compute_dtype = (
            in_features,
            out_features,
            scheme,
            compute_dtype,
        )
        wshape, sshape = scheme.packed_shapes(out_features, in_features)
        self.q_weight = nn.Parameter(wshape, "uint32")
        self.q_scale = nn.Parameter(sshape, scheme.model_dtype)
        self.q_zero = nn.Parameter(sshape, scheme.model_dtype)
        self.perm = nn.Parameter((in_features,), "int32") if scheme.act_order else None
        self.bias = nn.Parameter((out_features,), scheme.model_dtype) if bias else None

    def import_weight(
        self, hf_names: list[str], combine: Callable[..., np.ndarray], read: Callable[..., np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The checkpoint's packed tensors of the linears ``hf_names`` (``<prefix>.weight``, fused
        along rows by ``combine``) -> ``{"q_weight", "q_scale", "q_zero"[, "perm"]}``, exactly.

        Raises:
            MlcbuildError: a tensor is missing (``read``'s error), fused linears with different
                act-order ``g_idx``, or shapes that disagree with the model.
        """
        s = self.scheme
        parts, g_idx = [], None
        for name in hf_names:
            prefix = name.removesuffix(".weight")
            qweight, qzeros = read(f"{prefix}.qweight", raw=True), read(f"{prefix}.qzeros", raw=True)
            scales = read(f"{prefix}.scales", raw=True)
            if s.source == "gptq":
                try:  # checked against desc_act in pack; optional without act-order
                    gi = read(f"{prefix}.g_idx", raw=True)
                except MlcbuildError:
                    if s.act_order:
                        raise
                    gi = None
                codes, zeros, sc, gi = unpack_gptq(qweight, qzeros, scales, gi, s.bits, v1=s.v1_zeros)
                if g_idx is not None and gi is not None and not np.array_equal(g_idx, gi):
                    raise MlcbuildError(
                        f"{', '.join(hf_names)} share their input but not their act-order g_idx",
                        fix="these linears are fused in mlcbuild: re-quantize them with one input order",
                    )
                g_idx = gi if gi is not None else g_idx
            else:
                codes, zeros, sc = unpack_awq(qweight, qzeros, scales, s.bits)
            parts.append((codes[:, : self.in_features], zeros, sc))
        codes, zeros, scales = (combine(*(p[i] for p in parts)) for i in range(3))
        if codes.shape != (self.out_features, self.in_features):
            raise MlcbuildError(
                f"{hf_names[0]}: packed tensors unpack to {codes.shape}, the model wants "
                f"{(self.out_features, self.in_features)}",
                fix="the checkpoint's config.json differs from the recipe's [model.config]",
            )
        return s.pack(codes, zeros, scales, g_idx)

    def forward(self, x: Tensor) -> Tensor:
        s, n, k, dtype = self.scheme, self.out_features, self.in_features, self.compute_dtype
        epw, g, bits = s.elems_per_word, s.group_size, s.bits
        if self.perm is not None:
            x = op.take(x, self.perm, axis=-1)

        def dequantize(qw: te.Tensor, qs: te.Tensor, qz: te.Tensor):
            def value(i, j):
                shift = tirx.Cast("uint32", j % epw * bits)
                q = tirx.bitwise_and(tirx.shift_right(qw[i, j // epw], shift), tirx.const((1 << bits) - 1, "uint32"))
                return (tirx.Cast(dtype, q) - tirx.Cast(dtype, qz[i, j // g])) * tirx.Cast(dtype, qs[i, j // g])

            return te.compute((n, k), value, name=DEQUANTIZE_PREFIX)

        w = op.tensor_expr_op(dequantize, name_hint=DEQUANTIZE_PREFIX, args=[self.q_weight, self.q_scale, self.q_zero])
        y = op.matmul(x, op.permute_dims(w))
        if self.bias is None:
            return y
        return y + (self.bias if self.bias.dtype == y.dtype else self.bias.astype(y.dtype))
