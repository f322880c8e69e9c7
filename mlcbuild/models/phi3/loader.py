"""Phi-3 checkpoint names -> ours (NumPy only): the fused tensors map one to one."""

from __future__ import annotations

from mlcbuild.models.config import DecoderConfig
from mlcbuild.models.loader import ParamMap, decoder_param_map, identity


def phi3_param_map(cfg: DecoderConfig) -> ParamMap:
    """:func:`mlcbuild.models.loader.decoder_param_map` with the checkpoint's own fused
    ``self_attn.qkv_proj.weight`` and ``mlp.gate_up_proj.weight`` (q, k, v and gate, up
    already concatenated along the output axis, as ours)."""
    out = decoder_param_map(cfg)
    for i in range(cfg.num_hidden_layers):
        for name in (f"model.layers.{i}.self_attn.qkv_proj.weight", f"model.layers.{i}.mlp.gate_up_proj.weight"):
            out[name] = ([name], identity)
    return out
