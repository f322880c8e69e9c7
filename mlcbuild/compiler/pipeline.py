"""The Relax pipeline, in named phases.

graph     FuseTransposeMatmul (``x @ W^T`` as one NT matmul); CPU: FuseDecodeGEMV (RMSNorm,
          SwiGLU and residual adds into the int8 decode GEMVs)
lower     LegalizeOps (CPU: SiLU with a polynomial exp), AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR
tir       FuseDequantizeMatmul (our pass), DeadCodeElimination
schedule  tuned records from ``tuning_logs/<target>/`` (MetaScheduleApplyDatabase),
          then the rules of :mod:`.schedules` (dlight defaults, fixed where they break); GPU builds are
          checked to have no host-bound kernel; CPU builds get our prefill and decode attention
          (:mod:`.attention`) and ``noalias`` on every kernel (``passes.mark_noalias``); GPU
          builds of a model with a sliding window or logit soft-cap get ours too
vm        memory planning and VM lowering
codegen   (announced last; done by ``tvm.relax.build`` after the pipeline)

Each phase is timed (seconds) into the ``timings`` dict handed in.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import tvm
from tvm import relax
from tvm.s_tir import dlight as dl

from .attention import replace_attention
from .passes import (
    DEVICE_LIMITS,
    attach_variable_bounds,
    check_device_kernels,
    cpu_legalize_map,
    fuse_decode_gemv,
    fuse_dequantize_matmul,
    mark_noalias,
)
from .schedules import schedule_rules


def _timed(name: str, passes: list, timings: dict[str, float], on_phase: Callable[[str], None] | None):
    seq = tvm.transform.Sequential(passes, name=name)

    @tvm.transform.module_pass(opt_level=0, name=f"phase_{name}")
    def _phase(mod, _ctx):
        if on_phase:
            on_phase(name)
        t0 = time.perf_counter()
        mod = seq(mod)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        return mod

    return _phase


def is_scheduled(func) -> bool:
    """Whether a function is a PrimFunc already marked ``tirx.is_scheduled`` (dlight skips those)."""
    attrs = getattr(func, "attrs", None)
    return isinstance(func, tvm.tirx.PrimFunc) and attrs is not None and int(attrs.get("tirx.is_scheduled", 0)) == 1


def apply_tuning_records(work_dir: Path | None, tuned: list[str] | None = None):
    """``MetaScheduleApplyDatabase`` over a JSON database directory, or a no-op.

    Kernels it schedules are marked ``tirx.is_scheduled`` (dlight then leaves them
    alone); their names are appended to ``tuned``.
    """
    if work_dir is None:
        return tvm.transform.Sequential([])
    from tvm.s_tir import meta_schedule as ms

    @tvm.transform.module_pass(opt_level=0, name="ApplyTuningRecords")
    def _pass(mod, _ctx):
        db = ms.database.JSONDatabase(
            path_workload=str(work_dir / "database_workload.json"),
            path_tuning_record=str(work_dir / "database_tuning_record.json"),
        )
        before = {gv.name_hint for gv, f in mod.functions.items() if is_scheduled(f)}
        with db:
            mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        if tuned is not None:
            now = {gv.name_hint for gv, f in mod.functions.items() if is_scheduled(f)}
            tuned.extend(sorted(now - before))
        return mod

    return _pass


def front_phases(variable_bounds: dict[str, int], target) -> list[tuple[str, list]]:
    """The phases before scheduling (graph, lower, tir): their output is what gets tuned.

    CPU (``llvm``) targets fuse the decode GEMVs' neighbours into them
    (:func:`.passes.fuse_decode_gemv`) and legalize with :func:`.passes.cpu_legalize_map`.
    """
    cpu = target.kind.name == "llvm"
    legalize = cpu_legalize_map() if cpu else None
    graph = [attach_variable_bounds(variable_bounds), relax.transform.FuseTransposeMatmul()]
    return [
        ("graph", graph + ([fuse_decode_gemv] if cpu else [])),
        (
            "lower",
            [
                relax.transform.LegalizeOps(customize_legalize_map=legalize),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
            ],
        ),
        ("tir", [fuse_dequantize_matmul, relax.transform.DeadCodeElimination()]),
    ]


def build_pipeline(
    target,
    variable_bounds: dict[str, int],
    timings: dict[str, float],
    tuning_dir: Path | None = None,
    on_phase: Callable[[str], None] | None = None,
    tuned: list[str] | None = None,
    device_file: str | None = None,
):
    """The whole Relax pipeline for ``target``, as one pass for ``tvm.relax.build``.

    Args:
        target: the ``tvm.target.Target`` (with host).
        variable_bounds: largest run-time value of each symbolic size, tokens/sequences.
        timings: filled with seconds per phase.
        tuning_dir: a MetaSchedule JSON database to apply first, if any.
        on_phase: called with each phase's name as it starts (progress display).
        tuned: if given, receives the names of the kernels scheduled from tuning records.
        device_file: the target descriptor, named when a kernel exceeds its ``[device]`` limits.
    """
    is_gpu = "gpu" in target.keys
    phases = front_phases(variable_bounds, target) + [
        (
            "schedule",
            [apply_tuning_records(tuning_dir, tuned), dl.ApplyDefaultSchedule(*schedule_rules(target))]
            + (
                [
                    replace_attention(gpu=True),
                    check_device_kernels(
                        target.kind.name, {k: target.attrs.get(k) for k in DEVICE_LIMITS}, where=device_file
                    ),
                ]
                if is_gpu
                else [replace_attention(gpu=False), mark_noalias]
            ),
        ),
        (
            "vm",
            [
                relax.transform.RewriteDataflowReshape(),
                relax.transform.ToNonDataflow(),
                relax.transform.RemovePurityChecking(),
                relax.transform.CallTIRRewrite(),
                relax.transform.StaticPlanBlockMemory(),
                relax.transform.LowerAllocTensor(),
                relax.transform.KillAfterLastUse(),
                relax.transform.LowerRuntimeBuiltin(),
                relax.transform.ComputePrimValue(),
                relax.transform.VMShapeLower(),
                relax.transform.AttachGlobalSymbol(),
            ],
        ),
    ]

    @tvm.transform.module_pass(opt_level=0, name="announce_codegen")
    def _codegen_starts(mod, _ctx):
        if on_phase:
            on_phase("codegen")  # tvm.relax.build generates machine code after the pipeline
        return mod

    return tvm.transform.Sequential([_timed(n, p, timings, on_phase) for n, p in phases] + [_codegen_starts])
