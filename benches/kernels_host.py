"""Per-kernel host timings of a recipe's static kernels (decode GEMVs, norms) under the default schedule.

Each kernel is built alone with ``tvm.tirx.build`` and timed with random inputs
(µs, median of ``--rounds`` rounds of 10 calls each); GB/s counts every input and output
byte once. ``--variants`` times schedule variants of the same kernel in alternating rounds
(machine drift cancels): a JSON list of ``{"CPUGEMV.attr": value}`` overrides.

    .venv/bin/python benches/kernels_host.py recipes/smollm-135m.toml --scheme q4f32_1
    .venv/bin/python benches/kernels_host.py recipes/smollm-135m.toml --scheme q4f32_1 --kernel dequantize \\
        --variants '[{"CPUGEMV.rows_interleaved": 1, "CPUGEMV.vector_lanes": 16}, {}]'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("--scheme", default=None)
    ap.add_argument("--kernel", default="", help="only kernels whose name contains this")
    ap.add_argument("--variants", default="[{}]", help="JSON list of schedule-rule attribute overrides")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default=str(REPO / "benches" / "results" / "kernels_host.json"))
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    import tvm
    from results_io import write_results

    from mlcbuild.compiler import schedules
    from mlcbuild.compiler.target import tvm_target
    from mlcbuild.device.tune import extract_tasks
    from mlcbuild.spec.recipe import load_recipe
    from mlcbuild.spec.target import load_target

    recipe = load_recipe(args.recipe)
    if args.scheme:
        recipe = dataclasses.replace(recipe, scheme=args.scheme)
    desc = load_target("host")
    target = tvm_target(desc)
    variants = json.loads(args.variants)
    dev = tvm.cpu()
    rows = []
    for task in extract_tasks(recipe, desc):
        if args.kernel not in task.name:
            continue
        libs = []
        for v in variants:
            saved = {}
            for key, value in v.items():
                cls, attr = key.split(".")
                saved[key] = getattr(getattr(schedules, cls), attr)
                setattr(getattr(schedules, cls), attr, value)
            libs.append(tvm.tirx.build(schedules.default_schedule(task.mod, target), target=target))
            for key, value in saved.items():
                cls, attr = key.split(".")
                setattr(getattr(schedules, cls), attr, value)
        rng = np.random.default_rng(0)
        tensors, nbytes = [], 0
        for p in task.mod["main"].params:
            shape, dtype = [int(x) for x in p.shape], str(p.dtype)
            a = (
                rng.integers(0, 2**31, size=shape).astype(dtype)
                if "int" in dtype
                else rng.standard_normal(shape).astype(dtype)
            )
            tensors.append(tvm.runtime.tensor(a, dev))
            nbytes += a.nbytes
        samples: list[list[float]] = [[] for _ in variants]
        for _ in range(args.rounds):
            for i, lib in enumerate(libs):
                samples[i].append(lib.time_evaluator("main", dev, number=10, repeat=1)(*tensors).mean * 1e6)
        for v, s in zip(variants, samples, strict=True):
            us = statistics.median(s)
            rows.append(
                {"kernel": task.name, "variant": v, "us": round(us, 2), "gb_per_s": round(nbytes / us / 1e3, 2)}
            )
            print(f"{task.name:45} {json.dumps(v):60} {us:9.1f} us {nbytes / us / 1e3:6.2f} GB/s", flush=True)
    write_results(
        args.out,
        {
            "benchmark": "kernels_host",
            "recipe": args.recipe,
            "scheme": recipe.scheme,
            "threads": args.threads,
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
