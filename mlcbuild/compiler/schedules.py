"""Schedule rules: dlight's defaults, with our fixes, chosen per target.

- GPU: ``Matmul``, ``GEMV``, ``Reduction``, ``GeneralReduction``, ``Fallback``.
  On Metal, dlight's ``Matmul`` first tries its simdgroup (``MetalMatmul``) path; in
  TVM 0.27 that path crashes ``AttachGlobalSymbol`` on kernels with a symbolic batch
  (``batch_decode``) and makes builds ~5x slower, so :class:`SIMTMatmul` skips it and
  uses dlight's generic shared-memory tiling on every GPU.
- CPU (llvm): ``GEMV`` (decode, NK layout) and ``Reduction``.
"""

from __future__ import annotations

from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.gpu import matmul as _dl_matmul


class _SkipSimdgroup(Exception):
    pass


def _refuse(*_args, **_kwargs):
    raise _SkipSimdgroup()


class SIMTMatmul(dl.gpu.Matmul):
    """dlight's GPU matmul rule without the Metal simdgroup path."""

    def apply(self, func, target, tunable):
        if target.kind.name != "metal":
            return super().apply(func, target, tunable)
        original = _dl_matmul.MetalMatmul.apply
        _dl_matmul.MetalMatmul.apply = _refuse  # dlight catches the error and tiles generically
        try:
            return super().apply(func, target, tunable)
        finally:
            _dl_matmul.MetalMatmul.apply = original


def schedule_rules(target) -> list:
    """The dlight rules for ``target``: GPU rules for GPU kinds, CPU rules for llvm."""
    if "gpu" in target.keys:
        return [SIMTMatmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
    return [dl.cpu.GEMV(), dl.cpu.Reduction()]
