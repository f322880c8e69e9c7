"""What built an artifact: versions of mlcbuild, TVM (and its git commit), its FFI and LLVM.

These enter every cache key (MLC-LLM leaves them out, and its users link stale
libraries) and every ``build.json``. Reading LLVM's version and the list of code
generators needs ``import tvm`` (~5 s), so they are memoized in the cache's
``memo/`` directory under the installed TVM's identity; a cache hit then imports
no TVM at all.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlcbuild import __version__
from mlcbuild.compiler.toolchain import dist_version, probe, tvm_commit
from mlcbuild.layout import source_digest


def toolchain_stamp(memo_dir: Path | None = None) -> dict[str, str]:
    """The versions of the toolchain in use.

    Args:
        memo_dir: where to memoize the facts that need ``import tvm`` (``None``: don't).
    Returns:
        ``{"mlcbuild", "mlcbuild_source", "tvm", "tvm_commit", "tvm_ffi", "llvm"}``, all strings;
        ``"unknown"`` where a version cannot be read.
    """
    facts = probe(memo_dir)
    return {
        "mlcbuild": __version__,
        "mlcbuild_source": source_digest(),
        "tvm": dist_version("apache-tvm"),
        "tvm_commit": tvm_commit(),
        "tvm_ffi": dist_version("apache-tvm-ffi"),
        "llvm": facts["llvm"],
    }


# ---- the ABI stamp compiled into every library ------------------------------------------------

ABI_MARKER = "mlcbuild_abi_stamp"  # first key of the stamp's JSON: found by scanning a library's bytes
STAMP_FUNCTION = "mlcbuild_stamp"  # the Relax function returning the JSON (a VM entry of the library)
# what a library needs of the runtime that loads it: TVM's VM and FFI, and mlcbuild's calling glue
ABI_FIELDS = ("tvm", "tvm_commit", "tvm_ffi", "mlcbuild")


def abi_stamp(toolchain: dict[str, str]) -> dict[str, str]:
    """The stamp compiled into a library: TVM version and git commit, TVM FFI, LLVM and mlcbuild
    versions, from :func:`toolchain_stamp`'s dict, and the MLC-LLM contract level it follows
    (:data:`mlcbuild.artifacts.mlc_contract.CONTRACT`)."""
    from mlcbuild.artifacts.mlc_contract import CONTRACT

    fields = {k: toolchain[k] for k in ("tvm", "tvm_commit", "tvm_ffi", "llvm", "mlcbuild")}
    return {ABI_MARKER: "1", **fields, "mlc_contract": CONTRACT}


def stamp_json(stamp: dict[str, str]) -> str:
    """The stamp as the flat JSON object the library carries (``ABI_MARKER`` first)."""
    return json.dumps(stamp, separators=(",", ":"))


def library_bytes(path: Path) -> bytes:
    """A library file's bytes (``.so``, ``.a``, or a gzipped ``.tar`` of objects as TVM writes
    system libraries, decompressed): its string constants (the VM executable's) are in them."""
    import gzip

    data = Path(path).read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def read_library_stamp(path: Path) -> dict[str, str] | None:
    """The ABI stamp of a library file (:func:`library_bytes`), read from its bytes alone (the
    JSON string constant of its ``mlcbuild_stamp`` function), or ``None`` if it has none."""
    data = library_bytes(path)
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
    from mlcbuild.errors import MlcbuildError

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


def with_stamp(mod, stamp: dict[str, str]):
    """``mod`` plus a Relax function :data:`mlcbuild.artifacts.stamp.STAMP_FUNCTION` taking nothing and
    returning the stamp's JSON string (a constant of the VM executable)."""
    from mlcbuild.compiler.passes.attach_metadata import with_string_function

    return with_string_function(mod, STAMP_FUNCTION, stamp_json(stamp))
