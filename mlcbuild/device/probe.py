"""Read a device's own limits over RPC and turn them into (or check them against) a descriptor.

MLC-LLM's presets are fixed per GPU family; when the phone's driver disagrees, kernels
fail to launch (``CL_INVALID_WORK_GROUP_SIZE``) or run slowly. ``targets probe`` asks
the device itself, through TVM's device API over the RPC session
(``runtime.GetDeviceAttr``): max threads per block, shared memory per block, warp size,
compute version, device name, total memory; and the runtime's thread-pool size for
the CPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mlcbuild.errors import TargetError
from mlcbuild.spec.target import GPU_KINDS, TargetDescriptor, parse_target

# GPU device kinds in the order they are tried; the first that exists is the device.
_PROBE_ORDER = ("opencl", "metal", "cuda", "vulkan", "webgpu")


@dataclasses.dataclass
class DeviceLimits:
    """What a device reported. ``None`` where the device API has no answer.

    Attributes:
        kind: ``"llvm"`` (CPU only) or the GPU API found (``"opencl"``, ``"metal"``, ...).
        device_name: the driver's name for the GPU (e.g. ``"QUALCOMM Adreno(TM) 750"``).
        max_threads_per_block: work-group / threadgroup size limit, threads.
        max_shared_memory_per_block: local / threadgroup memory, bytes.
        warp_size: threads per warp / wave / SIMD group as the driver reports it.
        compute_version: e.g. ``"3.0"`` (OpenCL C) or a CUDA SM version.
        total_memory_bytes: the device's memory (for a CPU: the machine's RAM), bytes.
        num_cores: threads of the device's TVM runtime thread pool (its big + little cores).
        mtriple: the device's LLVM triple, where its server can tell (a Python server with LLVM).
    """

    kind: str
    device_name: str | None = None
    max_threads_per_block: int | None = None
    max_shared_memory_per_block: int | None = None
    warp_size: int | None = None
    compute_version: str | None = None
    total_memory_bytes: int | None = None
    num_cores: int | None = None
    mtriple: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _attr(dev, name: str):
    try:
        return getattr(dev, name)
    except Exception:  # the device API of this backend does not implement the attribute
        return None


def _remote_func(session, name: str):
    try:
        return session.get_function(name)
    except Exception:  # not registered in the device's runtime (e.g. no LLVM on a phone)
        return None


def probe_device(session) -> DeviceLimits:
    """Read a device's limits through an RPC session (``tvm.rpc.RPCSession``).

    Tries OpenCL, Metal, CUDA, Vulkan and WebGPU in turn; the first whose device exists
    is the device. With none, the device is the CPU (``kind = "llvm"``).
    """
    found = None
    for kind in _PROBE_ORDER:
        try:
            dev = session.device(kind, 0)
            if dev.exist:
                found = (kind, dev)
                break
        except Exception:  # the runtime was built without this backend
            continue
    cpu = session.cpu(0)
    threads = _remote_func(session, "runtime.NumThreads")
    triple = _remote_func(session, "target.llvm_get_system_triple")
    limits = DeviceLimits(
        kind=found[0] if found else "llvm",
        num_cores=int(threads()) if threads else None,
        mtriple=str(triple()) if triple else None,
    )
    if found:
        dev = found[1]
        limits.device_name = _attr(dev, "device_name")
        limits.max_threads_per_block = _attr(dev, "max_threads_per_block")
        limits.max_shared_memory_per_block = _attr(dev, "max_shared_memory_per_block")
        limits.warp_size = _attr(dev, "warp_size")
        limits.compute_version = _attr(dev, "compute_version")
        limits.total_memory_bytes = _attr(dev, "total_global_memory")
    else:
        limits.total_memory_bytes = _attr(cpu, "total_global_memory")
    return limits


def descriptor_data(limits: DeviceLimits, name: str, *, mtriple: str | None = None) -> dict[str, Any]:
    """A target descriptor (as TOML data) for a probed device.

    The memory budget is half the device's memory (Android and iOS end apps well before
    they reach all of it). The host triple is the device's own where its server reports
    it, else ``mtriple`` (default ``aarch64-linux-android``).
    """
    triple = limits.mtriple or mtriple or "aarch64-linux-android"
    device: dict[str, Any] = {"kind": limits.kind}
    if limits.kind in GPU_KINDS:
        if limits.kind == "opencl" and limits.device_name and "adreno" in limits.device_name.lower():
            device["device"] = "adreno"
        if limits.kind == "opencl" and limits.device_name and "mali" in limits.device_name.lower():
            device["device"] = "mali"
        for key, value in (
            ("max_threads_per_block", limits.max_threads_per_block),
            ("max_shared_memory_per_block", limits.max_shared_memory_per_block),
            # TVM's OpenCL code generator does not use subgroups: 1 whatever the wave size.
            ("thread_warp_size", 1 if limits.kind == "opencl" else limits.warp_size),
        ):
            if value:
                device[key] = int(value)
    host: dict[str, Any] = {"mtriple": triple}
    if limits.num_cores:
        host["num_cores"] = int(limits.num_cores)
    what = limits.device_name or ("CPU" if limits.kind == "llvm" else limits.kind)
    return {
        "target": {
            "name": name,
            "description": f"probed over RPC: {what} ({limits.kind}), host {triple}",
            "memory_budget_bytes": int((limits.total_memory_bytes or 8 << 30) // 2),
        },
        "device": device,
        "host": host,
        "output": {"format": "so" if "android" not in triple and "ios" not in triple else "tar"},
    }


def write_descriptor(limits: DeviceLimits, name: str, path: Path, *, mtriple: str | None = None) -> TargetDescriptor:
    """Write a new descriptor for the probed device to ``path`` (TOML); returns it, validated."""
    import tomli_w

    data = descriptor_data(limits, name, mtriple=mtriple)
    desc = parse_target(data, path)  # what we write must load
    header = f"# Written by `mlcbuild targets probe` from the device's own limits.\n# {limits.to_json()}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + tomli_w.dumps(data))
    return desc


def check_descriptor(limits: DeviceLimits, desc: TargetDescriptor) -> list[str]:
    """Where a descriptor promises more than the device has (each a launch failure waiting).

    Returns:
        One line per problem; empty when the descriptor fits the device.
    """
    problems = []
    if desc.kind != limits.kind:
        problems.append(f"device.kind is {desc.kind!r} but the device offers {limits.kind!r}")
        return problems
    for key, have in (
        ("max_threads_per_block", limits.max_threads_per_block),
        ("max_shared_memory_per_block", limits.max_shared_memory_per_block),
    ):
        want = desc.device.get(key)
        if want is not None and have is not None and int(want) > int(have):
            problems.append(f"device.{key} = {want} exceeds the device's {have}")
    warp = desc.device.get("thread_warp_size")
    if desc.kind != "opencl" and warp and limits.warp_size and int(warp) != int(limits.warp_size):
        problems.append(f"device.thread_warp_size = {warp} but the device reports {limits.warp_size}")
    if limits.total_memory_bytes and desc.memory_budget_bytes > limits.total_memory_bytes:
        problems.append(
            f"target.memory_budget_bytes = {desc.memory_budget_bytes} exceeds the device's memory "
            f"({limits.total_memory_bytes})"
        )
    if limits.num_cores and desc.host.get("num_cores") and int(desc.host["num_cores"]) > limits.num_cores:
        problems.append(f"host.num_cores = {desc.host['num_cores']} exceeds the device's {limits.num_cores} threads")
    if limits.mtriple and desc.host.get("mtriple") not in ("native", limits.mtriple):
        problems.append(f"host.mtriple = {desc.host['mtriple']!r} but the device is {limits.mtriple!r}")
    return problems


def checked(limits: DeviceLimits, desc: TargetDescriptor) -> None:
    """Raise :class:`TargetError` listing every problem :func:`check_descriptor` finds."""
    problems = check_descriptor(limits, desc)
    if problems:
        raise TargetError(
            "the descriptor does not fit the device: " + "; ".join(problems),
            path=desc.path or desc.name,
            fix="lower those values to what the device reports (or write a new descriptor with --out NEW.toml)",
        )
