"""From a recipe and a target to a Relax IRModule, and from that to a library file.

``export_model`` builds the architecture's ``nn.Module``, lets the quantization scheme
swap its layers, and traces the entry functions. ``build_library`` runs the pipeline
and writes the library in the target's output form.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import tvm
from tvm import relax

from ..models import get_architecture
from ..quant import get_scheme
from ..recipe import Recipe
from ..target import TargetDescriptor, cpu_family, cross_linker, int8_dot_isa, link_kind, resolved_host, tvm_target
from .attention_common import SOFTCAP_ATTR, WINDOW_ATTR
from .passes import user_errors
from .pipeline import build_pipeline, front_phases

LIB_NAMES = {"so": "lib.so", "tar": "lib.tar"}


@dataclasses.dataclass
class ExportedModel:
    """The traced model.

    Attributes:
        mod: the Relax IRModule with entry functions ``embed``, ``prefill``, ``decode``,
            ``batch_prefill``, ``batch_decode``, ``create_paged_kv_cache``.
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
    group-quantized fp16 schemes on x86 CPUs.

    x86 without AVX512-FP16 has no fp16 arithmetic: LLVM converts around every fp16 operation
    (SmolLM-135M q4f16_1 on host: prefill 53, decode 15.6 tokens/s against q4f32_1's 155 and
    45). There the model computes in fp32 (activations, KV cache) while scales and norm
    weights stay fp16 in the weight files (cast inside the kernels), so converted weights
    are the same for every target. Arm CPUs and GPUs keep fp16.
    """
    from ..quant import GroupQuant, ZeroPointGroupQuant

    packed = isinstance(scheme, (GroupQuant, ZeroPointGroupQuant))
    if scheme.model_dtype == "float16" and packed and cpu_family(target) == "x86":
        return "float32"
    return scheme.model_dtype


def build_model(recipe: Recipe, target) -> object:
    """The quantized ``nn.Module`` of a recipe, its KV cache built for ``target``.

    ``target`` ``None``: the target-independent form (parameter names, shapes, dtypes).
    Each linear and embedding gets the recipe's scheme or its override (:mod:`mlcbuild.quant.mixed`).

    Raises:
        RecipeError: an override pattern matches no linear or embedding of the model.
    """
    from ..models.common import store_norms_as
    from ..quant.mixed import quantize_model

    arch = get_architecture(recipe.architecture)
    scheme = get_scheme(recipe.scheme)
    if hasattr(scheme, "for_config"):  # an imported checkpoint's format details (act-order)
        scheme = scheme.for_config(recipe.config)
    cfg = arch.config_from_hf(recipe.config, path=recipe.path).for_context(recipe.build.context_window_size)
    dtype = compute_dtype(scheme, target)
    model = arch.model_class(cfg, dtype, target, attention_window=attention_window(recipe, cfg, target))
    if dtype != scheme.model_dtype:
        model = store_norms_as(model, scheme.model_dtype)
    isa = int8_dot_isa(target) if target is not None else None
    return quantize_model(model, scheme, recipe.overrides, dtype, isa, where=recipe.path)


def attention_window(recipe: Recipe, cfg, target) -> int:
    """The sliding window (tokens) the attention kernels must apply: the model's
    ``sliding_window`` where the recipe's context can outgrow it, else 0 (also for ``target``
    ``None``, the target-independent form).

    Our attention kernels apply it (:mod:`.attention`).
    """
    window = cfg.sliding_window
    if target is None or window is None or recipe.build.context_window_size <= window:
        return 0
    return window


def attention_softcap(recipe: Recipe, cfg, target) -> float:
    """The attention logit soft-cap the attention kernels must apply (Gemma 2's
    ``attn_logit_softcapping``), or 0.

    Our attention kernels apply it (:mod:`.attention`).
    """
    cap = cfg.attn_logit_softcapping
    if target is None or cap is None:
        return 0.0
    return float(cap)


def export_model(recipe: Recipe, desc: TargetDescriptor) -> ExportedModel:
    """Trace the recipe's model for a target into Relax."""
    target = tvm_target(desc)
    model = build_model(recipe, target)
    with target:
        mod, named_params = model.export_tvm(spec=model.get_default_spec(), allow_extern=False)
    # read by our attention kernels (attention.replace_attention)
    if model.attention_window:
        mod = mod.with_attr(WINDOW_ATTR, model.attention_window)
    softcap = attention_softcap(recipe, model.cfg, target)
    if softcap:
        mod = mod.with_attr(SOFTCAP_ATTR, softcap)
    params = [(name, tuple(int(x) for x in p.shape), str(p.dtype)) for name, p in named_params]
    return ExportedModel(
        mod=mod, params=params, model=model, compute_dtype=compute_dtype(get_scheme(recipe.scheme), target)
    )


def variable_bounds(recipe: Recipe) -> dict[str, int]:
    """Largest run-time value of each symbolic size (for static memory planning)."""
    b = recipe.build
    return {
        "seq_len": b.prefill_chunk_size,
        "batch_size": b.max_batch_size,
        "total_seq_len": b.context_window_size,
    }


def lower_module(recipe: Recipe, desc: TargetDescriptor, tuning_dir: Path | None = None) -> tvm.IRModule:
    """The module after the whole Relax pipeline, before machine code: for inspecting kernels."""
    target = tvm_target(desc)
    with target:
        return build_pipeline(target, variable_bounds(recipe), {}, tuning_dir)(export_model(recipe, desc).mod)


