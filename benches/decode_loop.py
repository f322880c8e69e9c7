"""A bare decode loop to profile (``perf record .venv/bin/python benches/decode_loop.py ART W``):
``--rounds`` times, a 3-token prefill then 128 greedy-free decode steps (ids fixed), printing
each round's decode tokens/s. No measurement of its own beyond that line; see
``benches/decode_overhead.py`` for the timed split of a step."""

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("weights", type=Path)
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args()
    from decode_ab import decode_rate

    from mlcbuild.runtime.artifact import open_local
    from mlcbuild.runtime.engine import use_all_cores

    use_all_cores()
    eng, _ = open_local(args.artifact, args.weights)
    for _ in range(args.rounds):
        print(f"{decode_rate(eng, 128, prompt_tokens=3):.1f} tok/s")


if __name__ == "__main__":
    main()
