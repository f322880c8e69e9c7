"""Tuning records in ``tuning_logs/<target>/``: MetaSchedule's JSON database, kept reviewable.

Two files, TVM's own format, loadable by ``tvm.s_tir.meta_schedule.database.JSONDatabase``:

- ``database_workload.json``: one line per workload, ``[structural_hash, module_json]``;
- ``database_tuning_record.json``: one line per record, ``[workload_index, [trace,
  run_secs, target, args_info]]`` (``run_secs`` in seconds per run).

:func:`merge_records` folds the records of a tuning run into the directory, keeping
the best record (lowest mean ``run_secs``) per workload. Workloads keep their line
(new ones are appended) and records follow workload order, so a merge changes only the
lines of what got faster or new: a diff a reviewer can read. Both files are replaced
atomically under a lock (workloads first: an interruption between the two renames
leaves a consistent pair, since existing indices never move).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from pathlib import Path

from filelock import FileLock

from mlcbuild.artifacts.cache import content_key, file_sha256
from mlcbuild.errors import MlcbuildError

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
FAILED_RUN_S = 1e9  # MetaSchedule marks a failed run with 1e10 s


@dataclasses.dataclass
class Database:
    """A JSON database read into memory: workload lines and the best record per workload.

    Attributes:
        workloads: ``[structural_hash, module_json]`` per workload, file order.
        best: workload index -> ``(mean run_secs, record)`` (record as in the file, without the index).
    """

    workloads: list[list]
    best: dict[int, tuple[float, list]]

    def mean_s(self, index: int) -> float | None:
        """Mean run time of the best record of workload ``index``, s (``None`` if none ran)."""
        hit = self.best.get(index)
        return hit[0] if hit else None


def _lines(path: Path) -> list:
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError as e:
            raise MlcbuildError(
                f"line {n} is not JSON ({e})",
                path=path,
                fix="restore the file from version control (git checkout), or delete the directory and tune again",
            ) from e
    return out


def _mean_s(record: list) -> float | None:
    run_secs = [float(x) for x in (record[1] or [])]
    if not run_secs or max(run_secs) >= FAILED_RUN_S:
        return None
    return statistics.fmean(run_secs)


def read_database(directory: Path) -> Database:
    """Read ``directory``'s two files (missing files: an empty database).

    Raises:
        MlcbuildError: a line is not JSON or names a workload that is not there.
    """
    workloads = _lines(directory / WORKLOAD_FILE)
    best: dict[int, tuple[float, list]] = {}
    for rec in _lines(directory / RECORD_FILE):
        index, record = int(rec[0]), rec[1]
        if not 0 <= index < len(workloads):
            raise MlcbuildError(
                f"a tuning record names workload {index} but {WORKLOAD_FILE} has {len(workloads)}",
                path=directory / RECORD_FILE,
                fix="restore both files from version control, or delete the directory and tune again",
            )
        mean = _mean_s(record)
        if mean is not None and (index not in best or mean < best[index][0]):
            best[index] = (mean, record)
    return Database(workloads, best)


@dataclasses.dataclass
class MergeResult:
    """What a merge changed: workloads added, records improved (with old and new mean, s)."""

    added: list[str]
    improved: list[tuple[str, float, float]]
    kept: int


def merge_records(dest: Path, source: Path) -> MergeResult:
    """Fold ``source``'s records into ``dest``, keeping the best per workload.

    Args:
        dest: ``tuning_logs/<target>/`` (created if missing).
        source: the JSON database of a tuning run.
    Returns:
        :class:`MergeResult`; workloads are named by their structural hash.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest / ".merge.lock")):
        have = read_database(dest)
        new = read_database(source)
        index_of = {_workload_id(w): i for i, w in enumerate(have.workloads)}
        workloads = list(have.workloads)
        best = dict(have.best)
        added, improved = [], []
        for j, wl in enumerate(new.workloads):
            if j not in new.best:
                continue
            wid = _workload_id(wl)
            if wid not in index_of:
                index_of[wid] = len(workloads)
                workloads.append(wl)
                added.append(str(wl[0]))
            i = index_of[wid]
            mean, record = new.best[j]
            if i in best and best[i][0] <= mean:
                continue
            if i in best:
                improved.append((str(wl[0]), best[i][0], mean))
            best[i] = (mean, record)
        _write_atomic(dest / WORKLOAD_FILE, [json.dumps(w, separators=(",", ":")) for w in workloads])
        _write_atomic(
            dest / RECORD_FILE,
            [json.dumps([i, best[i][1]], separators=(",", ":")) for i in range(len(workloads)) if i in best],
        )
    return MergeResult(added=added, improved=improved, kept=len(best))


def _workload_id(workload: list) -> str:
    # The hash alone may collide; the module's JSON does not.
    return content_key(workload)


def _write_atomic(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def tuning_digest(directory: Path) -> dict | None:
    """Digest of the tuning records in ``directory``: it enters the build's cache key.

    Returns:
        ``{"files": {name: sha256}, "digest": sha256}``, or ``None`` when there are no records.
    """
    rec = directory / RECORD_FILE
    wl = directory / WORKLOAD_FILE
    if not rec.is_file() or not wl.is_file() or rec.stat().st_size == 0:
        return None
    files = {f.name: file_sha256(f) for f in (wl, rec)}
    return {"files": files, "digest": content_key(files)}
