"""From a recipe and a target to a Relax IRModule: the recipe's quantized model
(:func:`mlcbuild.quant.build.build_model`) in the target's compute dtype, traced into its
entry functions; and the module after the pipeline's phases, for inspecting kernels."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tvm

from mlcbuild.compiler.fresh_thread import in_fresh_thread
from mlcbuild.compiler.pipeline import build_pipeline, front_phases
from mlcbuild.compiler.target import cpu_family, tvm_target
from mlcbuild.kernels.attention_common import SOFTCAP_ATTR, WINDOW_ATTR
from mlcbuild.quant import get_scheme
from mlcbuild.quant.build import build_model
from mlcbuild.spec.recipe import Recipe
from mlcbuild.spec.target import TargetDescriptor


@dataclasses.dataclass
class ExportedModel:
    """The traced model.

    Attributes:
        mod: the Relax IRModule with entry functions ``embed``, ``prefill``, ``decode``,
            ``batch_prefill``, ``batch_decode``, ``create_paged_kv_cache`` (renamed ``create_tir_paged_kv_cache`` by the pipeline).
        params: ``[(name, shape, dtype)]`` in the order the entry functions take them.
        model: the (quantized) ``nn.Module``, whose modules own ``quantize_weight``.
        compute_dtype: activations' and KV cache dtype (:func:`compute_dtype`).
    """

    mod: tvm.IRModule
    params: list[tuple[str, tuple[int, ...], str]]
    model: object
    compute_dtype: str = "float32"


def compute_dtype(scheme, target) -> str:
    """The activations' dtype for ``scheme`` on ``target``: the scheme's, except fp32 for
    packed fp16 schemes (``scheme.packed``) on x86 CPUs.

    x86 without AVX512-FP16 has no fp16 arithmetic: LLVM converts around every fp16 operation
    (SmolLM-135M q4f16_1 on host: prefill 53, decode 15.6 tokens/s against q4f32_1's 155 and
    45). There the model computes in fp32 (activations, KV cache) while scales and norm
    weights stay fp16 in the weight files (cast inside the kernels), so converted weights
    are the same for every target. Arm CPUs and GPUs keep fp16.
    """
    if scheme.model_dtype == "float16" and scheme.packed and cpu_family(target) == "x86":
        return "float32"
    return scheme.model_dtype


def attention_window(recipe: Recipe, cfg, target) -> int:
    """The sliding window (tokens) the attention kernels of ``target`` must apply: the model's
    ``sliding_window`` where the recipe's context can outgrow it, else 0 (also for ``target``
    ``None``: no kernels).

    Our attention kernels apply it (:mod:`mlcbuild.kernels.attention`).
    """
    window = cfg.sliding_window
    if target is None or window is None or recipe.build.context_window_size <= window:
        return 0
    return window


def attention_softcap(recipe: Recipe, cfg, target) -> float:
    """The attention logit soft-cap the attention kernels of ``target`` must apply (Gemma 2's
    ``attn_logit_softcapping``), or 0.

    Our attention kernels apply it (:mod:`mlcbuild.kernels.attention`).
    """
    cap = cfg.attn_logit_softcapping
    if target is None or cap is None:
        return 0.0
    return float(cap)


def export_model(recipe: Recipe, desc: TargetDescriptor) -> ExportedModel:
    """Trace the recipe's model for a target into Relax."""
    target = tvm_target(desc)
    dtype = compute_dtype(get_scheme(recipe.scheme), target)
    window = attention_window(recipe, recipe.model_config, target)
    model = build_model(recipe, dtype, window)
    with target:
        mod, named_params = model.export_tvm(spec=model.get_default_spec(), allow_extern=False)
    # read by our attention kernels (passes.replace_attention)
    if model.attention_window:
        mod = mod.with_attr(WINDOW_ATTR, model.attention_window)
    softcap = attention_softcap(recipe, model.cfg, target)
    if softcap:
        mod = mod.with_attr(SOFTCAP_ATTR, softcap)
    params = [(name, tuple(int(x) for x in p.shape), str(p.dtype)) for name, p in named_params]
    return ExportedModel(mod=mod, params=params, model=model, compute_dtype=dtype)


def variable_bounds(recipe: Recipe) -> dict[str, int]:
    """Largest run-time value of each symbolic size (for static memory planning)."""
    b = recipe.build
    return {
        "seq_len": b.prefill_chunk_size,
        "batch_size": b.max_batch_size,
        "total_seq_len": b.context_window_size,
    }


@in_fresh_thread  # TVMScript parsing inspects the whole caller stack
def lower_module(
    recipe: Recipe, desc: TargetDescriptor, tuning_dir: Path | None = None, dump_ir: Path | None = None
) -> tvm.IRModule:
    """The module after the whole Relax pipeline, before machine code: for inspecting kernels.
    ``dump_ir``: a directory that gets the exported module (``00-export.py``) and each phase's
    output as TVMScript (``01-graph.py`` ...)."""
    target = tvm_target(desc)
    with target:
        pipeline = build_pipeline(target, variable_bounds(recipe), {}, tuning_dir, dump_ir=dump_ir)
        return pipeline(export_model(recipe, desc).mod)


@in_fresh_thread
def front_module(recipe: Recipe, desc: TargetDescriptor) -> tvm.IRModule:
    """The module after the phases before scheduling (graph, lower, tir).

    Its PrimFuncs are the kernels exactly as the schedule phase sees them: what
    MetaSchedule tunes, and what ``MetaScheduleApplyDatabase`` later matches records to.
    """
    target = tvm_target(desc)
    passes = [p for _, phase in front_phases(variable_bounds(recipe), target) for p in phase]
    with target:
        return tvm.transform.Sequential(passes)(export_model(recipe, desc).mod)
