"""Host CPU prefill and decode speed, next to the memory-bandwidth roofline.

For each recipe shape and scheme: random Hugging Face weights of the recipe's config
(seed 0; speed does not depend on values) are converted by our converter, the recipe is
compiled for ``host`` (through the cache), then per run it prefills ``--prompt`` tokens
and decodes ``--gen`` tokens; the median over ``--runs`` is reported.

Decode at batch 1 is memory-bound: tokens/s <= bandwidth / bytes of weights read per
token. Bytes per token = every parameter except the embedding table (a decode step
gathers one row), plus the embedding when it doubles as the tied LM head. KV-cache
reads are left out (small at these lengths). Bandwidth is the read bandwidth of a parallel
sum over 1 GiB on the same threads (:func:`read_bandwidth`).

llama.cpp side by side: ``benches/vs_llamacpp.py`` (its own ``llama-bench`` on the same weights).

    .venv/bin/python benches/decode_host.py                 # SmolLM-135M and Llama-3.2-1B shapes
    .venv/bin/python benches/decode_host.py --recipes recipes/smollm-135m.toml --schemes q4f16_1 --runs 3
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DTYPE_BYTES = {"float32": 4, "float16": 2, "uint32": 4}


def read_bandwidth(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """Bytes/s read from memory by all ``TVM_NUM_THREADS`` threads, best of ``repeats``.

    Decode streams weights (reads only), so the roofline uses read bandwidth: a TVM kernel
    summing 1 GiB of float32, parallel over 1 MiB chunks each read as 8 interleaved streams
    (as the GEMVs read rows: here one stream per thread read 9.8 GB/s on one core, 8
    streams 15.7 GB/s, and 27.2 GB/s on two cores), on the same threads decode uses. (A one-thread NumPy copy, used before,
    understated two-thread bandwidth: a q0f32 decode measured at 117 % of that "roofline".)
    """
    import tvm
    from tvm.script import tirx as T

    from mlcbuild.compiler.target import tvm_target
    from mlcbuild.spec.target import load_target

    n = nbytes // 4
    chunk, lanes, streams = 1 << 18, 16, 8  # 1 MiB per task, read as 8 interleaved streams
    part = chunk // streams

    @T.prim_func(s_tir=False)
    def total(a: T.Buffer((n,), "float32"), out: T.Buffer((n // chunk, streams, lanes), "float32")):
        T.func_attr({"tirx.noalias": True})
        for c in T.parallel(n // chunk):
            for s, j in T.grid(streams, lanes):
                out[c, s, j] = T.float32(0)
            for i in range(part // lanes):
                for s in T.unroll(streams):
                    for j in T.vectorized(lanes):
                        out[c, s, j] = out[c, s, j] + a[c * chunk + s * part + i * lanes + j]

    lib = tvm.tirx.build(tvm.IRModule({"main": total}), target=tvm_target(load_target("host")))
    dev = tvm.cpu()
    src = tvm.runtime.tensor(np.ones(n, dtype=np.float32), dev)
    out = tvm.runtime.empty((n // chunk, streams, lanes), "float32", dev)
    seconds = lib.time_evaluator("main", dev, number=1, repeat=repeats)(src, out).results
    return nbytes / min(seconds)


def random_params(specs, seed: int = 0) -> list[np.ndarray]:
    """Random parameters straight in the compiled layout (packed ints random): for profiling."""
    rng = np.random.default_rng(seed)
    out = []
    for name, shape, dtype in specs:
        if dtype == "uint32":
            out.append(rng.integers(0, 2**32, size=shape, dtype=np.uint32))
        elif name.endswith("norm.weight"):
            out.append(np.ones(shape, dtype=dtype))
        else:
            scale = 0.01 if name.endswith("q_scale") else 0.02
            out.append((rng.standard_normal(shape, dtype=np.float32) * scale).astype(dtype))
    return out


def our_params(recipe, model, specs, weights: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``weights`` (HF names) through our converter, in entry-function order."""
    from mlcbuild.artifacts.weights import convert_params
    from mlcbuild.models import get_architecture

    pmap = get_architecture(recipe.architecture).hf_param_map(recipe.model_config)
    return [arr for _, arr in convert_params(model, specs, pmap, weights.__getitem__)]


def bytes_per_token(specs, tied: bool) -> int:
    total = 0
    for name, shape, dtype in specs:
        if name.startswith("model.embed_tokens.") and not tied:
            continue
        total += math.prod(shape) * DTYPE_BYTES[dtype]
    return total


def _median_rates(samples: list[dict]) -> tuple[float, float]:
    pre = statistics.median(x["prefill_tokens"] / x["prefill_s"] for x in samples)
    dec = statistics.median(x["decode_tokens"] / x["decode_s"] for x in samples)
    return pre, dec


