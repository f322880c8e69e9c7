"""Mistral: the Llama decoder, with an optional sliding window.

Hugging Face ``transformers/models/mistral/modeling_mistral.py``: Llama's blocks; v0.1
attends to the last ``sliding_window`` (4096) keys, v0.2/v0.3 to all (``sliding_window``
null). Where a recipe's context window outgrows ``sliding_window``, the compiler's attention
kernels apply the window exactly (:func:`mlcbuild.compiler.export.attention_window`,
:mod:`mlcbuild.kernels.attention`); the model itself is the Llama decoder.
"""

from mlcbuild.models.mistral.config import mistral_config

__all__ = ["mistral_config"]
