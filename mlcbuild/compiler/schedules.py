"""Schedule rules: dlight's defaults, with our fixes, chosen per target.

- GPU: ``Matmul``, ``GEMV``, ``Reduction``, ``GeneralReduction``, ``Fallback``.
  On Metal, dlight's ``Matmul`` first tries its simdgroup (``MetalMatmul``) path; in
  TVM 0.27 that path crashes ``AttachGlobalSymbol`` on kernels with a symbolic batch
  (``batch_decode``) and makes builds ~5x slower, so :class:`SIMTMatmul` skips it and
  uses dlight's generic shared-memory tiling on every GPU.
- CPU (llvm): :class:`CPUGEMV` (decode), :class:`CPUMatmul` (prefill) and
  :class:`CPUStagedReduction` (norms: dlight's CPU ``Reduction`` makes them quadratic).
  dlight's CPU GEMV vectorizes across 64-128 output rows with strided gathers and
  unrolls the reduction by 256: LLVM then spends minutes on one kernel (278 s for a
  128x128 GEMV, measured with ``hidden_size = 128``) and the code gathers. Ours
  parallelizes over output rows and vectorizes the reduction with ``rfactor``:
  contiguous loads of the weight rows, a few seconds of LLVM at most. Tile widths come
  from the target's vector registers (:func:`vector_registers`). Register-resident
  accumulators also need :func:`mlcbuild.compiler.passes.mark_noalias`.
"""

from __future__ import annotations

import math

from tvm.error import InternalError
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.cpu.gemv import GEMV as _DlightCPUGEMV
from tvm.s_tir.dlight.gpu import matmul as _dl_matmul
from tvm.s_tir.schedule import ScheduleError

# What TVM raises when a schedule primitive refuses a block (a failed check on its shape);
# anything else (a bug in a rule) propagates.
REFUSALS = (ScheduleError, InternalError)


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


class CPUGEMV(_DlightCPUGEMV):
    """Batch-1 GEMV ``y[s] = sum_r x[r] * W[s, r]`` (dequantize inlined) on CPU.

    Loops after dlight's normalization: ``batch, s, r, c`` (``c`` the inner reduction).
    Schedule: reduction split into ``vector_lanes``-wide chunks and rfactored so the
    partial sums are a vector; outer spatial loop parallel over the thread pool.
    """

    # 8 lanes (one packed int4 word) x 4 rows interleaved. SmolLM-135M's 3072 x 576 q4 GEMV
    # on host, medians of 15 alternating rounds (benches/kernels_host.py --variants):
    # 1 row x 16 lanes 229 us, 2 x 8 216 us, 4 x 16 206 us, 4 x 8 184 us, 8 x 8 173 us
    # (but slower on the 576-row kernels).
    vector_lanes = 8
    rows_interleaved = 4
    rows_per_task = 16

    def sch_inner_reduction(self, sch, target, block, vector_input_buffers, epilogue_info):
        batch, s, r, c = sch.get_loops(block)
        red = sch.fuse(r, c)
        extent = sch.get(red).extent
        lanes = self.vector_lanes
        if not (hasattr(extent, "value") and extent.value % lanes == 0):
            return self._scalar(sch, block, batch, s, red, epilogue_info)
        ro, ri = sch.split(red, factors=[None, lanes])
        # rf buffer [..., rows, lanes]: one row's partial sums are one contiguous vector.
        rf = sch.rfactor(ri, factor_axis=len(sch.get(block).writes[0].region))
        rb, rs, rro, rri = sch.get_loops(rf)
        outer = sch.fuse(rb, rs)
        so, si = sch.split(outer, factors=[None, self.rows_per_task])
        sch.parallel(so)
        # `rows_interleaved` rows advance through K together: their accumulators are
        # independent FMA chains (one row alone waits on the FMA latency) and x is loaded
        # once for all of them.
        si_o, si_i = sch.split(si, factors=[None, self.rows_interleaved])
        sch.reorder(so, si_o, rro, si_i, rri)
        sch.unroll(si_i)
        sch.vectorize(rri)
        sch.reverse_compute_at(block, si_o)
        # The accumulators are `rows_interleaved x lanes` locals: registers.
        sch.set_scope(rf, 0, "local")
        sch.decompose_reduction(rf, rro)
        if epilogue_info is not None:
            sch.reverse_compute_at(epilogue_info.block_rv, so)
        return sch

    def _scalar(self, sch, block, batch, s, red, epilogue_info):
        outer = sch.fuse(batch, s)
        so, _si = sch.split(outer, factors=[None, self.rows_per_task])
        sch.parallel(so)
        if epilogue_info is not None:
            sch.reverse_compute_at(epilogue_info.block_rv, so)
        return sch


