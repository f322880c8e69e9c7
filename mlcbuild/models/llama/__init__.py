"""Llama architecture: Llama 2/3/3.1/3.2, SmolLM/SmolLM2, TinyLlama, MobileLLM.

The plain decoder of :mod:`mlcbuild.models.decoder`: ``config`` parses ``config.json``;
the checkpoint names are :func:`mlcbuild.models.loader.decoder_param_map`'s.
"""

from mlcbuild.models.llama.config import llama_config

__all__ = ["llama_config"]
