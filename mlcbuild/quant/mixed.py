"""Mixed precision: a scheme per linear/embedding from a recipe's ``[quantization.overrides]``.

::

    [quantization]
    scheme = "q4f16_1"                       # every linear and embedding not overridden
    [quantization.overrides]
    "lm_head" = "q8f16_1"                    # glob pattern = scheme
    "model.layers.0.*" = "q0f16"
    "model.layers.3.*" = "q0f16"

Patterns are ``fnmatch`` globs over module names, which are the parameters' prefixes in
``tensor-cache.json`` (``model.embed_tokens``, ``model.layers.0.self_attn.qkv_proj``,
``model.layers.0.mlp.gate_up_proj``, ``lm_head``); a pattern also matches ``<module>.weight``.
The first pattern in file order that matches a module wins. Only linears and embeddings are
quantized (norms stay float). An override must share the base scheme's activation dtype
(``q0f16``/``q8f16_1``/``q4f16_1``/``q3f16_1`` under an ``f16`` base, ``q0f32``/``q8f32_1``/
``q4f32_1`` under an ``f32`` one) and must be round-to-nearest (calibrated codes come from the
base scheme). Each module records its scheme as ``quantization``; ``convert`` writes it into
every parameter's record of ``tensor-cache.json``.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

from mlcbuild.errors import RecipeError
from mlcbuild.quant.base import Scheme, replace_modules

# the attribute each quantizable module carries after quantize_model: its scheme's name
SCHEME_ATTR = "quantization"


def check_overrides(table: Any, base: Scheme, schemes: dict[str, Scheme], where) -> dict[str, str]:
    """The checked ``[quantization.overrides]`` table (pattern -> scheme name, file order kept).

    Raises:
        RecipeError: a value that is not a scheme name, an unknown or calibrated scheme, or one
            whose activation dtype differs from the base scheme's.
    """
    if not isinstance(table, dict) or not table:
        raise RecipeError(
            '[quantization.overrides] must be a non-empty table of "pattern" = "scheme"',
            path=where,
            fix='write e.g. [quantization.overrides] then "lm_head" = "q8f16_1"',
        )
    out: dict[str, str] = {}
    for pattern, name in table.items():
        key = f"quantization.overrides.{pattern!r}"
        if not isinstance(name, str):
            raise RecipeError(f"{key} must be a scheme name (a string), got {name!r}", path=where, fix='e.g. "q8f16_1"')
        if name not in schemes:
            raise RecipeError(
                f"{key}: unknown scheme {name!r}; allowed: {', '.join(schemes)}",
                path=where,
                fix="choose one of the allowed schemes",
            )
        scheme = schemes[name]
        if scheme.calibration is not None:
            raise RecipeError(
                f"{key}: {name} is calibrated ({scheme.calibration}); overrides must be round-to-nearest",
                path=where,
                fix="make the calibrated scheme the base [quantization] scheme, or override with e.g. q8f16_1",
            )
        if scheme.model_dtype != base.model_dtype:
            same = [s for s, v in schemes.items() if v.model_dtype == base.model_dtype and v.calibration is None]
            raise RecipeError(
                f"{key}: {name} computes in {scheme.model_dtype}, the base scheme {base.name} in {base.model_dtype}",
                path=where,
                fix=f"override with a {base.model_dtype} scheme: {', '.join(same)}",
            )
        out[pattern] = name
    return out


def matches(pattern: str, module: str) -> bool:
    """Whether ``pattern`` (an ``fnmatch`` glob) selects the module named ``module``."""
    return fnmatchcase(module, pattern) or fnmatchcase(module + ".weight", pattern)


def scheme_for(module: str, base: Scheme, overrides: dict[str, str]) -> Scheme:
    """The scheme of the module named ``module``: the first matching override's, else ``base``."""
    from mlcbuild.quant import get_scheme

    for pattern, name in overrides.items():
        if matches(pattern, module):
            return get_scheme(name)
    return base


def quantize_model(model, base: Scheme, overrides: dict[str, str], compute_dtype: str, where=None):
    """Swap every ``nn.Linear`` and ``nn.Embedding`` of ``model`` for its scheme's module
    (:func:`scheme_for`), in place; each carries its scheme's name as ``quantization``.

    Args:
        model: the architecture's ``nn.Module`` (built in ``compute_dtype``).
        base: the recipe's ``[quantization] scheme``.
        overrides: pattern -> scheme name (:func:`check_overrides`).
        compute_dtype: the activations' dtype (:func:`mlcbuild.compiler.export.compute_dtype`).
        where: the recipe file, for errors.
    Returns:
        the root module.
    Raises:
        RecipeError: an override pattern matches no linear or embedding of the model.
    """
    from tvm.relax.frontend import nn

    from mlcbuild.quant import get_scheme

    names: list[str] = []
    used: set[str] = set()

    def swap(m, name: str):
        if not isinstance(m, (nn.Linear, nn.Embedding)):
            return None
        names.append(name)
        scheme = base
        if any(matches(p, name) for p in base.keeps_float):  # left float by imported checkpoints
            scheme = get_scheme({"float16": "q0f16", "float32": "q0f32"}[base.model_dtype])
        for pattern, scheme_name in overrides.items():
            if matches(pattern, name):
                used.add(pattern)
                scheme = get_scheme(scheme_name)
                break
        new = scheme.quantize_module(m, compute_dtype) or m
        setattr(new, SCHEME_ATTR, scheme.name)
        return new

    model = replace_modules(model, swap)
    unused = [p for p in overrides if p not in used]
    if unused:
        shapes = list(dict.fromkeys(re.sub(r"\.\d+\.", ".<i>.", n) for n in names))
        tied = "" if "lm_head" in names else " (the LM head is tied to model.embed_tokens)"
        raise RecipeError(
            f"[quantization.overrides] pattern(s) {', '.join(map(repr, unused))} match no linear or embedding of "
            f"this model; its modules are {', '.join(shapes)} with <i> from 0 to the last layer{tied}",
            path=where,
            fix="correct or remove the pattern",
        )
    return model
