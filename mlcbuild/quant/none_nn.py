"""The ``nn.Module`` of unquantized linears: the fp32 linear and tied LM head on x86, and float
weights stored in another dtype than the model computes in (imports TVM; :mod:`.none` does not)."""

from __future__ import annotations

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from ..models.common import Embedding
from . import float_gemv, group_cpu_matmul


def float_linear(x: Tensor, weight, n: int, k: int) -> Tensor:
    """``x @ weight^T`` for an fp32 ``weight [n, k]``: decode rows through
    :func:`.float_gemv.float_gemv`, prefill rows (``n % 64 == 0``) through
    :func:`.group_cpu_matmul.prefill_matmul_float`, anything else as ``nn.Linear`` does."""
    if group_cpu_matmul.decode_shaped(x) and float_gemv.supports(n, k, x.dtype):
        return op.tensor_ir_op(
            float_gemv.float_gemv(n, k), "gemv_f32", args=[x, weight], out=Tensor.placeholder((1, 1, n), x.dtype)
        )
    if group_cpu_matmul.prefill_shaped(x) and group_cpu_matmul.supports_float(n, x.dtype):
        return op.tensor_ir_op(
            group_cpu_matmul.prefill_matmul_float(n, k),
            "prefill_matmul",
            args=[x, weight],
            out=Tensor.placeholder((1, x.shape[1], n), x.dtype),
        )
    return op.matmul(x, op.permute_dims(weight))


class CPUFloatLinear(nn.Module):
    """``nn.Linear`` with the same parameters (fp32 ``weight [N, K]``, optional ``bias [N]``):
    ``[b, s, K]`` -> ``[b, s, N]`` through :func:`float_linear`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter((out_features, in_features), "float32")
        self.bias = nn.Parameter((out_features,), "float32") if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y = float_linear(x, self.weight, self.out_features, self.in_features)
        return y if self.bias is None else y + self.bias


class CPUFloatEmbedding(Embedding):
    """The token embedding with its tied LM head through :func:`float_linear` (SmolLM's 49152 x 576
    head is a fifth of a q0f32 token's weight reads)."""

    def lm_head_forward(self, x: Tensor) -> Tensor:
        """``[b, s, d]`` -> ``[b, s, vocab]`` float32."""
        return float_linear(x, self.weight, self.num, self.dim)


class StoredLinear(nn.Module):
    """A float linear whose weight ``[N, K]`` (and bias ``[N]``) are stored in ``storage_dtype``
    and cast to ``compute_dtype`` for ``[b, s, K]`` -> ``[b, s, N]``: a ``q0f16`` override
    (mixed precision, :mod:`.mixed`) in a model that computes in fp32 keeps fp16 weight files,
    the same for every target."""

    def __init__(self, in_features: int, out_features: int, storage_dtype: str, compute_dtype: str, bias: bool = False):
        self.in_features, self.out_features, self.compute_dtype = in_features, out_features, compute_dtype
        self.weight = nn.Parameter((out_features, in_features), storage_dtype)
        self.bias = nn.Parameter((out_features,), storage_dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y = op.matmul(x, op.permute_dims(self.weight.astype(self.compute_dtype)))
        return y if self.bias is None else y + self.bias.astype(self.compute_dtype)


class StoredEmbedding(Embedding):
    """The token embedding ``[vocab, d]`` stored in ``storage_dtype``; gathered rows and the tied
    LM head compute in ``compute_dtype`` (see :class:`StoredLinear`)."""

    def __init__(self, num: int, dim: int, storage_dtype: str, compute_dtype: str):
        super().__init__(num, dim, dtype=storage_dtype)
        self.compute_dtype = compute_dtype

    def forward(self, ids: Tensor) -> Tensor:
        """Token ids ``[s]`` int32 -> ``[s, d]`` compute dtype."""
        return super().forward(ids).astype(self.compute_dtype)

    def lm_head_forward(self, x: Tensor) -> Tensor:
        """``[b, s, d]`` -> ``[b, s, vocab]`` compute dtype."""
        return op.matmul(x, op.permute_dims(self.weight.astype(self.compute_dtype)))
