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
    bits: int | None = None
    """Bits per stored weight code; ``None`` for float weights."""

    def check_model(self, cfg: Any, path=None) -> None:
        """Raise ``RecipeError`` if the scheme cannot quantize a model of this config."""

    packed: bool = False
    """Weights packed in integer words and dequantized inside the kernels: the model may then
    compute in fp32 while scales stay fp16 (:func:`mlcbuild.compiler.export.compute_dtype`)."""

    def for_config(self, config: dict[str, Any]) -> "Scheme":
        """The scheme with the format details of a checkpoint's ``config.json`` (an imported
        GPTQ checkpoint's act-order); ``self`` for schemes that have none."""
        return self

    keeps_float: tuple[str, ...] = ()
    """Module-name globs this scheme leaves float (an imported checkpoint's unquantized layers)."""

    def dequantize_info(self, layout: str | None = None) -> dict[str, Any] | None:
        """How a weight of this scheme is stored, for the kernels that read it packed:
        ``{"kind", "bits", "group_size", "max_int", "layout", "scale_dtype", "has_min"}``
        (``layout`` the weight's, default the scheme's; ``"group"``: ``w = (q - max_int) * scale``,
        plus a per-group ``q_min`` tensor added when ``has_min``), or ``None`` (no such kernel reads it)."""
        return None

    def quantize_module(self, module, compute_dtype: str):
        """The quantized replacement of one ``nn.Linear`` or ``nn.Embedding`` (same logical
        shapes; its parameters are this scheme's), or ``None`` to keep ``module`` as it is.

        ``compute_dtype``: the activations' dtype of the whole model (it differs from
        ``model_dtype`` for fp16 group schemes on x86, :func:`mlcbuild.compiler.export.compute_dtype`).
        Target-specific kernels are the compiler's business (:mod:`mlcbuild.compiler.passes.dispatch_kernels`).
        """
        return None

    def quantize_model(self, model, compute_dtype: str | None = None):
        """Swap every linear and embedding of ``model`` for this scheme's (in place); returns the root."""
        from mlcbuild.quant.mixed import quantize_model

        return quantize_model(model, self, {}, compute_dtype or self.model_dtype)

    def describe(self) -> dict[str, Any]:
        """Plain-data description, for ``mlc-chat-config.json`` and tables."""
        return {"name": self.name, "model_dtype": self.model_dtype}


def replace_modules(module, fn: Callable[[Any, str], Any]):
    """Walk ``module``'s children depth first with TVM's ``nn.Mutator``; where
    ``fn(child, dotted_name)`` returns a module, put it in the child's place (its own children
    are then not visited). Names are the parameters' prefixes (``"model.layers.0.mlp"``).

    Returns the (possibly replaced) root ``nn.Module``.
    """
    from tvm.relax.frontend import nn

    class _Swap(nn.Mutator):
        def visit_module(self, name: str, node):
            new = fn(node, name)
            return new if new is not None else self.visit(name, node)

    new = fn(module, "")
    return new if new is not None else _Swap().visit("", module)


def module_tensors(module, hf_names: list[str], combine, read, codes=None, blocks=None) -> dict[str, Any] | None:
    """The tensors a quantized ``module`` stores (by attribute name: ``{"q_weight", "q_scale",
    ...}``, NumPy arrays) for the checkpoint weights ``hf_names`` (``read(name)`` an array,
    ``combine`` joining several, e.g. fused q/k/v), or ``None`` for a module that stores the
    float weight as it is.

    The source is, in order: a GGUF file's blocks (``blocks(name)`` -> ``(GGML type, uint8
    [rows, bytes])``, :mod:`.ggml_nn`), the checkpoint's own packed tensors (a pre-quantized import,
    :mod:`.zeropoint_nn`), calibrated ``codes`` (``{name: (codes, scales)}``, GPTQ), or the
    float weight rounded by the module's scheme (:mod:`.group_nn`).
    """
    import numpy as np

    if blocks is not None and hasattr(module, "import_blocks"):
        return module.import_blocks(hf_names, combine, blocks, read)
    if hasattr(module, "import_weight"):
        return module.import_weight(hf_names, combine, read)
    scheme = getattr(module, "scheme", None)
    if codes and scheme is not None and scheme.calibration is not None and all(n in codes for n in hf_names):
        return module.pack_weight(combine(*(codes[n][0] for n in hf_names)), combine(*(codes[n][1] for n in hf_names)))
    if hasattr(module, "quantize_weight"):
        return module.quantize_weight(combine(*(np.asarray(read(n), dtype=np.float32) for n in hf_names)))
    return None


def module_scheme(module) -> str | None:
    """The scheme name a module of a mixed-precision model was given (:mod:`.mixed`), or ``None``."""
    return getattr(module, "quantization", None)


def swap_linear_or_embedding(m, linear: Callable[[Any], Any], embedding: Callable[[Any], Any]):
    """``linear(m)`` for an ``nn.Linear``, ``embedding(m)`` for an ``nn.Embedding``, else ``None``:
    the modules a weight scheme replaces."""
    from tvm.relax.frontend import nn

    if isinstance(m, nn.Linear):
        return linear(m)
    if isinstance(m, nn.Embedding):
        return embedding(m)
    return None
