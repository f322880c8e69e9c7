"""Architectures: the registry maps a recipe's ``model.architecture`` to its definition."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ..errors import RecipeError


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One architecture: how to parse its config, build its module, and map its weights.

    Attributes:
        name: the recipe's ``model.architecture`` value.
        hf_model_types: ``model_type`` values of Hugging Face configs it covers.
        config_from_hf: ``(config_dict, path) -> Config``; raises ``RecipeError``.
        model_class: ``(Config, dtype, target) -> nn.Module`` with MLC's entry functions.
        hf_param_map: ``Config -> {our_name: ([hf_name, ...], combine)}``.
    """

    name: str
    hf_model_types: tuple[str, ...]
    config_from_hf: Callable[..., Any]
    model_class: Callable[..., Any]
    hf_param_map: Callable[..., dict]


def _llama() -> Architecture:
    from . import llama

    return Architecture(
        name="llama",
        hf_model_types=("llama", "mobilellm"),
        config_from_hf=llama.LlamaConfig.from_hf,
        model_class=llama.model_class,
        hf_param_map=llama.hf_param_map,
    )


ARCHITECTURES: dict[str, Callable[[], Architecture]] = {"llama": _llama}


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
