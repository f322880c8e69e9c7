"""Where a decoded token's time goes outside the kernels: Python, the KV-cache bookkeeping, the VM.

For a host build (ARTIFACT and its converted WEIGHTS), on ``TVM_NUM_THREADS`` threads (default
all), after a 3-token prefill, each of ``--steps`` (default 128) decode steps is timed as

- **step**: :meth:`mlcbuild.runtime.engine.Engine.step` (token tensor, ``embed``, KV-cache
  ``begin_forward``, the ``decode`` function, ``end_forward``, the FFI calls between), ms;
- **decode function**: the Relax VM's ``decode`` alone (every kernel and VM instruction), ms;
- **embed** and **KV-cache begin + end forward** alone, us.

step - decode function is the fixed cost of Python and the KV-cache bookkeeping. Inside the
decode function, the VM's instrument hook (``VirtualMachine.set_instrument``) counts every
packed call by name (kernels, and VM builtins such as ``alloc_tensor``, ``tuple_getitem``,
``null_value``) and times it; the hook itself adds a Python call per packed call, so the
per-call times are upper bounds and their sum exceeds the uninstrumented function.

    .venv/bin/python benches/decode_overhead.py ARTIFACT WEIGHTS [--out benches/results/decode_overhead.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def measure(artifact: Path, weights: Path, steps: int) -> dict:
    """The timings above (ms / us) and the instrumented packed calls of one decode step."""
    from mlcbuild.runtime.artifact import open_local

    eng, _ = open_local(artifact, weights)
    eng.reset()
    eng.prefill([1, 2, 3])
    t = time.perf_counter()
    for i in range(steps):
        eng.step(np.asarray([5 + i]), "decode")
    step_ms = (time.perf_counter() - t) / steps * 1e3
    ids = eng._tensor(np.asarray([5], dtype=np.int32), eng.device)  # pylint: disable=protected-access
    fns = eng._fns  # pylint: disable=protected-access
    t = time.perf_counter()
    for _ in range(steps):
        emb = fns["embed"](ids, eng.params)
    embed_us = (time.perf_counter() - t) / steps * 1e6
    t = time.perf_counter()
    for _ in range(steps):
        eng._begin(eng.kv_cache, eng._shape(0), eng._shape(1))  # pylint: disable=protected-access
        eng._end(eng.kv_cache)  # pylint: disable=protected-access
    kv_us = (time.perf_counter() - t) / steps * 1e6
    emb = emb._create_view((1, 1, int(emb.shape[-1])))  # pylint: disable=protected-access
    eng._begin(eng.kv_cache, eng._shape(0), eng._shape(1))  # pylint: disable=protected-access
    t = time.perf_counter()
    for _ in range(steps):
        fns["decode"](emb, eng.kv_cache, eng.params)
    decode_fn_ms = (time.perf_counter() - t) / steps * 1e3
    total_us: dict[str, float] = {}
    count: dict[str, int] = {}
    start: dict[str, float] = {}

    def instrument(_func, name, before, _ret, *_args):
        if before:
            start[name] = time.perf_counter()
        else:
            total_us[name] = total_us.get(name, 0.0) + (time.perf_counter() - start[name]) * 1e6
            count[name] = count.get(name, 0) + 1
        return 0

    eng.vm.set_instrument(instrument)
    reps = 16
    for _ in range(reps):
        fns["decode"](emb, eng.kv_cache, eng.params)
    eng._end(eng.kv_cache)  # pylint: disable=protected-access
    calls = sorted(
        ({"name": n, "calls": count[n] // reps, "us": round(total_us[n] / reps, 1)} for n in total_us),
        key=lambda r: -r["us"],
    )
    builtins = [c for c in calls if c["name"].startswith("vm.builtin.") and "attention" not in c["name"]]
    return {
        "step_ms": round(step_ms, 3),
        "decode_function_ms": round(decode_fn_ms, 3),
        "outside_decode_function_ms": round(step_ms - decode_fn_ms, 3),
        "embed_us": round(embed_us, 1),
        "kv_begin_end_forward_us": round(kv_us, 1),
        "packed_calls_per_step": sum(c["calls"] for c in calls),
        "vm_builtin_calls_per_step": sum(c["calls"] for c in builtins),
        "instrumented_calls": calls,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("weights", type=Path)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--out", default=str(REPO / "benches" / "results" / "decode_overhead.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "benches"))
    from results_io import write_results

    from mlcbuild.runtime.engine import use_all_cores

    threads = use_all_cores()
    r = measure(args.artifact, args.weights, args.steps)
    print(f"{threads} threads: step {r['step_ms']} ms, decode function {r['decode_function_ms']} ms "
          f"(outside it {r['outside_decode_function_ms']} ms); embed {r['embed_us']} us, KV begin+end "
          f"{r['kv_begin_end_forward_us']} us; {r['packed_calls_per_step']} packed calls per step, "
          f"{r['vm_builtin_calls_per_step']} of them VM builtins")  # fmt: skip
    for c in r["instrumented_calls"][:12]:
        print(f"  {c['name']:56} x{c['calls']:<4} {c['us']:8.1f} us (instrumented)")
    write_results(args.out, {"benchmark": "decode_overhead", "artifact": str(args.artifact),
                             "threads": threads, "tvm_num_threads": os.environ.get("TVM_NUM_THREADS"), **r})  # fmt: skip


if __name__ == "__main__":
    main()
