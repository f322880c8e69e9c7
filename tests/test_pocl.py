"""GPU builds executed: libraries compiled for ``pocl`` (targets/pocl.toml: the GPU pipeline the
phones get) run on an OpenCL device, PoCL's CPU device, through TVM's own OpenCL runtime
(``make opencl-runtime``, :mod:`mlcbuild.runtime.devices`).

References: ``transformers`` on the same random weights (logits within 1e-4 x max |ref| at the
prefill and each greedy step, and its greedy ids from ``mlcbuild run``), NumPy's dequantization
for q4f32_1, the host build for the real SmolLM2, NumPy for single kernels. Skipped, saying
why, where PoCL or the runtime is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import hf_model, make_checkpoint, recipe_data, state_dict_numpy, tiny_config
from helpers import compile_and_load
from test_convert_run import cli, hf_greedy, recipe_file
from test_parity import CASES, check_against

from mlcbuild.errors import MlcbuildError
from mlcbuild.quant import get_scheme
from mlcbuild.runtime.devices import OPENCL_RUNTIME_ENV, opencl_runtime_path


def _opencl_device():
    from opencl import pocl_problem

    if problem := pocl_problem():
        pytest.skip(problem)
    try:
        from mlcbuild.runtime.devices import device_for

        return device_for("opencl")
    except MlcbuildError as e:
        pytest.skip(f"{e} ({e.fix})" if e.fix else str(e))


@pytest.fixture(scope="module")
def opencl():
    """The OpenCL device (skips without the runtime extension or PoCL)."""
    return _opencl_device()


def test_missing_runtime_names_the_make_target(monkeypatch, tmp_path):
    from mlcbuild.runtime.devices import runtime_libraries

    monkeypatch.setenv(OPENCL_RUNTIME_ENV, str(tmp_path / "nope.so"))
    with pytest.raises(MlcbuildError, match="no OpenCL runtime") as e:
        runtime_libraries("opencl")
    assert "make opencl-runtime" in e.value.fix and str(tmp_path / "nope.so") in str(e.value)
    monkeypatch.delenv(OPENCL_RUNTIME_ENV)
    assert opencl_runtime_path().name == "libtvm_runtime_opencl.so"


def test_a_thread_bound_kernel_runs_on_the_opencl_device(opencl):
    """TVM's OpenCL runtime: buffers to and from the device, a kernel compiled for ``pocl``."""
    import tvm
    from tvm.script import tirx as T

    from mlcbuild.compiler.target import tvm_target
    from mlcbuild.spec.target import load_target

    @T.prim_func
    def scale_add(a: T.Buffer((256,), "float32"), b: T.Buffer((256,), "float32")):
        for bx in T.thread_binding(4, "blockIdx.x"):
            for tx in T.thread_binding(64, "threadIdx.x"):
                b[bx * 64 + tx] = a[bx * 64 + tx] * T.float32(3) + T.float32(1)

    lib = tvm.compile(tvm.IRModule({"main": scale_add}), target=tvm_target(load_target("pocl")))
    x = np.random.default_rng(0).standard_normal(256).astype("float32")
    a, b = tvm.runtime.tensor(x, opencl), tvm.runtime.tensor(np.zeros(256, "float32"), opencl)
    lib["main"](a, b)
    np.testing.assert_allclose(b.numpy(), x * np.float32(3) + np.float32(1), rtol=1e-6, atol=1e-6)  # fma or not
    assert opencl.exist and opencl.max_threads_per_block >= 256


# Llama (GQA), Qwen3 (q/k norm, explicit head_dim 64 != hidden / heads), Phi-3 (fused
# checkpoint projections, LongRoPE), Gemma 2 (window 8 < the 11-token prompt, logit
# soft-capping: our GPU attention kernels)
QWEN3_HD64 = tiny_config(model_type="qwen3", head_dim=64, rope_theta=1000000.0)
POCL_CASES = {"llama": CASES["gqa2-untied"], "qwen3": QWEN3_HD64, "phi3": CASES["phi3-longrope"],
              "gemma2": CASES["gemma2"]}  # fmt: skip


@pytest.mark.parametrize("case", list(POCL_CASES))
def test_q0f32_on_opencl_matches_transformers(case, opencl, cache_dir):
    cfg = POCL_CASES[case]
    hf = hf_model(cfg)
    ours = compile_and_load(recipe_data(cfg, "q0f32", name=f"tiny-{case}"), state_dict_numpy(hf), cache_dir, "pocl")
    assert ours.device.dlpack_device_type() == opencl.dlpack_device_type()
    check_against(hf, ours, n_decode=16)


