"""AttachLogitProcessor: the in-place logit kernels MLC-LLM's engine requires by name
(``apply_logit_bias_inplace``, ``apply_penalty_inplace``, ``apply_bitmask_inplace``:
:mod:`mlcbuild.kernels.logit_processor`), in the CPU or GPU form of the target. MLC-LLM's
``AttachLogitProcessFunc`` (``python/mlc_llm/compiler_pass/attach_logit_processor.py``) is the
contract."""

from __future__ import annotations

import tvm

from mlcbuild.kernels import logit_processor

NAMES = ("apply_logit_bias_inplace", "apply_penalty_inplace", "apply_bitmask_inplace")


def gpu_threads(target) -> int:
    """Threads per block of the GPU kernels: 1024, or the target's ``max_num_threads`` if lower
    (0 for a CPU target)."""
    if target.kind.name == "llvm":
        return 0
    limit = target.attrs.get("max_num_threads")
    return min(1024, int(limit)) if limit else 256


def attach_logit_processor(target):
    """The pass adding the three kernels for ``target``."""
    threads = gpu_threads(target)

    @tvm.transform.module_pass(opt_level=0, name="AttachLogitProcessor")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = mod.clone()
        makers = (logit_processor.logit_bias, logit_processor.penalty, logit_processor.bitmask)
        for name, make in zip(NAMES, makers, strict=True):
            mod[name] = make(threads)
        return mod

    return _pass
