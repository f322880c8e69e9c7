"""Perplexity (``mlcbuild eval``) of the trained tiny model (``quality/tiny-kjv``) against
``transformers``' perplexity of the same weights over the same windows of held-out text."""

from __future__ import annotations

import json
import math

import pytest
import torch
from factories import REPO
from test_convert_run import cli

from mlcbuild.runtime.evaluate import reference_perplexity, text_ids, windows

MODEL = REPO / "quality" / "tiny-kjv"
HELDOUT = REPO / "quality" / "kjv_heldout.txt"
CALIBRATION = REPO / "quality" / "kjv_calibration.txt"
CONTEXT, MAX_TOKENS = 128, 700


def hf_model():
    """The trained checkpoint in ``transformers`` (float16 weights computed in float32)."""
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()


def _recipe(tmp_path, scheme: str, calibration: dict | None = None):
    from test_cache import _toml

    cfg = {k: v for k, v in json.loads((MODEL / "config.json").read_text()).items() if v is not None}  # TOML: no null
    data = {
        "model": {"name": "tiny-kjv", "architecture": "llama", "source": str(MODEL), "config": cfg},
        "quantization": {"scheme": scheme} | ({"calibration": calibration} if calibration else {}),
        "build": {"context_window_size": 256, "prefill_chunk_size": 64, "max_batch_size": 1},
    }
    p = tmp_path / f"tiny-kjv-{scheme}.toml"
    p.write_text(_toml(data))
    return p


def _compiled_eval(tmp_path, cache_dir, scheme, calibration=None, tokens=4096) -> dict:
    """``mlcbuild convert`` + ``mlcbuild eval --json`` of the trained model for ``scheme`` over
    the first ``tokens`` held-out tokens."""
    recipe = _recipe(tmp_path, scheme, calibration)
    conv = cli("convert", recipe, "--weights", MODEL, "--json", "--cache-dir", cache_dir)
    assert conv.exit_code == 0, conv.output
    weights = json.loads(conv.stdout.strip().splitlines()[-1])["weights"]
    args = ["--weights", weights, "--text", HELDOUT, "--context", CONTEXT, "--max-tokens", tokens, "--json"]
    r = cli("eval", recipe, *args, "--cache-dir", cache_dir)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not MODEL.is_dir(), reason="quality/tiny-kjv not trained (python quality/train_tiny.py)")
def test_q0f32_perplexity_equals_transformers(tmp_path, cache_dir):
    """q0f32 perplexity within 1e-5 (relative) of transformers' on the same windows."""
    ours = _compiled_eval(tmp_path, cache_dir, "q0f32", tokens=MAX_TOKENS)
    ids = text_ids(MODEL, HELDOUT, MAX_TOKENS)
    ref = reference_perplexity(hf_model(), ids, CONTEXT)
    assert ours["tokens"] == MAX_TOKENS - math.ceil(MAX_TOKENS / CONTEXT)
    assert abs(ours["perplexity"] - ref) <= 1e-5 * ref, (ours["perplexity"], ref)
    assert ours["perplexity"] < 100  # trained: far below the vocabulary's 2048


def test_eval_refuses_a_context_longer_than_the_build(tmp_path):
    from mlcbuild.errors import MlcbuildError
    from mlcbuild.runtime.evaluate import perplexity

    class Model:
        context_window_size = 64

    with pytest.raises(MlcbuildError) as e:
        perplexity(Model(), list(range(10)), 128)
    assert "--context 128" in e.value.message and "64" in e.value.fix
    with pytest.raises(MlcbuildError):
        windows([5], 16)  # one token: nothing to score


def _rtn_decoder_linears(hf, scheme) -> None:
    """Round-to-nearest every decoder linear of ``hf`` in place (the LM head and embeddings
    stay float, as :func:`mlcbuild.quant.calibrate.gptq_model` leaves them)."""
    for module in hf.model.layers.modules():
        if isinstance(module, torch.nn.Linear):
            w = module.weight.detach().numpy()
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(scheme.dequantize(*scheme.quantize(w, "NK"), w.shape[1], "NK")))


