"""The ``nn.Module`` of unquantized float weights stored in another dtype than the model computes
in (imports TVM; :mod:`.none` does not)."""

from __future__ import annotations

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from mlcbuild.models.common import Embedding


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
