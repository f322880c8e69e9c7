"""A target descriptor as TVM sees it: the ``tvm.target.Target``, the host CPU's ISA, the code
generators the installed TVM has.

:func:`tvm_target` is the one function that turns a descriptor into a TVM target; ``native``
``mtriple``/``mcpu`` resolve to this machine's CPU here (:func:`resolved_host`).
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

from mlcbuild.errors import TargetError
from mlcbuild.spec.target import TargetDescriptor, linux_cpu_flags


def check_codegen(desc: TargetDescriptor, memo_dir: Path | None = None) -> None:
    """Fail at once if the installed TVM cannot generate code for this target.

    Raises:
        TargetError: e.g. Vulkan, whose SPIR-V code generator is not in the PyPI wheel.
    """
    from mlcbuild.compiler.toolchain import available_codegens

    if desc.kind not in available_codegens(memo_dir):
        hint = {
            "vulkan": "the apache-tvm wheel from PyPI is built without Vulkan (SPIR-V); build TVM from source "
            "with -DUSE_VULKAN=ON and install it into this environment, or use an OpenCL target (s24, pixel8)",
        }.get(desc.kind, f"install a TVM build with the {desc.kind} code generator")
        raise TargetError(
            f"the installed TVM cannot generate code for device kind {desc.kind!r} (no target.build.{desc.kind})",
            path=desc.path or desc.name,
            fix=hint,
        )


def codegen_available(desc: TargetDescriptor) -> bool:
    try:
        check_codegen(desc)
        return True
    except TargetError:
        return False


# /proc/cpuinfo flag -> LLVM feature, for the AVX-512 subsets x86_host_features enables
_AVX512 = (("avx512f", "+avx512f"), ("avx512bw", "+avx512bw"), ("avx512vl", "+avx512vl"),
           ("avx512dq", "+avx512dq"), ("avx512_vnni", "+avx512vnni"), ("avx512_bf16", "+avx512bf16"))  # fmt: skip


def x86_host_features(flags: frozenset[str]) -> list[str]:
    """LLVM ``mattr`` for an x86 CPU with these ``/proc/cpuinfo`` flags, on top of ``x86-64-v3``.

    By instruction set, never by vendor. AVX-VNNI (client Intel since Alder Lake, Xeons since
    Sapphire Rapids) gives ``+avxvnni`` only: the VEX path the kernels were tuned on. Adding
    AVX-512 there costs decode: SmolLM2 q4f32_1 280 against 310 tokens/s (medians of 3, a 2-core
    Xeon VM), and with ``+prefer-256-bit`` too 356 against 418 tokens/s (2 threads, 3 alternating
    runs of ``mlcbuild bench --local``, a 2-core Xeon VM with AMX, 2026-12-04); LLVM widens the
    GEMV's index arithmetic to zmm. An AMD Zen 5 (family 26: AVX-VNNI and AVX-512 both) showed
    no difference beyond its noise: SmolLM2 q4f16_1 decode 387 / 399 tokens/s (AVX-VNNI /
    AVX-512 with ``+prefer-256-bit``), q8f32_1 200 / 217, prefill within 10 %, and zmm vectors
    lost prefill (970 against 1369 tokens/s for q4f16_1) while compiling 20-40 % longer (2
    threads, 3 alternating rounds of ``mlcbuild bench --local``, 2026-12-06). Without AVX-VNNI, AVX-512
    F/BW/VL (Zen 4, Xeons before Sapphire Rapids) gives the AVX-512 features present (VNNI,
    BF16 among them) and ``+prefer-256-bit``, so LLVM keeps 256-bit vectors and the int8 GEMVs
    get AVX512-VNNI's 256-bit ``vpdpbusd``; a CPU with neither (AVX2 only) gets nothing more.
    GFNI, where the CPU has it, is added to each (``+gfni``: the int4 GEMV's high nibbles in one
    ``vgf2p8affineqb``, :func:`has_gfni`).

    Args:
        flags: the kernel's CPU flags (``linux_cpu_flags()``).

    Returns:
        LLVM feature strings, e.g. ``["+avx512f", ..., "+avx512vnni", "+prefer-256-bit"]``.
    """
    gfni = ["+gfni"] if "gfni" in flags else []
    if "avx_vnni" in flags:
        return ["+avxvnni"] + gfni
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        return [feature for flag, feature in _AVX512 if flag in flags] + ["+prefer-256-bit"] + gfni
    return gfni


# aarch64 /proc/cpuinfo ``Features`` -> LLVM feature (Linux's arch/arm64/kernel/cpuinfo.c names)
_ARM = (("asimddp", "+dotprod"), ("i8mm", "+i8mm"), ("sve", "+sve"), ("fphp", "+fullfp16"))


def arm_host_features(flags: frozenset[str]) -> list[str]:
    """LLVM ``mattr`` for an aarch64 CPU with these ``/proc/cpuinfo`` ``Features``: the int8
    dot products (``asimddp`` -> ``+dotprod``, ``i8mm`` -> ``+i8mm``), SVE and fp16 arithmetic,
    each only where the kernel reports it. LLVM's CPU name alone misses them under
    virtualization and on cores it does not know (the same reason as on x86).

    Args:
        flags: the kernel's CPU features (``linux_cpu_flags()``).

    Returns:
        LLVM feature strings, e.g. ``["+dotprod", "+i8mm"]``.
    """
    return [feature for flag, feature in _ARM if flag in flags]


def _native_host() -> dict[str, Any]:
    """This machine's CPU as LLVM sees it: ``x86-64-v3`` plus the ISA extensions the kernel
    reports (:func:`x86_host_features`) on x86; LLVM's CPU name elsewhere, plus on aarch64 the
    extensions the kernel reports (:func:`arm_host_features`).

    The CPU name is not used on x86: with the exact name of an AVX-512 machine LLVM 22 spent
    ~90 s per vectorized GEMV (feasibility notes), and under KVM LLVM names CPUs it cannot see
    fully (an AVX-VNNI Xeon as "rocketlake", which lacks it). The flags come from the kernel.
    """
    import tvm

    triple = tvm.target.codegen.llvm_get_system_triple().replace("-conda-", "-unknown-")
    cpu = tvm.target.codegen.llvm_get_system_cpu()
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        try:
            has_avx2 = tvm.target.codegen.llvm_cpu_has_features(
                ["avx2", "fma"], tvm.target.Target({"kind": "llvm", "mcpu": cpu})
            )
        except Exception:  # pragma: no cover
            has_avx2 = False
        if not has_avx2:
            return {"mtriple": triple, "mcpu": "x86-64"}
        mattr = x86_host_features(linux_cpu_flags())
        return {"mtriple": triple, "mcpu": "x86-64-v3", **({"mattr": mattr} if mattr else {})}
    mattr = arm_host_features(linux_cpu_flags()) if machine in ("aarch64", "arm64") else []
    return {"mtriple": triple, "mcpu": cpu, **({"mattr": mattr} if mattr else {})}


def resolved_host(desc: TargetDescriptor) -> dict[str, Any]:
    """The ``[host]`` table as TVM attributes, with ``native`` resolved."""
    host = dict(desc.host)
    native = _native_host() if "native" in (host.get("mtriple"), host.get("mcpu")) else {}
    out: dict[str, Any] = {"kind": "llvm"}
    out["mtriple"] = native["mtriple"] if host["mtriple"] == "native" else host["mtriple"]
    cpu = host.get("mcpu")
    if cpu == "native":
        cpu = native["mcpu"]
    if cpu:
        out["mcpu"] = cpu
    mattr = list(host.get("mattr") or []) + [a for a in native.get("mattr", []) if host.get("mcpu") == "native"]
    if mattr:
        out["mattr"] = list(dict.fromkeys(mattr))
    cores = host.get("num_cores")
    out["num-cores"] = int(cores) if cores else (os.cpu_count() or 1)
    return out


def tvm_target(desc: TargetDescriptor):
    """The ``tvm.target.Target`` (device + host) of a descriptor: the one place this is decided."""
    from tvm.target import Target

    host = resolved_host(desc)
    if desc.kind == "llvm":
        return Target(host, host=host)
    device = {k: v for k, v in desc.device.items() if k != "float16"}  # ours, not a TVM attribute
    return Target(device, host=host)


def cpu_family(target) -> str | None:
    """``"x86"`` or ``"arm"`` for an ``llvm`` ``tvm.target.Target`` (from its ``mtriple``), else ``None``."""
    if target is None or target.kind.name != "llvm":
        return None
    triple = str(target.attrs.get("mtriple", "")).lower()
    if triple.startswith(("x86_64", "i686", "i386")):
        return "x86"
    if triple.startswith(("aarch64", "arm64")):
        return "arm"
    return None


def int8_dot_isa(target) -> str | None:
    """The integer dot-product instructions the int8 decode GEMVs may use on an ``llvm`` target.

    ``"avxvnni"`` (256-bit ``vpdpbusd``: AVX-VNNI, or AVX512-VNNI with AVX512-VL), ``"avx2"``
    (``vpmaddubsw`` + ``vpmaddwd``), ``"dotprod"`` (aarch64 ``sdot``), or ``None``. Asked of
    LLVM for the target's ``mcpu`` and ``mattr``.
    """
    import tvm

    family = cpu_family(target)
    if family not in ("x86", "arm"):
        return None
    has = functools.partial(tvm.target.codegen.llvm_cpu_has_features, target=target)
    if family == "arm":
        return "dotprod" if has(["dotprod"]) else None
    if has(["avxvnni"]) or has(["avx512vnni", "avx512vl"]):
        return "avxvnni"
    if has(["avx2"]):
        return "avx2"
    return None


def has_avx512(target) -> bool:
    """Whether an ``llvm`` target is x86 with AVX-512 F and VL (32 vector registers, also for
    256-bit vectors), for :func:`mlcbuild.kernels.cpu_matmul.prefill_matmul_float_dot`. Asked of
    LLVM for the target's ``mcpu`` and ``mattr``."""
    import tvm

    has = tvm.target.codegen.llvm_cpu_has_features
    return cpu_family(target) == "x86" and bool(has(["avx512f", "avx512vl"], target=target))


def has_gfni(target) -> bool:
    """Whether an ``llvm`` target is x86 with GFNI (Galois-field byte instructions: Intel since
    Ice Lake and Alder Lake, AMD since Zen 4), which :mod:`mlcbuild.kernels.int8_gemv` then uses.
    Asked of LLVM for the target's ``mcpu`` and ``mattr``."""
    import tvm

    return cpu_family(target) == "x86" and bool(tvm.target.codegen.llvm_cpu_has_features(["gfni"], target=target))


def _plain(x: Any) -> Any:
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "items"):
        return {str(k): _plain(v) for k, v in x.items()}
    if hasattr(x, "export"):
        return _plain(x.export())
    try:
        return [_plain(v) for v in x]
    except TypeError:
        return str(x)


def target_json(desc: TargetDescriptor) -> dict[str, Any]:
    """The full target as TVM exports it (every attribute, defaults included), as plain data."""
    return _plain(tvm_target(desc).export())
