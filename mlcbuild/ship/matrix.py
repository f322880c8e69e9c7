"""Build matrices: every (recipe, target) pair, in parallel local processes or as Ray tasks,
sharing the local cache (its per-key lock builds a key once) and the remote cache.

Ray (``pip install ray``) is used only with ``--ray ADDRESS``: each pair is a ``ray.remote``
task calling :func:`build_pair` on whichever node the cluster picks; nodes share builds
through ``MLCBUILD_REMOTE_CACHE``, which the tasks inherit.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from pathlib import Path
from typing import Any, Callable

from mlcbuild.errors import MlcbuildError


def build_pair(recipe: str, target: str, cache_dir: str | None, remote: str | None) -> dict[str, Any]:
    """Compile one pair (in a worker process or a Ray task): a summary row, or the error.

    Returns:
        ``{"recipe", "target", "key", "cache" ("miss"/"hit"/"remote"), "seconds",
        "size_bytes", "artifact"}``, or ``{"recipe", "target", "error", "fix"}``.
    """

    from mlcbuild.artifacts.cache import Cache
    from mlcbuild.artifacts.compile import compile_recipe
    from mlcbuild.spec.recipe import load_recipe
    from mlcbuild.spec.target import load_target

    row: dict[str, Any] = {"recipe": recipe, "target": target}
    try:
        res = compile_recipe(load_recipe(recipe), load_target(target), cache=Cache(cache_dir, remote=remote))
    except MlcbuildError as e:
        return row | {"error": f"{e.path + ': ' if e.path else ''}{e.message}", "fix": e.fix}
    from mlcbuild.artifacts.info import read_build

    build = read_build(res.artifact)
    return row | {
        "key": res.key,
        "cache": res.cache,
        "seconds": round(res.seconds, 2),
        "size_bytes": build.library.size_bytes,
        "artifact": str(res.artifact),
    }


def run_matrix(
    recipes: list[Path],
    targets: list[str],
    *,
    jobs: int = 2,
    cache_dir: Path | None = None,
    remote: str | None = None,
    ray_address: str | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Build every (recipe, target) pair; rows in recipe-major order.

    Args:
        jobs: local worker processes (each compiles one pair at a time; ~1-2 GiB each).
        ray_address: a Ray cluster (``"auto"``, ``"ray://host:10001"``, ``"local"``: start one on
            this machine); ``None``: local processes.
        on_done: called with each row as it finishes (progress).
    Raises:
        MlcbuildError: ``ray_address`` given but Ray is not installed or not reachable.
    """
    pairs = [(str(r), t) for r in recipes for t in targets]
    remote = remote or os.environ.get("MLCBUILD_REMOTE_CACHE")
    cache = str(cache_dir) if cache_dir else None
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    if ray_address is not None:
        try:
            import ray
        except ImportError as e:
            raise MlcbuildError(
                "--ray needs Ray", fix="pip install ray (or drop --ray to build in local processes)"
            ) from e
        started = not ray.is_initialized()
        try:
            ray.init(address=ray_address, ignore_reinit_error=True)
        except Exception as e:
            raise MlcbuildError(f"cannot reach the Ray cluster at {ray_address}: {e}", fix="check the address") from e
        try:
            task = ray.remote(build_pair)
            refs = {task.remote(r, t, cache, remote): (r, t) for r, t in pairs}
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                row = ray.get(done[0])
                rows[refs[done[0]]] = row
                if on_done:
                    on_done(row)
        finally:
            if started:
                ray.shutdown()
    else:
        ctx = multiprocessing.get_context("spawn")  # TVM's thread pool does not survive fork
        with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx) as pool:
            futures = {pool.submit(build_pair, r, t, cache, remote): (r, t) for r, t in pairs}
            for fut in concurrent.futures.as_completed(futures):
                row = fut.result()
                rows[futures[fut]] = row
                if on_done:
                    on_done(row)
    return [rows[p] for p in pairs]
