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


def compile_and_load(data: dict, state_dict: dict[str, np.ndarray], cache_dir, target: str = "host") -> Engine:
    """Compile recipe ``data`` for ``target`` (a ``.so`` target: ``host``, ``pocl``; through the
    cache) and load ``state_dict`` into it, on the target's device."""
    from mlcbuild.artifacts.info import read_build

    recipe = parse_recipe(data)
    desc = load_target(target)
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
        device_kind=desc.kind,
        vocab_size=cfg.vocab_size,
        context_window_size=b.context_window_size,
        prefill_chunk_size=b.prefill_chunk_size,
        page_size=b.page_size,
    )


# Hugging Face linears our models fuse into one (their outputs concatenated): the fused
# width decides which prefill kernel runs (``int8_matmul.supports``: a multiple of 64)
_FUSED = {"q_proj": ("q_proj", "k_proj", "v_proj"), "k_proj": ("q_proj", "k_proj", "v_proj"),
          "v_proj": ("q_proj", "k_proj", "v_proj"), "gate_proj": ("gate_proj", "up_proj"),
          "up_proj": ("gate_proj", "up_proj")}  # fmt: skip


def emulate_int8_activations(hf, weight_info: dict, prompt_rows: int, mask=None, prompt_only: bool = False) -> list:
    """Make ``hf`` quantize linear inputs as our int8 kernels do on this host
    (:func:`mlcbuild.kernels.int8_dot.activation_reference`, blocks of 32).

    Ours runs the int8 decode GEMV for one-token rows (every decode step's linears, and the LM
    head: prefill computes only the last token's logits) where :func:`int8_gemv.supports` the
    weight (``weight_info``, a scheme's ``dequantize_info``) on the host's ISA, and the int8
    prefill matmul (:func:`int8_matmul.supports`) for the prompt's rows of linears whose fused
    output width it takes. The reference recomputes the whole sequence: rows past
    ``prompt_rows`` are decode rows. ``mask(name)``: only linears it accepts (default all).
    ``prompt_only``: the prefill's rows only (a batched decode that stays float).

    Returns:
        the hook handles (``.remove()`` them to restore ``hf``).
    """
    import torch

    from mlcbuild.compiler.target import int8_dot_isa, tvm_target
    from mlcbuild.kernels import int8_gemv, int8_matmul
    from mlcbuild.kernels.int8_dot import activation_reference

    isa = int8_dot_isa(tvm_target(load_target("host")))
    if not int8_gemv.supports(weight_info, isa):
        return []
    modules = dict(hf.named_modules())

    def hook(rows: slice):
        def pre(_module, args):
            x = args[0].detach().numpy().copy()
            x[:, rows] = activation_reference(x[:, rows])
            return (torch.from_numpy(x),)

        return pre

    handles = []
    for name, module in modules.items():
        if not isinstance(module, torch.nn.Linear) or (mask is not None and not mask(name)):
            continue
        parent, _, leaf = name.rpartition(".")
        width = (
            sum(modules[f"{parent}.{x}"].out_features for x in _FUSED[leaf]) if leaf in _FUSED else module.out_features
        )
        prefill_int8 = int8_matmul.supports(weight_info, width, isa, "float32")
        if prompt_only:
            if not prefill_int8:
                continue
            rows = slice(0, prompt_rows)
        else:
            rows = slice(0 if name == "lm_head" or prefill_int8 else prompt_rows, None)
        handles.append(module.register_forward_pre_hook(hook(rows)))
    return handles
