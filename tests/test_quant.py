"""Group quantization against an element-by-element reference of MLC-LLM's definition."""

from __future__ import annotations

import numpy as np
import pytest

from mlcbuild.quant import SCHEMES, get_scheme


def reference(w: np.ndarray, bits: int, group: int, dtype: str):
    """Loop-by-loop: scale = max|w|/max_int per group; q = clip(round(w/scale)+max_int); pack LSB first."""
    max_int = 2 ** (bits - 1) - 1
    epw = 32 // bits
    n, k = w.shape
    kp = -(-k // group) * group
    q_words = np.zeros((n, kp // epw), dtype=np.uint32)
    scales = np.zeros((n, kp // group), dtype=dtype)
    for i in range(n):
        row = np.zeros(kp, dtype=np.float32)
        row[:k] = w[i]
        for g in range(kp // group):
            block = row[g * group : (g + 1) * group]
            s = np.float32(np.abs(block).max() / max_int).astype(dtype)
            scales[i, g] = s
            for j, x in enumerate(block):
                q = int(np.clip(np.rint(x / np.float32(s)) + max_int, 0, 2 * max_int)) if s != 0 else max_int
                idx = g * group + j
                q_words[i, idx // epw] |= np.uint32(q << (bits * (idx % epw)))
    return q_words, scales


@pytest.mark.parametrize("name", ["q4f16_1", "q4f32_1", "q3f16_1", "q8f32_1"])
@pytest.mark.parametrize("k", [80, 50])  # 50: not a multiple of the group size -> zero padding
def test_matches_elementwise_reference(name, k):
    s = get_scheme(name)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, k)).astype(np.float32)
    w[1, :] = 0.0  # an all-zero row: scale 0, dequantizes to 0
    q, sc = s.quantize(w)
    rq, rs = reference(w, s.bits, s.group_size, s.model_dtype)
    np.testing.assert_array_equal(q, rq)
    np.testing.assert_array_equal(sc, rs)
    assert q.shape == s.packed_shapes(6, k)[0] and sc.shape == s.packed_shapes(6, k)[1]
    back = s.dequantize(q, sc, k)
    assert back.shape == (6, k)
    assert np.all(back[1] == 0)
    # round to nearest: error at most half a step of the (stored) group scale
    step = np.repeat(sc.astype(np.float32), s.group_size, axis=1)[:, :k]
    assert np.all(np.abs(back - w) <= step / 2 + 1e-6)


def test_known_packing():
    s = get_scheme("q4f32_1")
    w = np.zeros((1, 32), dtype=np.float32)
    w[0, 0], w[0, 1], w[0, 9] = 7.0, -7.0, 1.0  # max|w| = 7 -> scale 1
    q, sc = s.quantize(w)
    assert sc[0, 0] == 1.0
    # q = w + 7: element 0 -> 14, element 1 -> 0, element 9 -> 8, others 7
    assert q[0, 0] == (14 | 0 << 4 | sum(7 << (4 * i) for i in range(2, 8)))
    assert q[0, 1] == (7 | 8 << 4 | sum(7 << (4 * i) for i in range(2, 8)))


def test_kn_layout_is_the_transpose():
    nk, kn = get_scheme("q4f16_1"), get_scheme("q4f16_0")
    w = np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)
    q1, s1 = nk.quantize(w)
    q0, s0 = kn.quantize(w)
    np.testing.assert_array_equal(q0, q1.T)
    np.testing.assert_array_equal(s0, s1.T)
    np.testing.assert_array_equal(kn.dequantize(q0, s0, 64), nk.dequantize(q1, s1, 64))


def test_registry_has_the_issue_schemes():
    assert {"q0f32", "q0f16", "q4f16_1", "q4f32_1", "q4f16_0", "q3f16_1"} <= set(SCHEMES)
    d = get_scheme("q3f16_1").describe()
    assert (d["bits"], d["group_size"], d["elems_per_word"]) == (3, 40, 10)


def _gptq_case(seed: int = 0, n: int = 48, k: int = 100, rows: int = 400):
    """A weight and calibration inputs with correlated features (what makes GPTQ pay)."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((k, k)) / np.sqrt(k) + np.eye(k)
    x = (rng.standard_normal((rows, k)) @ mix).astype(np.float32)
    x[:, 7] = 0  # a column no input reaches
    return rng.standard_normal((n, k)).astype(np.float32), x


def _recon_error(x, w, wq):
    return float(np.sum((x.astype(np.float64) @ (w - wq).T.astype(np.float64)) ** 2))


@pytest.mark.parametrize("name", ["q4f16_1", "q3f16_1"])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_round_to_nearest_on_the_layer_output(name, act_order):
    """GPTQ's codes, packed in the scheme's own layout, reconstruct ``X W^T`` better than
    round-to-nearest (Frantar et al. 2022, Table 1's premise); codes stay on the grid."""
    import torch

    from mlcbuild.quant.gptq import gptq, hessian

    scheme = get_scheme(name)
    w, x = _gptq_case()
    codes, scale = gptq(w, hessian(torch.from_numpy(x)), scheme, block_size=32, act_order=act_order)
    assert codes.shape == (w.shape[0], scheme.padded_k(w.shape[1])) and codes.max() <= 2 * scheme.max_int
    wq = scheme.dequantize(*scheme.pack(codes, scale), w.shape[1])
    wr = scheme.dequantize(*scheme.quantize(w), w.shape[1])
    assert (wq[:, 7] == 0).all()
    assert _recon_error(x, w, wq) < 0.75 * _recon_error(x, w, wr)


def test_gptq_with_an_identity_hessian_is_round_to_nearest():
    """No correlation to exploit: every update is zero and the codes are RTN's, bit for bit."""
    import torch

    from mlcbuild.quant.gptq import gptq

    scheme = get_scheme("q4f16_1")
    w, _ = _gptq_case(1)
    codes, scale = gptq(w, torch.eye(w.shape[1], dtype=torch.float64), scheme)
    ref = scheme.quantize(w)
    got = scheme.pack(codes, scale)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
