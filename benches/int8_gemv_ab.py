"""Two versions of the int8 decode GEMV (``mlcbuild/kernels/int8_gemv.py``) timed against each other.

Each version is a copy of the module file (``git show REV:mlcbuild/kernels/int8_gemv.py >
/tmp/old.py``); both build SmolLM2-135M's decode shapes for ``host`` (q4f32_1: int4 weights,
float32 scales, the ISA ``--isa``) with the prologue each has in a model (RMSNorm for q/k/v and
gate/up, SwiGLU for down, none and a residual for o), and 4-row shapes where the prologue is
nearly all the work. Inputs are random and small enough to stay in cache, so this times the
kernel's compute and its fork-join, not DRAM. Rounds alternate between the versions (machine
drift cancels); each round is ``time_evaluator`` of 200 calls. Prints the median µs per call
of each version and whether their outputs are bit-identical. ``--gfni-b``: the second version
built with ``gfni=True`` (the int4 high nibbles by GFNI; the host target has ``+gfni`` where
the CPU does), e.g. the same file twice to time that switch.

    git show HEAD~1:mlcbuild/kernels/int8_gemv.py > /tmp/old.py
    TVM_NUM_THREADS=2 .venv/bin/python benches/int8_gemv_ab.py /tmp/old.py mlcbuild/kernels/int8_gemv.py
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
from pathlib import Path

import numpy as np

# (n, k, prologue): SmolLM2-135M's q/k/v, gate/up, down, o; then the prologue alone
SHAPES = [(960, 576, "rms_norm"), (3072, 576, "rms_norm"), (576, 1536, "swiglu"), (576, 576, None),
          (4, 576, "rms_norm"), (4, 1536, "swiglu")]  # fmt: skip


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def inputs(n: int, k: int, prologue: str | None, rng) -> list[np.ndarray]:
    """The kernel's arguments in order: x, [norm weight], packed weight, scales, [residual], y."""
    x = rng.standard_normal((1, 1, 2 * k if prologue == "swiglu" else k)).astype("float32")
    out = [x] + ([rng.standard_normal(k).astype("float32")] if prologue == "rms_norm" else [])
    out += [rng.integers(0, 2**32, (n, k // 8), dtype=np.uint64).astype("uint32"),
            (rng.random((n, k // 32)) * 0.01).astype("float32")]  # fmt: skip
    out += [rng.standard_normal((1, 1, n)).astype("float32")] if prologue is None else []
    return out + [np.zeros((1, 1, n), "float32")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("versions", nargs=2, type=Path, help="two copies of int8_gemv.py")
    ap.add_argument("--isa", default="avxvnni", help="avxvnni (VNNI) or avx2")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--gfni-b", action="store_true", help="build the second version with gfni=True (GFNI hosts)")
    args = ap.parse_args()
    import tvm

    from mlcbuild.compiler.target import tvm_target
    from mlcbuild.spec.target import load_target

    target, dev = tvm_target(load_target("host")), tvm.cpu()
    mods = [load(p, f"int8_gemv_{i}") for i, p in enumerate(args.versions)]
    for n, k, prologue in SHAPES:
        libs = [
            tvm.tirx.build(
                m.int8_gemv(n, k, 4, 7, "float32", "float32", args.isa, prologue=prologue, eps=1e-5,
                            residual=prologue is None, **({"gfni": True} if args.gfni_b and i else {}))
                .with_attr("global_symbol", "main"),
                target=target,
            )
            for i, m in enumerate(mods)
        ]  # fmt: skip
        tensors = [tvm.runtime.tensor(a, dev) for a in inputs(n, k, prologue, np.random.default_rng(0))]
        times = [[] for _ in libs]
        for r in range(args.rounds):
            order = range(len(libs)) if r % 2 == 0 else reversed(range(len(libs)))
            for i in order:
                times[i].append(libs[i].time_evaluator("main", dev, number=200, repeat=1)(*tensors).mean * 1e6)
        outs = []
        for lib in libs:
            lib["main"](*tensors)
            outs.append(tensors[-1].numpy().copy())
        same = np.array_equal(outs[0], outs[1])
        print(f"{n} x {k} {prologue or 'none'}: " + " -> ".join(f"{statistics.median(t):.2f}" for t in times)
              + f" us, outputs {'bit-identical' if same else 'differ'}")  # fmt: skip


if __name__ == "__main__":
    main()
