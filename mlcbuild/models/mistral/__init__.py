"""Mistral: the Llama decoder, with an optional sliding window.

Hugging Face ``transformers/models/mistral/modeling_mistral.py``: Llama's blocks; v0.1
attends to the last ``sliding_window`` (4096) keys, v0.2/v0.3 to all (``sliding_window``
null). Sliding-window attention is not implemented: a recipe must keep its context window
within the window (checked at recipe load).
"""

from mlcbuild.models.mistral.config import mistral_config

__all__ = ["mistral_config"]
