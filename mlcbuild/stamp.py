"""What built an artifact: versions of mlcbuild, TVM (and its git commit), its FFI and LLVM.

These enter every cache key (MLC-LLM leaves them out, and its users link stale
libraries) and every ``build.json``. Reading LLVM's version and the list of code
generators needs ``import tvm`` (~5 s), so they are memoized in the cache's
``memo/`` directory under the installed TVM's identity; a cache hit then imports
no TVM at all.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import re
from pathlib import Path

from . import __version__


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _tvm_commit() -> str:
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


@functools.lru_cache(maxsize=1)
def source_digest(parts: tuple[str, ...] | None = None) -> str:
    """sha256 of mlcbuild's own source (every ``.py`` under the package, path and bytes; with
    ``parts``, only the files and folders of the package named there).

    The compiler is code: a changed schedule, pass or model definition must give a new
    key even when the version string stays the same.
    """
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    files = sorted(root.rglob("*.py"))
    if parts is not None:
        files = [f for f in files if f.relative_to(root).parts[0] in parts]
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def toolchain_stamp(memo_dir: Path | None = None) -> dict[str, str]:
    """The versions of the toolchain in use.

    Args:
        memo_dir: where to memoize the facts that need ``import tvm`` (``None``: don't).
    Returns:
        ``{"mlcbuild", "mlcbuild_source", "tvm", "tvm_commit", "tvm_ffi", "llvm"}``, all strings;
        ``"unknown"`` where a version cannot be read.
    """
    probe = _probe(memo_dir)
    return {
        "mlcbuild": __version__,
        "mlcbuild_source": source_digest(),
        "tvm": _dist_version("apache-tvm"),
        "tvm_commit": _tvm_commit(),
        "tvm_ffi": _dist_version("apache-tvm-ffi"),
        "llvm": probe["llvm"],
    }


def available_codegens(memo_dir: Path | None = None) -> list[str]:
    """Device kinds the installed TVM can generate code for (memoized like the stamp)."""
    return list(_probe(memo_dir)["codegens"])


def _probe(memo_dir: Path | None) -> dict:
    """The memoized :func:`_tvm_probe`, keyed by the installed TVM's version, commit, FFI and location."""
    spec = importlib.util.find_spec("tvm")
    ident = json.dumps(
        [_dist_version("apache-tvm"), _tvm_commit(), _dist_version("apache-tvm-ffi"), str(spec.origin) if spec else ""]
    )
    return _probe_memo(str(memo_dir) if memo_dir else None, hashlib.sha256(ident.encode()).hexdigest())
