"""A recipe's quantized model: the architecture's ``nn.Module`` with each linear and embedding
swapped for its scheme's (MLC-LLM's ``quantization`` mutators). The same model for conversion
(its parameters are what ``convert`` writes) and for the compiler (which picks kernels for the
target afterwards, :mod:`mlcbuild.compiler.passes.dispatch_kernels`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlcbuild.models import get_architecture
from mlcbuild.quant import get_scheme

if TYPE_CHECKING:  # a type only: a recipe is what this part is handed
    from mlcbuild.spec.recipe import Recipe


def build_model(recipe: Recipe, compute_dtype: str | None = None, attention_window: int = 0) -> object:
    """The quantized ``nn.Module`` of a recipe, computing in ``compute_dtype`` (default the
    scheme's dtype; the compiler passes fp32 for fp16 schemes on x86,
    :func:`mlcbuild.compiler.export.compute_dtype`), its windowed layers marked when
    ``attention_window`` (tokens) is set (:func:`mlcbuild.compiler.export.attention_window`).
    Parameter names, shapes and dtypes depend on neither: norm weights keep the scheme's dtype
    (:func:`store_norms_as`), so conversion builds this model with the defaults.

    Each linear and embedding gets the recipe's scheme or its override (:mod:`mlcbuild.quant.mixed`).

    Raises:
        RecipeError: an override pattern matches no linear or embedding of the model.
    """
    from mlcbuild.quant.mixed import quantize_model

    arch = get_architecture(recipe.architecture)
    scheme = get_scheme(recipe.scheme).for_config(recipe.config)
    cfg = arch.config_from_hf(recipe.config, path=recipe.path).for_context(recipe.build.context_window_size)
    dtype = compute_dtype or scheme.model_dtype
    model = arch.model_class(cfg, dtype, attention_window=attention_window)
    if dtype != scheme.model_dtype:
        model = store_norms_as(model, scheme.model_dtype)
    return quantize_model(model, scheme, recipe.overrides, dtype, where=recipe.path)


def store_norms_as(model, storage_dtype: str):
    """Replace every bias-free last-axis ``nn.RMSNorm`` of ``model`` with :class:`StoredRMSNorm`.

    Raises:
        NotImplementedError: a norm with a bias or other axes (no architecture has one yet).
    """
    from tvm.relax.frontend import nn

    from mlcbuild.models.common import StoredRMSNorm
    from mlcbuild.quant.base import replace_modules

    def swap(m, _name):
        if isinstance(m, nn.RMSNorm):
            if m.bias is not None or m.axes not in (-1, [-1]):
                raise NotImplementedError("stored-dtype RMSNorm with a bias or other axes")
            return StoredRMSNorm(m.weight.shape[0], m.epsilon, storage_dtype)
        return None

    return replace_modules(model, swap)
