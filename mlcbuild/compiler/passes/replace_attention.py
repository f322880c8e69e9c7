"""ReplaceAttention: our attention kernels (:data:`mlcbuild.kernels.attention.KERNELS`) in place
of the paged KV cache's, by name, after the schedule phase: the phases before see TVM's
kernels exactly as MetaSchedule tuned them (tuning records match), and ours come scheduled."""

from __future__ import annotations

import tvm
from tvm import tirx

from mlcbuild.errors import CompileError
from mlcbuild.kernels.attention import KERNELS, paged_decode, ragged_prefill
from mlcbuild.kernels.attention_common import SOFTCAP_ATTR, WINDOW_ATTR


def replace_attention(gpu: bool):
    """A pass putting our kernels (:data:`KERNELS`) in place of TVM's, with the module's
    :data:`.attention_common.WINDOW_ATTR` window and :data:`.attention_common.SOFTCAP_ATTR`
    logit soft-cap. CPU builds always get them (TVM's CPU kernels are scalar and serial);
    GPU builds only where the model has a window or a cap (TVM's tiled GPU kernels are
    faster than ours).

    Head counts, head dim, page size and dtype are read from the replaced kernel's buffers;
    a kernel with different q/k and v widths (MLA), or on a CPU a paged kernel whose head dim
    is not a multiple of 8, is left alone, as are TVM's sliding-window variants (our layers
    never use the cache's own window).

    Raises:
        CompileError: the module has a window or a soft-cap and one of the kernels cannot be
            replaced (TVM's would ignore it).
    """

    @tvm.transform.module_pass(opt_level=0, name="ReplaceAttentionGPU" if gpu else "ReplaceAttentionCPU")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        attrs = mod.attrs if mod.attrs is not None else {}
        window = int(attrs[WINDOW_ATTR]) if WINDOW_ATTR in attrs else 0
        softcap = float(attrs[SOFTCAP_ATTR]) if SOFTCAP_ATTR in attrs else 0.0
        if gpu and not window and not softcap:
            return mod
        out = tvm.IRModule(mod.functions, attrs=mod.attrs)
        kept = []
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc):
                continue
            # by the kernel's own name (its global symbol), whatever the module calls it
            symbol = str(func.attrs["global_symbol"]) if func.attrs and "global_symbol" in func.attrs else gv.name_hint
            make = KERNELS[gpu].get(symbol)
            if make is None:
                continue
            q = func.params[0]  # TVM 0.27: buffer parameters carry shape and dtype
            h_q, d = int(q.shape[1]), int(q.shape[2])
            if make is ragged_prefill:
                k, v = func.params[2], func.params[3]
                if int(k.shape[2]) != d or int(v.shape[2]) != d or (d % 8 and not gpu):
                    kept.append(symbol)
                    continue
                ours = ragged_prefill(int(k.shape[1]), h_q, d, str(q.dtype), window, softcap, gpu)
            else:
                pages, length_info = (
                    (func.params[1], func.params[4]) if make is paged_decode else (func.params[2], func.params[5])
                )
                if int(pages.shape[4]) != d or (d % 8 and not gpu) or len(length_info.shape) != 1:
                    kept.append(symbol)
                    continue
                ours = make(int(pages.shape[2]), h_q, d, int(pages.shape[3]), str(q.dtype), window, softcap, gpu)
            out[gv] = ours.with_attr("global_symbol", func.attrs["global_symbol"])
        if (window or softcap) and kept:
            what = "sliding-window attention" if window else "attention logit soft-capping"
            raise CompileError(
                f"{what} needs mlcbuild's attention kernels, which do not cover {kept} of this model "
                "(different q/k and v widths, or on a CPU a head dim not a multiple of 8)",
                fix="use a model whose head dim is a multiple of 8" if not gpu else "build this model for a CPU target",
            )
        return out

    return _pass
