"""What MetaSchedule tuning buys on ``host`` (or ``pocl``): per kernel and end to end.

Starts a real TVM tracker and server on 127.0.0.1 (the host CPU as the device; with
``--target pocl`` a server running TVM's OpenCL runtime on PoCL, its OpenCL device), runs
``mlcbuild tune`` on the recipe's tunable kernels (into a scratch ``tuning_logs``, not
the repository's: records for "this machine" do not belong in version control), then:

- per kernel: ``tune``'s own measurements on the device (the best candidate and the
  default schedule, same runner) and whether the record was kept (only if faster);
  then, for kept records, both schedules built alone and timed here with
  ``time_evaluator`` (µs, median of ``--repeat`` repeats, random inputs);
- end to end: decode tokens/s of the default build and of the tuned build (random
  weights, 16-token prompt, ``--gen`` new tokens, median of ``--runs``).

    .venv/bin/python benches/tuning_gain.py --recipe recipes/smollm-135m.toml --scheme q4f32_1 --trials 32
    .venv/bin/python benches/tuning_gain.py --target pocl --trials 8 --gen 16 --out benches/results/tuning_gain_pocl.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_io import write_results

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benches"))


def kernel_us(mod, target, repeat: int, dev) -> float:
    """Median time of one kernel (``mod["main"]``, already scheduled) on ``dev``, µs."""
    import tvm

    lib = tvm.tirx.build(mod, target=target)
    rng = np.random.default_rng(0)
    args = []
    for p in mod["main"].params:
        shape = [int(d) for d in p.shape]
        dtype = str(p.dtype)
        if dtype.startswith("uint"):
            a = rng.integers(0, 2**31, size=shape).astype(dtype)
        else:
            a = rng.standard_normal(shape).astype(dtype)
        args.append(tvm.runtime.tensor(a, dev))
    f = lib.time_evaluator("main", dev, number=20, repeat=repeat, min_repeat_ms=50)
    return statistics.median(f(*args).results) * 1e6


def tuned_scheduled(mod, target, logs: Path):
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.JSONDatabase(work_dir=str(logs), allow_missing=False)
    sch = db.query_schedule(mod, target=target, workload_name="main")
    return None if sch is None else sch.mod


def decode_tps(artifact: Path, recipe, specs, gen: int, runs: int, device_kind: str) -> list[float]:
    from decode_host import random_params

    from mlcbuild.artifacts.info import read_build
    from mlcbuild.runtime.engine import Engine, Stats, generate

    build = read_build(artifact)
    m = Engine.local(
        artifact / build.library.file,
        random_params(specs),
        device_kind=device_kind,
        vocab_size=recipe.model_config.vocab_size,
        context_window_size=recipe.build.context_window_size,
        prefill_chunk_size=recipe.build.prefill_chunk_size,
        page_size=recipe.build.page_size,
    )
    ids = list(range(1, 17))
    list(generate(m, ids[:4], 4))
    out = []
    for _ in range(runs):
        st = Stats()
        list(generate(m, ids, gen + 1, stats=st))
        out.append(st.decode_tokens / st.decode_s)
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/smollm-135m.toml")
    ap.add_argument("--scheme", default="q4f32_1")
    ap.add_argument("--target", default="host", help="host, or pocl (OpenCL on PoCL: make opencl-runtime)")
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "benches" / "results" / "tuning_gain.json"))
    args = ap.parse_args()

    from mlcbuild.artifacts.cache import Cache
    from mlcbuild.artifacts.compile import compile_recipe
    from mlcbuild.artifacts.convert import param_specs
    from mlcbuild.compiler.schedules import default_schedule
    from mlcbuild.compiler.target import tvm_target
    from mlcbuild.device.rpc import LocalCluster
    from mlcbuild.device.tune import extract_tasks, tune
    from mlcbuild.runtime.engine import use_all_cores
    from mlcbuild.spec.recipe import load_recipe
    from mlcbuild.spec.target import load_target

    use_all_cores()  # time kernels here with the same thread count as the device (its server)
    recipe = dataclasses.replace(load_recipe(args.recipe), scheme=args.scheme)
    from mlcbuild.runtime.devices import device_for

    desc = load_target(args.target)
    target = tvm_target(desc)
    dev = device_for(desc.kind)
    cache = Cache()
    logs = Path(tempfile.mkdtemp(prefix="mlcbuild-tuning-logs-"))
    t0 = time.perf_counter()
    with LocalCluster(key=desc.name, device_kind=desc.kind) as cluster:
        results = tune(recipe, desc, tracker=cluster.tracker, key=desc.name, trials=args.trials, tuning_root=logs,
                       cache=cache, on_task=lambda i, n, t: print(f"tuning [{i + 1}/{n}] {t.name}", flush=True))  # fmt: skip
    tune_s = time.perf_counter() - t0
    tasks = {t.name: t for t in extract_tasks(recipe, desc)}
    kernels = []
    for r in results:
        tuned_mod = tuned_scheduled(tasks[r.name].mod, target, logs / desc.name)
        tuned_us = kernel_us(tuned_mod, target, args.repeat, dev) if tuned_mod is not None else None
        default_us = kernel_us(default_schedule(tasks[r.name].mod, target), target, args.repeat, dev)
        row = {"kernel": r.name, "status": r.status, "trials": r.trials, "search_s": round(r.seconds, 1),
               "device_default_us": _r(r.default_us), "device_best_us": _r(r.best_us),
               "default_us": _r(default_us), "tuned_us": _r(tuned_us),
               "speedup": None if tuned_us is None else round(default_us / tuned_us, 3)}  # fmt: skip
        kernels.append(row)
        print(json.dumps(row), flush=True)
    _, specs = param_specs(recipe)
    plain = compile_recipe(recipe, desc, cache=cache)
    tuned = compile_recipe(recipe, desc, cache=cache, tuning_root=logs)
    from mlcbuild.artifacts.info import read_build

    tuned_names = read_build(tuned.artifact).to_json()["tuned_kernels"]
    before = decode_tps(plain.artifact, recipe, specs, args.gen, args.runs, desc.kind)
    after = decode_tps(tuned.artifact, recipe, specs, args.gen, args.runs, desc.kind)
    out = {
        "benchmark": "tuning_gain",
        "recipe": args.recipe,
        "scheme": args.scheme,
        "target": desc.name,
        "trials_per_kernel": args.trials,
        "tuning_seconds": round(tune_s, 1),
        "kernels": kernels,
        "tuned_kernels_in_build": tuned_names,
        "decode_tokens_per_s": {
            "default": round(statistics.median(before), 2),
            "tuned": round(statistics.median(after), 2),
            "default_samples": [round(x, 2) for x in before],
            "tuned_samples": [round(x, 2) for x in after],
        },
        "keys": {"default": plain.key, "tuned": tuned.key},
    }
    print(json.dumps(out["decode_tokens_per_s"]))
    write_results(args.out, out)


if __name__ == "__main__":
    main()
