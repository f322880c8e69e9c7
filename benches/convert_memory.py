"""Peak memory of ``convert`` against the largest tensor, as JSON.

For each recipe shape a random bf16 checkpoint (safetensors) is written, then converted
in a fresh process. In that process (VmHWM of /proc/self/status) the baseline is the peak RSS after importing
mlcbuild, TVM and torch and building the parameter list; the conversion's cost is
peak RSS minus that baseline, compared with the largest tensor in float32 (the dtype
tensors are quantized in) and in the checkpoint's bf16.

    .venv/bin/python benches/convert_memory.py                          # SmolLM-135M, Llama-3.2-1B
    .venv/bin/python benches/convert_memory.py --recipes recipes/smollm-135m.toml --scheme q4f16_1
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

from results_io import write_results

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from mlcbuild.artifacts.cache import Cache
from mlcbuild.artifacts.convert import convert_weights, param_specs
from mlcbuild.spec.recipe import load_recipe
import dataclasses, tvm, torch, safetensors

def hwm():  # this process's peak RSS (VmHWM is reset at exec, unlike getrusage's ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

recipe = dataclasses.replace(load_recipe(sys.argv[1]), scheme=sys.argv[3])
param_specs(recipe)
base = hwm()
t = time.perf_counter()
res = convert_weights(recipe, Path(sys.argv[2]), cache=Cache(sys.argv[4]))
peak = hwm()
print(json.dumps({"baseline_rss_bytes": base, "peak_rss_bytes": peak, "seconds": time.perf_counter() - t,
                  "cache": res.cache, "weights": str(res.weights)}))
"""


def write_checkpoint(recipe_path: str, out: Path) -> int:
    """Random bf16 weights with the recipe's shapes; returns the largest tensor's element count."""
    import torch
    from safetensors.torch import save_file

    from mlcbuild.models import get_architecture
    from mlcbuild.spec.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    cfg = recipe.model_config
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(recipe.config))
    h, i, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    shapes = {"model.embed_tokens.weight": (cfg.vocab_size, h), "model.norm.weight": (h,)}
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}"
        shapes.update(
            {
                f"{p}.input_layernorm.weight": (h,),
                f"{p}.post_attention_layernorm.weight": (h,),
                f"{p}.self_attn.q_proj.weight": (cfg.num_attention_heads * hd, h),
                f"{p}.self_attn.k_proj.weight": (cfg.num_key_value_heads * hd, h),
                f"{p}.self_attn.v_proj.weight": (cfg.num_key_value_heads * hd, h),
                f"{p}.self_attn.o_proj.weight": (h, cfg.num_attention_heads * hd),
                f"{p}.mlp.gate_proj.weight": (i, h),
                f"{p}.mlp.up_proj.weight": (i, h),
                f"{p}.mlp.down_proj.weight": (h, i),
            }
        )
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, h)
    expected = {n for srcs, _ in get_architecture("llama").hf_param_map(cfg).values() for n in srcs}
    assert expected == set(shapes), sorted(expected ^ set(shapes))
    g = torch.Generator().manual_seed(0)
    tensors = {n: (torch.randn(s, generator=g) * 0.02).to(torch.bfloat16) for n, s in shapes.items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return max(math.prod(s) for s in shapes.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["recipes/smollm-135m.toml", "recipes/llama32-1b.toml"])
    ap.add_argument("--scheme", default="q4f16_1")
    ap.add_argument("--out", default=str(REPO / "benches" / "results" / "convert_memory.json"))
    args = ap.parse_args()
    rows = []
    for recipe in args.recipes:
        with tempfile.TemporaryDirectory(prefix="mlcbuild-ckpt-") as d:
            largest = write_checkpoint(recipe, Path(d) / "ckpt")
            out = subprocess.run(
                [sys.executable, "-c", CHILD, recipe, str(Path(d) / "ckpt"), args.scheme, str(Path(d) / "cache")],
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            if out.returncode:
                raise SystemExit(out.stderr[-3000:])
            r = json.loads(out.stdout.strip().splitlines()[-1])
        delta = r["peak_rss_bytes"] - r["baseline_rss_bytes"]
        row = {
            "recipe": recipe,
            "scheme": args.scheme,
            "largest_tensor_elements": largest,
            "largest_tensor_bytes_f32": 4 * largest,
            "largest_tensor_bytes_bf16": 2 * largest,
            "baseline_rss_bytes": r["baseline_rss_bytes"],
            "peak_rss_bytes": r["peak_rss_bytes"],
            "conversion_rss_bytes": delta,
            "ratio_to_largest_f32": round(delta / (4 * largest), 3),
            "seconds": round(r["seconds"], 2),
        }
        rows.append(row)
        print(
            f"{recipe:28} peak {row['peak_rss_bytes'] / 2**20:7.0f} MiB  baseline {row['baseline_rss_bytes'] / 2**20:6.0f} MiB  "
            f"conversion {delta / 2**20:7.0f} MiB = {row['ratio_to_largest_f32']:.2f} x largest tensor (f32)  {row['seconds']} s",
            flush=True,
        )
    write_results(args.out, {"benchmark": "convert_memory", "results": rows})


if __name__ == "__main__":
    main()