def bench_one(recipe_path: str, scheme: str, args, bandwidth: float, weights: dict[str, np.ndarray]) -> dict:
    from mlcbuild.artifacts.cache import Cache
    from mlcbuild.artifacts.compile import compile_recipe
    from mlcbuild.artifacts.convert import param_specs
    from mlcbuild.artifacts.info import read_build
    from mlcbuild.runtime.engine import Engine, Stats, generate
    from mlcbuild.spec.recipe import load_recipe
    from mlcbuild.spec.target import load_target

    recipe = dataclasses.replace(load_recipe(recipe_path), scheme=scheme)
    res = compile_recipe(recipe, load_target("host"), cache=Cache())
    build = read_build(res.artifact)
    model, specs = param_specs(recipe)
    cfg = recipe.model_config
    ours = Engine.local(
        res.artifact / build.library.file,
        our_params(recipe, model, specs, weights),
        vocab_size=cfg.vocab_size,
        context_window_size=recipe.build.context_window_size,
        prefill_chunk_size=recipe.build.prefill_chunk_size,
        page_size=recipe.build.page_size,
    )
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, size=args.prompt).tolist()
    list(generate(ours, ids[:8], 4))  # warm-up: page faults, thread pools, first-call costs
    samples = []
    for _ in range(args.runs):
        st = Stats()
        list(generate(ours, ids, args.gen + 1, stats=st))
        samples.append({"prefill_tokens": st.prefill_tokens, "prefill_s": st.prefill_s,
                        "decode_tokens": st.decode_tokens, "decode_s": st.decode_s})  # fmt: skip
    bpt = bytes_per_token(specs, cfg.tie_word_embeddings)
    roofline = bandwidth / bpt
    pre, dec = _median_rates(samples)
    row = {
        "recipe": recipe_path,
        "model": recipe.name,
        "scheme": scheme,
        "threads": args.threads,
        "prompt_tokens": args.prompt,
        "generated_tokens": args.gen,
        "runs": args.runs,
        "prefill_tokens_per_s": round(pre, 2),
        "decode_tokens_per_s": round(dec, 2),
        "prefill_samples": [round(x["prefill_tokens"] / x["prefill_s"], 2) for x in samples],
        "decode_samples": [round(x["decode_tokens"] / x["decode_s"], 2) for x in samples],
        "weight_bytes_per_token": bpt,
        "decode_roofline_tokens_per_s": round(roofline, 2),
        "roofline_fraction": round(dec / roofline, 4),
        "key": res.key,
    }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["recipes/smollm-135m.toml", "recipes/llama32-1b.toml"])
    ap.add_argument("--schemes", default="q4f16_1,q4f32_1,q0f32")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for both sides")
    ap.add_argument("--out", default=None, help="JSON path (default benches/results/decode_host.json)")
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    out_path = Path(args.out or REPO / "benches" / "results" / "decode_host.json")
    from random_weights import hf_llama_weights
    from results_io import write_results

    from mlcbuild.spec.recipe import load_recipe

    # The roofline uses the best read bandwidth measured over the whole run (before every
    # model and at the end): on this noisy machine one measurement ranged 18-32 GB/s, and a
    # low one would overstate the fraction of the roofline reached.
    bws = [read_bandwidth()]
    print(f"read bandwidth {bws[-1] / 1e9:.2f} GB/s, {args.threads} threads", flush=True)
    rows = []
    for recipe in args.recipes:
        weights = hf_llama_weights(load_recipe(recipe).model_config)
        bws.append(read_bandwidth())
        for scheme in args.schemes.split(","):
            row = bench_one(recipe, scheme, args, max(bws), weights)
            rows.append(row)
            line = (
                f"{row['model']:16} {scheme:8} prefill {row['prefill_tokens_per_s']:8.1f} tok/s  "
                f"decode {row['decode_tokens_per_s']:7.2f} tok/s  roofline {row['decode_roofline_tokens_per_s']:7.1f}  "
                f"({100 * row['roofline_fraction']:.1f} %)"
            )
            print(line, flush=True)
        del weights
    bws.append(read_bandwidth())
    bw = max(bws)
    print(f"read bandwidth, best of the run: {bw / 1e9:.2f} GB/s (each: {', '.join(f'{b / 1e9:.1f}' for b in bws)})")
    for row in rows:
        roofline = bw / row["weight_bytes_per_token"]
        row["decode_roofline_tokens_per_s"] = round(roofline, 2)
        row["roofline_fraction"] = round(row["decode_tokens_per_s"] / roofline, 4)
        print(f"{row['model']:16} {row['scheme']:8} decode {100 * row['roofline_fraction']:.1f} % of the roofline")
    out = {
        "benchmark": "decode_host",
        "memory_read_bandwidth_bytes_per_s": round(bw),
        "memory_read_bandwidth_samples": [round(b) for b in bws],
        "bandwidth_method": "TVM parallel sum of 1 GiB float32 on --threads threads, bytes read / best of 5; "
        "measured at the start, before each model and at the end; the roofline uses the best",
        "results": rows,
    }
    write_results(out_path, out)


if __name__ == "__main__":
    main()