def front_module(recipe: Recipe, desc: TargetDescriptor) -> tvm.IRModule:
    """The module after the phases before scheduling (graph, lower, tir).

    Its PrimFuncs are the kernels exactly as the schedule phase sees them: what
    MetaSchedule tunes, and what ``MetaScheduleApplyDatabase`` later matches records to.
    """
    target = tvm_target(desc)
    passes = [p for _, phase in front_phases(variable_bounds(recipe), target) for p in phase]
    with target:
        return tvm.transform.Sequential(passes)(export_model(recipe, desc).mod)


def with_stamp(mod: tvm.IRModule, stamp: dict[str, str]) -> tvm.IRModule:
    """``mod`` plus a Relax function :data:`mlcbuild.stamp.STAMP_FUNCTION` taking nothing and
    returning the stamp's JSON string (a constant of the VM executable)."""
    from ..stamp import STAMP_FUNCTION, stamp_json

    func = relax.Function([], tvm.ir.expr.StringImm(stamp_json(stamp)), relax.ObjectType(), is_pure=True)
    mod = mod.clone()
    mod[STAMP_FUNCTION] = func.with_attr("global_symbol", STAMP_FUNCTION)
    return mod


def build_library(
    recipe: Recipe,
    desc: TargetDescriptor,
    out_dir: Path,
    timings: dict[str, float],
    tuning_dir: Path | None = None,
    on_phase: Callable[[str], None] | None = None,
    workarounds: list[str] | None = None,
    tuned: list[str] | None = None,
    stamp: dict[str, str] | None = None,
) -> tuple[Path, ExportedModel]:
    """Compile the recipe for a target and write the library into ``out_dir``.

    The library is ``lib.so`` (``output.format = "so"``) or ``lib.tar``: a tar of
    object files of a system library whose symbols carry
    ``recipe.build.system_lib_prefix`` (``"tar"``, for static linking in apps).

    Returns:
        ``(library path, exported model)``; ``timings`` gains seconds per phase and
        ``workarounds`` (if given) a line per compiler bug worked around, ``tuned`` (if
        given) the names of the kernels scheduled from tuning records. ``stamp``: the ABI
        stamp (:func:`mlcbuild.stamp.abi_stamp`) compiled into the library as the VM function
        ``mlcbuild_stamp`` returning its JSON, which also lies verbatim in the file's bytes.
    Raises:
        TargetError: the installed TVM cannot generate code for the target.
    """
    import time

    desc.check_codegen()  # before any work: fail at once for a backend this TVM lacks
    link = link_kind(desc) if desc.output_format == "so" else None  # fails at once if this machine cannot link
    target = tvm_target(desc)
    if on_phase:
        on_phase("export")
    t0 = time.perf_counter()
    exported = export_model(recipe, desc)
    mod = exported.mod
    if desc.system_lib:
        mod = mod.with_attr("system_lib_prefix", recipe.build.system_lib_prefix)
    timings["export"] = time.perf_counter() - t0

    phase_times: dict[str, float] = {}

    def phase(name: str) -> None:
        if on_phase:
            on_phase(name)
        if name == "codegen":
            phase_times["codegen"] = time.perf_counter()

    where = str(desc.path) if desc.path else desc.name
    pipeline = build_pipeline(target, variable_bounds(recipe), timings, tuning_dir, phase, tuned, device_file=where)
    if stamp is not None:  # added last: TVM's Relax passes choke on a function returning a string
        add = tvm.transform.module_pass(lambda m, _ctx: with_stamp(m, stamp), opt_level=0, name="mlcbuild.AddStamp")
        pipeline = tvm.transform.Sequential([pipeline, add])
    try:
        with user_errors():  # a pass's MlcbuildError (device limits) comes out as itself
            ex = relax.build(mod, target, relax_pipeline=pipeline, system_lib=desc.system_lib)
    except tvm.error.InternalError as e:
        # TVM 0.27's TIR common-subexpression elimination emits a use before its definition
        # in the KV cache's tree-attention kernel for some head dims on Metal (seen: Llama 3.2
        # 1B, head_dim 64). Rebuild without TIR CSE; LLVM and the GPU drivers' compilers
        # still eliminate common subexpressions themselves.
        if "used before definition" not in str(e):
            raise
        if tuned is not None:
            tuned.clear()  # the pipeline runs again
        if workarounds is not None:
            workarounds.append("rebuilt with tirx.disable_cse_tir (TVM CSE use-before-definition)")
        with tvm.transform.PassContext(config={"tirx.disable_cse_tir": True}), user_errors():
            ex = relax.build(mod, target, relax_pipeline=pipeline, system_lib=desc.system_lib)
    timings["codegen"] = time.perf_counter() - phase_times.get("codegen", time.perf_counter())
    if on_phase:
        on_phase("export_library")
    t0 = time.perf_counter()
    lib_path = out_dir / LIB_NAMES[desc.output_format]
    if desc.output_format == "tar":
        from tvm.support import tar as _tar

        ex.export_library(str(lib_path), fcompile=_tar.tar)
    elif link == "ndk":
        from tvm.contrib import ndk

        ex.export_library(str(lib_path), fcompile=ndk.create_shared)
    elif link == "cross":
        from tvm.support import cc

        ex.export_library(str(lib_path), fcompile=cc.cross_compiler(cross_linker(resolved_host(desc)["mtriple"])))
    else:
        ex.export_library(str(lib_path))
    timings["export_library"] = time.perf_counter() - t0
    return lib_path, exported
