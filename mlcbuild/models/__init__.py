"""Architectures: the registry maps a recipe's ``model.architecture`` to its definition."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from mlcbuild.errors import RecipeError


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One architecture: how to parse its config, build its module, and map its weights.

    Attributes:
        name: the recipe's ``model.architecture`` value.
        config_from_hf: ``(config_dict, path) -> DecoderConfig``; raises ``RecipeError``
            (also for a ``model_type`` of another architecture).
        model_class: ``(Config, dtype, attention_window=0) -> nn.Module`` with MLC's entry functions.
        hf_param_map: ``Config -> {our_name: ([hf_name, ...], combine)}``.
    """

    name: str
    config_from_hf: Callable[..., Any]
    model_class: Callable[..., Any]
    hf_param_map: Callable[..., dict]


def _decoder(name: str, config_from_hf, param_map=None) -> Architecture:
    """An architecture built as :class:`.decoder.DecoderForCausalLM`; checkpoint names from
    ``param_map`` (default: Llama's layout, :func:`.loader.decoder_param_map`)."""
    from mlcbuild.models.config_keys import check_types
    from mlcbuild.models.loader import decoder_param_map

    def parse(cfg: dict, path=None):
        check_types(cfg, path or "<recipe>")  # before any key is read (a "2" or "abc" would raise TypeError)
        return config_from_hf(cfg, path)

    def model_class(*args, **kwargs):
        from mlcbuild.models.decoder import DecoderForCausalLM  # imports TVM on first use

        return DecoderForCausalLM(*args, **kwargs)

    return Architecture(name, parse, model_class, param_map or decoder_param_map)


def _llama() -> Architecture:
    from mlcbuild.models.llama import llama_config

    return _decoder("llama", llama_config)


def _qwen2() -> Architecture:
    from mlcbuild.models.qwen2 import qwen2_config

    return _decoder("qwen2", qwen2_config)


def _qwen3() -> Architecture:
    from mlcbuild.models.qwen3 import qwen3_config

    return _decoder("qwen3", qwen3_config)


def _phi3() -> Architecture:
    from mlcbuild.models.phi3 import phi3_config, phi3_param_map

    return _decoder("phi3", phi3_config, phi3_param_map)


def _mistral() -> Architecture:
    from mlcbuild.models.mistral import mistral_config

    return _decoder("mistral", mistral_config)


def _gemma2() -> Architecture:
    from mlcbuild.models.gemma2 import gemma2_config, gemma2_param_map

    return _decoder("gemma2", gemma2_config, gemma2_param_map)


def _gemma3() -> Architecture:
    from mlcbuild.models.gemma3 import gemma3_config, gemma3_param_map

    return _decoder("gemma3_text", gemma3_config, gemma3_param_map)


ARCHITECTURES: dict[str, Callable[[], Architecture]] = {
    "gemma2": _gemma2,
    "gemma3_text": _gemma3,
    "llama": _llama,
    "mistral": _mistral,
    "phi3": _phi3,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
}


def get_architecture(name: str) -> Architecture:
    """The architecture registered as ``name``.

    Raises:
        RecipeError: ``name`` is not registered; the message lists the supported ones.
    """
    if name not in ARCHITECTURES:
        raise RecipeError(
            f"unknown architecture {name!r}; supported: {', '.join(sorted(ARCHITECTURES))}",
            fix="set model.architecture to a supported one",
        )
    return ARCHITECTURES[name]()
