"""Phi-3 / Phi-3.5-mini: the decoder, with the checkpoint's q/k/v and gate/up already fused.

Hugging Face ``transformers/models/phi3/modeling_phi3.py``: ``Phi3Attention.qkv_proj`` and
``Phi3MLP.gate_up_proj`` (gate first, ``up * silu(gate)``) are the layouts our decoder uses,
so the loader maps them as they are. The 4k variants use plain RoPE; the 128k variants'
``longrope`` (``su``) scaling is read by :func:`.config.longrope` (short and long factors).
"""

from mlcbuild.models.phi3.config import phi3_config
from mlcbuild.models.phi3.loader import phi3_param_map

__all__ = ["phi3_config", "phi3_param_map"]
