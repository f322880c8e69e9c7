"""From a recipe and a target to a library file: the pipeline (:mod:`.pipeline`) over the exported
model (:mod:`.export`), then TVM's code generation, written in the target's output form and
linked for its host (:mod:`.link`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import tvm
from tvm import relax

from mlcbuild.compiler.export import ExportedModel, export_model, variable_bounds
from mlcbuild.compiler.fresh_thread import in_fresh_thread
from mlcbuild.compiler.link import cross_linker, link_kind
from mlcbuild.compiler.metadata import model_metadata
from mlcbuild.compiler.passes.attach_metadata import with_metadata
from mlcbuild.compiler.passes.errors import user_errors
from mlcbuild.compiler.pipeline import build_pipeline
from mlcbuild.compiler.target import check_codegen, resolved_host, tvm_target
from mlcbuild.spec.recipe import Recipe
from mlcbuild.spec.target import TargetDescriptor

LIB_NAMES = {"so": "lib.so", "tar": "lib.tar"}


@in_fresh_thread  # TVMScript parsing inspects the whole caller stack
def build_library(
    recipe: Recipe,
    desc: TargetDescriptor,
    out_dir: Path,
    timings: dict[str, float],
    tuning_dir: Path | None = None,
    on_phase: Callable[[str], None] | None = None,
    workarounds: list[str] | None = None,
    tuned: list[str] | None = None,
    finalize: Callable[[tvm.IRModule], tvm.IRModule] | None = None,
    dump_ir: Path | None = None,
) -> tuple[Path, ExportedModel]:
    """Compile the recipe for a target and write the library into ``out_dir``.

    The library is ``lib.so`` (``output.format = "so"``) or ``lib.tar``: a tar of
    object files of a system library whose symbols carry
    ``recipe.build.system_lib_prefix`` (``"tar"``, for static linking in apps).

    Returns:
        ``(library path, exported model)``; ``timings`` gains seconds per phase and
        ``workarounds`` (if given) a line per compiler bug worked around, ``tuned`` (if
        given) the names of the kernels scheduled from tuning records. ``finalize``: applied
        to the module after the pipeline, before code generation (``compile`` adds the ABI
        stamp function there: TVM's Relax passes choke on a function returning a string),
        after ``_metadata`` (:mod:`mlcbuild.compiler.metadata`) is added.
        ``dump_ir``: a directory that gets the module's TVMScript after each phase.
    Raises:
        TargetError: the installed TVM cannot generate code for the target.
    """
    check_codegen(desc)  # before any work: fail at once for a backend this TVM lacks
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
    memory_usage: dict[str, int] = {}
    pipeline = build_pipeline(
        target,
        variable_bounds(recipe),
        timings,
        tuning_dir,
        phase,
        tuned,
        device_file=where,
        dump_ir=dump_ir,
        memory_usage=memory_usage,
    )
    metadata = model_metadata(recipe, exported.params)

    def _finalize(m, _ctx):
        m = with_metadata(m, {**metadata, "memory_usage": dict(memory_usage)})
        return finalize(m) if finalize is not None else m

    pipeline = tvm.transform.Sequential(
        [pipeline, tvm.transform.module_pass(_finalize, opt_level=0, name="mlcbuild.Finalize")]
    )
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
