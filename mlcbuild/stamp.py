"""What built an artifact: versions of mlcbuild, TVM, its FFI and LLVM.

These enter every cache key (MLC-LLM leaves them out and its users link stale
libraries) and every ``build.json``.
"""

from __future__ import annotations

import functools
import importlib.metadata


@functools.lru_cache(maxsize=1)
def toolchain_stamp() -> dict[str, str]:
    """The versions of the toolchain in use.

    Returns:
        ``{"mlcbuild": ..., "tvm": ..., "tvm_commit": ..., "tvm_ffi": ..., "llvm": ...}``,
        all strings; ``"unknown"`` where a version cannot be read.
    """
    import tvm
    import tvm_ffi

    from . import __version__

    try:
        from tvm import _version as tvm_version

        commit = str(tvm_version.__commit_id__ or "unknown")
    except ImportError:  # pragma: no cover - other TVM builds
        commit = "unknown"
    llvm = "unknown"
    try:
        llvm = str(tvm.target.codegen.llvm_version_major())
    except Exception:  # pragma: no cover - TVM without LLVM
        pass
    try:
        ffi = importlib.metadata.version("apache-tvm-ffi")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        ffi = getattr(tvm_ffi, "__version__", "unknown")
    return {
        "mlcbuild": __version__,
        "tvm": tvm.__version__,
        "tvm_commit": commit,
        "tvm_ffi": ffi,
        "llvm": llvm,
    }
