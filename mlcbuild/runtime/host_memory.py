"""Weights in host memory on transparent huge pages (Linux), for the CPU engine.

A decode step streams every weight once, so each 4 KiB page of weights costs a TLB miss; in a
virtual machine (nested paging) each miss is a two-level page walk. Linux backs anonymous
memory with 2 MiB pages where a program asks (``madvise(MADV_HUGEPAGE)``, the default
``transparent_hugepage=madvise`` mode) or everywhere (``always``); TVM's CPU allocator
(``posix_memalign``) does not ask. llama.cpp ``mmap``s its GGUF file, and ext4's page cache
maps part of it in 2 MiB pages (``FilePmdMapped``: 293 of ~700 MB of the 1B Q4_0 file in
``llama-bench``, 2026-12-07); our weights are copies in anonymous memory, so
:func:`host_tensors` puts them in one mapping advised for huge pages.

Measured on a 2-core AMD EPYC Zen 4 VM (2026-12-07; one process, two engines of one build
decoding 64 steps in alternation, params by ``tvm.runtime.tensor`` against these; 2 threads):
the Llama-3.2-1B shape q4f16_1 +4.0 % and +2.6 % (ahead in 12 and 10 of 16 rounds), q0f32
+7.5 % (7 of 10), q8f32_1 -1.1 % (7 of 12 ahead); SmolLM2-135M q4f32_1 -0.4 % (8 of 16). The
int4 GEMV at the 1B's LM head shape from DRAM: 35.2 -> 39.6 GB/s (8 of 10 rounds).
"""

from __future__ import annotations

import mmap
from typing import Sequence

import numpy as np

HUGE_PAGE = 2 << 20  # bytes: x86-64's and aarch64's (4 KiB granule) PMD-sized page
ALIGN = 64  # bytes: each tensor's start (TVM's kAllocAlignment)
# dtypes NumPy exports by DLPack (ml_dtypes' bfloat16 and the like are copied by TVM instead)
_DLPACK_KINDS = "biuf"


def host_tensors(arrays: Sequence[np.ndarray], device) -> list:
    """Tensors on the CPU ``device`` holding copies of ``arrays`` (any shapes and dtypes), in order.

    The arrays NumPy can export by DLPack (bool, integer and float dtypes; not ml_dtypes'
    bfloat16) are laid out one after another (each start aligned to :data:`ALIGN` bytes) in one
    private anonymous mapping that starts on a 2 MiB boundary and is advised ``MADV_HUGEPAGE``
    before the copies touch it, so the kernel can fault it in as 2 MiB pages even where each
    weight is smaller (SmolLM2-135M's largest per-layer weight is 0.9 MB); the tensors own the
    mapping through DLPack (it is freed with the last of them). The other arrays, and every
    array on systems without ``MADV_HUGEPAGE`` (macOS, Windows), take ``tvm.runtime.tensor``'s
    copy. Whether the kernel grants huge pages is its policy
    (``/sys/kernel/mm/transparent_hugepage/enabled``: ``never`` grants none); the values are
    the same either way.

    Raises:
        OSError: the mapping cannot be made (``ENOMEM``: the weights do not fit in memory).
    """
    import tvm

    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    placed = [advice is not None and a.dtype.kind in _DLPACK_KINDS for a in arrays]
    size = sum(_aligned(a.nbytes) for a, here in zip(arrays, placed, strict=True) if here)
    if size:
        region = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        region.madvise(advice)
        raw = np.frombuffer(region, dtype=np.uint8)  # keeps the mapping alive as long as any view
        offset = -raw.ctypes.data % HUGE_PAGE
    out = []
    for a, here in zip(arrays, placed, strict=True):
        if not here:
            out.append(tvm.runtime.tensor(np.ascontiguousarray(a), device))
            continue
        view = raw[offset : offset + a.nbytes].view(a.dtype).reshape(a.shape)
        view[...] = a
        out.append(tvm.runtime.from_dlpack(view))
        offset += _aligned(a.nbytes)
    return out


def _aligned(nbytes: int) -> int:
    """``nbytes`` rounded up to a multiple of :data:`ALIGN`."""
    return -(-nbytes // ALIGN) * ALIGN
