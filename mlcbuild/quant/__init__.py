"""Quantization schemes: the registry maps a recipe's ``quantization.scheme`` to one.

Names and math follow MLC-LLM's registry (``python/mlc_llm/quantization/quantization.py``)
so that numbers are comparable: ``q{bits}f{act bits}_{layout}``.
"""

from __future__ import annotations

from mlcbuild.quant.base import Scheme
from mlcbuild.quant.ggml import GGMLQuant
from mlcbuild.quant.group import GroupQuant
from mlcbuild.quant.none import NoQuant
from mlcbuild.quant.zeropoint import ZeroPointGroupQuant


def _f16_f32(make, name: str, *, act: tuple[int, ...] = (16, 32), **kw) -> list[Scheme]:
    """``make`` for ``name`` (a pattern with ``{}`` for the activation bits) in each float of
    ``act``: ``q4f{}_1`` -> ``q4f16_1`` (float16), ``q4f32_1`` (float32)."""
    return [make(name.format(b), model_dtype=f"float{b}", **kw) for b in act]


_NK32 = {"bits": 4, "group_size": 32, "layout": "NK"}  # MLC's q4f16_1 geometry
_NK40 = {"bits": 3, "group_size": 40, "layout": "NK"}  # MLC's q3f16_1 geometry
_Q8 = {"bits": 8, "group_size": 32, "layout": "NK"}  # 8-bit, 4 per uint32: the counterpart of llama.cpp's Q8_0

SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        *_f16_f32(NoQuant, "q0f{}", act=(32, 16)),
        *_f16_f32(GroupQuant, "q4f{}_1", **_NK32),
        *_f16_f32(GroupQuant, "q4f{}_0", act=(16,), bits=4, group_size=32, layout="KN"),
        *_f16_f32(GroupQuant, "q3f{}_1", act=(16,), **_NK40),
        *_f16_f32(GroupQuant, "q8f{}_1", **_Q8),
        # GPTQ-calibrated codes in the _1 layouts: the same libraries' kernels run them.
        *_f16_f32(GroupQuant, "q4f{}_gptq", calibration="gptq", **_NK32),
        *_f16_f32(GroupQuant, "q3f{}_gptq", act=(16,), calibration="gptq", **_NK40),
        # AWQ: activation-aware input-channel scales folded into the weights, then rounding.
        *_f16_f32(GroupQuant, "q4f{}_awq", act=(16,), calibration="awq", **_NK32),
        *_f16_f32(GroupQuant, "q3f{}_awq", act=(16,), calibration="awq", **_NK40),
        # SmoothQuant W8A8: activation outliers migrated into the weights, 8-bit groups; int8
        # activations in the decode GEMVs where the target has int8 x int8 dot products
        *_f16_f32(GroupQuant, "q8f{}_smooth", calibration="smoothquant", **_Q8),
        # checkpoints already quantized by GPTQ tools / AutoAWQ, imported as they are (zero points)
        *_f16_f32(ZeroPointGroupQuant, "q4f{}_autogptq", bits=4, group_size=128, source="gptq"),
        *_f16_f32(ZeroPointGroupQuant, "q4f{}_autogptq_g32", act=(16,), bits=4, group_size=32, source="gptq"),
        *_f16_f32(ZeroPointGroupQuant, "q8f{}_autogptq", act=(16,), bits=8, group_size=128, source="gptq"),
        *_f16_f32(ZeroPointGroupQuant, "q4f{}_autoawq", bits=4, group_size=128, source="awq"),
        # GGUF files' Q4_0 / Q4_1 / Q8_0 blocks, imported bit for bit (llama.cpp's formats)
        *_f16_f32(GGMLQuant, "q4f{}_ggml_q4_0", ggml_type="Q4_0"),
        *_f16_f32(GGMLQuant, "q4f{}_ggml_q4_1", ggml_type="Q4_1"),
        *_f16_f32(GGMLQuant, "q8f{}_ggml_q8_0", ggml_type="Q8_0"),
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


__all__ = ["SCHEMES", "Scheme", "GGMLQuant", "GroupQuant", "NoQuant", "ZeroPointGroupQuant", "get_scheme"]
