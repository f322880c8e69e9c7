"""``mlcbuild tune``: MetaSchedule on the device itself, over TVM RPC, into ``tuning_logs/<target>/``.

1. **Tasks**: the model's kernels as the schedule phase sees them
   (:func:`mlcbuild.compiler.export.front_module`), keeping those MetaSchedule can tune:
   static shapes (batch-1 decode GEMVs with fused dequantization, RMSNorm, the SwiGLU
   activation), no kernels the KV cache already schedules, no pure reshapes.
2. **Search**: per task, ``tune_tir`` with an ``RPCRunner`` on a device of the key (the
   builder compiles here; a ``.so`` for the host, cross-linked with ``TVM_NDK_CC`` for
   Android) and the XGBoost cost model (Chen et al., "Learning to Optimize Tensor
   Programs", NeurIPS 2018; Shao et al., "Tensor Program Optimization with
   Probabilistic Programs", NeurIPS 2022).
3. **Records**: after each task, the default schedule is measured the same way; the
   best record is merged into the target's ``tuning_logs/``
   (:func:`mlcbuild.artifacts.records.merge_records`) only if it is faster, so a short search
   never makes a build slower. Each task's search runs
   in its own directory under the cache with a ``done`` marker, so an interrupted run
   resumes at the first unfinished task.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from mlcbuild.artifacts.cache import Cache, content_key
from mlcbuild.artifacts.records import merge_records, read_database
from mlcbuild.artifacts.stamp import toolchain_stamp
from mlcbuild.compiler.link import link_kind
from mlcbuild.compiler.target import tvm_target
from mlcbuild.device.rpc import DeviceError, list_devices, parse_tracker
from mlcbuild.errors import MlcbuildError
from mlcbuild.spec.recipe import Recipe
from mlcbuild.spec.target import TargetDescriptor

_PURE_RESHAPE = ("reshape", "fused_reshape")


@dataclasses.dataclass
class TuneTask:
    """One kernel to tune.

    Attributes:
        name: the kernel's name in the compiled module (e.g. ``fused_dequantize2_NT_matmul12``).
        mod: an IRModule holding it as ``main``.
        workload: structural hash of ``mod`` (hex), names its search directory.
    """

    name: str
    mod: Any
    workload: str


def is_tunable(func) -> bool:
    """Whether MetaSchedule can tune a PrimFunc: every parameter a buffer of static shape,
    not already scheduled (the KV cache's kernels are), not a pure reshape."""
    import tvm
    from tvm.tirx.buffer import is_buffer_var

    from mlcbuild.compiler.passes.apply_tuning_records import is_scheduled

    if is_scheduled(func):
        return False
    return all(is_buffer_var(p) and all(isinstance(d, tvm.tirx.IntImm) for d in p.shape) for p in func.params)


def extract_tasks(recipe: Recipe, desc: TargetDescriptor) -> list[TuneTask]:
    """The tunable kernels of a recipe's model for a target, by name."""
    import tvm
    import tvm_ffi
    from tvm import tirx

    from mlcbuild.compiler.export import front_module

    mod = front_module(recipe, desc)
    tasks = []
    for gv, func in mod.functions.items():
        name = gv.name_hint
        if not isinstance(func, tirx.PrimFunc) or not is_tunable(func):
            continue
        if all(part.startswith("reshape") for part in name.removeprefix("fused_").split("_") if part):
            continue
        one = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
        tasks.append(TuneTask(name, one, f"{tvm_ffi.structural_hash(one) & (2**64 - 1):016x}"))
    return sorted(tasks, key=lambda t: t.name)


# --- builder functions, registered in MetaSchedule's build worker processes -------------


def _register_build_functions(export: str) -> None:
    """Runs in each ``LocalBuilder`` worker: our build/export (the default build imports
    ``tvm.s_tir.tensor_intrin``, ~28 s per batch, and times out)."""
    import tempfile

    import tvm
    import tvm_ffi

    @tvm_ffi.register_global_func("mlcbuild.device.tune.build", override=True)
    def _build(mod, target, _params):
        return tvm.tirx.build(mod, target=target)

    @tvm_ffi.register_global_func("mlcbuild.device.tune.export", override=True)
    def _export(rt_mod):
        path = os.path.join(tempfile.mkdtemp(prefix="mlcbuild-tune-"), "kernel.so")
        if export == "ndk":
            from tvm.contrib import ndk

            rt_mod.export_library(path, fcompile=ndk.create_shared)
        else:
            rt_mod.export_library(path)
        return path


def _light_tensor_intrin(kind: str) -> None:
    """Register only the tensor intrinsics a target can use before MetaSchedule needs them.

    ``TuneContext`` imports ``tvm.s_tir.tensor_intrin``, whose ``__init__`` parses every
    backend's intrinsics as TVMScript: 30-60 s on 2 cores, half of it CUDA's. We
    install the package without running its ``__init__`` and import the submodules of
    this target (x86 and Arm for CPUs; Metal or CUDA for those GPUs).
    """
    import importlib
    import importlib.util
    import sys
    import types

    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        spec = importlib.util.find_spec(name)
        pkg = types.ModuleType(name)
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules[name] = pkg
    subs = {"cuda": ["cuda"], "metal": ["metal"]}.get(kind, []) + ["x86", "arm_cpu"]
    for sub in subs:
        importlib.import_module(f"{name}.{sub}")


# --- the search --------------------------------------------------------------------------


@dataclasses.dataclass
class TaskResult:
    """One task's outcome.

    Attributes:
        name, workload: as in :class:`TuneTask`.
        status: ``"tuned"`` (the best record beat the default schedule and was merged into
            ``tuning_logs``), ``"default-faster"`` (it did not: no record kept, the build keeps
            the default), ``"kept-slower"`` (it did not, merged anyway: ``keep="all"``), or
            ``"resumed"`` (searched by an earlier run).
        trials: candidates measured on the device in this run.
        best_us: the best candidate's mean time on the device, µs.
        default_us: the default schedule's mean time on the device, µs (``None`` if it failed).
        seconds: wall time of the search and the default's measurement, s.
    """

    name: str
    workload: str
    status: str
    trials: int = 0
    best_us: float | None = None
    default_us: float | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_key(recipe: Recipe, desc: TargetDescriptor, key: str, trials: int, cost_model: str, cache: Cache) -> str:
    """Key of a tuning run: same inputs resume the same run."""
    return content_key(
        {
            "recipe": recipe.canonical(),
            "target": desc.data(),
            "device_key": key,
            "trials": trials,
            "cost_model": cost_model,
            "toolchain": toolchain_stamp(cache.memo),
        }
    )


def tune(
    recipe: Recipe,
    desc: TargetDescriptor,
    *,
    tracker: str,
    key: str,
    trials: int = 64,
    tuning_root: Path | None = None,
    cache: Cache | None = None,
    cost_model: str = "xgb",
    only: list[str] | None = None,
    keep: str = "faster",
    min_speedup: float = 1.05,
    session_timeout_s: float = 60.0,
    on_task: Callable[[int, int, TuneTask], None] | None = None,
    on_trials: Callable[[int], None] | None = None,
) -> list[TaskResult]:
    """Tune a recipe's kernels on the devices of ``key`` and merge the records.

    Args:
        tracker: ``"HOST:PORT"`` of the RPC tracker.
        key: the device key.
        trials: candidates measured per kernel.
        tuning_root: where ``<target>/database_*.json`` live (default: the repository's ``tuning_logs``).
        cost_model: ``"xgb"`` (MetaSchedule's default) or ``"random"``.
        only: tune just the kernels with these names.
        keep: ``"faster"``: merge a kernel's best record only if it beats the default schedule
            on the device by ``min_speedup``; ``"all"``: merge it anyway (also for kernels an
            earlier run searched).
        min_speedup: how much faster a record must be to replace the default (timing noise on
            a busy device is a few percent; a 0.1 % "win" replaced a 4.7 ms LM head with 13 ms).
        session_timeout_s: the device ends a measurement session after this long, s.
        on_task: called with ``(index, total, task)`` as each task starts.
        on_trials: called with the number of candidates of each measured batch.
    Returns:
        One :class:`TaskResult` per task, in order.
    Raises:
        DeviceError: no tracker, no device for ``key``, or every candidate of a task
            failed to run on the device (the device went away). Records of the tasks
            finished before it are already merged.
        TargetError: the target cannot be linked here (see :func:`mlcbuild.compiler.link.link_kind`).
    """
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from mlcbuild.artifacts.compile import tuning_dir

    cache = cache or Cache()
    export = link_kind(desc)
    if not any(k.key == key and k.total for k in list_devices(tracker)):
        raise DeviceError(
            f"no device with key {key!r} is registered at the tracker {tracker}",
            fix=f"start one: python -m tvm.exec.rpc_server --tracker {tracker} --key {key}",
        )
    host, port = parse_tracker(tracker)
    target = tvm_target(desc)
    dest = tuning_dir(desc, tuning_root)
    tasks = extract_tasks(recipe, desc)
    if only:
        unknown = sorted(set(only) - {t.name for t in tasks})
        if unknown:
            raise MlcbuildError(
                f"no tunable kernel named {', '.join(unknown)}; tunable: {', '.join(t.name for t in tasks)}",
                fix="pass names from that list to --kernel",
            )
        tasks = [t for t in tasks if t.name in only]
    _light_tensor_intrin(desc.kind)
    state = cache.root / "tuning" / run_key(recipe, desc, key, trials, cost_model, cache)[:32]
    state.mkdir(parents=True, exist_ok=True)

    builder = ms.builder.LocalBuilder(
        f_build="mlcbuild.device.tune.build",
        f_export="mlcbuild.device.tune.export",
        initializer=functools.partial(_register_build_functions, export),
        max_workers=max(1, (os.cpu_count() or 2) - 1),
        timeout_sec=120,
    )
    runner = ms.runner.RPCRunner(
        rpc_config=ms.runner.RPCConfig(
            tracker_host=host,
            tracker_port=port,
            tracker_key=key,
            session_priority=1,
            session_timeout_sec=int(session_timeout_s),
        ),
        evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=40, enable_cpu_cache_flush=False),
        max_workers=1,
    )
    results = []
    for i, task in enumerate(tasks):
        if on_task:
            on_task(i, len(tasks), task)
        work = state / task.workload
        done = work / "done.json"
        if done.is_file():
            prev = json.loads(done.read_text())
            if prev["status"] == "tuned" or keep == "all":
                merge_records(dest, work)
            results.append(TaskResult(task.name, task.workload, "resumed", 0, prev["best_us"], prev["default_us"]))
            continue
        if work.exists():
            shutil.rmtree(work)  # an interrupted search: its files may end mid-line
        work.mkdir(parents=True)
        counter = _Counter(on_trials)
        t0 = time.perf_counter()
        # MetaSchedule re-configures its loggers per call (console at DEBUG after the first);
        # its logs go to files in the work directory, the console stays ours.
        ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
        ms_logger.setLevel(logging.ERROR)
        for h in list(ms_logger.handlers):  # its dictConfig lists handlers by name: an unnamed one breaks it
            if h.get_name() is None:
                ms_logger.removeHandler(h)
        with tvm.transform.PassContext(opt_level=3):
            ms.tune_tir(
                mod=task.mod,
                target=target,
                work_dir=str(work),
                max_trials_global=trials,
                num_trials_per_iter=min(trials, 32),
                builder=builder,
                runner=runner,
                cost_model=cost_model,
                measure_callbacks=ms.measure_callback.MeasureCallback.create("default") + [counter.callback()],
                task_scheduler="round-robin",
                seed=0,
            )
        db = read_database(work)
        best = min((m for m, _ in db.best.values()), default=None)
        if best is None:
            raise DeviceError(
                f"no candidate of {task.name} ran on device {key!r} ({counter.trials} tried): "
                f"{(counter.error or 'no result').splitlines()[0]}",
                fix="check the device with `mlcbuild devices` and run the same command again: "
                f"finished tasks ({i} of {len(tasks)}) are kept and skipped",
            )
        default = measure_default(task, target, builder, runner)
        status = "tuned" if default is None or best * min_speedup <= default else "default-faster"
        if status == "default-faster" and keep == "all":
            status = "kept-slower"
        if status != "default-faster":
            merge_records(dest, work)
        res = TaskResult(task.name, task.workload, status, counter.trials, best * 1e6,
                         None if default is None else default * 1e6, time.perf_counter() - t0)  # fmt: skip
        done.write_text(json.dumps(res.to_json()) + "\n")
        results.append(res)
    return results


