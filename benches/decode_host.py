"""Host CPU prefill and decode speed, next to this machine's memory-bandwidth roofline.

For each recipe shape (random weights of the right shapes: speed does not depend on
values) and scheme: compile for ``host`` (through the cache), then per run prefill
``--prompt`` tokens and decode ``--gen`` tokens; report the median over ``--runs``.

Decode at batch 1 is memory-bound: tokens/s <= bandwidth / bytes of weights read per
token. Bytes per token = every parameter except the embedding table (a decode step
gathers one row), plus the embedding when it doubles as the tied LM head. KV-cache
reads are left out (small at these lengths). Bandwidth is measured here with a NumPy
copy of 1 GiB (bytes read + written / time, best of 5, one thread).

    .venv/bin/python benches/decode_host.py                 # SmolLM-135M and Llama-3.2-1B shapes
    .venv/bin/python benches/decode_host.py --recipes recipes/smollm-135m.toml --schemes q4f16_1 --runs 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DTYPE_BYTES = {"float32": 4, "float16": 2, "uint32": 4}


def copy_bandwidth(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """Bytes/s of a NumPy copy (read + write counted), best of ``repeats``."""
    src = np.ones(nbytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.nbytes / best


def random_params(specs, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for name, shape, dtype in specs:
        if dtype == "uint32":
            out.append(rng.integers(0, 2**32, size=shape, dtype=np.uint32))
        elif name.endswith("layernorm.weight") or name.endswith("norm.weight"):
            out.append(np.ones(shape, dtype=dtype))
        else:
            scale = 0.01 if name.endswith("q_scale") else 0.02
            out.append((rng.standard_normal(shape, dtype=np.float32) * scale).astype(dtype))
    return out


def bytes_per_token(specs, tied: bool) -> int:
    total = 0
    for name, shape, dtype in specs:
        if name.startswith("model.embed_tokens.") and not tied:
            continue
        total += math.prod(shape) * DTYPE_BYTES[dtype]
    return total


def bench_one(recipe_path: str, scheme: str, prompt: int, gen: int, runs: int, bandwidth: float) -> dict:
    from mlcbuild.cache import Cache
    from mlcbuild.compile import compile_recipe
    from mlcbuild.convert import param_specs
    from mlcbuild.recipe import load_recipe
    from mlcbuild.runtime import HostModel
    from mlcbuild.target import load_target

    base = load_recipe(recipe_path)
    recipe = dataclasses.replace(base, scheme=scheme)
    res = compile_recipe(recipe, load_target("host"), cache=Cache())
    build = json.loads((res.artifact / "build.json").read_text())
    _, specs = param_specs(recipe)
    cfg = recipe.model_config
    model = HostModel(
        res.artifact / build["library"]["file"],
        random_params(specs),
        vocab_size=cfg.vocab_size,
        context_window_size=recipe.build.context_window_size,
        prefill_chunk_size=recipe.build.prefill_chunk_size,
        page_size=recipe.build.page_size,
    )
    rng = np.random.default_rng(1)
    ids = rng.integers(0, cfg.vocab_size, size=prompt).tolist()
    prefill, decode = [], []
    list(model.generate(ids[:8], 4))  # warm-up: page faults, thread pool, first-call costs
    for _ in range(runs):
        list(model.generate(ids, gen + 1))
        prefill.append(model.stats["prefill_tokens"] / model.stats["prefill_s"])
        decode.append(model.stats["decode_tokens"] / model.stats["decode_s"])
    bpt = bytes_per_token(specs, cfg.tie_word_embeddings)
    roofline = bandwidth / bpt
    dec = statistics.median(decode)
    return {
        "recipe": recipe_path,
        "model": recipe.name,
        "scheme": scheme,
        "prompt_tokens": prompt,
        "generated_tokens": gen,
        "runs": runs,
        "prefill_tokens_per_s": round(statistics.median(prefill), 2),
        "decode_tokens_per_s": round(dec, 2),
        "prefill_samples": [round(x, 2) for x in prefill],
        "decode_samples": [round(x, 2) for x in decode],
        "weight_bytes_per_token": bpt,
        "decode_roofline_tokens_per_s": round(roofline, 2),
        "roofline_fraction": round(dec / roofline, 4),
        "key": res.key,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["recipes/smollm-135m.toml", "recipes/llama32-1b.toml"])
    ap.add_argument("--schemes", default="q4f16_1,q4f32_1,q0f32")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benches" / "results" / "decode_host.json"))
    args = ap.parse_args()
    bw = copy_bandwidth()
    print(f"copy bandwidth {bw / 1e9:.2f} GB/s", flush=True)
    rows = []
    for recipe in args.recipes:
        for scheme in args.schemes.split(","):
            row = bench_one(recipe, scheme, args.prompt, args.gen, args.runs, bw)
            rows.append(row)
            print(
                f"{row['model']:24} {scheme:8} prefill {row['prefill_tokens_per_s']:8.1f} tok/s  "
                f"decode {row['decode_tokens_per_s']:7.2f} tok/s  roofline {row['decode_roofline_tokens_per_s']:7.1f}  "
                f"({100 * row['roofline_fraction']:.1f} %)",
                flush=True,
            )
    out = {
        "benchmark": "decode_host",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "memory_bandwidth_bytes_per_s": round(bw),
        "bandwidth_method": "numpy copyto of 1 GiB, (read + write) bytes / best of 5, one thread",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python benches/decode_host.py "
        + " ".join(f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items()),
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
