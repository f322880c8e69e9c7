"""Llama architecture: Llama 2/3/3.1/3.2, SmolLM/SmolLM2, TinyLlama, MobileLLM.

``config`` parses ``config.json``; ``model`` is the ``nn.Module``; ``loader`` maps
checkpoint tensor names to ours.
"""

from .config import LlamaConfig
from .loader import hf_param_map


def model_class(*args, **kwargs):
    """``LlamaForCausalLM(cfg, dtype, target)`` (imports TVM on first use)."""
    from .model import LlamaForCausalLM

    return LlamaForCausalLM(*args, **kwargs)


__all__ = ["LlamaConfig", "hf_param_map", "model_class"]
