"""Build a recipe for host and load it with weights converted from a transformers model."""

from __future__ import annotations

import numpy as np

from mlcbuild.artifacts.cache import Cache
from mlcbuild.artifacts.compile import compile_recipe
from mlcbuild.artifacts.weights import convert_params
from mlcbuild.models import get_architecture
from mlcbuild.quant.build import build_model
from mlcbuild.runtime.engine import Engine
from mlcbuild.spec.recipe import parse_recipe
from mlcbuild.spec.target import load_target


def compile_and_load(data: dict, state_dict: dict[str, np.ndarray], cache_dir) -> Engine:
    """Compile recipe ``data`` for ``host`` (through the cache) and load ``state_dict`` into it."""
    from mlcbuild.artifacts.info import read_build

    recipe = parse_recipe(data)
    desc = load_target("host")
    result = compile_recipe(recipe, desc, cache=Cache(cache_dir))
    build = read_build(result.artifact)
    params = [(p.name, p.shape, p.dtype) for p in build.params]
    model = build_model(recipe)
    arch = get_architecture(recipe.architecture)
    cfg = recipe.model_config
    arrays = [a for _, a in convert_params(model, params, arch.hf_param_map(cfg), state_dict.__getitem__)]
    b = recipe.build
    return Engine.local(
        result.artifact / build.library.file,
        arrays,
        vocab_size=cfg.vocab_size,
        context_window_size=b.context_window_size,
        prefill_chunk_size=b.prefill_chunk_size,
        page_size=b.page_size,
    )
