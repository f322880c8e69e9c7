"""AttachGPUSampler: the sampler functions MLC-LLM's engine requires on Metal, CUDA and Vulkan
(``cpp/serve/sampler/gpu_sampler.cc`` checks all four; the contract of
``python/mlc_llm/compiler_pass/attach_sampler.py``), from TVM's sampling and sorting operators
(lowered by ``DispatchSampling``/``DispatchSortScan``) and :mod:`mlcbuild.kernels.sampler`:

- ``multinomial_from_uniform(probs [b, v] f32, uniform_samples [s] f32, sample_indices [s] i32) -> [s] i32``
- ``argsort_probs(probs [b, v] f32) -> (sorted_probs [b, v] f32, sorted_indices [b, v] i32)``, descending
- ``sample_with_top_p(sorted_probs, sorted_indices, uniform_samples [s], sample_indices [s], top_p [b] f32) -> [s] i32``
- ``sampler_take_probs(unsorted_probs, sorted_indices, sample_indices [s], sampling_results [s] i32,
  top_prob_offsets [p] i32) -> (sampled_values [s] f32, top_prob_probs [p] f32, top_prob_indices [p] i32)``

Other targets (CPU, OpenCL) sample on the CPU in MLC's engine and get none of them.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx
from tvm.relax.frontend import nn

from mlcbuild.compiler.passes.attach_logit_processor import gpu_threads
from mlcbuild.kernels import sampler

KINDS = ("metal", "cuda", "vulkan")
NAMES = ("multinomial_from_uniform", "argsort_probs", "sample_with_top_p", "sampler_take_probs")


def _sizes():
    return [tirx.Var(n, "int64") for n in ("batch_size", "num_samples", "vocab_size")]


def _reshape(x: relax.Expr, shape: list, dtype: str) -> relax.Expr:
    s = relax.ShapeExpr(shape)
    return relax.call_pure_packed("vm.builtin.reshape", x, s, ty_args=relax.TensorType(s, dtype))


def _multinomial(bb: relax.BlockBuilder) -> None:
    b, s, v = _sizes()
    probs = relax.Var("probs", relax.TensorType((b, v), "float32"))
    uniform = relax.Var("uniform_samples", relax.TensorType((s,), "float32"))
    rows = relax.Var("sample_indices", relax.TensorType((s,), "int32"))
    with bb.function("multinomial_from_uniform", [probs, uniform, rows]):
        with bb.dataflow():
            out = nn.multinomial_from_uniform(
                nn.wrap_nested(probs, "probs"),
                nn.wrap_nested(_reshape(uniform, [s, 1], "float32"), "uniform_samples"),
                nn.wrap_nested(_reshape(rows, [s, 1], "int32"), "sample_indices"),
                "int32",
            )
            res = bb.emit_output(_reshape(out._expr, [s], "int32"))
        bb.emit_func_output(res)


def _argsort(bb: relax.BlockBuilder) -> None:
    b, _, v = _sizes()
    probs = relax.Var("probs", relax.TensorType((b, v), "float32"))
    with bb.function("argsort_probs", [probs]):
        with bb.dataflow():
            order = bb.emit(relax.op.argsort(probs, descending=True, dtype="int32"))
            values = bb.emit_te(
                lambda p, o: te.compute((b, v), lambda i, j: p[i, o[i, j]], name="take_sorted_probs"),
                probs,
                order,
                primfunc_name_hint="take_sorted_probs",
            )
            res = bb.emit_output((values, order))
        bb.emit_func_output(res)


def _top_p(bb: relax.BlockBuilder, threads: int) -> None:
    b, s, v = _sizes()
    sorted_probs = relax.Var("sorted_probs", relax.TensorType((b, v), "float32"))
    sorted_indices = relax.Var("sorted_indices", relax.TensorType((b, v), "int32"))
    uniform = relax.Var("uniform_samples", relax.TensorType((s,), "float32"))
    rows = relax.Var("sample_indices", relax.TensorType((s,), "int32"))
    top_p = relax.Var("top_p", relax.TensorType((b,), "float32"))
    with bb.function("sample_with_top_p", [sorted_probs, sorted_indices, uniform, rows, top_p]):
        with bb.dataflow():
            top_k = nn.tensor_ir_op(
                sampler.fill_rows(threads), "fill_top_k", [v], nn.Tensor.placeholder([b, 1], "int32")
            )
            out = nn.sample_top_p_top_k_from_sorted_prob(
                nn.wrap_nested(sorted_probs, "sorted_probs"),
                nn.wrap_nested(sorted_indices, "sorted_indices"),
                nn.wrap_nested(_reshape(top_p, [b, 1], "float32"), "top_p"),
                top_k,
                nn.wrap_nested(_reshape(uniform, [s, 1], "float32"), "uniform_samples"),
                nn.wrap_nested(_reshape(rows, [s, 1], "int32"), "sample_indices"),
            )
            res = bb.emit_output(_reshape(out._expr, [s], "int32"))
        bb.emit_func_output(res)


def _take_probs(bb: relax.BlockBuilder, threads: int) -> None:
    b, s, v = _sizes()
    p = tirx.Var("num_positions", "int64")
    args = [
        relax.Var("unsorted_probs", relax.TensorType((b, v), "float32")),
        relax.Var("sorted_indices", relax.TensorType((b, v), "int32")),
        relax.Var("sample_indices", relax.TensorType((s,), "int32")),
        relax.Var("sampling_result", relax.TensorType((s,), "int32")),
        relax.Var("top_prob_offsets", relax.TensorType((p,), "int32")),
    ]
    out_ty = [relax.TensorType((s,), "float32"), relax.TensorType((p,), "float32"), relax.TensorType((p,), "int32")]
    with bb.function("sampler_take_probs", args):
        with bb.dataflow():
            gv = bb.add_func(sampler.take_probs(threads), "sampler_take_probs_tir")
            res = bb.emit_output(relax.call_tir(gv, args, out_ty=out_ty))
        bb.emit_func_output(res)


def attach_gpu_sampler(target):
    """The pass: the four functions for a Metal, CUDA or Vulkan ``target``; others unchanged."""
    threads = gpu_threads(target)

    @tvm.transform.module_pass(opt_level=0, name="AttachGPUSampler")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if target.kind.name not in KINDS:
            return mod
        bb = relax.BlockBuilder(mod)
        _multinomial(bb)
        _argsort(bb)
        _top_p(bb, threads)
        _take_probs(bb, threads)
        return bb.finalize()

    return _pass