def _const(x) -> int | None:
    """An extent as an int, or ``None`` when it is symbolic."""
    if isinstance(x, int):
        return x
    value = getattr(x, "value", None)
    return int(value) if isinstance(value, int) else None


def vector_registers(target) -> tuple[int, int]:
    """``(count, bits)`` of the SIMD registers an ``llvm`` target's code may use.

    From the target's triple, CPU and ``mattr`` (the descriptor's ``[host]``): aarch64 has
    32 x 128-bit NEON registers; x86 with AVX-512 32 x 512, with AVX/AVX2 16 x 256,
    otherwise 16 x 128 (SSE).
    """
    from mlcbuild.compiler.target import cpu_family

    cpu = str(target.attrs.get("mcpu", "")).lower()
    mattr = [str(a).lower() for a in (target.attrs.get("mattr") or [])]
    if cpu_family(target) == "arm":
        return 32, 128
    if "+prefer-256-bit" in mattr:  # the host's AVX-512 (compiler/target.py): 256-bit vectors
        return 16, 256  # 32 ymm registers exist; tiles stay those measured for AVX2
    if "+avx512f" in mattr or cpu in ("x86-64-v4", "skylake-avx512", "sapphirerapids", "icelake-server", "znver4"):
        return 32, 512
    if (
        "+avx2" in mattr
        or "+avx" in mattr
        or cpu in ("x86-64-v3", "haswell", "skylake", "znver2", "znver3", "alderlake")
    ):
        return 16, 256
    return 16, 128


class _CPURule(dl.ScheduleRule):
    """A CPU (llvm) rule over dlight's normalized form of a PrimFunc."""

    def is_target_available(self, target) -> bool:
        return target.kind.name == "llvm"

    def _normalized(self, func, target):
        """``(schedule, block infos)``, or ``None`` for another target or an unnormalizable func."""
        from tvm import s_tir, tirx
        from tvm.s_tir.dlight.analysis import normalize_prim_func

        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        return None if infos is None else (sch, infos)


