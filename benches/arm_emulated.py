"""Our aarch64 CPU kernels, run: a tiny random Llama built for an Armv8.2-A Linux CPU with
NEON, ``dotprod`` and ``fullfp16`` (the ``android-cpu`` feature set) runs on an emulated
aarch64 CPU (``qemu-aarch64 -cpu max``, with aarch64 builds of Python, NumPy and TVM's
runtime), and its logits are compared with the same model built for this x86 host, with
``transformers`` and with ``transformers`` on the scheme's dequantized weights (the NumPy
reference's). Correctness only: emulated time says nothing of a phone's speed.

Per scheme: one random checkpoint (seed 0) through ``mlcbuild compile`` for ``host`` and for
the aarch64 descriptor (linked by ``aarch64-linux-gnu-gcc``), weights converted for each;
a prompt, then decode steps teacher-forced with the host's greedy ids; the aarch64 library's
instructions counted (``sdot``: the int8 decode GEMVs; ``fmla``: NEON float).

    make arm-emulation     # once: qemu-user-static, the cross linker, an aarch64 sysroot in .arm64/
    .venv/bin/python benches/arm_emulated.py --out benches/results/arm_emulated.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
from results_io import write_results

from mlcbuild.artifacts.info import read_build

REPO = Path(__file__).resolve().parent.parent
ARM = REPO / ".arm64"
LLAMA = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    max_position_embeddings=256,
    hidden_act="silu",
    initializer_range=0.1,
    model_type="llama",
)
# Gemma 2: GeGLU, four norms (1 + w), embeddings scaled, every second layer within a window of
# 8 (shorter than the prompt), attention logits soft-capped at 0.5 (bends these scores)
GEMMA2 = {k: v for k, v in LLAMA.items() if k not in ("hidden_act", "model_type")} | {
    "model_type": "gemma2",
    "hidden_activation": "gelu_pytorch_tanh",
    "num_hidden_layers": 3,
    "head_dim": 32,
    "sliding_window": 8,
    "query_pre_attn_scalar": 24,
    "attn_logit_softcapping": 0.5,
    "final_logit_softcapping": 2.0,
    "tie_word_embeddings": True,
}
CONFIGS = {"llama": LLAMA, "gemma2": GEMMA2}
HF_CLASSES = {"llama": ("LlamaForCausalLM", "LlamaConfig"), "gemma2": ("Gemma2ForCausalLM", "Gemma2Config")}
ARM_TARGET = """[target]
name = "linux-arm64-dotprod"
description = "aarch64 Linux CPU, Armv8.2-A + dotprod + fp16 (android-cpu's features), emulated"
memory_budget_bytes = 4294967296

[device]
kind = "llvm"

[host]
mtriple = "aarch64-linux-gnu"
mattr = ["+neon", "+dotprod", "+fullfp16"]
num_cores = 2

[output]
format = "so"
"""
PROMPT = [1, 5, 9, 22, 7, 60, 3, 44, 17, 2, 31, 90, 14, 200, 8, 77, 41]  # 17 tokens: two KV pages


def hf_model(arch: str = "llama", seed: int = 0):
    """``transformers``' model of ``CONFIGS[arch]`` with random weights (norm weights drawn too)."""
    import torch
    import transformers

    model_cls, config_cls = HF_CLASSES[arch]
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**CONFIGS[arch])
    config._attn_implementation = "eager"  # Gemma 2's soft-cap is on the eager path only
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # Gemma's norms scale by 1 + w
                p.normal_(0.0 if arch == "gemma2" else 1.0, 0.2)
    return model


def dequantized_model(hf, scheme_name: str):
    """The reference for ``scheme_name``: ``hf`` with every linear and embedding weight
    replaced by the scheme's own NumPy quantize + dequantize (group schemes), and all
    weights rounded to float16 where the scheme stores them so; run in float32."""
    import copy

    import torch

    from mlcbuild.quant import get_scheme

    scheme = get_scheme(scheme_name)
    ref = copy.deepcopy(hf)
    with torch.no_grad():
        for p in ref.parameters():
            if p.ndim == 2 and hasattr(scheme, "dequantize"):
                w = p.detach().numpy()
                q, s = scheme.quantize(w)
                p.copy_(torch.from_numpy(scheme.dequantize(q, s, w.shape[1])))
            elif scheme.model_dtype == "float16":
                p.copy_(p.half().float())
    return ref


def build(hf, scheme: str, target, cache) -> tuple[Path, list[np.ndarray], object]:
    """Compile ``hf``'s config for ``target`` and convert its weights: (library, params, recipe)."""
    from mlcbuild.artifacts.compile import compile_recipe
    from mlcbuild.artifacts.weights import convert_params
    from mlcbuild.models import get_architecture
    from mlcbuild.quant.build import build_model
    from mlcbuild.spec.recipe import parse_recipe

    config = CONFIGS[hf.config.model_type]
    recipe = parse_recipe(
        {
            "model": {
                "name": "tiny-arm",
                "architecture": config["model_type"],
                "source": "local/none",
                "config": config,
            },
            "quantization": {"scheme": scheme},
            "build": {"context_window_size": 128, "prefill_chunk_size": 32, "max_batch_size": 1},
        }
    )
    res = compile_recipe(recipe, target, cache=cache)
    info = read_build(res.artifact).to_json()
    params = [(p["name"], tuple(p["shape"]), p["dtype"]) for p in info["params"]]
    model = build_model(recipe)
    arch = get_architecture(recipe.architecture)
    state = {k: v.detach().float().numpy() for k, v in hf.state_dict().items()}
    arrays = [a for _, a in convert_params(model, params, arch.hf_param_map(recipe.model_config), state.__getitem__)]
    return res.artifact / info["library"]["file"], arrays, recipe