def test_tvm_tiled_ragged_prefill_on_opencl(opencl):
    """TVM 0.27's own tiled GPU prefill kernel (``batch_prefill_ragged_kv``), which GPU builds of
    models without a window or soft-cap use, against NumPy causal attention: right at head dim
    16 and 64 and 128; at 32 (float32) it is wrong on PoCL whenever the last KV tile is partial
    (tokens 16-19 of a 20-token prompt, every token of an 11-token one): xfail, until it is right
    (then CASES["qwen3-hd32"], which fails on ``pocl`` for it, joins POCL_CASES). Whether a
    phone's driver computes it right is not known here."""
    import tvm
    from tvm.relax.frontend.nn.llm._prefill_kernels import _attention_prefill_ragged

    from mlcbuild.compiler.target import tvm_target
    from mlcbuild.spec.target import load_target

    target = tvm_target(load_target("pocl"))
    h_kv, h_q, n = 2, 4, 11
    errors = {}
    for d in (16, 32, 64, 128):
        lib = tvm.compile(tvm.IRModule({"main": _attention_prefill_ragged(h_kv, h_q, d, d, "float32", {}, target)}),
                          target=target)  # fmt: skip
        rng = np.random.default_rng(d)
        q, k, v = (rng.standard_normal((n, h, d)).astype("float32") for h in (h_q, h_kv, h_kv))
        out = tvm.runtime.tensor(np.zeros((n, h_q, d), "float32"), opencl)
        lse = tvm.runtime.tensor(np.zeros((n, h_q), "float32"), opencl)
        t = lambda a: tvm.runtime.tensor(a, opencl)  # noqa: E731
        indptr = np.array([0, n], "int32")
        sm_scale = float(1 / np.sqrt(d))
        lib["main"](t(q), t(indptr), t(k), t(v), t(indptr), t(np.arange(n, dtype="int32")), t(np.zeros(1, "int32")),
                    out, lse, 1, 0, 1.0, 10000.0, sm_scale)  # fmt: skip
        ref = np.zeros_like(q)
        for h in range(h_q):
            s = q[:, h] @ k[:, h * h_kv // h_q].T * sm_scale
            s = np.where(np.tril(np.ones((n, n))) > 0, s, -np.inf)
            p = np.exp(s - s.max(1, keepdims=True))
            ref[:, h] = (p / p.sum(1, keepdims=True)) @ v[:, h * h_kv // h_q]
        errors[d] = float(np.abs(out.numpy() - ref).max())
    assert all(errors[d] < 1e-5 for d in (16, 64, 128)), errors
    if errors[32] > 1e-5:  # as measured on PoCL 3.0 (docs/gpu.md); right elsewhere, the xfail says so
        pytest.xfail(f"TVM 0.27's tiled ragged prefill is wrong at head dim 32 on this OpenCL device: {errors}")


@pytest.mark.parametrize("case", ["gqa2-untied", "qwen2-tied"])
def test_q4f32_1_on_opencl_matches_numpy_dequantization(case, opencl, cache_dir):
    """The fused dequantize GEMVs / matmuls dlight schedules, on the device: logits equal to
    transformers run on NumPy's dequantization of the same weights, within 1e-4 x max |ref|
    (the host build meets the same bound, with its int8 activations emulated in the reference)."""
    cfg = CASES[case]
    hf = hf_model(cfg)
    ours = compile_and_load(recipe_data(cfg, "q4f32_1", name=f"tiny-{case}"), state_dict_numpy(hf), cache_dir, "pocl")
    scheme = get_scheme("q4f32_1")
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 2:
                w = p.detach().numpy()
                p.copy_(torch.from_numpy(scheme.dequantize(*scheme.quantize(w), w.shape[1])))
    check_against(hf, ours)


def test_float16_scheme_for_pocl_is_refused_naming_the_float32_one(tmp_path, cache_dir):
    r = cli("compile", recipe_file(tmp_path, tiny_config(), "q4f16_1"), "--target", "pocl", "--cache-dir", cache_dir)
    assert r.exit_code != 0
    assert "pocl.toml" in r.output and "float16 = false" in r.output and "q4f32_1" in r.output


@pytest.mark.parametrize("case", ["llama", "gemma2"])
def test_mlcbuild_run_on_pocl_gives_transformers_greedy_ids(case, opencl, tmp_path, cache_dir):
    """A checkpoint written by transformers (``save_pretrained``), its recipe written by
    ``mlcbuild recipe``, compiled for ``pocl`` at q0f32 and run by ``mlcbuild run``."""
    cfg = POCL_CASES[case]
    hf = make_checkpoint(tmp_path / "ckpt", cfg, seed=5)
    recipe = tmp_path / "r.toml"
    assert (
        cli("recipe", tmp_path / "ckpt", "--out", recipe, "--scheme", "q0f32", "--name", f"ckpt-{case}").exit_code == 0
    )
    prompt = [1, 5, 9, 22, 7, 60, 3, 44, 17, 2, 31]
    r = cli("run", recipe, "--target", "pocl", "--weights", tmp_path / "ckpt", "--prompt-ids",
            ",".join(map(str, prompt)), "--max-new-tokens", 12, "--json", "--cache-dir", cache_dir)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["output_ids"] == hf_greedy(hf, prompt, 12)


def test_tune_on_the_opencl_device_keeps_a_faster_record(opencl, tmp_path, cache_dir):
    """``tune`` over RPC against a server running the OpenCL runtime on PoCL: a GPU GEMV's
    record is searched, measured on the device against dlight's default schedule and kept
    when 5 % faster; the tuned pocl build uses it and still computes the model."""
    from mlcbuild.artifacts.cache import Cache
    from mlcbuild.artifacts.compile import compile_recipe
    from mlcbuild.artifacts.info import read_build
    from mlcbuild.device.rpc import LocalCluster
    from mlcbuild.device.tune import extract_tasks, tune
    from mlcbuild.spec.recipe import parse_recipe
    from mlcbuild.spec.target import load_target

    recipe = parse_recipe(recipe_data(tiny_config(), "q4f32_1", name="tiny-tune-pocl"))
    pocl = load_target("pocl")
    names = [t.name for t in extract_tasks(recipe, pocl)]
    gemv = next(n for n in names if n.startswith("fused_dequantize"))
    logs = tmp_path / "logs"
    with LocalCluster(key="pocl", device_kind="opencl") as c:
        (res,) = tune(recipe, pocl, tracker=c.tracker, key="pocl", trials=8, tuning_root=logs, cache=Cache(cache_dir),
                      cost_model="random", only=[gemv])  # fmt: skip
    assert res.name == gemv and res.trials == 8 and res.best_us > 0 and res.default_us > 0
    assert res.status == ("tuned" if res.best_us * 1.05 <= res.default_us else "default-faster")
    if res.status != "tuned":
        pytest.skip(
            f"no schedule beat dlight's by 5 % in 8 random trials ({res.best_us:.1f} vs {res.default_us:.1f} us)"
        )
    assert (logs / "pocl" / "database_tuning_record.json").is_file()
    tuned = compile_recipe(recipe, pocl, cache=Cache(cache_dir), tuning_root=logs)
    assert read_build(tuned.artifact).tuned_kernels == (gemv,)


def test_the_embedded_smollm2_answers_on_pocl_as_on_host(opencl, gguf_path, hf_reference, tmp_path, cache_dir):
    """The real SmolLM2-135M-Instruct (its GGUF from PyPI, q4f32_1: PoCL has no float16, and the
    exact imports keep GGUF's float16 scales) compiled for ``pocl`` and for ``host``: the same
    greedy reply to a chat question (``mlcbuild run``); on ``pocl``, ``mlcbuild eval``'s
    perplexity equals transformers' on NumPy's q4f32_1 dequantization of the same weights
    (the host build quantizes activations to int8, so its perplexity is not that reference's)."""
    from mlcbuild.runtime.evaluate import reference_perplexity

    rec = tmp_path / "smollm2-q4f32_1.toml"
    assert cli("recipe", gguf_path, "--scheme", "q4f32_1", "--name", "smollm2-q4f32_1", "--context-window", 512,
               "-o", rec).exit_code == 0  # fmt: skip
    weights = json.loads(cli("convert", rec, "--weights", gguf_path, "--json", "--cache-dir", cache_dir).stdout)[
        "weights"
    ]
    replies = {}
    for target in ("host", "pocl"):
        r = cli("run", rec, "--target", target, "--weights", weights, "--chat", "--prompt",
                "What is the capital of France?", "--max-new-tokens", 16, "--json", "--cache-dir", cache_dir)  # fmt: skip
        assert r.exit_code == 0, r.output
        replies[target] = json.loads(r.stdout.strip().splitlines()[-1])
    assert replies["pocl"]["output_ids"] == replies["host"]["output_ids"] and "Paris" in replies["pocl"]["text"]
    text = tmp_path / "text.txt"
    text.write_text(Path(__file__).read_text())
    ev = cli("eval", rec, "--target", "pocl", "--weights", weights, "--text", text, "--context", 64,
             "--max-tokens", 64, "--json", "--cache-dir", cache_dir)  # fmt: skip
    assert ev.exit_code == 0, ev.output
    hf, tok = hf_reference
    scheme = get_scheme("q4f32_1")
    with torch.no_grad():
        saved = {n: p.detach().clone() for n, p in hf.named_parameters() if p.ndim == 2}
        try:
            for p in hf.parameters():
                if p.ndim == 2:  # every linear and the (tied) embedding
                    w = p.detach().numpy()
                    p.copy_(torch.from_numpy(scheme.dequantize(*scheme.quantize(w), w.shape[1])))
            ref = reference_perplexity(hf, tok(text.read_text())["input_ids"][:64], 64)
        finally:  # the session's reference model stays the GGUF's
            for n, p in hf.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
    assert json.loads(ev.stdout.strip().splitlines()[-1])["perplexity"] == pytest.approx(ref, rel=1e-4)