def measure_default(task: TuneTask, target, builder, runner) -> float | None:
    """The kernel's time with the default schedule (our dlight rules) on the same device,
    through the same builder and runner as the candidates, s (``None`` if it failed)."""
    import statistics

    from tvm.s_tir import meta_schedule as ms

    from mlcbuild.compiler.schedules import default_schedule

    mod = default_schedule(task.mod, target)
    (built,) = builder.build([ms.builder.BuilderInput(mod, target)])
    if built.error_msg:
        logging.getLogger(__name__).warning("default schedule of %s did not build: %s", task.name, built.error_msg)
        return None
    args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    device_type = "cpu" if target.kind.name == "llvm" else target.kind.name
    (future,) = runner.run([ms.runner.RunnerInput(built.artifact_path, device_type, args)])
    result = future.result()
    if result.error_msg or not result.run_secs:
        logging.getLogger(__name__).warning("default schedule of %s did not run: %s", task.name, result.error_msg)
        return None
    return statistics.fmean(float(x) for x in result.run_secs)


class _Counter:
    """Counts measured candidates and keeps the first error (a MetaSchedule measure callback)."""

    def __init__(self, on_trials: Callable[[int], None] | None):
        self.on_trials = on_trials
        self.trials = 0
        self.error: str | None = None

    def callback(self):
        from tvm.ir.utils import derived_object
        from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

        outer = self

        @derived_object
        class _Progress(PyMeasureCallback):
            def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
                outer.trials += len(measure_candidates)
                for b, r in zip(builder_results, runner_results, strict=False):
                    msg = b.error_msg or r.error_msg
                    if msg and outer.error is None:
                        outer.error = str(msg)
                if outer.on_trials:
                    outer.on_trials(len(measure_candidates))

        return _Progress()
