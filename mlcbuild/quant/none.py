"""``q0f32`` / ``q0f16``: no quantization; weights are cast to the model dtype.

On x86 targets with AVX2, ``q0f32``'s prefill linears (``[1, tokens, K]``) run the
register-blocked fp32 kernel of :mod:`.group_cpu_matmul`, its decode linears and tied LM head
the 4-stream GEMV of :mod:`.float_gemv` (:mod:`.none_nn`).
"""

from __future__ import annotations

from .base import Scheme, replace_modules


class NoQuant(Scheme):
    """Unquantized weights in ``model_dtype`` (``"float32"`` or ``"float16"``)."""

    def __init__(self, name: str, model_dtype: str):
        self.name = name
        self.model_dtype = model_dtype

    def quantize_model(self, model, compute_dtype: str | None = None, int8_isa: str | None = None):
        """Swap ``nn.Linear`` for :class:`.none_nn.CPUFloatLinear` and the token embedding for
        :class:`.none_nn.CPUFloatEmbedding` (its tied LM head) on x86 AVX2 fp32 targets (same parameters)."""
        if int8_isa not in ("avx2", "avxvnni") or (compute_dtype or self.model_dtype) != "float32":
            return model
        from tvm.relax.frontend import nn

        from ..models.common import Embedding
        from .none_nn import CPUFloatEmbedding, CPUFloatLinear

        def swap(m):
            if isinstance(m, nn.Linear):
                return CPUFloatLinear(m.in_features, m.out_features, bias=m.bias is not None)
            if type(m) is Embedding and m.weight.dtype == "float32":
                return CPUFloatEmbedding(m.num, m.dim, dtype="float32")
            return None

        return replace_modules(model, swap)

    def describe(self):
        return {
            "name": self.name,
            "model_dtype": self.model_dtype,
            "kind": "none",
            "bits": 16 if "16" in self.model_dtype else 32,
        }
