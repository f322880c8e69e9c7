"""The embedded real model (SmolLM2-135M-Instruct, a Q4_1 GGUF from PyPI): GGUF import, chat, references.

References: the ``gguf`` package's dequantization (tensors), ``transformers`` loading the same
GGUF (logits, greedy ids, perplexity, chat templates).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mlcbuild.cli import main
from mlcbuild.errors import MlcbuildError

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _recipe(tmp_path, gguf_path, scheme: str | None, name: str) -> Path:
    args = ["recipe", gguf_path, "--name", name, "--context-window", 512, "-o", tmp_path / f"{name}.toml"]
    assert cli(*args, *(["--scheme", scheme] if scheme else [])).exit_code == 0
    return tmp_path / f"{name}.toml"


@pytest.fixture(scope="session")
def exact_build(tmp_path_factory, gguf_path, cache_dir):
    """The exact import at fp32 compute (Q4_1 linears, Q8_0 embedding), converted and compiled for host."""
    tmp = tmp_path_factory.mktemp("gguf-exact")
    rec = _recipe(tmp, gguf_path, None, "smollm2-exact")
    text = rec.read_text().replace("f16_ggml", "f32_ggml")
    rec.write_text(text)
    conv = json.loads(cli("convert", rec, "--weights", gguf_path, "--json").stdout)
    comp = json.loads(cli("compile", rec, "--target", "host", "--json").stdout)
    return rec, Path(comp["artifact"]), Path(conv["weights"])


def test_recipe_from_gguf_imports_its_blocks_and_matches_the_public_config(tmp_path, gguf_path):
    """The written recipe's scheme is the file's block type; the GGUF's float32 rms_norm_eps
    (9.999999747378752e-06) equals the public config's 1e-05 within the relative 1e-6 tolerance."""
    from mlcbuild.artifacts.checkpoint import open_checkpoint
    from mlcbuild.artifacts.convert import check_config
    from mlcbuild.spec.recipe import load_recipe, parse_recipe

    r = load_recipe(_recipe(tmp_path, gguf_path, None, "x"))
    assert r.scheme == "q4f16_ggml_q4_1" and r.overrides == {"model.embed_tokens": "q8f16_ggml_q8_0"}
    ckpt = open_checkpoint(gguf_path)
    data = json.loads(json.dumps({"model": {"name": "p", "architecture": "llama", "source": "x",
                                            "config": {**r.config, "rms_norm_eps": 1e-05}},
                                  "quantization": {"scheme": "q4f16_1"}}))  # fmt: skip
    check_config(parse_recipe(data), ckpt)  # no mismatch
    data["model"]["config"]["rms_norm_eps"] = 1.1e-05
    with pytest.raises(MlcbuildError, match="rms_norm_eps"):
        check_config(parse_recipe(data), ckpt)


def test_exact_import_equals_gguf_dequantization(exact_build, gguf_path):
    """Every tensor of the converted weights, dequantized, equals ``gguf.quants.dequantize`` of
    the file's tensor exactly (q/k rows in Hugging Face order, as transformers unpermutes them)."""
    import gguf

    from mlcbuild.artifacts.gguf_file import unpermute_rows
    from mlcbuild.artifacts.tensor_cache import read_tensor_cache
    from mlcbuild.quant import get_scheme

    _, _, weights = exact_build
    ours = read_tensor_cache(weights)
    reader = gguf.GGUFReader(str(gguf_path))
    by_name = {t.name: t for t in reader.tensors}

    def ref(name):
        t = by_name[name]
        return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))

    q4, q8 = get_scheme("q4f32_ggml_q4_1"), get_scheme("q8f32_ggml_q8_0")
    emb = q8.dequantize(ours["model.embed_tokens.q_weight"], ours["model.embed_tokens.q_scale"])
    np.testing.assert_array_equal(emb, ref("token_embd.weight"))
    checked = 1
    for i in range(30):
        p = f"model.layers.{i}"

        def deq(name):
            return q4.dequantize(ours[f"{name}.q_weight"], ours[f"{name}.q_scale"], ours[f"{name}.q_min"])

        q = ref(f"blk.{i}.attn_q.weight")[unpermute_rows(576, 9)]
        k = ref(f"blk.{i}.attn_k.weight")[unpermute_rows(192, 3)]
        np.testing.assert_array_equal(
            deq(f"{p}.self_attn.qkv_proj"), np.concatenate([q, k, ref(f"blk.{i}.attn_v.weight")])
        )
        np.testing.assert_array_equal(deq(f"{p}.self_attn.o_proj"), ref(f"blk.{i}.attn_output.weight"))
        gate_up = np.concatenate([ref(f"blk.{i}.ffn_gate.weight"), ref(f"blk.{i}.ffn_up.weight")])
        np.testing.assert_array_equal(deq(f"{p}.mlp.gate_up_proj"), gate_up)
        np.testing.assert_array_equal(deq(f"{p}.mlp.down_proj"), ref(f"blk.{i}.ffn_down.weight"))
        np.testing.assert_array_equal(ours[f"{p}.input_layernorm.weight"], ref(f"blk.{i}.attn_norm.weight"))
        checked += 6
    assert checked == 181


