"""``q0f32`` / ``q0f16``: no quantization; weights are cast to the model dtype.

On x86 targets with AVX2 the compiler runs ``q0f32``'s prefill linears (``[1, tokens, K]``)
through the register-blocked fp32 kernel of :mod:`mlcbuild.kernels.cpu_matmul`, its decode
linears and tied LM head through the 4-stream GEMV of :mod:`mlcbuild.kernels.float_gemv`.
"""

from __future__ import annotations

from mlcbuild.quant.base import Scheme


class NoQuant(Scheme):
    """Unquantized weights in ``model_dtype`` (``"float32"`` or ``"float16"``)."""

    def __init__(self, name: str, model_dtype: str):
        self.name = name
        self.model_dtype = model_dtype

    def quantize_module(self, module, compute_dtype: str):
        """Where the model computes in another dtype than this scheme stores (a ``q0f16``
        override in an fp32-compute model): :class:`.none_nn.StoredLinear` /
        :class:`.none_nn.StoredEmbedding` (weights in ``model_dtype``, cast in the kernel).
        Else ``None`` (kept: on x86 the compiler runs fp32 ``x @ W^T`` through
        :mod:`mlcbuild.kernels.float_gemv` and :mod:`mlcbuild.kernels.cpu_matmul`)."""
        from tvm.relax.frontend import nn

        from mlcbuild.models.common import Embedding
        from mlcbuild.quant import none_nn

        if compute_dtype == self.model_dtype:
            return None
        if isinstance(module, nn.Linear):
            return none_nn.StoredLinear(
                module.in_features, module.out_features, self.model_dtype, compute_dtype, module.bias is not None
            )
        if isinstance(module, Embedding):
            return none_nn.StoredEmbedding(module.num, module.dim, self.model_dtype, compute_dtype)
        return None

    def describe(self):
        return {
            "name": self.name,
            "model_dtype": self.model_dtype,
            "kind": "none",
            "bits": 16 if "16" in self.model_dtype else 32,
        }
