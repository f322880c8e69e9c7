"""FuseDecodeGEMV: the RMSNorm before a decode GEMV, the SwiGLU activation before it and the
residual add after it, fused into the int8 GEMV kernel (CPU builds)."""

from __future__ import annotations

import collections

import tvm
from tvm import relax, tirx
from tvm.relax.dpl import rewrite_call
from tvm.relax.dpl.pattern import GlobalVarPattern, TuplePattern, is_op, is_tuple_get_item, wildcard


def _shape(expr: relax.Expr) -> tuple | None:
    ty = expr.ty  # TVM 0.27: relax.TensorType (struct info before)
    if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    try:
        return tuple(int(d) for d in ty.shape.values)
    except TypeError:  # a symbolic dimension
        return None


def _use_counts(func: relax.Function) -> collections.Counter:
    counts: collections.Counter = collections.Counter()

    def visit(e):
        if isinstance(e, relax.Var):
            counts[e] += 1

    relax.analysis.post_order_visit(func.body, visit)
    return counts


@tvm.transform.module_pass(opt_level=0, name="FuseDecodeGEMV")
def fuse_decode_gemv(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Fuse a decode GEMV's neighbours into the int8 GEMV kernel (:mod:`mlcbuild.kernels.int8_gemv`).

    Before legalization, in every Relax function (only decode rows run that kernel):

    - ``gemv(rms_norm(x, w))`` -> one kernel computing the norm (prologue ``"rms_norm"``);
    - ``gemv(silu(split(gu)[0]) * split(gu)[1])`` -> prologue ``"swiglu"``;
    - ``r + gemv(.)`` / ``gemv(.) + r`` with ``r`` of the output's shape -> the residual add
      in the kernel's epilogue.

    A Llama-style decoder layer goes from ~10 kernel launches to 5 (norm+QKV, attention,
    O + residual, norm+gate/up, SwiGLU+down+residual). Fused only where the intermediate has
    no other user and the shapes are static and match; anything else is left as it was.
    """
    from mlcbuild.kernels.int8_gemv import gemv_arguments, int8_gemv

    bb = relax.BlockBuilder(mod)  # adds the fused kernels (one per distinct shape) with typed GlobalVars
    added: dict[str, tirx.PrimFunc] = {}

    def gemv_config(call: relax.Call) -> dict | None:
        gv = call.args[0]
        if not isinstance(gv, relax.GlobalVar):
            return None
        func = added.get(gv.name_hint) or mod.functions.get(gv)
        return gemv_arguments(func) if isinstance(func, tirx.PrimFunc) else None

    def fused_call(orig: relax.Call, cfg: dict, args: list, **changes) -> relax.Call:
        cfg = {**cfg, **changes}
        func = int8_gemv(**cfg)
        gv = bb.add_func(func, f"gemv_int8_{cfg['prologue'] or 'x'}{'_residual' if cfg['residual'] else ''}")
        added[gv.name_hint] = func
        return relax.call_tir(gv, relax.Tuple(args), orig.ty)

    def gemv_pattern(x):
        """An int8 GEMV call: ``(x, q_weight, q_scale)``, or with ``q_min`` (GGML Q4_1)."""
        args = TuplePattern([x, wildcard(), wildcard()]) | TuplePattern([x, wildcard(), wildcard(), wildcard()])
        return is_op("relax.call_tir")(GlobalVarPattern(), args, add_constraint=False)

    def rewrite(func: relax.Function) -> relax.Function:
        uses = _use_counts(func)

        def single_use(e) -> bool:
            return isinstance(e, relax.Var) and uses[e] == 1

        # prologues. A norm weight stored in another dtype (fp16 schemes computed in fp32,
        # models.common.StoredRMSNorm) is cast by an astype: the kernel reads the stored weight
        cast = is_op("relax.astype")(wildcard())
        norm = is_op("relax.nn.rms_norm")(wildcard(), cast | wildcard())

        def rms(orig, m):
            cfg = gemv_config(orig)
            x_var = orig.args[1].fields[0]
            n_call = m[norm]
            x, w = n_call.args
            if cast in m and single_use(w):
                w = m[cast].args[0]
            k = cfg and int(cfg["k"])
            if (
                not cfg
                or cfg["prologue"]
                or not single_use(x_var)
                or k % 32
                or _shape(x) != (1, 1, k)
                or _shape(w) != (k,)
            ):
                return orig
            if [int(a) for a in n_call.attrs.axes] not in ([-1], [2]) or x.ty.dtype != cfg["x_dtype"]:
                return orig
            variant = {"prologue": "rms_norm", "eps": float(n_call.attrs.epsilon), "norm_dtype": w.ty.dtype}
            return fused_call(orig, cfg, [x, w, *orig.args[1].fields[1:]], **variant)

        func = rewrite_call(gemv_pattern(norm), rms, func)
        uses = _use_counts(func)
        split = is_op("relax.split")(wildcard())
        act = is_op("relax.multiply")(is_op("relax.nn.silu")(is_tuple_get_item(split, 0)), is_tuple_get_item(split, 1))

        def swiglu(orig, m):
            cfg = gemv_config(orig)
            s_call = m[split]
            gu = s_call.args[0]
            k = cfg and int(cfg["k"])
            if (
                not cfg
                or cfg["prologue"]
                or not single_use(orig.args[1].fields[0])
                or k % 32
                or _shape(gu) != (1, 1, 2 * k)
            ):
                return orig
            if gu.ty.dtype != cfg["x_dtype"]:
                return orig
            sections = s_call.attrs.indices_or_sections
            if not isinstance(sections, tvm.tirx.IntImm) or int(sections) != 2 or int(s_call.attrs.axis) not in (-1, 2):
                return orig
            return fused_call(orig, cfg, [gu, *orig.args[1].fields[1:]], prologue="swiglu")

        func = rewrite_call(gemv_pattern(act), swiglu, func)
        uses = _use_counts(func)
        gemv = gemv_pattern(wildcard())
        other = wildcard()

        def residual(orig, m):
            call = m[gemv]
            cfg = gemv_config(call)
            if (
                not cfg
                or cfg["residual"]
                or cfg["prologue"] == "rms_norm"
                or not single_use(orig.args[0] if m[other].same_as(orig.args[1]) else orig.args[1])
            ):
                return orig
            res = m[other]
            n = int(cfg["n"])
            if _shape(res) != (1, 1, n) or _shape(orig) != (1, 1, n) or res.ty.dtype != cfg["x_dtype"]:
                return orig
            return fused_call(orig, cfg, [*call.args[1].fields, res], residual=True)

        func = rewrite_call(is_op("relax.add")(other, gemv) | is_op("relax.add")(gemv, other), residual, func)
        return func

    rewritten = {gv: rewrite(func) for gv, func in mod.functions_items() if isinstance(func, relax.Function)}
    out = bb.get()
    for gv, func in rewritten.items():
        out[gv] = func
    return relax.transform.DeadCodeElimination()(out)