def test_exact_import_logits_match_transformers(exact_build, hf_reference):
    """Logits of a chat prompt equal transformers' (same dequantized weights) within 1e-4 x max|logit|.

    On CPUs with an integer dot product our linears quantize their inputs to int8 (the int8
    prefill matmul, and the int8 GEMV of the one-row LM head, the tied Q8_0 embedding): the
    reference then quantizes them as those kernels do (``helpers.emulate_int8_activations``;
    llama.cpp's Q8 activation blocks), and the bound is ``5e-2 x max|logit|``: an activation
    within float noise of a rounding boundary of ``round(x / d_x)`` lands on either side (ours and
    torch sum in different orders), and one such flip moves the logits by far more than float
    noise. Measured on this prompt length: the int8-emulated reference itself, run in float32
    and in float64, differs by 1.2-2.1 % of max|logit| (2, 8, 37 tokens); ours vs the float32
    reference 1.4-2.3 %, and 2.9e-6 for a 1-token prompt (no flip)."""
    import torch
    from helpers import emulate_int8_activations

    from mlcbuild.quant import get_scheme
    from mlcbuild.runtime.artifact import open_local

    _, artifact, weights = exact_build
    hf, tok = hf_reference
    ids = tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    engine, _ = open_local(artifact, weights)
    got = engine.prefill(ids)
    q4, q8 = (get_scheme(s).dequantize_info() for s in ("q4f32_ggml_q4_1", "q8f32_ggml_q8_0"))
    hooks = emulate_int8_activations(hf, q4, len(ids), mask=lambda name: name != "lm_head")
    hooks += emulate_int8_activations(hf, q8, len(ids), mask=lambda name: name == "lm_head")
    try:
        with torch.no_grad():
            want = hf(torch.tensor([ids])).logits[0, -1].numpy()
    finally:
        for h in hooks:
            h.remove()
    bound = 5e-2 if hooks else 1e-4
    assert np.abs(got - want).max() <= bound * np.abs(want).max()


def test_q0f32_from_gguf_greedy_ids_and_perplexity_equal_transformers(tmp_path, gguf_path, hf_reference):
    """q0f32 compiled for host from the GGUF: transformers' greedy ids for 32 tokens of a chat
    prompt, and its perplexity within 3e-5 relative."""
    import torch

    from mlcbuild.runtime.evaluate import reference_perplexity

    hf, tok = hf_reference
    rec = _recipe(tmp_path, gguf_path, "q0f32", "smollm2-q0f32")
    conv = json.loads(cli("convert", rec, "--weights", gguf_path, "--json").stdout)
    res = json.loads(cli("run", rec, "--weights", conv["weights"], "--chat", "--prompt", QUESTION[0]["content"],
                         "--max-new-tokens", 32, "--ignore-eos", "--json").stdout)  # fmt: skip
    ids = tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    assert res["prompt_ids"] == ids
    want = list(ids)
    with torch.no_grad():  # greedy for 32 tokens, past the end token as --ignore-eos does
        for _ in range(32):
            want.append(int(hf(torch.tensor([want])).logits[0, -1].argmax()))
    assert res["output_ids"] == want[len(ids) :]
    assert "Paris" in res["text"]
    text = tmp_path / "text.txt"
    text.write_text(Path(__file__).read_text())  # real English and code, ~2k tokens
    out = json.loads(cli("eval", rec, "--weights", conv["weights"], "--text", text, "--context", 128,
                         "--max-tokens", 256, "--json").stdout)  # fmt: skip
    ids = tok(text.read_text())["input_ids"][:256]
    # float32 rounding only: on an AVX2-only Zen 3 host (2026-12-06) the build's logits are within
    # 3.4e-6 x max of float64 transformers' and its perplexity 1.6e-5 relative from it (1e-5 held on
    # the AVX-512 hosts); float32 transformers is 1.2e-7 from float64
    assert out["perplexity"] == pytest.approx(reference_perplexity(hf, ids, 128), rel=3e-5)


