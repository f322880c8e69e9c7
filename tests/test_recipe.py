"""Recipe validation: every bad input is an error naming the file, the key and the fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from factories import REPO, recipe_data, tiny_config

from mlcbuild.errors import RecipeError
from mlcbuild.spec.recipe import load_recipe, parse_recipe

SHIPPED = sorted((REPO / "recipes").glob("*.toml"))


def test_shipped_recipes_load():
    names = {p.name for p in SHIPPED}
    assert {
        "llama32-3b.toml",
        "llama32-1b.toml",
        "smollm-135m.toml",
        "smollm-360m.toml",
        "smollm2-360m.toml",
        "qwen3-0.6b.toml",
        "qwen25-1.5b.toml",
        "phi3-mini-4k.toml",
        "mistral-7b.toml",
        "gemma2-2b.toml",
        "gemma3-1b.toml",
        "phi35-mini.toml",
    } <= names
    for p in SHIPPED:
        r = load_recipe(p)
        cfg = r.model_config
        assert cfg.hidden_size % cfg.num_attention_heads == 0 or cfg.head_dim


def test_shipped_llama32_3b_config_is_the_public_one():
    r = load_recipe(REPO / "recipes" / "llama32-3b.toml")
    c = r.model_config
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers) == (3072, 8192, 28)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.vocab_size) == (24, 8, 128, 128256)
    assert c.rope_scaling["rope_type"] == "llama3" and c.rope_theta == 500000.0 and c.tie_word_embeddings
    assert r.build.system_lib_prefix == "llama_3_2_3b_instruct_q4f16_1_"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.toml"
    p.write_text(text)
    return p


def _err(data) -> RecipeError:
    with pytest.raises(RecipeError) as e:
        parse_recipe(data, "bad.toml")
    assert "bad.toml" in str(e.value)
    return e.value


def test_unknown_key_names_key_and_allowed():
    d = recipe_data(tiny_config())
    d["build"]["contxt_window_size"] = 10
    e = _err(d)
    assert "build.contxt_window_size" in e.message and "context_window_size" in e.message


def test_unknown_section():
    d = recipe_data(tiny_config())
    d["quantisation"] = {}
    assert "[quantisation]" in _err(d).message


def test_wrong_type():
    d = recipe_data(tiny_config())
    d["build"]["prefill_chunk_size"] = "512"
    e = _err(d)
    assert "build.prefill_chunk_size" in e.message and "integer" in e.message


def test_bool_is_not_an_integer():
    d = recipe_data(tiny_config())
    d["build"]["max_batch_size"] = True
    assert "build.max_batch_size" in _err(d).message


def test_unknown_scheme_lists_allowed():
    d = recipe_data(tiny_config(), scheme="q5f16_1")
    e = _err(d)
    assert "quantization.scheme" in e.message and "q4f16_1" in e.message and "q3f16_1" in e.message


def test_unknown_architecture_lists_supported():
    d = recipe_data(tiny_config())
    d["model"]["architecture"] = "mamba"
    e = _err(d)
    assert "model.architecture" in e.message and "llama" in e.message


def test_missing_required_key():
    d = recipe_data(tiny_config())
    del d["model"]["source"]
    assert "model.source" in _err(d).message


def test_config_missing_key():
    cfg = tiny_config()
    del cfg["vocab_size"]
    assert "vocab_size" in _err(recipe_data(cfg)).message


def test_heads_must_divide():
    e = _err(recipe_data(tiny_config(num_attention_heads=4, num_key_value_heads=3)))
    assert "num_key_value_heads" in e.message


def test_unsupported_rope_scaling_is_an_error_not_dropped():
    e = _err(recipe_data(tiny_config(rope_scaling={"rope_type": "yarn", "factor": 4.0})))
    assert "rope_scaling" in e.message and "yarn" in e.message and "llama3" in e.message


def test_math_changing_keys_are_checked():
    assert "hidden_act" in _err(recipe_data(tiny_config(hidden_act="gelu"))).message
    assert "attention_bias" in _err(recipe_data(tiny_config(attention_bias=True))).message
    # per architecture: what its definition does not implement
    assert "use_sliding_window" in _err(recipe_data(tiny_config(model_type="qwen2", use_sliding_window=True))).message
    assert "use_mrope" in _err(recipe_data(tiny_config(model_type="qwen2", use_mrope=True))).message
    # LongRoPE: short factors up to original_max_position_embeddings, the long ones for a longer context
    longrope = {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8}
    phi3 = tiny_config(model_type="phi3", rope_scaling=longrope, original_max_position_embeddings=64)
    cfg = parse_recipe(recipe_data(phi3)).model_config  # context 128
    assert cfg.rope_max_context == 64
    assert cfg.for_context(64).layer_rope[0].ext_factors == (1.0,) * 8
    assert cfg.for_context(128).layer_rope[0].ext_factors == (2.0,) * 8
    for key in ("short_factor", "long_factor"):
        bad = {**longrope, key: [1.0] * 7}
        assert key in _err(recipe_data({**phi3, "rope_scaling": bad})).message
    # Gemma: a soft-cap must be a positive number; Gemma 2's default to 50 (attention) and 30
    gemma = tiny_config(model_type="gemma3_text", hidden_act=None, sliding_window=512, attn_logit_softcapping=-1)
    assert "attn_logit_softcapping" in _err(recipe_data(gemma)).message
    gemma2 = parse_recipe(recipe_data(tiny_config(model_type="gemma2", hidden_act=None))).model_config
    assert (gemma2.attn_logit_softcapping, gemma2.final_logit_softcapping) == (50.0, 30.0)
    assert gemma2.sliding_layers == (True, False)  # every second layer global
    assert (
        "partial_rotary_factor" in _err(recipe_data(tiny_config(model_type="phi3", partial_rotary_factor=0.75))).message
    )


def test_model_type_of_another_architecture_is_an_error():
    data = recipe_data(tiny_config(model_type="qwen2"))
    data["model"]["architecture"] = "llama"  # a Qwen2 config.json under the llama definition
    e = _err(data)
    assert "model_type" in e.message and "qwen2" in e.message and "model.architecture" in e.fix


def test_sliding_window_and_softcap_reach_every_target():
    """The window applies where the context outgrows it, the soft-cap always; on CPU and GPU
    targets alike (our attention kernels on both)."""
    from mlcbuild.compiler.export import attention_softcap, attention_window
    from mlcbuild.compiler.target import tvm_target
    from mlcbuild.spec.target import load_target

    recipe = parse_recipe(recipe_data(tiny_config(model_type="mistral", sliding_window=64)))  # context 128
    cfg = recipe.model_config
    for target in ("host", "s24"):
        assert attention_window(recipe, cfg, tvm_target(load_target(target))) == 64
    assert attention_window(recipe, cfg, None) == 0  # the target-independent form
    short = parse_recipe(recipe_data(tiny_config(model_type="mistral", sliding_window=64), context_window_size=64))
    assert attention_window(short, short.model_config, tvm_target(load_target("s24"))) == 0
    # absent is null (recipes leave JSON nulls out), as Mistral v0.3's config says
    assert parse_recipe(recipe_data(tiny_config(model_type="mistral"))).model_config.sliding_window is None
    gemma2 = parse_recipe(recipe_data(tiny_config(model_type="gemma2", hidden_act=None)))
    for target in ("android-cpu", "iphone15pro"):
        assert attention_softcap(gemma2, gemma2.model_config, tvm_target(load_target(target))) == 50.0


def test_bad_toml_names_file(tmp_path):
    p = _write(tmp_path, "[model\nname = 1")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert str(p) in str(e.value) and "TOML" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError) as e:
        load_recipe(tmp_path / "nope.toml")
    assert "nope.toml" in str(e.value)


def test_canonical_ignores_formatting_and_order(tmp_path):
    a = load_recipe(REPO / "recipes" / "smollm-135m.toml")
    text = (REPO / "recipes" / "smollm-135m.toml").read_text()
    # reorder: put [build] first, drop comments
    body = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    i = body.index("[build]")
    reordered = "\n".join(body[i:] + [""] + body[:i])
    b = load_recipe(_write(tmp_path, reordered))
    assert a.canonical() == b.canonical()


def test_context_window_defaults_to_max_position_embeddings():
    d = recipe_data(tiny_config(max_position_embeddings=200))
    del d["build"]["context_window_size"]
    d["build"]["prefill_chunk_size"] = 64
    assert parse_recipe(d).build.context_window_size == 200


def test_recipe_data_is_not_mutated():
    d = recipe_data(tiny_config())
    before = copy.deepcopy(d)
    parse_recipe(d)
    assert d == before


def test_calibration_table_goes_with_calibrated_schemes(tmp_path):
    """A GPTQ scheme needs [quantization.calibration] (its text relative to the recipe file);
    a round-to-nearest scheme refuses one; the table enters the key only where present."""
    need = _err(recipe_data(tiny_config(), "q4f16_gptq"))
    assert "q4f16_gptq" in need.message and "[quantization.calibration]" in need.fix
    data = recipe_data(tiny_config(), "q4f16_1")
    data["quantization"]["calibration"] = {"text": "calib.txt"}
    assert "round-to-nearest" in _err(data).message
    data["quantization"]["scheme"] = "q4f16_gptq"
    r = parse_recipe(data, path=tmp_path / "r.toml")
    assert r.calibration["text"] == str(tmp_path / "calib.txt") and r.calibration["samples"] == 128
    assert r.canonical()["quantization"]["calibration"]["seq_len"] == 512
    assert "calibration" not in parse_recipe(recipe_data(tiny_config(), "q4f16_1")).canonical()["quantization"]
    data["quantization"]["calibration"] = {"text": "calib.txt", "sample": 4}
    assert "quantization.calibration.sample" in _err(data).message


def test_smoothquant_alpha_is_checked_and_keyed():
    """SmoothQuant's migration strength: default 0.5, in the key, outside 0..1 an error."""
    data = recipe_data(tiny_config(), "q8f16_smooth")
    data["quantization"]["calibration"] = {"text": "calib.txt"}
    assert parse_recipe(data).calibration["alpha"] == 0.5
    data["quantization"]["calibration"]["alpha"] = 0.8
    assert parse_recipe(data).canonical()["quantization"]["calibration"]["alpha"] == 0.8
    data["quantization"]["calibration"]["alpha"] = 1.5
    e = _err(data)
    assert "alpha" in e.message and "0..1" in e.message and "0.5" in e.fix
