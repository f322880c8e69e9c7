"""The interface every quantization scheme implements."""

from __future__ import annotations

from typing import Any, Callable


class Scheme:
    """A quantization scheme.

    Attributes:
        name: registry name, e.g. ``"q4f16_1"``.
        model_dtype: activation dtype of the compiled model, ``"float16"`` or ``"float32"``.
        calibration: the calibrated method choosing the codes (``"gptq"``), or ``None``
            (round-to-nearest; a recipe then has no ``[quantization.calibration]``).
    """

    name: str
    model_dtype: str
    calibration: str | None = None

    def check_model(self, cfg: Any, path=None) -> None:
        """Raise ``RecipeError`` if the scheme cannot quantize a model of this config."""

    def quantize_model(self, model, compute_dtype: str | None = None, int8_isa: str | None = None):
        """Swap the model's linear and embedding modules for quantized ones (in place).

        ``compute_dtype``: activations' dtype where it differs from ``model_dtype``.
        ``int8_isa``: the target's integer dot product, for schemes with an int8-activation
        decode path (:func:`mlcbuild.target.int8_dot_isa`).
        """
        return model

    def describe(self) -> dict[str, Any]:
        """Plain-data description, for ``mlc-chat-config.json`` and tables."""
        return {"name": self.name, "model_dtype": self.model_dtype}


def replace_modules(module, fn: Callable[[Any], Any]):
    """Walk ``module``'s children depth first; where ``fn(child)`` returns a module, put it in the child's place.

    Returns the (possibly replaced) root ``nn.Module``.
    """
    from tvm.relax.frontend import nn

    new = fn(module)
    if new is not None:
        return new
    if isinstance(module, nn.ModuleList):
        for i, child in enumerate(module.modules):
            module.modules[i] = replace_modules(child, fn)
        return module
    for key, child in list(vars(module).items()):
        if isinstance(child, nn.Module):
            setattr(module, key, replace_modules(child, fn))
    return module
