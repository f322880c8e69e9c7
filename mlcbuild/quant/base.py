"""The interface every quantization scheme implements."""

from __future__ import annotations

from typing import Any, Callable


class Scheme:
    """A quantization scheme.

    Attributes:
        name: registry name, e.g. ``"q4f16_1"``.
        model_dtype: activation dtype of the compiled model, ``"float16"`` or ``"float32"``.
        calibration: the calibrated method choosing the codes (``"gptq"``, ``"awq"``,
            ``"smoothquant"``), or
            ``None`` (round-to-nearest; a recipe then has no ``[quantization.calibration]``).
    """

    name: str
    model_dtype: str
    calibration: str | None = None

    def check_model(self, cfg: Any, path=None) -> None:
        """Raise ``RecipeError`` if the scheme cannot quantize a model of this config."""

    def quantize_module(self, module, compute_dtype: str, int8_isa: str | None = None):
        """The quantized replacement of one ``nn.Linear`` or ``nn.Embedding`` (same logical
        shapes; its parameters are this scheme's), or ``None`` to keep ``module`` as it is.

        ``compute_dtype``: the activations' dtype of the whole model (it differs from
        ``model_dtype`` for fp16 group schemes on x86, :func:`mlcbuild.compiler.lower.compute_dtype`).
        ``int8_isa``: the target's integer dot product (:func:`mlcbuild.target.int8_dot_isa`).
        """
        return None

    def quantize_model(self, model, compute_dtype: str | None = None, int8_isa: str | None = None):
        """Swap every linear and embedding of ``model`` for this scheme's (in place); returns the root."""
        from .mixed import quantize_model

        return quantize_model(model, self, {}, compute_dtype or self.model_dtype, int8_isa)

    def describe(self) -> dict[str, Any]:
        """Plain-data description, for ``mlc-chat-config.json`` and tables."""
        return {"name": self.name, "model_dtype": self.model_dtype}


def replace_modules(module, fn: Callable[[Any, str], Any], prefix: str = ""):
    """Walk ``module``'s children depth first; where ``fn(child, dotted_name)`` returns a module,
    put it in the child's place. Names are the parameters' prefixes (``"model.layers.0.mlp"``).

    Returns the (possibly replaced) root ``nn.Module``.
    """
    from tvm.relax.frontend import nn

    new = fn(module, prefix)
    if new is not None:
        return new
    dot = prefix + "." if prefix else ""
    if isinstance(module, nn.ModuleList):
        for i, child in enumerate(module.modules):
            module.modules[i] = replace_modules(child, fn, f"{dot}{i}")
        return module
    for key, child in list(vars(module).items()):
        if isinstance(child, nn.Module):
            setattr(module, key, replace_modules(child, fn, f"{dot}{key}"))
    return module
