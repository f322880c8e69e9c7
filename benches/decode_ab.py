"""Two host builds of one model decoding in one process, alternately: what a kernel change gives end to end.

``A`` and ``B`` are build directories (``mlcbuild compile RECIPE --json`` before and after a
change: the build key hashes mlcbuild's sources, so each source state is its own build) of the
same recipe, ``WEIGHTS`` their converted weights. Both engines are loaded once; each round
runs, for each build in turn (the order alternates between rounds so machine drift cancels), a
fresh KV cache, a 16-token prefill, then ``--steps`` decode steps of fixed ids, timed. Prints
every round's decode tokens/s per build, the medians and their ratio B / A (``--prefill N``:
the tokens/s of an ``N``-token prefill instead, as ``llama-bench -p N``). Threads:
``TVM_NUM_THREADS`` (all cores by default, as ``mlcbuild bench --local``).

    TVM_NUM_THREADS=2 .venv/bin/python benches/decode_ab.py A B WEIGHTS --rounds 16
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def decode_rate(engine, steps: int, prompt_tokens: int = 16) -> float:
    """Decode tokens/s of ``steps`` steps (fixed ids) after a fresh ``prompt_tokens``-token prefill."""
    engine.reset()
    engine.step(np.arange(prompt_tokens), "prefill")
    start = time.perf_counter()
    for i in range(steps):
        engine.step(np.asarray([5 + i]), "decode")
    return steps / (time.perf_counter() - start)


def prefill_rate(engine, tokens: int) -> float:
    """Prefill tokens/s of a fresh ``tokens``-token prompt (fixed ids)."""
    engine.reset()
    start = time.perf_counter()
    engine.step(np.arange(tokens) % 1000 + 5, "prefill")
    return tokens / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("weights", type=Path)
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--prefill", type=int, default=0, help="time an N-token prefill instead of decode")
    args = ap.parse_args()
    from mlcbuild.runtime.artifact import open_local
    from mlcbuild.runtime.engine import use_all_cores

    use_all_cores()
    engines = {"A": open_local(args.a, args.weights)[0], "B": open_local(args.b, args.weights)[0]}
    rate = (lambda e: prefill_rate(e, args.prefill)) if args.prefill else (lambda e: decode_rate(e, args.steps))
    for engine in engines.values():  # warm-up: first calls, page faults
        rate(engine)
    rates: dict[str, list[float]] = {"A": [], "B": []}
    for r in range(args.rounds):
        for name in "AB" if r % 2 == 0 else "BA":
            rates[name].append(rate(engines[name]))
    for name in "AB":
        print(
            f"{name}: median {statistics.median(rates[name]):.1f} tok/s  " + " ".join(f"{x:.0f}" for x in rates[name])
        )
    print(f"B / A = {statistics.median(rates['B']) / statistics.median(rates['A']):.3f}")


if __name__ == "__main__":
    main()
