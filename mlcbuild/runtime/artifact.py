"""An artifact and converted weights, checked against each other before anything runs.

Used by :func:`open_local` (this process) and :func:`mlcbuild.device.bench.remote_engine`
(a device): the same checks for both, in the same order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlcbuild.artifacts.info import BuildInfo, WeightsInfo, read_build, read_weights
from mlcbuild.errors import MlcbuildError
from mlcbuild.runtime.engine import Engine

_REBUILD = "compile the recipe again (`mlcbuild compile`; a damaged cache entry is rebuilt)"


def library_path(artifact: Path, build: BuildInfo, runtime: dict | None = None) -> Path:
    """The artifact's library file, after checking it against ``build.json``: present, a
    plain file inside the artifact, stamped for ``runtime`` (a :func:`mlcbuild.artifacts.stamp.toolchain_stamp`,
    if given: :func:`mlcbuild.artifacts.stamp.check_library_stamp`), and of the sha256 recorded there
    (before TVM loads it: a flipped byte in machine code runs as wrong tokens or SIGILL).

    Raises:
        MlcbuildError: missing, a symlink, outside the artifact, stamped for another runtime,
            or not the bytes that were built.
    """
    from mlcbuild.artifacts.cache import file_sha256

    artifact = Path(artifact)
    name = build.library.file
    lib = artifact / name
    if not name or "/" in name or name in (".", "..") or lib.is_symlink() or not lib.is_file():
        raise MlcbuildError(
            f"the library {name!r} named by build.json is missing (or not a plain file in the artifact)",
            path=artifact,
            fix=_REBUILD,
        )
    if runtime is not None:  # first: a library of another runtime says which to install
        from mlcbuild.artifacts.stamp import check_library_stamp

        check_library_stamp(lib, runtime)
    if file_sha256(lib) != build.library.sha256:
        raise MlcbuildError(
            "the library's sha256 differs from the one build.json records (corrupt or replaced)", path=lib, fix=_REBUILD
        )
    return lib


def check_weights(build: BuildInfo, weights: Path) -> WeightsInfo:
    """Check converted weights against a build: same scheme and overrides, same parameter list.

    Returns:
        the weights' ``convert.json``.
    Raises:
        MlcbuildError: not a converted weight directory, or converted for another
            scheme or model (parameter names/shapes/dtypes differ).
    """
    info = read_weights(weights)
    scheme = build.scheme
    if info.scheme != scheme:
        raise MlcbuildError(
            f"the weights are quantized with {info.scheme} but the library was built for {scheme}",
            path=weights,
            fix=f"convert the weights with a {scheme} recipe, or compile the library with a {info.scheme} recipe",
        )
    if info.overrides != build.overrides:
        raise MlcbuildError(
            f"the weights' [quantization.overrides] {info.overrides} differ from the library's {build.overrides}",
            path=weights,
            fix="convert the weights and compile the library from the same recipe",
        )
    if build.params != info.params:
        diff = next(
            (f"{tuple(vars(a).values())} vs {tuple(vars(b).values())}"
             for a, b in zip(build.params, info.params, strict=False) if a != b),
            f"{len(build.params)} vs {len(info.params)} parameters",
        )  # fmt: skip
        raise MlcbuildError(
            f"the weights do not belong to this library's model (library vs weights: {diff})",
            path=weights,
            fix="convert the checkpoint with the same recipe the library was compiled from",
        )
    return info


def checked_build(artifact: str | Path, weights: str | Path, loadable: bool = True) -> tuple[BuildInfo, Path]:
    """``(build, library file)`` of an artifact whose weights match it (:func:`check_weights`)
    and whose library is the one built (:func:`library_path`; a ``.so`` is checked against
    this runtime's stamp, since this process drives it).

    Raises:
        MlcbuildError: as those, or ``loadable`` and the library is a ``.tar`` system library
            (it is linked into an app, not loaded).
    """
    from mlcbuild.artifacts.stamp import toolchain_stamp

    artifact, weights = Path(artifact), Path(weights)
    build = read_build(artifact)
    check_weights(build, weights)
    is_so = build.library.format == "so"
    lib = library_path(artifact, build, toolchain_stamp() if is_so else None)
    if loadable and not is_so:
        raise MlcbuildError(
            f"{build.library.file} is a system library for static linking; it needs a loadable .so",
            path=artifact,
            fix='give the target descriptor output.format = "so" (Android: with TVM_NDK_CC set) and compile again',
        )
    return build, lib


def engine_sizes(build: BuildInfo) -> dict[str, int]:
    """The :class:`Engine` keyword arguments a build fixes: vocabulary and KV-cache sizes (tokens)."""
    b = build.build_options
    return {
        "vocab_size": build.vocab_size,
        "context_window_size": int(b["context_window_size"]),
        "prefill_chunk_size": int(b["prefill_chunk_size"]),
        "page_size": int(b["page_size"]),
    }


def open_local(artifact: str | Path, weights: str | Path) -> tuple[Engine, dict[str, Any]]:
    """A ``.so`` artifact (``host``, or a GPU target whose device is here, e.g. ``pocl``) and
    converted weights, checked against each other, loaded here.

    Returns:
        ``(engine, chat config)`` (the weights' ``mlc-chat-config.json``).
    Raises:
        MlcbuildError: the artifact is not a ``.so`` build, its device's runtime is missing
            (:func:`mlcbuild.runtime.devices.device_for`), the weights do not match
            it (:func:`check_weights`), the library is not the one built (:func:`library_path`),
            its ABI stamp differs from this runtime (:func:`mlcbuild.artifacts.stamp.check_library_stamp`),
            or a shard is missing/corrupt.
    """
    import json

    from mlcbuild.artifacts.tensor_cache import read_tensor_cache

    artifact, weights = Path(artifact), Path(weights)
    build = read_build(artifact)
    if build.library.format != "so":
        raise MlcbuildError(
            f"the artifact was built for target {build.target_name!r} ({build.library.file}), which cannot run here",
            path=artifact,
            fix="compile the recipe with --target host (or pocl, for the GPU pipeline on OpenCL) to run it here",
        )
    build, lib = checked_build(artifact, weights)
    tensors = read_tensor_cache(weights)
    chat = json.loads((weights / "mlc-chat-config.json").read_text())
    params = [tensors[p.name] for p in build.params]
    return Engine.local(lib, params, device_kind=build.device_kind, **engine_sizes(build)), chat
