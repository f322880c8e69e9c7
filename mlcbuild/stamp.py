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


# ---- the ABI stamp compiled into every library ------------------------------------------------

ABI_MARKER = "mlcbuild_abi_stamp"  # first key of the stamp's JSON: found by scanning a library's bytes
STAMP_FUNCTION = "mlcbuild_stamp"  # the Relax function returning the JSON (a VM entry of the library)
# what a library needs of the runtime that loads it: TVM's VM and FFI, and mlcbuild's calling glue
ABI_FIELDS = ("tvm", "tvm_commit", "tvm_ffi", "mlcbuild")


def abi_stamp(toolchain: dict[str, str]) -> dict[str, str]:
    """The stamp compiled into a library: TVM version and git commit, TVM FFI, LLVM and mlcbuild
    versions, from :func:`toolchain_stamp`'s dict."""
    return {ABI_MARKER: "1", **{k: toolchain[k] for k in ("tvm", "tvm_commit", "tvm_ffi", "llvm", "mlcbuild")}}


def stamp_json(stamp: dict[str, str]) -> str:
    """The stamp as the flat JSON object the library carries (``ABI_MARKER`` first)."""
    return json.dumps(stamp, separators=(",", ":"))


def read_library_stamp(path: Path) -> dict[str, str] | None:
    """The ABI stamp of a library file (``.so``, a gzipped ``.tar`` of objects as TVM writes
    system libraries, ``.a``), read from its bytes alone (the JSON string constant of its
    ``mlcbuild_stamp`` function), or ``None`` if it has none."""
    import gzip

    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    start = data.find(b'{"' + ABI_MARKER.encode() + b'"')
    if start < 0:
        return None
    try:
        return json.loads(data[start : data.find(b"}", start) + 1].decode())
    except ValueError:
        return None


def check_library_stamp(path: Path, runtime: dict[str, str]) -> dict[str, str]:
    """Refuse a library whose ABI stamp differs from the runtime in use.

    Args:
        path: the library file.
        runtime: :func:`toolchain_stamp` of this process.
    Returns:
        the library's stamp.
    Raises:
        MlcbuildError: no stamp (built before stamps, or not by mlcbuild), or a field of
            :data:`ABI_FIELDS` differs; the message names both sides and which to rebuild.
    """
    from .errors import MlcbuildError

    stamp = read_library_stamp(path)
    if stamp is None:
        raise MlcbuildError(
            "the library carries no mlcbuild ABI stamp (built by another tool or an older mlcbuild)",
            path=path,
            fix="rebuild it with `mlcbuild compile` against the runtime you run it with",
        )
    diff = [k for k in ABI_FIELDS if stamp.get(k) != runtime.get(k)]
    if diff:
        pairs = ", ".join(f"{k} {stamp.get(k)} (library) vs {runtime.get(k)} (runtime)" for k in diff)
        raise MlcbuildError(
            f"the library was built for another runtime: {pairs}",
            path=path,
            fix=f"rebuild the library here with `mlcbuild compile` (apache-tvm {runtime.get('tvm')}), or run it "
            f"with the runtime it was built for (apache-tvm=={stamp.get('tvm')}, "
            f"apache-tvm-ffi=={stamp.get('tvm_ffi')}, mlcbuild {stamp.get('mlcbuild')})",
        )
    return stamp
