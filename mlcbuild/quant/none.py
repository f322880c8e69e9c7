"""``q0f32`` / ``q0f16``: no quantization; weights are cast to the model dtype."""

from __future__ import annotations

from .base import Scheme


class NoQuant(Scheme):
    """Unquantized weights in ``model_dtype`` (``"float32"`` or ``"float16"``)."""

    def __init__(self, name: str, model_dtype: str):
        self.name = name
        self.model_dtype = model_dtype

    def describe(self):
        return {
            "name": self.name,
            "model_dtype": self.model_dtype,
            "kind": "none",
            "bits": 16 if "16" in self.model_dtype else 32,
        }
