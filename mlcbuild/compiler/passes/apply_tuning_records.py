"""ApplyTuningRecords: MetaSchedule's tuned schedules (a JSON database of tuning records) applied
to the kernels they match, before dlight's rules schedule the rest."""

from __future__ import annotations

from pathlib import Path

import tvm
from tvm import relax


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