def test_sampling_is_reproducible_with_a_seed(exact_build):
    rec, artifact, weights = exact_build
    args = ["run", artifact, "--weights", weights, "--chat", "--prompt", "Tell me a story.", "--max-new-tokens", 12,
            "--temperature", 0.9, "--top-p", 0.9, "--top-k", 40, "--json"]  # fmt: skip
    a, b = (json.loads(cli(*args, "--seed", 7).stdout)["output_ids"] for _ in range(2))
    c = json.loads(cli(*args, "--seed", 8).stdout)["output_ids"]
    assert a == b and a != c
    # the sampler's probabilities come from the library's softmax_with_temperature: NumPy's, to
    # the float32 sum over 49,152 tokens (measured 6.8e-5 relative on random logits)
    from mlcbuild.runtime.artifact import open_local

    model, _ = open_local(artifact, weights)
    model.reset()
    logits = model.prefill([1, 28, 2036, 314])
    for t in (0.9, 0.3):
        x = logits.astype(np.float64) / t
        want = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
        np.testing.assert_allclose(model.softmax(logits, t), want, rtol=5e-4, atol=1e-7)
    greedy = model.softmax(logits, 0.0)
    assert greedy[int(np.argmax(logits))] == 1.0 and greedy.sum() == 1.0


def test_chat_keeps_the_kv_cache_across_turns(exact_build):
    """Turn two feeds only its new tokens: the cache then holds exactly the ids of a fresh render
    of the whole conversation, and both start the answer alike.

    (The answers themselves may differ past a few tokens: turn one's reply went into the cache
    by decode steps, whose linears quantize activations to int8, while a fresh render prefills
    it in float32.)"""
    from mlcbuild.runtime.artifact import open_local
    from mlcbuild.runtime.chat import ChatTemplate, Conversation, load_tokenizer, stop_ids

    _, artifact, weights = exact_build
    engine, chat = open_local(artifact, weights)
    tok, tpl = load_tokenizer(weights), ChatTemplate.load(weights)
    conv = Conversation(engine, tok, tpl, stop_ids(chat, tok, tpl))
    # (France is a near tie for this model: transformers' float logits put "The" 0.08 above "L";
    # int8 activations, ours and llama.cpp's alike, answer "L'Étoile, ...")
    first = tok.decode(list(conv.say("What is the capital of Germany?", 16)))
    assert "Berlin" in first
    second = list(conv.say("And what is 2 + 2?", 16))
    assert conv.stats.prefill_tokens > 0
    assert conv.engine.seq_len == len(conv.fed)
    fresh = Conversation(engine, tok, tpl, conv.stop)
    fresh.messages = [dict(m) for m in conv.messages[:2]]  # turn one and its reply, nothing in the cache
    again = list(fresh.say("And what is 2 + 2?", 16))
    n = len(conv.fed) - len(second)
    assert fresh.fed[:n] == conv.fed[:n]  # the same ids in the cache before the answer
    assert second and again and second[0] == again[0]  # (a 135M model: its second answers are not checked)


LLAMA3_STYLE = (
    "{{- bos_token }}{%- set date_string = strftime_now('%d %b %Y') if false else '26 Jul 2024' %}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}{%- if message.role not in ['user', 'assistant'] %}"
    "{{- raise_exception('roles must be user or assistant') }}{%- endif %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
QWEN_STYLE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{{- tools | tojson }}{%- endif %}"
    "{%- set ns = namespace(first=true) %}"
    "{%- for message in messages %}{%- if ns.first and message.role != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Qwen, a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- set ns.first = false %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@pytest.mark.parametrize("which", ["smollm2", "llama3", "qwen"])
def test_chat_templates_render_as_transformers_does(which, hf_reference, tmp_path):
    from transformers.utils.chat_template_utils import render_jinja_template

    from mlcbuild.runtime.chat import ChatTemplate

    _, tok = hf_reference
    source = {"smollm2": tok.chat_template, "llama3": LLAMA3_STYLE, "qwen": QWEN_STYLE}[which]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": source, "bos_token": "<s>",
                                                                "eos_token": {"content": "</s>"}}))  # fmt: skip
    ours = ChatTemplate.load(tmp_path)
    msgs = [{"role": "system", "content": "Be brief. "}, *QUESTION, {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "Ünïcode & <tags>?"}]  # fmt: skip
    for conv in (QUESTION, msgs):
        for gen in (True, False):
            want = render_jinja_template([conv], chat_template=source, add_generation_prompt=gen,
                                         bos_token="<s>", eos_token="</s>")[0][0]  # fmt: skip
            assert ours.render(conv, add_generation_prompt=gen) == want


