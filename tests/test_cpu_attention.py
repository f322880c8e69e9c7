"""Our CPU ragged prefill attention equals TVM's kernel it replaces, and CPU builds use it."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import recipe_data, tiny_config
from tvm import tirx
from tvm.relax.frontend.nn.llm._prefill_kernels import _attention_prefill_ragged_cpu

from mlcbuild.compiler.cpu_attention import ragged_prefill_cpu
from mlcbuild.compiler.lower import lower_module
from mlcbuild.recipe import parse_recipe
from mlcbuild.target import load_target, tvm_target


def _run(func, q, k, v, indptr, causal):
    target = tvm_target(load_target("host"))
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
    dev = tvm.cpu()
    total, h_q, d = q.shape
    out = tvm.runtime.empty((total, h_q, d), "float32", dev)
    lse = tvm.runtime.empty((total, h_q), "float32", dev)
    t = lambda a: tvm.runtime.tensor(a, dev)  # noqa: E731
    zeros = np.zeros(total, "int32")
    lib["main"](
        t(q),
        t(indptr),
        t(k),
        t(v),
        t(indptr),
        t(zeros),
        t(zeros[: len(indptr) - 1]),
        out,
        lse,
        causal,
        0,
        1.0,
        10000.0,
        1 / np.sqrt(d),
    )
    return out.numpy(), lse.numpy()


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


def test_cpu_builds_use_it():
    mod = lower_module(parse_recipe(recipe_data(tiny_config(), "q4f32_1")), load_target("host"))
    funcs = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    assert "RoPE applied before it" in funcs["batch_prefill_ragged_kv"].script()
