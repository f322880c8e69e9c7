"""SmoothQuant (Xiao et al. 2022, "SmoothQuant: Accurate and Efficient Post-Training
Quantization for Large Language Models", arXiv:2211.10438): migrate activation outliers into
the weights so that both quantize to int8 (W8A8).

Per input channel ``j`` of linears sharing an input (Section 4, Eq. 4)::

    s_j = max|X_j|^alpha / max_i |W_ij|^(1 - alpha)

with ``max|X_j|`` over the calibration tokens and ``max_i |W_ij|`` over the rows of every linear
reading ``X``; ``alpha`` (the migration strength, 0.5 in the paper for most models) is the
recipe's ``[quantization.calibration] alpha``. ``X / s`` and ``W diag(s)`` are folded as AWQ's
scales are (:mod:`.fold`): the float model is unchanged. The smoothed weights are then stored
as the scheme's 8-bit groups (``q8f16_1``'s layout), and the decode GEMVs quantize each
activation row to int8 and run int8 x int8 dot products where the target has them
(:mod:`.group_int8_gemv`: AVX-VNNI / AVX512-VNNI; activations per block of 32, finer than
the paper's per-token scales). Prefill and targets without them dequantize the int8 weights.
"""

from __future__ import annotations

from typing import Callable

from mlcbuild.quant.fold import scale_layers


def smooth_scales(x, weights: list, alpha: float):
    """Eq. 4's ``s [K]`` for calibration inputs ``x`` ``[..., K]`` and weights ``[N_i, K]`` (torch),
    float32; channels that are zero in either stay unscaled (``s = 1``)."""
    import torch

    act = x.reshape(-1, x.shape[-1]).abs().amax(dim=0).to(torch.float64)
    w = torch.stack([wi.detach().abs().amax(dim=0) for wi in weights]).amax(dim=0).to(torch.float64)
    s = act.pow(alpha) / w.pow(1 - alpha)
    ok = (act > 0) & (w > 0) & torch.isfinite(s)
    return torch.where(ok, s.clamp(min=1e-5), torch.ones_like(s)).to(torch.float32)


def smooth_model(model, ids, alpha: float = 0.5, on_layer: Callable[[int, int], None] | None = None) -> None:
    """Smooth a Llama-layout ``transformers`` causal LM (float32, eval) in place on calibration
    ``ids`` ``[n, s]`` with migration strength ``alpha`` (0..1).

    Raises:
        MlcbuildError: Gemma or another layer layout (:func:`mlcbuild.quant.fold.scale_layers`).
    """
    scale_layers(model, ids, lambda x, weights: smooth_scales(x, weights, alpha), "SmoothQuant", on_layer=on_layer)


__all__ = ["smooth_model", "smooth_scales"]