@pytest.mark.skipif(not MODEL.is_dir(), reason="quality/tiny-kjv not trained (python quality/train_tiny.py)")
@pytest.mark.parametrize("name", ["q4f16_1"])  # q3: test_q3f16_gptq_recipe_beats_q3f16_1_compiled
def test_gptq_beats_round_to_nearest_perplexity(name):
    """On the trained model, GPTQ (32 x 128 calibration tokens) loses less held-out perplexity
    than round-to-nearest at the same bits and layout (Frantar et al. 2022, Table 3's claim);
    ``pytest -s`` prints the three perplexities."""
    from mlcbuild.quant import get_scheme
    from mlcbuild.quant.calibrate import calibration_ids, gptq_model

    scheme = get_scheme(name)
    ids = text_ids(MODEL, HELDOUT, 8192)
    base = reference_perplexity(hf_model(), ids, CONTEXT)
    rtn = hf_model()
    _rtn_decoder_linears(rtn, scheme)
    ppl_rtn = reference_perplexity(rtn, ids, CONTEXT)
    calib = calibration_ids(MODEL / "tokenizer.json", CALIBRATION, 32, 128, seed=0)
    gq = hf_model()
    codes = gptq_model(gq, calib, scheme)
    assert len(codes) == 7 * 4  # q, k, v, o, gate, up, down in each of 4 layers
    ppl_gptq = reference_perplexity(gq, ids, CONTEXT)
    print(f"{name}: unquantized {base:.3f}, RTN {ppl_rtn:.3f}, GPTQ {ppl_gptq:.3f}")
    assert base < ppl_gptq < ppl_rtn


def test_calibration_text_too_short_is_an_error(tmp_path):
    from mlcbuild.errors import MlcbuildError
    from mlcbuild.quant.calibrate import calibration_ids

    short = tmp_path / "short.txt"
    short.write_text("In the beginning God created the heaven and the earth.")
    with pytest.raises(MlcbuildError) as e:
        calibration_ids(MODEL / "tokenizer.json", short, 4, 64, seed=0)
    assert "4 x 64" in e.value.message and "fewer samples" in e.value.fix


@pytest.mark.skipif(not MODEL.is_dir(), reason="quality/tiny-kjv not trained (python quality/train_tiny.py)")
def test_q3f16_gptq_recipe_beats_q3f16_1_compiled(tmp_path, cache_dir):
    """A GPTQ recipe (calibration text, samples, length) through convert + compile + eval:
    the compiled model's held-out perplexity beats round-to-nearest's at the same layout."""
    calibration = {"text": str(CALIBRATION), "samples": 16, "seq_len": 128}
    gptq = _compiled_eval(tmp_path, cache_dir, "q3f16_gptq", calibration, tokens=2048)["perplexity"]
    rtn = _compiled_eval(tmp_path, cache_dir, "q3f16_1", tokens=2048)["perplexity"]
    print(f"compiled q3f16_1 {rtn:.3f}, q3f16_gptq {gptq:.3f}")
    assert gptq < rtn


@pytest.mark.skipif(not MODEL.is_dir(), reason="quality/tiny-kjv not trained (python quality/train_tiny.py)")
def test_awq_beats_round_to_nearest():
    """AWQ's scales and clipping search make round-to-nearest lose less (Lin et al. 2023's
    claim). Measured on these 8192 tokens: q3 RTN 27.346, AWQ 27.080 (unquantized 26.393); at
    4 bits 26.518 and 26.507 (too close to assert here; the compiled quality bench shows it
    on all 43,792 tokens: +0.3758 RTN, +0.3388 AWQ). That folded scales keep the float model is checked by the
    SmoothQuant test below (the same quant/fold.py)."""
    from mlcbuild.quant import get_scheme
    from mlcbuild.quant.awq import awq_model
    from mlcbuild.quant.calibrate import calibration_ids

    ids = text_ids(MODEL, HELDOUT, 8192)
    calib = calibration_ids(MODEL / "tokenizer.json", CALIBRATION, 32, 128, seed=0)
    base = reference_perplexity(hf_model(), ids, CONTEXT)
    for name in ("q3f16_1",):
        scheme = get_scheme(name)
        rtn, aw = hf_model(), hf_model()
        _rtn_decoder_linears(rtn, scheme)
        awq_model(aw, calib, scheme)
        _rtn_decoder_linears(aw, scheme)
        ppl_rtn, ppl_awq = reference_perplexity(rtn, ids, CONTEXT), reference_perplexity(aw, ids, CONTEXT)
        print(f"{name}: unquantized {base:.3f}, RTN {ppl_rtn:.3f}, AWQ {ppl_awq:.3f}")
        assert base < ppl_awq < ppl_rtn


