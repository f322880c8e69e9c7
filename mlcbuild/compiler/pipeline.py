"""The Relax pipeline, in named phases: the one list of what runs, in order (MLC-LLM's
``compiler_pass/pipeline.py``). Each pass lives in its own module of :mod:`.passes`.

graph     AttachLogitProcessor, AttachSoftmaxWithTemperature, AttachEmbeddingAllocator, Metal/CUDA/
          Vulkan: AttachGPUSampler (the functions MLC-LLM's engine requires beside the model's); AttachVariableBounds;
          DispatchKVCache (TVM's paged KV cache built for the target, ``create_tir_paged_kv_cache``);
          CPU: DispatchKernels (our GEMVs and prefill matmuls, :mod:`mlcbuild.kernels`, by
          shape and ISA); FuseTransposeMatmul (``x @ W^T`` as one NT matmul); CPU:
          FuseDecodeGEMV (RMSNorm, SwiGLU and residual adds into the int8 decode GEMVs)
lower     GPU: DispatchSampling, DispatchSortScan (TVM's); LegalizeOps (CPU: SiLU with a polynomial exp), AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR
tir       FuseDequantizeMatmul, DeadCodeElimination
schedule  ApplyTuningRecords (``tuning_logs/<target>/``), then the rules of :mod:`.schedules`
          (dlight defaults, fixed where they break); then ReplaceAttention (ours in place of
          TVM's: CPU always, GPU for a sliding window or a logit soft-cap); GPU:
          CheckDeviceKernels (no host-bound kernel, the descriptor's limits); CPU: MarkNoAlias
vm        memory planning (EstimateMemoryUsage after it: ``_metadata``'s memory_usage) and VM lowering
codegen   (announced last; done by ``tvm.relax.build`` after the pipeline)

Each phase is timed (seconds) into the ``timings`` dict handed in; with ``dump_ir`` each
phase's output is written as TVMScript (``01-graph.py``, ...).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import tvm
from tvm import relax
from tvm.s_tir import dlight as dl

from mlcbuild.compiler.passes.apply_tuning_records import apply_tuning_records
from mlcbuild.compiler.passes.attach_embedding_allocator import attach_embedding_allocator
from mlcbuild.compiler.passes.attach_gpu_sampler import attach_gpu_sampler
from mlcbuild.compiler.passes.attach_logit_processor import attach_logit_processor
from mlcbuild.compiler.passes.attach_metadata import estimate_memory_usage
from mlcbuild.compiler.passes.attach_softmax_with_temperature import attach_softmax_with_temperature
from mlcbuild.compiler.passes.attach_variable_bounds import attach_variable_bounds
from mlcbuild.compiler.passes.check_device_kernels import DEVICE_LIMITS, check_device_kernels
from mlcbuild.compiler.passes.cpu_legalize import cpu_legalize_map
from mlcbuild.compiler.passes.dispatch_kernels import dispatch_kernels
from mlcbuild.compiler.passes.dispatch_kv_cache import dispatch_kv_cache
from mlcbuild.compiler.passes.fuse_decode_gemv import fuse_decode_gemv
from mlcbuild.compiler.passes.fuse_dequantize_matmul import fuse_dequantize_matmul
from mlcbuild.compiler.passes.mark_noalias import mark_noalias
from mlcbuild.compiler.passes.replace_attention import replace_attention
from mlcbuild.compiler.schedules import schedule_rules
from mlcbuild.compiler.target import has_avx512, has_gfni, int8_dot_isa


def _timed(
    index: int,
    name: str,
    passes: list,
    timings: dict[str, float],
    on_phase: Callable[[str], None] | None,
    dump_ir: Path | None = None,
):
    seq = tvm.transform.Sequential(passes, name=name)

    @tvm.transform.module_pass(opt_level=0, name=f"phase_{name}")
    def _phase(mod, _ctx):
        if on_phase:
            on_phase(name)
        t0 = time.perf_counter()
        mod = seq(mod)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        if dump_ir is not None:
            dump_ir.mkdir(parents=True, exist_ok=True)
            (dump_ir / f"{index:02d}-{name}.py").write_text(mod.script(show_meta=False))
        return mod

    return _phase


def front_phases(variable_bounds: dict[str, int], target) -> list[tuple[str, list]]:
    """The phases before scheduling (graph, lower, tir): their output is what gets tuned.

    CPU (``llvm``) targets fuse the decode GEMVs' neighbours into them
    (:func:`.passes.fuse_decode_gemv`) and legalize with :func:`.passes.cpu_legalize_map`.
    """
    cpu = target.kind.name == "llvm"
    legalize = cpu_legalize_map() if cpu else None
    graph = [attach_logit_processor(target), attach_softmax_with_temperature]
    graph += [attach_embedding_allocator(variable_bounds["seq_len"]), attach_gpu_sampler(target)]
    graph += [attach_variable_bounds(variable_bounds), dispatch_kv_cache(target)]
    graph += [dispatch_kernels(int8_dot_isa(target), gfni=has_gfni(target), avx512=has_avx512(target))] if cpu else []
    graph += [relax.transform.FuseTransposeMatmul()] + ([fuse_decode_gemv] if cpu else [])
    return [
        ("graph", graph),
        (
            "lower",
            ([] if cpu else [relax.backend.DispatchSampling(), relax.backend.DispatchSortScan()])
            + [
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
    dump_ir: Path | None = None,
    memory_usage: dict[str, int] | None = None,
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
        dump_ir: a directory that gets the exported module (``00-export.py``) and each phase's
            output as TVMScript (``NN-<phase>.py``).
        memory_usage: if given, receives the bytes of each Relax function's statically planned
            temporaries (``_metadata``'s memory_usage).
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
                estimate_memory_usage(memory_usage if memory_usage is not None else {}),
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

    timed = [_timed(i, n, p, timings, on_phase, dump_ir) for i, (n, p) in enumerate(phases, 1)]
    if dump_ir is not None:  # the module as exported, before any phase
        timed.insert(0, _timed(0, "export", [], {}, None, dump_ir))
    return tvm.transform.Sequential(timed + [_codegen_starts])
