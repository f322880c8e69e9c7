"""DispatchKVCache: the model's target-independent KV cache
(:data:`mlcbuild.models.common.KV_CACHE_GENERIC`) replaced by TVM's ``TIRPagedKVCache``, its
kernels generated for the target, and its creator renamed ``create_tir_paged_kv_cache``
(MLC-LLM's name; five ``ShapeTuple`` arguments: sequences, total tokens, prefill chunk tokens,
tokens per page, sliding window 0/1); on CPUs its RoPE kernel is ours
(:func:`mlcbuild.kernels.rope_cpu.split_rotary_cpu`). MLC-LLM's ``DispatchKVCacheCreation``
(``python/mlc_llm/compiler_pass/dispatch_kv_cache_creation.py``) does the same for its models."""

from __future__ import annotations

import json

import tvm
from tvm import relax as rx
from tvm.relax.frontend.nn.llm.kv_cache import RopeMode, TIRPagedKVCache

from mlcbuild.compiler.passes.rewrite import rewrite_functions
from mlcbuild.kernels import rope_cpu
from mlcbuild.models.common import KV_CACHE_GENERIC

MODEL_CREATOR = "create_paged_kv_cache"  # the models' method (nn.Module spec), target-independent
CREATOR = "create_tir_paged_kv_cache"  # MLC-LLM's name for the TIR paged KV cache's creator


def _generic_call(call: rx.Call) -> bool:
    return (
        isinstance(call.op, tvm.ir.Op)
        and call.op.name == "relax.call_pure_packed"
        and isinstance(call.args[0], rx.ExternFunc)
        and call.args[0].global_symbol == KV_CACHE_GENERIC
    )


def build_kv_cache(bb: rx.BlockBuilder, target, sizes: list, spec: dict) -> rx.Expr:
    """TVM's TIR paged KV cache for ``target`` (its kernels added to ``bb``'s module); the
    creation call expression.

    ``sizes``: the five symbolic sizes (sequences, total tokens, tokens per prefill, tokens per
    page, 0/1 sliding window); ``spec``: :class:`mlcbuild.models.common.KVCacheSpec` fields
    plus ``dtype``.
    """
    scaling = spec["rope_scaling"] or {}
    rope_scaling = {} if scaling.get("rope_type") == "default" else dict(scaling)
    d, dtype = spec["head_dim"], spec["dtype"]
    rx.BlockBuilder._stack.append(bb)  # TIRPagedKVCache adds its kernels to BlockBuilder.current()
    try:
        cache = TIRPagedKVCache(
            attn_kind="mha",
            max_batch_size=sizes[0],
            max_total_seq_len=sizes[1],
            prefill_chunk_size=sizes[2],
            page_size=sizes[3],
            support_sliding_window=sizes[4],
            layer_partition=rx.ShapeExpr([0, spec["num_hidden_layers"]]),
            num_hidden_layers=spec["num_hidden_layers"],
            num_attention_heads=spec["num_attention_heads"],
            num_key_value_heads=spec["num_key_value_heads"],
            qk_head_dim=d,
            v_head_dim=d,
            mla_original_qk_head_dim=0,
            mla_original_v_head_dim=0,
            rope_mode=RopeMode.NONE if spec["rope_in_model"] else RopeMode.NORMAL,
            rope_scale=1,
            rope_theta=spec["rope_theta"],
            rope_scaling=rope_scaling,  # TVM's kernels take {} for plain RoPE, reject "default"
            rope_ext_factors=rx.prim_value(0),
            rotary_dim=d,
            enable_disaggregation=False,
            dtype=dtype,
            target=target,
        )
        if target.kind.name == "llvm" and rope_cpu.supports(rope_scaling, d, d):
            # our RoPE split in place of TVM's (cos/sin once per token and frequency, vectorized)
            kernel = rope_cpu.split_rotary_cpu(
                spec["rope_theta"], spec["num_attention_heads"], spec["num_key_value_heads"], d, dtype, rope_scaling
            )
            bb.update_func(bb.get().get_global_var("tir_split_rotary"), kernel)
    finally:
        rx.BlockBuilder._stack.pop()
    return cache._expr  # pylint: disable=protected-access


TREE_MASK_CPU = ("tree_attn_paged_kv_cpu", "batch_tree_attn")
"""TVM's CPU tree-mask kernels by their global symbols (the names once the module is finalized),
in the order ``vm.builtin.paged_attention_kv_cache_create`` takes them
(``f_attention_prefill_with_tree_mask_paged_kv`` first, as TVM's GPU branch passes them)."""


def _tree_mask_kernels_in_runtime_order(call: rx.Call) -> rx.Call:
    """TVM 0.27's CPU branch of ``TIRPagedKVCache`` passes the two tree-mask kernels swapped (the
    ragged one in the paged slot), so the runtime calls one with the other's 14/16 arguments at
    the first token tree (``batch_verify``). The creation call with the two in the runtime's
    order (:data:`TREE_MASK_CPU`); other calls as they are."""

    def name(arg) -> str | None:
        if isinstance(arg, rx.Tuple) and len(arg.fields) == 2 and isinstance(arg.fields[1], tvm.ir.GlobalVar):
            return arg.fields[1].name_hint
        return None

    if not (
        isinstance(call.op, tvm.ir.Op)
        and call.op.name == "relax.call_pure_packed"
        and isinstance(call.args[0], rx.ExternFunc)
        and call.args[0].global_symbol == "vm.builtin.paged_attention_kv_cache_create"
    ):
        return call
    args = list(call.args)
    where = {name(a): i for i, a in enumerate(args) if name(a) in TREE_MASK_CPU}
    if len(where) != 2:
        return call
    i, j = sorted(where.values())
    args[i], args[j] = args[where[TREE_MASK_CPU[0]]], args[where[TREE_MASK_CPU[1]]]
    return rx.Call(call.op, args, call.attrs, call.ty_args, call.span)


def dispatch_kv_cache(target):
    """The pass: every :data:`KV_CACHE_GENERIC` call becomes :func:`build_kv_cache`'s."""

    @rx.expr_functor.mutator
    class _Rewrite(rx.PyExprMutator):
        def visit_call_(self, call: rx.Call) -> rx.Expr:  # pylint: disable=arguments-renamed
            call = super().visit_call_(call)
            if not _generic_call(call):
                return call
            sizes, spec = call.args[1], json.loads(call.args[2].value)
            return build_kv_cache(self.builder_, target, list(sizes.values), spec)

    @rx.expr_functor.mutator
    class _TreeMaskOrder(rx.PyExprMutator):
        def visit_call_(self, call: rx.Call) -> rx.Expr:  # pylint: disable=arguments-renamed
            return _tree_mask_kernels_in_runtime_order(super().visit_call_(call))

    @tvm.transform.module_pass(opt_level=0, name="DispatchKVCache")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = rewrite_functions(_Rewrite(mod), mod)
        if target.kind.name == "llvm":
            mod = rewrite_functions(_TreeMaskOrder(mod), mod)
        funcs = {gv.name_hint: (gv, f) for gv, f in mod.functions_items()}
        if MODEL_CREATOR not in funcs:
            return mod
        # the name MLC-LLM's engine looks up (cpp/serve/function_table.cc)
        out = tvm.IRModule({gv: f for name, (gv, f) in funcs.items() if name != MODEL_CREATOR}, attrs=mod.attrs)
        out[CREATOR] = funcs[MODEL_CREATOR][1].with_attr("global_symbol", CREATOR)
        return out

    return _pass
