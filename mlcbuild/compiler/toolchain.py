"""Facts of the installed compiler toolchain: package versions, TVM's commit, LLVM's version and
the code generators this TVM has (memoized on disk: a cache hit needs no ``import tvm``)."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import re
from pathlib import Path


def dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def tvm_commit() -> str:
    """The git commit of the installed TVM, read from ``tvm/_version.py`` without importing TVM."""
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        return "unknown"
    f = Path(list(spec.submodule_search_locations)[0]) / "_version.py"
    m = re.search(r"__commit_id__\s*=\s*commit_id\s*=\s*['\"]([^'\"]+)['\"]", f.read_text()) if f.is_file() else None
    return m.group(1) if m else "unknown"


def _tvm_probe() -> dict:
    """Facts that need ``import tvm``: LLVM major version and the available code generators."""
    import tvm
    import tvm_ffi

    kinds = ["llvm", "opencl", "metal", "vulkan", "webgpu", "cuda", "rocm", "c", "hexagon"]
    return {
        "llvm": str(tvm.target.codegen.llvm_version_major()),
        "codegens": [k for k in kinds if tvm_ffi.get_global_func(f"target.build.{k}", allow_missing=True) is not None],
    }


@functools.lru_cache(maxsize=4)
def _probe_memo(memo_dir: str | None, ident: str) -> dict:
    path = Path(memo_dir) / f"toolchain-{ident[:16]}.json" if memo_dir else None
    if path is not None and path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get("ident") == ident:
                return data
        except ValueError:
            pass
    data = {"ident": ident, **_tvm_probe()}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{id(data)}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    return data


def available_codegens(memo_dir: Path | None = None) -> list[str]:
    """Device kinds the installed TVM can generate code for (memoized like the stamp)."""
    return list(probe(memo_dir)["codegens"])


def probe(memo_dir: Path | None) -> dict:
    """The memoized :func:`_tvm_probe`, keyed by the installed TVM's version, commit, FFI and location."""
    spec = importlib.util.find_spec("tvm")
    ident = json.dumps(
        [dist_version("apache-tvm"), tvm_commit(), dist_version("apache-tvm-ffi"), str(spec.origin) if spec else ""]
    )
    return _probe_memo(str(memo_dir) if memo_dir else None, hashlib.sha256(ident.encode()).hexdigest())
