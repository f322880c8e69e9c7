"""How a shared library for a target's host is linked on this machine (its compiler, the
Android NDK, or a GNU cross compiler)."""

from __future__ import annotations

import os

from mlcbuild.compiler.target import resolved_host
from mlcbuild.errors import TargetError
from mlcbuild.spec.target import TargetDescriptor


def cross_linker(triple: str) -> str | None:
    """The GNU cross compiler on ``PATH`` that links shared libraries for a Linux ``triple``
    (``aarch64-linux-gnu`` -> ``aarch64-linux-gnu-gcc``, Debian's ``gcc-aarch64-linux-gnu``), or ``None``."""
    import shutil

    parts = triple.split("-")
    if len(parts) < 3 or "linux" not in parts or "android" in triple:
        return None
    arch = parts[0]
    env = parts[-1] if parts[-1].startswith("gnu") else "gnu"
    return shutil.which(f"{arch}-linux-{env}-gcc")


def link_kind(desc: TargetDescriptor) -> str:
    """How a shared library (``.so``) for the descriptor's host is linked on this machine:
    ``"cc"`` (this machine's compiler: same architecture), ``"ndk"`` (Android, with the
    compiler named by ``TVM_NDK_CC``) or ``"cross"`` (Linux on another architecture, with the
    GNU cross compiler of :func:`cross_linker`).

    Raises:
        TargetError: an Android host without ``TVM_NDK_CC``, or a triple this machine
            cannot link for (Apple platforms need Xcode; Linux on another architecture a
            cross compiler).
    """
    import tvm

    triple = resolved_host(desc)["mtriple"]
    if "android" in triple:
        if not os.environ.get("TVM_NDK_CC"):
            raise TargetError(
                f"a shared library for {triple} is linked with the Android NDK, and TVM_NDK_CC is not set",
                path=desc.path or desc.name,
                fix="export TVM_NDK_CC=$NDK/toolchains/llvm/prebuilt/linux-x86_64/bin/"
                "aarch64-linux-android28-clang++ and run again",
            )
        return "ndk"
    here = tvm.target.codegen.llvm_get_system_triple().replace("-conda-", "-unknown-")
    if triple.split("-")[0] != here.split("-")[0] and cross_linker(triple):
        return "cross"
    if triple.split("-")[0] != here.split("-")[0] or ("apple" in triple) != ("apple" in here):
        raise TargetError(
            f"cannot link a shared library for {triple} on this {here} machine",
            path=desc.path or desc.name,
            fix="build Apple targets on a Mac; for Android set TVM_NDK_CC; for Linux on another architecture "
            'install its GNU cross compiler (apt install gcc-aarch64-linux-gnu); or use output.format = "tar"',
        )
    return "cc"
