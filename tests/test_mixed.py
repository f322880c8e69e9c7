"""Mixed precision (``[quantization.overrides]``): per-module schemes through convert, compile
and run, checked against transformers with each module's weights fake-quantized by its scheme;
the cache keys, the sizes and ``tensor-cache.json``'s records; bad overrides."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import make_checkpoint, recipe_data, tiny_config
from helpers import emulate_int8_activations
from test_cache import _toml
from test_convert_run import PROMPT, cli

from mlcbuild.artifacts.cache import Cache, content_key
from mlcbuild.artifacts.compile import key_inputs
from mlcbuild.compiler.target import int8_dot_isa, tvm_target
from mlcbuild.errors import RecipeError
from mlcbuild.kernels.int8_dot import activation_reference
from mlcbuild.kernels.int8_gemv import supports
from mlcbuild.quant import GroupQuant, get_scheme
from mlcbuild.quant.mixed import scheme_for
from mlcbuild.runtime.artifact import open_local
from mlcbuild.spec.recipe import parse_recipe
from mlcbuild.spec.target import load_target

CASES = {
    # fp32 model: first block unquantized, untied LM head in 8 bits, the rest 4-bit
    "f32": ("q4f32_1", {"model.layers.0.*": "q0f32", "lm_head": "q8f32_1"}, tiny_config()),
    # fp16 scheme (fp32 compute on x86): the tied embedding kept fp16, one MLP in 8 bits
    "f16-tied": (
        "q4f16_1",
        {"model.embed_tokens": "q0f16", "model.layers.1.mlp.*": "q8f16_1"},
        tiny_config(tie_word_embeddings=True),
    ),
}


def mixed_recipe(tmp_path, base, overrides, cfg, name="mixed"):
    data = recipe_data(cfg, base, name=name)
    data["quantization"]["overrides"] = overrides
    p = tmp_path / f"{name}.toml"
    p.write_text(_toml(data))
    return p, data


def fake_quantized(hf, base: str, overrides: dict[str, str]):
    """``hf`` with every linear/embedding weight replaced by its scheme's dequantized weight
    (:func:`scheme_for` on transformers' module names, which the patterns above select alike),
    norm weights rounded to the base scheme's dtype."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            module = name.rsplit(".", 1)[0]
            if "norm" in module:  # stored in the base scheme's dtype
                p.copy_(p.to(getattr(torch, get_scheme(base).model_dtype)).float())
                continue
            s = scheme_for(module, get_scheme(base), overrides)
            w = p.detach().float().numpy()
            if isinstance(s, GroupQuant):
                q, sc = s.quantize(w, layout="NK")
                w = s.dequantize(q, sc, w.shape[1], layout="NK")
            else:
                w = w.astype(s.model_dtype).astype(np.float32)
            p.copy_(torch.from_numpy(w))
    return hf


_OURS = {
    "q_proj": "qkv_proj",
    "k_proj": "qkv_proj",
    "v_proj": "qkv_proj",
    "gate_proj": "gate_up_proj",
    "up_proj": "gate_up_proj",
}
"""Hugging Face linear -> the fused module of ours it is part of (what overrides name)."""


def expected_bytes(scheme, n: int, k: int) -> int:
    """Bytes a ``[n, k]`` weight takes under ``scheme`` (packed words + scales, or floats)."""
    if isinstance(scheme, GroupQuant):
        (wr, wc), (sr, sc) = scheme.packed_shapes(n, k, layout="NK")
        return wr * wc * 4 + sr * sc * np.dtype(scheme.model_dtype).itemsize
    return n * k * np.dtype(scheme.model_dtype).itemsize


@pytest.mark.parametrize("case", sorted(CASES))
def test_mixed_recipe_runs_each_module_in_its_scheme(case, tmp_path, cache_dir):
    base, overrides, cfg = CASES[case]
    hf = make_checkpoint(tmp_path / "ckpt", cfg)
    recipe, _ = mixed_recipe(tmp_path, base, overrides, cfg, name=f"mixed-{case}")
    conv = json.loads(cli("convert", recipe, "--weights", tmp_path / "ckpt", "--json", "--cache-dir", cache_dir).stdout)
    comp = json.loads(cli("compile", recipe, "--target", "host", "--json", "--cache-dir", cache_dir).stdout)
    model, _ = open_local(comp["artifact"], conv["weights"])
    model.reset()
    got = model.prefill(PROMPT)
    hf = fake_quantized(hf, base, overrides)
    head = scheme_for("model.embed_tokens" if cfg["tie_word_embeddings"] else "lm_head", get_scheme(base), overrides)
    if supports(
        head.dequantize_info(), int8_dot_isa(tvm_target(load_target("host")))
    ):  # the LM head's row runs the int8 GEMV
        hf.lm_head.register_forward_pre_hook(
            lambda _m, args: (torch.from_numpy(activation_reference(args[0].numpy())),)
        )
    # the prompt rows of linears the int8 prefill matmul runs (x86 with VNNI), each in its scheme
    hooks = []
    for name, module in hf.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            parent, _, leaf = name.rpartition(".")
            ours = f"{parent}.{_OURS.get(leaf, leaf)}"
            info = scheme_for(ours, get_scheme(base), overrides).dequantize_info()
            hooks += emulate_int8_activations(
                hf, info, len(PROMPT), mask=lambda n, name=name: n == name, prompt_only=True
            )
    with torch.no_grad():
        ref = hf(torch.tensor([PROMPT])).logits[0, -1].numpy()
    rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    # fp32 kernels over the same dequantized weights; with int8 prompt rows the flip bound of
    # test_parity.check_against (a rounding boundary met in float noise moves the logits)
    assert rel < (5e-2 if hooks else 1e-4), rel

    # every linear/embedding parameter says its scheme, and takes that scheme's bytes
    index = json.loads((Path(conv["weights"]) / "tensor-cache.json").read_text())
    recs = {r["name"]: r for s in index["records"] for r in s["records"]}
    assert index["metadata"]["Quantization"] == {"scheme": base, "overrides": [list(kv) for kv in overrides.items()]}
    hf_shapes = {n.rsplit(".", 1)[0]: tuple(p.shape) for n, p in hf.named_parameters() if "norm" not in n}
    for module, (n, k) in hf_shapes.items():
        ours = module.replace("q_proj", "qkv_proj").replace("gate_proj", "gate_up_proj")
        if any(x in module for x in ("k_proj", "v_proj", "up_proj")) and "gate_up" not in module:
            continue  # fused into qkv_proj / gate_up_proj: counted there
        scheme = scheme_for(module, get_scheme(base), overrides)
        if ours != module:  # fused rows: q+k+v or gate+up
            head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
            n = {"qkv_proj": (cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"]) * head_dim}.get(
                ours.rsplit(".", 1)[1], 2 * cfg["intermediate_size"]
            )
        params = [r for name, r in recs.items() if name.rsplit(".", 1)[0] == ours]
        assert params and all(r["quantization"] == scheme.name for r in params), (ours, params)
        assert sum(r["nbytes"] for r in params) == expected_bytes(scheme, n, k), ours


def test_overrides_change_the_keys_in_order(tmp_path, cache_dir):
    cfg = tiny_config()
    desc, cache = load_target("host"), Cache(cache_dir)
    plain = recipe_data(cfg, "q4f16_1")

    def key(overrides):
        data = json.loads(json.dumps(plain))
        if overrides:
            data["quantization"]["overrides"] = overrides
        return content_key(key_inputs(parse_recipe(data), desc, cache))

    a = {"lm_head": "q8f16_1", "model.layers.*": "q0f16"}
    b = dict(reversed(list(a.items())))
    keys = [key(None), key(a), key(b), key({"lm_head": "q8f16_1"})]
    assert len(set(keys)) == 4  # order matters: the first matching pattern wins
    assert key(dict(a)) == keys[1]


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"lm_head": "q5f16_9"}, ["unknown scheme 'q5f16_9'", "q8f16_1"]),
        ({"lm_head": "q4f16_gptq"}, ["calibrated", "round-to-nearest"]),
        ({"lm_head": "q0f32"}, ["float32", "q0f16"]),
        ({"lm_head": 8}, ["scheme name"]),
    ],
)
def test_bad_override_is_named(overrides, words):
    data = recipe_data(tiny_config(), "q4f16_1")
    data["quantization"]["overrides"] = overrides
    with pytest.raises(RecipeError) as e:
        parse_recipe(data, path="r.toml")
    assert all(w in str(e.value) for w in words) and "r.toml" in str(e.value), str(e.value)


