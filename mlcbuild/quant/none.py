"""``q0f32`` / ``q0f16``: no quantization; weights are cast to the model dtype.

On x86 targets with AVX2, ``q0f32``'s prefill linears (``[1, tokens, K]``) run the
register-blocked fp32 kernel of :mod:`.group_cpu_matmul`, its decode linears and tied LM head
the 4-stream GEMV of :mod:`.float_gemv` (:mod:`.none_nn`).
"""

from __future__ import annotations

from .base import Scheme


class NoQuant(Scheme):
    """Unquantized weights in ``model_dtype`` (``"float32"`` or ``"float16"``)."""

    def __init__(self, name: str, model_dtype: str):
        self.name = name
        self.model_dtype = model_dtype

    def quantize_module(self, module, compute_dtype: str, int8_isa: str | None = None):
        """Where the model computes in another dtype than this scheme stores (a ``q0f16``
        override in an fp32-compute model): :class:`.none_nn.StoredLinear` /
        :class:`.none_nn.StoredEmbedding` (weights in ``model_dtype``, cast in the kernel). On
        x86 AVX2 fp32: :class:`.none_nn.CPUFloatLinear` and the token embedding as
        :class:`.none_nn.CPUFloatEmbedding` (its tied LM head). Else ``None`` (kept)."""
        from tvm.relax.frontend import nn

        from ..models.common import Embedding
        from . import none_nn

        if compute_dtype != self.model_dtype:
            if isinstance(module, nn.Linear):
                return none_nn.StoredLinear(
                    module.in_features, module.out_features, self.model_dtype, compute_dtype, module.bias is not None
                )
            if isinstance(module, Embedding):
                return none_nn.StoredEmbedding(module.num, module.dim, self.model_dtype, compute_dtype)
            return None
        if int8_isa not in ("avx2", "avxvnni") or compute_dtype != "float32":
            return None
        if isinstance(module, nn.Linear):
            return none_nn.CPUFloatLinear(module.in_features, module.out_features, bias=module.bias is not None)
        if type(module) is Embedding:
            return none_nn.CPUFloatEmbedding(module.num, module.dim, dtype="float32")
        return None

    def describe(self):
        return {
            "name": self.name,
            "model_dtype": self.model_dtype,
            "kind": "none",
            "bits": 16 if "16" in self.model_dtype else 32,
        }
