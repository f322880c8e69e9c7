"""Cold and warm (cache hit) compile times of real recipes, as JSON.

Each build runs ``mlcbuild compile --json`` in a fresh process against a fresh cache
directory (cold: nothing memoized, TVM imported, full build) and then once more
(warm: a cache hit). Times are wall seconds of the whole process, as a user sees them.

    .venv/bin/python benches/compile_times.py                       # default matrix
    .venv/bin/python benches/compile_times.py --recipes recipes/smollm-135m.toml --targets s24,host
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_io import write_results

from mlcbuild.artifacts.info import read_build

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RECIPES = [
    "recipes/llama32-3b.toml",
    "recipes/llama32-1b.toml",
    "recipes/smollm-135m.toml",
    "recipes/smollm-360m.toml",
]
DEFAULT_TARGETS = ["s24", "host"]


def run_compile(recipe: str, target: str, cache: Path) -> tuple[float, dict]:
    env = {**os.environ, "MLCBUILD_CACHE": str(cache)}
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "mlcbuild.cli", "compile", recipe, "--target", target, "--json", "--allow-over-budget"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"compile {recipe} --target {target} failed:\n{out.stderr[-3000:]}")
    return wall, json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES)
    ap.add_argument("--targets", default=",".join(DEFAULT_TARGETS))
    ap.add_argument("--out", default=str(REPO / "benches" / "results" / "compile_times.json"))
    args = ap.parse_args()
    rows = []
    for recipe in args.recipes:
        for target in args.targets.split(","):
            with tempfile.TemporaryDirectory(prefix="mlcbuild-bench-") as d:
                cold_wall, cold = run_compile(recipe, target, Path(d))
                warm_wall, warm = run_compile(recipe, target, Path(d))
                build = read_build(Path(cold["artifact"])).to_json()
                assert cold["cache"] == "miss" and warm["cache"] == "hit" and cold["key"] == warm["key"]
                row = {
                    "recipe": recipe,
                    "target": target,
                    "key": cold["key"],
                    "cold_wall_s": round(cold_wall, 2),
                    "warm_wall_s": round(warm_wall, 3),
                    "warm_in_process_s": warm["seconds"],
                    "phases_s": build["seconds"],
                    "library_bytes": build["library"]["size_bytes"],
                    "memory_estimate_bytes": build["memory"],
                }
                rows.append(row)
                print(
                    f"{recipe:32} {target:12} cold {cold_wall:7.1f} s  warm {warm_wall:6.3f} s  "
                    f"lib {row['library_bytes'] / 2**20:6.1f} MiB",
                    flush=True,
                )
    write_results(args.out, {"benchmark": "compile_times", "results": rows})


if __name__ == "__main__":
    main()
