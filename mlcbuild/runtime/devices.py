"""The TVM device a library runs on here, and the runtime extension that device needs.

The TVM wheel's ``libtvm_runtime.so`` has the CPU device (its ``libtvm_runtime_cuda.so`` adds
CUDA, not exercised here: no CUDA machine). OpenCL comes from ``make opencl-runtime``: TVM's own OpenCL runtime
(``src/backend/opencl/runtime`` of apache/tvm, vendored in ``third_party/tvm_opencl_runtime``)
compiled against the wheel's headers into ``.opencl/libtvm_runtime_opencl.so``, an extension
library of the wheel's runtime as upstream TVM builds ``libtvm_runtime_opencl.so``
(``cmake/modules/OpenCL.cmake``). Loading it (``RTLD_GLOBAL``) registers ``device_api.opencl``
and the ``opencl`` module loader; its OpenCL is pyopencl's ICD loader with PoCL (PyPI wheels).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from mlcbuild.errors import MlcbuildError

REPO = Path(__file__).resolve().parents[2]
OPENCL_RUNTIME_ENV = "MLCBUILD_OPENCL_RUNTIME"
_loaded: dict[str, ctypes.CDLL] = {}


def opencl_runtime_path() -> Path:
    """The OpenCL runtime extension: ``$MLCBUILD_OPENCL_RUNTIME`` or ``.opencl/libtvm_runtime_opencl.so``
    of this checkout (which may not exist)."""
    return Path(os.environ.get(OPENCL_RUNTIME_ENV) or REPO / ".opencl" / "libtvm_runtime_opencl.so")


def _opencl_env() -> None:
    # pyopencl's ICD loader finds its PoCL through $PYOPENCL_HOME (pyopencl/__init__.py sets it;
    # unset, the loader crashes in its first call) without importing pyopencl here.
    import importlib.util

    spec = importlib.util.find_spec("pyopencl")
    if spec is not None and spec.origin:
        os.environ.setdefault("PYOPENCL_HOME", str(Path(spec.origin).parent))


def runtime_libraries(kind: str) -> list[Path]:
    """Shared libraries a TVM process (this one or an RPC server) loads for device ``kind``
    (``"opencl"``: the extension; other kinds: none beyond the wheel's), after setting the
    environment they read.

    Raises:
        MlcbuildError: ``opencl`` and the extension is not built (the fix names ``make opencl-runtime``).
    """
    if kind == "opencl":
        lib = opencl_runtime_path()
        if not lib.is_file():
            raise MlcbuildError(
                "this library runs on OpenCL, and TVM's Python wheel has no OpenCL runtime",
                path=str(lib),
                fix="build it with `make opencl-runtime` (TVM's OpenCL runtime against the wheel, ~10 s), "
                f"or point ${OPENCL_RUNTIME_ENV} at a libtvm_runtime_opencl.so",
            )
        _opencl_env()
        return [lib]
    return []


def device_for(kind: str):
    """The TVM device (``tvm.runtime.Device``) of device kind ``kind`` here, its runtime loaded.

    Raises:
        MlcbuildError: the runtime is missing (:func:`runtime_libraries`), or it is loaded and
            finds no such device (e.g. no OpenCL platform: PoCL not installed).
    """
    import tvm

    if kind in ("llvm", "c", "cpu"):
        return tvm.cpu()
    for lib in runtime_libraries(kind):
        if str(lib) not in _loaded:
            _loaded[str(lib)] = ctypes.CDLL(str(lib), ctypes.RTLD_GLOBAL)
    dev = tvm.device(kind, 0)
    if not dev.exist:
        raise MlcbuildError(
            f"no {kind} device here",
            fix="install PoCL (pip install pocl-binary-distribution pyopencl)" if kind == "opencl" else None,
        )
    return dev
