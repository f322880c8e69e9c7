"""CheckDeviceKernels: no GPU kernel may silently become host code, and none may exceed the
target descriptor's ``[device]`` limits (threads and shared memory per block)."""

from __future__ import annotations

import tvm
from tvm import tirx

from mlcbuild.compiler.passes.errors import raise_in_pass
from mlcbuild.errors import MlcbuildError


def _has_thread_binding(func: tirx.PrimFunc) -> bool:
    # TVMScript text is the stable interface across TIR API changes (0.27 has no stmt_functor).
    text = func.script()
    return "blockIdx" in text or "threadIdx" in text


def unscheduled_device_kernels(mod: tvm.IRModule) -> list[str]:
    """Names of PrimFuncs with no GPU thread binding (they would run as host code)."""
    bad = []
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc) and not _has_thread_binding(func):
            attrs = func.attrs or {}
            if "tirx.is_host_func" in attrs or "tir.is_host_func" in attrs:
                continue
            bad.append(gv.name_hint)
    return sorted(bad)


# what the descriptor's [device] limits bound, as TVM's GPU verifier names them
DEVICE_LIMITS = ("max_threads_per_block", "max_shared_memory_per_block")


def _lowering_prelude():
    """The first passes of TVM's default TIR pipeline (``tvm.s_tir.pipeline``), up to flat
    buffers: what ``verify_gpu_code`` reads launch dimensions and shared allocations from
    (MetaSchedule's ``VerifyGPUCode`` post-processor lowers the same way)."""
    from tvm import s_tir

    st, tx = s_tir.transform, tirx.transform
    return tvm.transform.Sequential([
        st.CanonicalizeLoop(), st.LowerCrossThreadReduction(), st.LowerInitBlock(),
        st.PlanAndUpdateBufferAllocationLocation(), st.ConvertBlocksToOpaque(), st.LiftThreadBinding(),
        st.ManifestSharedMemoryLocalStage(), st.CompactBufferAllocation(), st.LowerAutoCopy(),
        st.UnifyThreadBinding(), st.LowerMatchBuffer(), st.StmtSimplify(), st.LowerOpaqueBlock(),
        tx.FlattenBuffer(),
    ])  # fmt: skip


def device_limit_violations(mod: tvm.IRModule, limits: dict[str, int]) -> list[str]:
    """``"kernel: limit"`` for each device kernel whose launch (threads per block) or shared
    memory (bytes per block) exceeds ``limits`` (keys of :data:`DEVICE_LIMITS`), checked by
    TVM's ``s_tir.analysis.verify_gpu_code`` on each kernel lowered alone. A kernel launched
    with a symbolic thread count (none of ours or dlight's so far) is left to the driver."""
    from tvm import s_tir

    limits = {k: int(v) for k, v in limits.items() if k in DEVICE_LIMITS and v is not None}
    if not limits:
        return []
    prelude, bad = _lowering_prelude(), []
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc) or not _has_thread_binding(func):
            continue
        lowered = prelude(tvm.IRModule({gv: func}))
        for _, f in lowered.functions_items():
            for k, v in limits.items():
                try:
                    ok = s_tir.analysis.verify_gpu_code(f, {k: v})
                except tvm.error.InternalError as e:  # a symbolic thread extent: the driver checks it at launch
                    if "(extent) is false" not in str(e):
                        raise
                    ok = True
                if not ok:
                    bad.append(f"{gv.name_hint}: {k}")
    return sorted(set(bad))


def check_device_kernels(target_kind: str, limits: dict[str, int] | None = None, where: str | None = None):
    """A pass that fails if any kernel of a GPU build has no thread binding, or exceeds the
    target descriptor's ``limits`` (:func:`device_limit_violations`).

    Args:
        limits: the descriptor's ``[device]`` table (``max_threads_per_block``, ...).
        where: the descriptor file, named in the error.
    Raises:
        MlcbuildError: naming the kernels; without this they compile silently as
            (slow, wrong-place) host code, or fail on the device at launch.
    """

    @tvm.transform.module_pass(opt_level=0, name="CheckDeviceKernels")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        bad = unscheduled_device_kernels(mod)
        if bad:
            raise_in_pass(
                MlcbuildError(
                    f"{len(bad)} kernel(s) have no {target_kind} schedule and would run on the host: {', '.join(bad[:8])}",
                    fix="add a schedule rule for them in mlcbuild/compiler/pipeline.py",
                )
            )
        over = device_limit_violations(mod, limits or {})
        if over:
            shown = ", ".join(over[:8]) + (f" and {len(over) - 8} more" if len(over) > 8 else "")
            raise_in_pass(
                MlcbuildError(
                    f"{len(over)} kernel launch(es) exceed the device's limits "
                    f"({', '.join(f'{k} = {v}' for k, v in (limits or {}).items() if k in DEVICE_LIMITS)}): {shown}",
                    path=where,
                    fix="check the [device] limits against the device (`mlcbuild targets probe`); a device that "
                    "small cannot run these kernels",
                )
            )
        return mod

    return _pass