class CPUMatmul(_CPURule):
    """``Y[m, n] = sum_k X[m, k] * W[n, k]`` for many rows ``m`` (prefill: tokens), W dequantized.

    Per tile of ``tile_n`` output features (parallel over the thread pool): dequantize
    the weight tile once into a ``[K, tile_n]`` buffer (transposed, so the inner loop
    reads it contiguously), then for every row and every ``k`` broadcast ``X[m, k]`` and
    do one ``tile_n``-wide vector multiply-add into ``Y[m, tile]``. The weight is read
    and dequantized once per call instead of once per row, and nothing the size of the
    whole dequantized weight is allocated. Epilogue stages (residual add) run after,
    parallel over their rows.
    """

    # 64 fp32 features: 8 AVX2 accumulators (16 NEON), enough independent FMA chains to hide
    # the FMA latency with one row at a time. 128 x 3072 x 576 q4 (host, 2 threads): tile 16
    # 13.4 ms, 32 6.1 ms, 64 5.3 ms, 128 7.5 ms; blocking 2-4 rows instead was slower (the
    # symbolic row tail's predicate keeps the accumulators in memory).
    tile_n = 64

    def apply(self, func, target, _tunable):
        normalized = self._normalized(func, target)
        if normalized is None:
            return None
        sch, infos = normalized
        reductions = [i for i in infos if i.is_reduction()]
        if len(reductions) != 1:
            return None
        mm = reductions[0]
        kinds = "".join(it.kind for it in mm.iters)
        if not kinds.endswith("SR") or "R" in kinds[:-1] or len(kinds) < 3:
            return None
        rows_dom = [_const(it.dom) for it in mm.iters[:-2]]
        if all(d is not None for d in rows_dom) and math.prod(rows_dom) <= 1:
            return None  # a GEMV: CPUGEMV's
        n_extent = _const(mm.iters[-2].dom)
        if n_extent is None:
            return None
        try:
            return self._schedule(sch, infos, mm, int(n_extent), target)
        except REFUSALS:  # a shape this rule does not handle: leave it to the next rule
            return None

    # Lanes per vector store of the tile fill. The whole tile (64) in one vector made LLVM spend
    # 2-3.5 s per kernel on its 64-lane gathers: 15 of SmolLM2 q4f32_1's 28 s host build (Zen 4,
    # 2026-12-07), while 16 lanes built in 0.3 s for all five kernels and ran as fast or faster
    # (batch 1: gate_up 403 -> 230 us, LM head 8.1 -> 5.4 ms; batch 128 within 2 %).
    fill_lanes = 16

    @classmethod
    def _vectorize_tile_fill(cls, sch, block, tile: int) -> None:
        """Fill the transposed ``[K, tile]`` weight tile (dequantize or copy), 8 ``k`` at a time.

        Loops ``(n, k)`` become ``(k // 8, n // lanes, k % 8 unrolled, n % lanes vectorized)``
        (``lanes``: :attr:`fill_lanes`, at most ``tile``): contiguous stores into the tile, a
        packed word of a row read once per 8 ``k`` (scalar, the dequantized tile was 2.7 of
        7 ms of a 128 x 3072 x 576 q4 matmul; vectorized 0.3).
        """
        d_n, d_k = sch.get_loops(block)[-2:]
        extent = _const(sch.get(d_k).extent)
        if tile < 4 or not extent or extent % 8:
            return
        d_w, d_j = sch.split(d_k, factors=[None, 8])
        n_o, n_i = sch.split(d_n, factors=[None, min(tile, cls.fill_lanes)])
        sch.reorder(d_w, n_o, d_j, n_i)
        sch.unroll(d_j)
        sch.vectorize(n_i)

    @staticmethod
    def _weight_read(block, n_extent: int) -> int | None:
        """Index of the ``[N, K]`` weight among ``block``'s reads, or ``None``."""
        for i, region in enumerate(block.reads):
            shape = [_const(d) for d in region.source.shape]
            if len(shape) == 2 and shape[0] == n_extent and shape[1] is not None:
                return i
        return None

    def tile_for(self, target) -> int:
        """Output features per tile for ``target``'s vector registers (:func:`vector_registers`).

        Half the register file holds the accumulators: 8 x 256-bit (AVX2, measured above),
        16 x 128-bit (NEON, 32 registers: 64 features), 8 x 128-bit (SSE-only x86, 16
        registers: 32 features). AVX-512 keeps 64 (4 x 512-bit measured no faster here:
        LLVM prefers 256-bit vectors on Intel). Arm values are from the register count,
        not yet measured on a phone.
        """
        count, bits = vector_registers(target)
        return min(self.tile_n, (count // 2) * min(bits, 256) // 32)

    def _schedule(self, sch, infos, mm, n_extent: int, target):
        tile = next(t for t in (self.tile_for(target), 32, 16, 8, 4, 2, 1) if n_extent % t == 0)
        block = mm.block_rv
        producers = [i for i in infos if i.block_rv != block and not i.is_reduction()]
        loops = [it.loop_rv for it in mm.iters]
        rows = sch.fuse(*loops[:-2]) if len(loops) > 3 else loops[0]
        n, k = loops[-2], loops[-1]
        n_o, n_i = sch.split(n, factors=[None, tile])
        sch.reorder(n_o, rows, k, n_i)
        # The row's `tile` sums accumulate in a local buffer, stored once after the k loop
        # (registers, given per-buffer alias information: passes.mark_noalias).
        acc = sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(acc, rows)
        store = sch.get_loops(acc)[-1]
        if tile > 1 and _const(sch.get(store).extent) == tile:
            sch.vectorize(store)
        sch.parallel(n_o)
        # The dequantized weight: computed per tile, stored transposed [k, n].
        mm_block = sch.get(block)
        tiled = False
        for prod in producers:
            written = sch.get(prod.block_rv).writes[0].source
            if any(r.source.same_as(written) for r in mm_block.reads):
                sch.transform_layout(prod.block_rv, ("write", 0), lambda i, j: (j, i))
                sch.compute_at(prod.block_rv, n_o)
                self._vectorize_tile_fill(sch, prod.block_rv, tile)
                tiled = True
        if not tiled and tile > 1:
            # An unquantized weight [N, K] (q0f32/q0f16): copied per tile into the same
            # transposed [K, tile] layout, so the inner loop reads it contiguously instead
            # of gathering `tile` rows per k (SmolLM-135M q0f32 prefill: 27 tok/s before).
            weight = self._weight_read(mm_block, n_extent)
            if weight is not None:
                copy = sch.cache_read(block, weight, "global")
                sch.transform_layout(copy, ("write", 0), lambda i, j: (j, i))
                sch.compute_at(copy, n_o)
                self._vectorize_tile_fill(sch, copy, tile)
        if tile > 1:
            # Before decompose_reduction: TVM refuses to vectorize the update block of a
            # decomposed reduction. Explicit, so it does not hang on LLVM's SLP vectorizer
            # (which left the tile as 16 scalar FMAs in whole-model builds: 4x slower).
            sch.vectorize(n_i)
        sch.decompose_reduction(block, k)
        # Epilogues (residual add, cast): parallel over their leading loops.
        for info in infos:
            if info.block_rv == block or any(info.block_rv == p.block_rv for p in producers):
                continue
            loops = sch.get_loops(info.block_rv)
            if loops:
                try:
                    sch.parallel(loops[0])
                except REFUSALS:  # not a parallelizable loop (e.g. a reduction): left serial
                    pass
        return sch


class CPUStagedReduction(_CPURule):
    """Reductions that are not GEMVs (RMSNorm, softmax) on CPU: every stage once.

    dlight's CPU ``Reduction`` computes the reduction *inside* the parallel loop over the
    outputs it feeds: for RMSNorm each of the ``hidden`` outputs recomputes the sum of
    squares over ``hidden`` inputs, O(hidden^2) (0.4-0.6 ms for one 576-wide decode norm,
    61 of them per SmolLM-135M token). Here each stage (cast, square, reduce, rsqrt,
    scale) keeps its own loop nest, the leading spatial loops (rows: tokens) fused and
    parallel over the thread pool when the extent is symbolic (prefill: tokens) or at
    least ``min_parallel`` elements, so the work is O(n).
    """

    min_parallel = 4096

    def apply(self, func, target, _tunable):
        normalized = self._normalized(func, target)
        if normalized is None or not any(info.is_reduction() for info in normalized[1]):
            return None
        sch, infos = normalized
        for info in infos:
            leading = []
            for it in info.iters:
                if it.kind != "S":
                    break
                leading.append(it.loop_rv)
            if not leading:
                continue
            rows = sch.fuse(*leading) if len(leading) > 1 else leading[0]
            extent = _const(sch.get(rows).extent)
            # A thread-pool launch costs more than a 576-wide pass: only big or symbolic (prefill) extents.
            if extent is None or extent >= self.min_parallel:
                sch.parallel(rows)
        return sch


class CPUElementwise(_CPURule):
    """Injective kernels (split + SiLU + multiply, residual adds, casts) on CPU.

    Left unscheduled, each stage of a fused kernel is its own loop nest writing a
    temporary buffer (a workspace allocation per call). Here every stage but the last is
    inlined into it, the innermost loop split by the vector width and vectorized when
    its extent is static and divisible, and the outer loops fused and parallel over the
    thread pool when symbolic (prefill tokens) or at least ``min_parallel`` elements.
    """

    min_parallel = 1 << 16

    def apply(self, func, target, _tunable):
        from tvm.s_tir.dlight.base import try_inline

        normalized = self._normalized(func, target)
        if normalized is None or not all(info.is_injective() for info in normalized[1]):
            return None
        sch, infos = normalized
        infos = try_inline(sch, infos)
        lanes = vector_registers(target)[1] // 32
        for info in infos:
            loops = sch.get_loops(info.block_rv)
            if not loops or any(kind != "S" for kind in info.dom_kind()):
                continue
            inner = _const(sch.get(loops[-1]).extent)
            outer = list(loops[:-1])
            per_iteration = inner or 1  # elements per iteration of the outer loops
            if inner is not None and inner % lanes == 0 and inner >= lanes:
                o, v = sch.split(loops[-1], factors=[None, lanes])
                sch.vectorize(v)
                outer.append(o)
                per_iteration = lanes
            if not outer:
                continue
            fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
            extent = _const(sch.get(fused).extent)
            if extent is None or extent * per_iteration >= self.min_parallel:
                sch.parallel(fused)
        return sch


def schedule_rules(target) -> list:
    """The dlight rules for ``target``: GPU rules for GPU kinds, CPU rules for llvm."""
    if "gpu" in target.keys:
        return [SIMTMatmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
    return [CPUGEMV(), CPUMatmul(), CPUStagedReduction(), CPUElementwise()]


def default_schedule(mod, target):
    """``mod`` with the default rules of ``target`` applied (what a build without records gets).

    Works on a deep copy: dlight may rewrite the functions it schedules in place.
    """
    import tvm

    mod = tvm.ir.load_json(tvm.ir.save_json(mod))
    with target:
        return dl.ApplyDefaultSchedule(*schedule_rules(target))(mod)
