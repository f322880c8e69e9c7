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
