"""The logit processor's in-place kernels (``mlcbuild/kernels/logit_processor.py``) against NumPy:
the CPU form built for host, the GPU form run as OpenCL C on PoCL (:mod:`opencl`). The
reference is MLC-LLM's ``cpp/serve/logit_processor.cc`` contract as the module documents it."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from mlcbuild.compiler.target import tvm_target
from mlcbuild.kernels.logit_processor import bitmask, logit_bias, penalty
from mlcbuild.spec.target import load_target

BATCH, VOCAB = 3, 100


def _run(func, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """``func`` on ``arrays`` (by buffer name, in parameter order); the logits after the call."""
    if "blockIdx.x" in func.script():
        from opencl import pocl_problem, run_opencl

        if problem := pocl_problem():
            pytest.skip(problem)
        return run_opencl(func, arrays, {})["logits"]
    lib = tvm.tirx.build(
        tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=tvm_target(load_target("host"))
    )
    tensors = [tvm.runtime.tensor(a, tvm.cpu()) for a in arrays.values()]
    lib["main"](*tensors)
    return tensors[0].numpy()


def _logits(rng) -> np.ndarray:
    return rng.standard_normal((BATCH, VOCAB)).astype("float32") * 4


@pytest.mark.parametrize("threads", [0, 32])
def test_logit_bias(threads):
    rng = np.random.default_rng(0)
    logits = _logits(rng)
    pos2seq = np.array([0, 0, 2, 1, 2], "int32")
    ids = np.array([5, 99, 0, 42, 17], "int32")
    bias = rng.standard_normal(5).astype("float32")
    want = logits.copy()
    np.add.at(want, (pos2seq, ids), bias)
    args = {"logits": logits, "pos2seq_id": pos2seq, "token_ids": ids, "bias": bias}
    np.testing.assert_array_equal(_run(logit_bias(threads), args), want)


@pytest.mark.parametrize("threads", [0, 32])
def test_penalty(threads):
    rng = np.random.default_rng(1)
    logits = _logits(rng)
    seq_ids = np.array([2, 0], "int32")  # sequence j's logits are row seq_ids[j]
    pos2seq = np.array([0, 0, 1, 1, 1], "int32")
    ids = np.array([3, 50, 3, 7, 88], "int32")
    cnt = np.array([1, 4, 2, 1, 3], "int32")
    pen = np.array([[0.5, 0.1, 1.3], [0.0, 0.25, 1.1]], "float32")  # presence, frequency, repetition
    want = logits.copy()
    for i in range(len(ids)):
        s = pos2seq[i]
        v = want[seq_ids[s], ids[i]] - (pen[s, 0] + np.float32(cnt[i]) * pen[s, 1])
        want[seq_ids[s], ids[i]] = v * pen[s, 2] if v < 0 else v / pen[s, 2]
    args = {"logits": logits, "seq_ids": seq_ids, "pos2seq_id": pos2seq, "token_ids": ids, "token_cnt": cnt,
            "penalties": pen}  # fmt: skip
    np.testing.assert_allclose(_run(penalty(threads), args), want, rtol=1e-6)


@pytest.mark.parametrize("threads", [0, 32])
def test_bitmask(threads):
    rng = np.random.default_rng(2)
    logits = _logits(rng)
    seq_ids = np.array([1, 2], "int32")
    bits = rng.integers(0, 2, (BATCH, 4 * 32)).astype(bool)
    weights = np.uint64(1) << np.arange(32, dtype=np.uint64)  # bit b of word w: token 32 w + b
    mask = (bits.reshape(BATCH, 4, 32) * weights).sum(-1).astype(np.uint32).view("int32")
    masked = np.zeros_like(bits[:, :VOCAB])
    masked[seq_ids] = ~bits[seq_ids, :VOCAB]
    got = _run(bitmask(threads), {"logits": logits, "seq_ids": seq_ids, "mask": mask})
    np.testing.assert_array_equal(got[~masked], logits[~masked])
    # the lowest float32 on host; TVM 0.27's OpenCL C printer writes it with 7 digits
    # (-3.402823e+38f), one that float rounds to 3.4028231e38: still no probability after softmax
    assert masked.any() and (got[masked] <= -3.4028e38).all()
    if not threads:
        assert (got[masked] == np.finfo("float32").min).all()
