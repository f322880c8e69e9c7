"""The ``nn.Module`` of the unquantized fp32 linear on x86 (imports TVM; :mod:`.none` does not)."""

from __future__ import annotations

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from . import group_cpu_matmul


class CPUFloatLinear(nn.Module):
    """``nn.Linear`` with the same parameters (fp32 ``weight [N, K]``, optional ``bias [N]``):
    ``[b, s, K]`` -> ``[b, s, N]``; prefill rows (``[1, tokens, K]``, ``N % 64 == 0``) run
    :func:`.group_cpu_matmul.prefill_matmul_float`, everything else ``nn.Linear``'s matmul."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter((out_features, in_features), "float32")
        self.bias = nn.Parameter((out_features,), "float32") if bias else None

    def forward(self, x: Tensor) -> Tensor:
        n, k = self.out_features, self.in_features
        if group_cpu_matmul.prefill_shaped(x) and group_cpu_matmul.supports_float(n, x.dtype):
            y = op.tensor_ir_op(
                group_cpu_matmul.prefill_matmul_float(n, k),
                "prefill_matmul",
                args=[x, self.weight],
                out=Tensor.placeholder((1, x.shape[1], n), x.dtype),
            )
        else:
            y = op.matmul(x, op.permute_dims(self.weight))
        return y if self.bias is None else y + self.bias