def count_instructions(lib: Path) -> dict[str, int]:
    """Occurrences of NEON/dot-product mnemonics in the library's disassembly."""
    text = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(lib)], capture_output=True, text=True).stdout
    return {m: len(re.findall(rf"\t{m}\t", text)) for m in ("sdot", "udot", "smmla", "fmla", "fcvtl", "ld1")}


def run_host(lib: Path, arrays, recipe, steps: int) -> tuple[np.ndarray, list[int]]:
    """The host build's logits ``[1 + steps, vocab]`` for :data:`PROMPT` and ``steps`` greedy
    decode steps, and the greedy ids fed to them."""
    from mlcbuild.runtime.engine import Engine

    b = recipe.build
    model = Engine.local(
        lib,
        arrays,
        vocab_size=recipe.model_config.vocab_size,
        context_window_size=b.context_window_size,
        prefill_chunk_size=b.prefill_chunk_size,
        page_size=b.page_size,
    )
    model.reset()
    logits = [model.prefill(PROMPT)]
    forced = []
    for _ in range(steps):
        forced.append(int(np.argmax(logits[-1])))
        logits.append(model.decode(forced[-1]))
    return np.stack(logits), forced


def run_emulated(lib: Path, arrays, recipe, forced: list[int], work: Path) -> tuple[np.ndarray, float]:
    """The aarch64 build's logits ``[1 + len(forced), vocab]`` (prefill of :data:`PROMPT`, then
    ``forced`` decoded) under ``qemu-aarch64``, and the emulated run's wall seconds."""
    np.savez(work / "params.npz", **{f"p{i}": a for i, a in enumerate(arrays)})
    b = recipe.build
    meta = {
        "vocab_size": recipe.model_config.vocab_size,
        "context_window_size": b.context_window_size,
        "prefill_chunk_size": b.prefill_chunk_size,
        "page_size": b.page_size,
        "prompt": PROMPT,
        "forced": forced,
    }
    (work / "meta.json").write_text(json.dumps(meta))
    root = ARM / "root"
    env = {**os.environ, "PYTHONPATH": str(ARM / "site"), "TVM_NUM_THREADS": "2"}
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            "qemu-aarch64-static",
            "-cpu",
            "max",
            "-L",
            str(root),
            str(root / "usr/bin/python3.11"),
            str(REPO / "benches/arm_runner.py"),
            str(lib),
            str(work / "params.npz"),
            str(work / "meta.json"),
            str(work / "out.npz"),
        ],  # fmt: skip
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f"emulated run failed:\n{out.stderr[-3000:]}")
    z = np.load(work / "out.npz")
    return np.concatenate([z["prefill"][None], z["decode"]]), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="llama", choices=sorted(CONFIGS))
    ap.add_argument("--schemes", default="q4f32_1,q4f16_1,q8f32_1,q0f32,q0f16")
    ap.add_argument("--steps", type=int, default=8, help="decode steps (teacher-forced)")
    ap.add_argument("--out", default="benches/results/arm_emulated.json")
    args = ap.parse_args()
    if not (ARM / "root/usr/bin/python3.11").is_file():
        raise SystemExit("no aarch64 sysroot in .arm64/: run `make arm-emulation` first")

    import torch

    from mlcbuild.artifacts.cache import Cache
    from mlcbuild.spec.target import load_target, parse_target

    hf = hf_model(args.arch)
    host = load_target("host")
    arm = parse_target(tomllib.loads(ARM_TARGET), path="linux-arm64-dotprod")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Cache(Path(tmp) / "cache")
        for scheme in args.schemes.split(","):
            lib, arrays, recipe = build(hf, scheme, host, cache)
            host_steps, forced = run_host(lib, arrays, recipe, args.steps)
            with torch.no_grad():
                ids = torch.tensor([PROMPT + forced])
                ref = hf(ids).logits[0, len(PROMPT) - 1 :].float().numpy()
                deq = dequantized_model(hf, scheme)(ids).logits[0, len(PROMPT) - 1 :].float().numpy()
            arm_lib, arm_arrays, _ = build(hf, scheme, arm, cache)
            work = Path(tmp) / scheme
            work.mkdir()
            arm_steps, seconds = run_emulated(arm_lib, arm_arrays, recipe, forced, work)
            scale = np.abs(ref).max()
            row = {
                "scheme": scheme,
                "steps": len(arm_steps),
                "arm_vs_host_max_abs_over_max": float(np.abs(arm_steps - host_steps).max() / scale),
                "arm_vs_transformers_max_abs_over_max": float(np.abs(arm_steps - ref).max() / scale),
                "host_vs_transformers_max_abs_over_max": float(np.abs(host_steps - ref).max() / scale),
                "arm_vs_dequantized_max_abs_over_max": float(np.abs(arm_steps - deq).max() / scale),
                "host_vs_dequantized_max_abs_over_max": float(np.abs(host_steps - deq).max() / scale),
                "arm_greedy_ids_equal_dequantized": bool((arm_steps.argmax(-1) == deq.argmax(-1)).all()),
                "host_greedy_ids_equal_dequantized": bool((host_steps.argmax(-1) == deq.argmax(-1)).all()),
                "greedy_ids_equal_host": bool((arm_steps.argmax(-1) == host_steps.argmax(-1)).all()),
                "instructions": count_instructions(arm_lib),
                "emulated_wall_s": round(seconds, 1),
            }
            rows.append(row)
            print(json.dumps(row))
    write_results(
        args.out,
        {
            "benchmark": "arm_emulated",
            "arch": args.arch,
            "config": CONFIGS[args.arch],
            "prompt": PROMPT,
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
