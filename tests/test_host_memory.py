"""Weights copied onto huge-page-advised host memory (``mlcbuild.runtime.host_memory``): the
same values (NumPy), aligned as TVM needs, in a mapping the kernel sees advised, and usable by
a compiled kernel."""

from __future__ import annotations

import mmap
import sys

import numpy as np
import pytest

from mlcbuild.runtime.host_memory import ALIGN, HUGE_PAGE, host_tensors


def _mapping_flags(address: int) -> list[str]:
    """``VmFlags`` of the mapping of this process that holds ``address`` (Linux ``/proc/self/smaps``)."""
    inside = False
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "VmFlags:":
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 2**32, (3000, 700), dtype=np.uint64).astype("uint32"),  # 8.4 MB: several huge pages
        rng.standard_normal((5, 7)).astype("float16"),  # 70 bytes: the next starts on ALIGN
        rng.standard_normal((33,)).astype("float32"),
        np.arange(12, dtype=np.int8).reshape(3, 4)[:, ::2],  # not contiguous
        np.zeros((0, 4), "float32"),
    ]


def test_values_shapes_dtypes_alignment(arrays):
    import tvm

    tensors = host_tensors(arrays, tvm.cpu())
    assert len(tensors) == len(arrays)
    for t, a in zip(tensors, arrays, strict=True):
        got = t.numpy()
        assert got.shape == a.shape and got.dtype == a.dtype
        np.testing.assert_array_equal(got, a)
        if a.size:
            assert np.from_dlpack(t).ctypes.data % ALIGN == 0
    if hasattr(mmap, "MADV_HUGEPAGE"):  # one mapping, starting on a huge page
        assert np.from_dlpack(tensors[0]).ctypes.data % HUGE_PAGE == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_HUGEPAGE and /proc/self/smaps are Linux's")
def test_mapping_is_advised_for_huge_pages(arrays):
    import tvm

    tensors = host_tensors(arrays, tvm.cpu())
    for t in tensors[:3]:
        assert "hg" in _mapping_flags(np.from_dlpack(t).ctypes.data)  # madvise(MADV_HUGEPAGE)


def test_a_kernel_reads_them(arrays):
    """A TVM kernel over the copies gives NumPy's result (the memory is what TVM would own)."""
    import tvm
    from tvm import te

    a = arrays[0]
    x = te.placeholder(a.shape, "uint32", name="x")
    k = te.reduce_axis((0, a.shape[1]), "k")
    y = te.compute((a.shape[0],), lambda i: te.sum(x[i, k] & tvm.tirx.const(1, "uint32"), axis=k), name="y")
    f = tvm.tirx.build(te.create_prim_func([x, y]), target="llvm")
    (t,) = host_tensors([a], tvm.cpu())
    out = tvm.runtime.empty((a.shape[0],), "uint32", tvm.cpu())
    f(t, out)
    np.testing.assert_array_equal(out.numpy(), (a & 1).sum(axis=1, dtype=np.uint32))