def test_override_matching_nothing_is_an_error(tmp_path, cache_dir):
    cfg = tiny_config(tie_word_embeddings=True)
    recipe, _ = mixed_recipe(tmp_path, "q4f16_1", {"lm_head": "q8f16_1", "model.layers.9.*": "q0f16"}, cfg)
    r = cli("compile", recipe, "--target", "host", "--cache-dir", tmp_path / "c")
    assert r.exit_code == 2, r.output
    for words in ("'lm_head'", "'model.layers.9.*'", "tied to model.embed_tokens", "model.layers.<i>.mlp.down_proj"):
        assert words in r.output, r.output
    assert str(recipe.name) in r.output
    assert not any((tmp_path / "c").glob("**/build.json"))


def test_sizes_of_a_mixed_recipe():
    """Bits per weight of the issue's example: lm_head q8 and the first and last blocks q0f16
    under q4f16_1, from the parameter shapes (fp16 scales, 32 weights per scale)."""
    from mlcbuild.artifacts.convert import param_specs

    cfg = tiny_config(num_hidden_layers=4)
    data = recipe_data(cfg, "q4f16_1")
    data["quantization"]["overrides"] = {"lm_head": "q8f16_1", "model.layers.0.*": "q0f16", "model.layers.3.*": "q0f16"}
    _, specs = param_specs(parse_recipe(data))
    size = {n: math.prod(s) * np.dtype(d).itemsize for n, s, d in specs}
    v, d, i = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
    assert size["lm_head.q_weight"] + size["lm_head.q_scale"] == v * d + v * d // 32 * 2  # 8.5 bits
    assert size["model.layers.0.mlp.down_proj.weight"] == d * i * 2  # 16 bits
    assert size["model.layers.3.self_attn.o_proj.weight"] == d * d * 2
    assert size["model.layers.1.mlp.down_proj.q_weight"] + size["model.layers.1.mlp.down_proj.q_scale"] == (
        d * i // 2 + d * i // 32 * 2  # 4.5 bits
    )


def test_weights_with_other_overrides_are_refused(tmp_path):
    """``run``/``eval`` check the weights' overrides against the library's (runtime.check_weights)."""
    from mlcbuild.artifacts.info import BuildInfo
    from mlcbuild.errors import MlcbuildError
    from mlcbuild.runtime.artifact import check_weights

    params = [{"name": "w", "shape": [2], "dtype": "float16"}]
    build = BuildInfo.from_json(
        {
            "key": "k",
            "library": {"file": "lib.so", "sha256": ""},
            "params": params,
            "inputs": {"recipe": {"quantization": {"scheme": "q4f16_1", "overrides": [["lm_head", "q8f16_1"]]}}},
        }
    )
    info = {"key": "k", "scheme": "q4f16_1", "overrides": [["lm_head", "q0f16"]], "params": params}
    (tmp_path / "convert.json").write_text(json.dumps(info))
    with pytest.raises(MlcbuildError, match="overrides") as e:
        check_weights(build, tmp_path)
    assert "same recipe" in e.value.fix
    info["overrides"] = [["lm_head", "q8f16_1"]]
    (tmp_path / "convert.json").write_text(json.dumps(info))
    assert check_weights(build, tmp_path).overrides == [["lm_head", "q8f16_1"]]
