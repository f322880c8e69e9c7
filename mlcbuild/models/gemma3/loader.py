"""Gemma 3 checkpoint names -> ours (NumPy only): Llama's layout plus two norms per layer;
every RMSNorm weight ``w`` is stored as ``1 + w`` (Gemma's norm multiplies by ``1 + w``)."""

from __future__ import annotations

import numpy as np

from mlcbuild.models.config import DecoderConfig
from mlcbuild.models.loader import ParamMap, decoder_param_map


def plus_one(w: np.ndarray) -> np.ndarray:
    """A Gemma RMSNorm weight as the plain RMSNorm's: ``1 + w`` in float32 (HF ``Gemma3RMSNorm``
    computes ``1.0 + weight.float()``)."""
    return w.astype(np.float32) + np.float32(1)


def gemma3_param_map(cfg: DecoderConfig) -> ParamMap:
    """:func:`mlcbuild.models.loader.decoder_param_map` with ``pre_feedforward_layernorm`` and
    ``post_feedforward_layernorm`` added and every norm (``*norm.weight``) through :func:`plus_one`."""
    out = decoder_param_map(cfg)
    for i in range(cfg.num_hidden_layers):
        for norm in ("pre_feedforward_layernorm", "post_feedforward_layernorm"):
            name = f"model.layers.{i}.{norm}.weight"
            out[name] = ([name], plus_one)
    return {ours: (names, plus_one if ours.endswith("norm.weight") else fn) for ours, (names, fn) in out.items()}