@pytest.mark.parametrize("which", ["smollm2", "llama3", "qwen"])
def test_mlc_conv_template_renders_as_transformers_does(which, hf_reference, tmp_path):
    """The Conversation written for MLC's engine (``conv_template``) builds the prompt the
    model's template renders (transformers' renderer as the reference), with and without a
    system message, over several turns; SmolLM2's tokenizer is detected byte-level as MLC does."""
    from transformers.utils.chat_template_utils import render_jinja_template

    from mlcbuild.artifacts.chat_template import ChatTemplate
    from mlcbuild.artifacts.conv_template import conversation, render

    _, tok = hf_reference
    source = {"smollm2": tok.chat_template, "llama3": LLAMA3_STYLE, "qwen": QWEN_STYLE}[which]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": source, "bos_token": "<s>"}))
    conv = conversation(ChatTemplate.load(tmp_path), [(2, "<|im_end|>")], which)
    assert conv["stop_token_ids"] == [2] and conv["stop_str"] == ["<|im_end|>"]
    turns = [*QUESTION, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And Germany?"}]
    for msgs in (turns, [{"role": "system", "content": "Be brief."}, *turns]):
        if which == "llama3" or msgs[0]["role"] == "system" or conv["system_message"]:
            want = render_jinja_template([msgs], chat_template=source, add_generation_prompt=True, bos_token="<s>")[0][
                0
            ]
            assert render(conv, msgs) == want


def test_convert_writes_mlc_chat_config(exact_build):
    """convert's mlc-chat-config.json: conv_template a Conversation object with the model's stop
    token, tokenizer_info as MLC detects it, model_config with the sizes MLC's engine reads."""
    chat = json.loads((exact_build[2] / "mlc-chat-config.json").read_text())
    conv = chat["conv_template"]
    assert isinstance(conv, dict) and conv["roles"]["assistant"] == "<|im_start|>assistant\n"
    assert conv["stop_str"] == ["<|im_end|>"] and conv["stop_token_ids"] == [2]
    assert chat["tokenizer_info"] == {"token_postproc_method": "byte_level", "prepend_space_in_encode": False,
                                      "strip_space_in_decode": False}  # fmt: skip
    for k in ("prefill_chunk_size", "context_window_size", "max_batch_size", "tensor_parallel_shards"):
        assert isinstance(chat["model_config"][k], int)


def test_truncated_or_foreign_gguf_is_a_named_error(tmp_path, gguf_path):
    from mlcbuild.artifacts.checkpoint import open_checkpoint

    cut = tmp_path / "cut.gguf"
    with gguf_path.open("rb") as f:
        cut.write_bytes(f.read(3_000_000))
    with pytest.raises(MlcbuildError, match="unreadable GGUF") as e:
        open_checkpoint(cut)
    assert str(cut) in str(e.value)
    foreign = tmp_path / "foreign.gguf"
    foreign.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(MlcbuildError, match="not a GGUF file"):
        open_checkpoint(foreign)


def test_ggml_quantizer_is_llama_cpps_reference():
    """A float weight quantized by the import schemes dequantizes as gguf's own quantize + dequantize."""
    import gguf

    from mlcbuild.quant import get_scheme

    w = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    for name, t in (("q4f16_ggml_q4_0", "Q4_0"), ("q4f16_ggml_q4_1", "Q4_1"), ("q8f16_ggml_q8_0", "Q8_0")):
        s = get_scheme(name)
        ours = s.quantize(w)
        qt = gguf.GGMLQuantizationType[t]
        want = gguf.quants.dequantize(gguf.quants.quantize(w, qt), qt)
        np.testing.assert_array_equal(s.dequantize(**ours), want)
        assert math.isfinite(float(np.abs(want).max()))


def test_chat_command_turns_reset_stats_exit(exact_build):
    rec, artifact, weights = exact_build
    lines = "What is the capital of Germany?\n/stats\n/reset\nWhat is 2 + 2?\n/exit\nnot read\n"
    r = CliRunner().invoke(main, ["chat", str(artifact), "--weights", str(weights), "--max-new-tokens", "16"],
                           input=lines, catch_exceptions=False)  # fmt: skip
    assert r.exit_code == 0
    assert "Berlin" in r.output and "4" in r.output and "not read" not in r.output
    assert "decode" in r.output and "(conversation reset)" in r.output


# GGML types the reader must take (issue 21), the tensor each is written as, by GGUF name;
# K-quant rows need a multiple of 256 values: ffn_down (1536 inputs) holds them.
RETYPED = {
    "blk.0.attn_q.weight": "Q5_0",
    "blk.0.attn_k.weight": "Q5_1",
    "blk.0.attn_v.weight": "F16",
    "blk.0.attn_output.weight": "BF16",
    "blk.1.attn_q.weight": "Q4_0",
    "blk.1.attn_k.weight": "Q8_0",
    "blk.0.ffn_down.weight": "Q4_K",
    "blk.1.ffn_down.weight": "Q5_K",
    "blk.2.ffn_down.weight": "Q6_K",
    "blk.0.attn_norm.weight": "F32",
    "token_embd.weight": "Q8_0",
}


def _k_quant_blocks(rng, n_blocks: int, qt) -> np.ndarray:
    """Random K-quant blocks (``gguf`` has no K-quant quantizer) with finite f16 scales
    (block layouts: ggml-common.h ``block_q4_K``/``block_q5_K``/``block_q6_K``)."""
    import gguf

    size = gguf.GGML_QUANT_SIZES[qt][1]
    raw = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    scales = np.float16(rng.uniform(1e-3, 1e-2, (n_blocks, 2))).view(np.uint8).reshape(n_blocks, 4)
    if qt.name == "Q6_K":  # ql, qh, int8 scales[16], then d
        raw[:, size - 2 :] = scales[:, :2]
    else:  # d, dmin, then scales and codes
        raw[:, :4] = scales
    return raw


def _retyped_gguf(src: Path, dst: Path) -> None:
    """``dst``: ``src``'s metadata and the :data:`RETYPED` tensors in their new types."""
    import gguf

    rng = np.random.default_rng(0)
    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(dst), arch=str(reader.fields["general.architecture"].contents()))
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub)
    tensors = {t.name: t for t in reader.tensors}
    for name, tname in RETYPED.items():
        t, qt = tensors[name], gguf.GGMLQuantizationType[tname]
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # [rows, row length]
        w = np.asarray(gguf.quants.dequantize(np.asarray(t.data), t.tensor_type), np.float32).reshape(shape)
        if tname in ("F32", "F16"):
            writer.add_tensor(name, w.astype(np.float32 if tname == "F32" else np.float16))
            continue
        if tname.endswith("_K"):
            block, size = gguf.GGML_QUANT_SIZES[qt]
            data = _k_quant_blocks(rng, w.size // block, qt).reshape(shape[0], -1)
        else:
            data = gguf.quants.quantize(w, qt)
        writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qt)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_reader_takes_every_common_ggml_type(tmp_path, gguf_path):
    """Each tensor of F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K reads as the ``gguf``
    package dequantizes it, rows in ``transformers``' order (its LlamaTensorProcessor undoes the
    q/k permutation)."""
    import gguf
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    from mlcbuild.artifacts.checkpoint import open_checkpoint

    path = tmp_path / "retyped.gguf"
    _retyped_gguf(gguf_path, path)
    ckpt = open_checkpoint(path)
    hf_names = {ckpt._gguf_name(n): n for n in ckpt.tensor_names}
    assert set(hf_names) == set(RETYPED)
    tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    proc = LlamaTensorProcessor(config=ckpt.config)
    for gname, tname in RETYPED.items():
        t = tensors[gname]
        assert ckpt.ggml_type(hf_names[gname]) == tname
        want = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
        want = proc.process(want, gname).weights
        got = ckpt.read(hf_names[gname])
        assert got.dtype == np.float32 and np.isfinite(got).all()
        np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=f"{gname} ({tname})")


def test_tokenizer_matches_llama_cpp(gguf_path):
    """The tokenizer derived from the GGUF gives llama.cpp's ids (``llama-tokenize``, recorded in
    tests/data/smollm2_llamacpp_tokens.json), runs of spaces and digits included."""
    from tokenizers import Tokenizer

    from mlcbuild.artifacts.checkpoint import open_checkpoint

    ref = json.loads((Path(__file__).parent / "data" / "smollm2_llamacpp_tokens.json").read_text())
    ckpt = open_checkpoint(gguf_path)  # holds the derived files' directory
    tok = Tokenizer.from_file(str(ckpt.dir / "tokenizer.json"))
    assert tok.encode(ref["text"]).ids == ref["ids"]