def _int8_activations_per_token(model) -> None:
    """Quantize every decoder linear's input to int8 per token (symmetric, ``max|x| / 127``):
    SmoothQuant's W8A8 setting (Xiao et al. 2022, Section 2)."""
    import torch

    def pre(_module, args):
        x = args[0]
        d = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / 127
        return (torch.round(x / d) * d,)

    for layer in model.model.layers:
        for m in layer.modules():
            if isinstance(m, torch.nn.Linear):
                m.register_forward_pre_hook(pre)


def _with_outlier_channels(model, channels=(3, 50, 97, 150), factor: float = 50.0):
    """The same function with activation outliers: 4 hidden channels of each norm scaled by
    ``factor`` and the reading weights' columns by ``1 / factor``, as large LLMs show (Xiao et
    al. 2022, Fig. 4; the trained tiny model has none)."""
    import torch

    with torch.no_grad():
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            for norm, linears in (
                (layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj]),
                (layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj]),
            ):
                for c in channels:
                    norm.weight[c] *= factor
                    for lin in linears:
                        lin.weight[:, c] /= factor
    return model


@pytest.mark.skipif(not MODEL.is_dir(), reason="quality/tiny-kjv not trained (python quality/train_tiny.py)")
def test_smoothquant_keeps_the_float_model_and_rescues_w8a8_from_outliers():
    """SmoothQuant's folded scales leave the float model as it was (to 1e-4); with activation
    outliers, W8A8 round-to-nearest (int8 weights in groups of 32, int8 activations per token)
    loses clearly and the smoothed model (alpha 0.5) almost nothing. Measured on these 8192
    tokens: float 26.393, W8A8 RTN 26.871, SmoothQuant 26.403 (without outliers RTN loses
    0.0004 and smoothing does not help: 26.403)."""
    from mlcbuild.quant import get_scheme
    from mlcbuild.quant.calibrate import calibration_ids
    from mlcbuild.quant.smoothquant import smooth_model

    scheme = get_scheme("q8f16_1")
    ids = text_ids(MODEL, HELDOUT, 8192)
    calib = calibration_ids(MODEL / "tokenizer.json", CALIBRATION, 32, 128, seed=0)
    base = reference_perplexity(hf_model(), ids, CONTEXT)
    smoothed = _with_outlier_channels(hf_model())
    smooth_model(smoothed, calib, alpha=0.5)
    assert abs(reference_perplexity(smoothed, ids, CONTEXT) - base) <= 1e-4 * base
    _rtn_decoder_linears(smoothed, scheme)
    _int8_activations_per_token(smoothed)
    rtn = _with_outlier_channels(hf_model())
    _rtn_decoder_linears(rtn, scheme)
    _int8_activations_per_token(rtn)
    ppl_rtn, ppl_smooth = reference_perplexity(rtn, ids, CONTEXT), reference_perplexity(smoothed, ids, CONTEXT)
    print(f"W8A8 with outliers: float {base:.3f}, RTN {ppl_rtn:.3f}, SmoothQuant {ppl_smooth:.3f}")
    assert ppl_rtn - base > 0.2 and ppl_smooth - base < 0.05 * (ppl_rtn - base)
