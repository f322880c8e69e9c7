"""Quantization schemes: the registry maps a recipe's ``quantization.scheme`` to one.

Names and math follow MLC-LLM's registry (``python/mlc_llm/quantization/quantization.py``)
so that numbers are comparable: ``q{bits}f{act bits}_{layout}``.
"""

from __future__ import annotations

from mlcbuild.quant.base import Scheme
from mlcbuild.quant.group import GroupQuant
from mlcbuild.quant.none import NoQuant
from mlcbuild.quant.zeropoint import ZeroPointGroupQuant

SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        NoQuant("q0f32", model_dtype="float32"),
        NoQuant("q0f16", model_dtype="float16"),
        GroupQuant("q4f16_1", bits=4, group_size=32, model_dtype="float16", layout="NK"),
        GroupQuant("q4f32_1", bits=4, group_size=32, model_dtype="float32", layout="NK"),
        GroupQuant("q4f16_0", bits=4, group_size=32, model_dtype="float16", layout="KN"),
        GroupQuant("q3f16_1", bits=3, group_size=40, model_dtype="float16", layout="NK"),
        # 8-bit, 4 per uint32, one scale per 32: the counterpart of llama.cpp's Q8_0.
        GroupQuant("q8f16_1", bits=8, group_size=32, model_dtype="float16", layout="NK"),
        GroupQuant("q8f32_1", bits=8, group_size=32, model_dtype="float32", layout="NK"),
        # GPTQ-calibrated codes in the _1 layouts: the same libraries' kernels run them.
        GroupQuant("q4f16_gptq", bits=4, group_size=32, model_dtype="float16", layout="NK", calibration="gptq"),
        GroupQuant("q4f32_gptq", bits=4, group_size=32, model_dtype="float32", layout="NK", calibration="gptq"),
        GroupQuant("q3f16_gptq", bits=3, group_size=40, model_dtype="float16", layout="NK", calibration="gptq"),
        # AWQ: activation-aware input-channel scales folded into the weights, then rounding.
        GroupQuant("q4f16_awq", bits=4, group_size=32, model_dtype="float16", layout="NK", calibration="awq"),
        GroupQuant("q3f16_awq", bits=3, group_size=40, model_dtype="float16", layout="NK", calibration="awq"),
        # SmoothQuant W8A8: activation outliers migrated into the weights, 8-bit groups; int8
        # activations in the decode GEMVs where the target has int8 x int8 dot products
        GroupQuant(
            "q8f16_smooth", bits=8, group_size=32, model_dtype="float16", layout="NK", calibration="smoothquant"
        ),
        GroupQuant(
            "q8f32_smooth", bits=8, group_size=32, model_dtype="float32", layout="NK", calibration="smoothquant"
        ),
        # checkpoints already quantized by GPTQ tools / AutoAWQ, imported as they are (zero points)
        ZeroPointGroupQuant("q4f16_autogptq", bits=4, group_size=128, model_dtype="float16", source="gptq"),
        ZeroPointGroupQuant("q4f32_autogptq", bits=4, group_size=128, model_dtype="float32", source="gptq"),
        ZeroPointGroupQuant("q4f16_autogptq_g32", bits=4, group_size=32, model_dtype="float16", source="gptq"),
        ZeroPointGroupQuant("q8f16_autogptq", bits=8, group_size=128, model_dtype="float16", source="gptq"),
        ZeroPointGroupQuant("q4f16_autoawq", bits=4, group_size=128, model_dtype="float16", source="awq"),
        ZeroPointGroupQuant("q4f32_autoawq", bits=4, group_size=128, model_dtype="float32", source="awq"),
    )
}


def get_scheme(name: str) -> Scheme:
    """The scheme registered as ``name``.

    Raises:
        KeyError: with the allowed names (recipes are validated before this is reached).
    """
    if name not in SCHEMES:
        raise KeyError(f"unknown quantization scheme {name!r}; allowed: {', '.join(SCHEMES)}")
    return SCHEMES[name]


__all__ = ["SCHEMES", "Scheme", "GroupQuant", "NoQuant", "ZeroPointGroupQuant", "get_scheme"]
