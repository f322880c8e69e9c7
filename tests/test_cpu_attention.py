"""Our CPU prefill and decode attention equal TVM's kernels they replace, and CPU builds use them."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import recipe_data, tiny_config
from tvm import tirx
from tvm.relax.frontend.nn.llm._decode_kernels import _attention_decode_cpu
from tvm.relax.frontend.nn.llm._prefill_kernels import _attention_prefill_ragged_cpu

from mlcbuild.compiler.cpu_attention import paged_decode_cpu, ragged_prefill_cpu
from mlcbuild.compiler.lower import lower_module
from mlcbuild.recipe import parse_recipe
from mlcbuild.target import load_target, tvm_target


def _call(func, q, arrays, scalars):
    """Build ``func`` for host and call it: q, then ``arrays`` (NumPy), out, lse, then ``scalars``."""
    target = tvm_target(load_target("host"))
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
    dev = tvm.cpu()
    rows, h_q, d = q.shape
    out = tvm.runtime.empty((rows, h_q, d), "float32", dev)
    lse = tvm.runtime.empty((rows, h_q), "float32", dev)
    lib["main"](*(tvm.runtime.tensor(a, dev) for a in (q, *arrays)), out, lse, *scalars)
    return out.numpy(), lse.numpy()


def _run(func, q, k, v, indptr, causal):
    zeros = np.zeros(q.shape[0], "int32")
    d = q.shape[2]
    return _call(
        func, q, [indptr, k, v, indptr, zeros, zeros[: len(indptr) - 1]], [causal, 0, 1.0, 10000.0, 1 / np.sqrt(d)]
    )


@pytest.mark.parametrize("causal", [1, 0])
def test_matches_tvm_kernel(causal):
    h_kv, h_q, d = 2, 6, 24  # GQA 3, a head dim that is not a multiple of 16
    lens = [1, 7, 33]
    indptr = np.array([0, *np.cumsum(lens)], "int32")
    rng = np.random.default_rng(0)
    q = rng.standard_normal((indptr[-1], h_q, d)).astype("float32")
    k = rng.standard_normal((indptr[-1], h_kv, d)).astype("float32")
    v = rng.standard_normal((indptr[-1], h_kv, d)).astype("float32")
    ref = _run(_attention_prefill_ragged_cpu(h_kv, h_q, d, d, "float32", {}), q, k, v, indptr, causal)
    ours = _run(ragged_prefill_cpu(h_kv, h_q, d, "float32"), q, k, v, indptr, causal)
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-5)
    np.testing.assert_allclose(ours[1], ref[1], atol=1e-5)


def _run_decode(func, q, pages, indptr, values, last_len):
    zeros = np.zeros(q.shape[0], "int32")
    return _call(func, q, [pages, indptr, values, last_len, zeros, zeros], [0, 1.0, 1e4, 0.3])


def test_decode_matches_tvm_kernel():
    """Three sequences: 1 token, a full page plus 5, and an empty one; pages out of order."""
    h_kv, h_q, d, page = 2, 6, 24, 16
    rng = np.random.default_rng(1)
    pages = rng.standard_normal((6, 2, h_kv, page, d)).astype("float32")
    indptr = np.array([0, 1, 3, 3], "int32")
    values = np.array([4, 0, 2], "int32")
    last_len = np.array([1, 5, 0], "int32")
    q = rng.standard_normal((3, h_q, d)).astype("float32")
    ref = _run_decode(
        _attention_decode_cpu(h_kv, h_q, d, "float32", False, {}, page), q, pages, indptr, values, last_len
    )
    ours = _run_decode(paged_decode_cpu(h_kv, h_q, d, page, "float32"), q, pages, indptr, values, last_len)
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-5)
    np.testing.assert_allclose(ours[1][:2], ref[1][:2], atol=1e-4)
    assert (ours[1][2] == -5e4).all() and (ours[0][2] == 0).all()  # empty: zeros, lse -5e4


def test_cpu_builds_use_it():
    mod = lower_module(parse_recipe(recipe_data(tiny_config(), "q4f32_1")), load_target("host"))
    funcs = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    assert "RoPE applied before it" in funcs["batch_prefill_ragged_kv"].script()
    assert "RoPE applied before it" in funcs["batch_decode_paged_kv_cpu"].script()
