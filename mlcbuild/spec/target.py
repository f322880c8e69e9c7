"""Target descriptors: a real device described in TOML (no TVM here; :mod:`mlcbuild.compiler.target`
turns one into a ``tvm.target.Target``).

A descriptor (``targets/<name>.toml``)::

    [target]
    name = "s24"
    description = "Samsung Galaxy S24 (Snapdragon 8 Gen 3): Adreno 750 via OpenCL"
    memory_budget_bytes = 4294967296      # what one app may hold on the device
    [device]                              # where the kernels run
    kind = "opencl"                       # llvm | opencl | metal | vulkan | webgpu | cuda
    device = "adreno"
    max_threads_per_block = 512
    max_shared_memory_per_block = 32768   # bytes
    thread_warp_size = 1
    [host]                                # the CPU that drives it (and runs CPU-only targets)
    mtriple = "aarch64-linux-android"
    mattr = ["+neon", "+dotprod", "+i8mm", "+fullfp16"]
    num_cores = 8
    [output]
    format = "tar"                        # "so" (host) or "tar" (objects of a system library)

``mtriple``/``mcpu`` may be ``"native"``: this machine's CPU (:func:`cpuinfo` reads what
the kernel says of it, once).
"""

from __future__ import annotations

import dataclasses
import functools
import platform
import tomllib
from pathlib import Path
from typing import Any

from mlcbuild.errors import TargetError
from mlcbuild.spec.schema import Schema, check_sections, check_table

REPO_TARGETS = Path(__file__).resolve().parents[2] / "targets"
GPU_KINDS = ("opencl", "metal", "vulkan", "webgpu", "cuda")
DEVICE_KINDS = ("llvm",) + GPU_KINDS
OUTPUT_FORMATS = ("so", "tar")

_SCHEMA: dict[str, Schema] = {
    "target": {
        "name": ((str,), True, None),
        "description": ((str,), False, ""),
        "memory_budget_bytes": ((int,), True, None),
    },
    "device": {
        "kind": ((str,), True, None),
        "device": ((str,), False, None),
        "max_threads_per_block": ((int,), False, None),
        "max_shared_memory_per_block": ((int,), False, None),
        "thread_warp_size": ((int,), False, None),
        "float16": ((bool,), False, None),  # false: no half-precision arithmetic (OpenCL without cl_khr_fp16)
    },
    "host": {
        "mtriple": ((str,), True, None),
        "mcpu": ((str,), False, None),
        "mattr": ((list,), False, None),
        "num_cores": ((int,), False, None),
    },
    "output": {"format": ((str,), True, None)},
}


@dataclasses.dataclass(frozen=True)
class TargetDescriptor:
    """A validated target descriptor.

    Attributes:
        name: the target's name (``--target NAME``).
        description: one line for humans.
        memory_budget_bytes: memory one app may use on the device, bytes.
        device: the ``[device]`` table (``kind`` plus TVM target attributes).
        host: the ``[host]`` table (``mtriple``, ``mcpu``, ``mattr``, ``num_cores``).
        output_format: ``"so"`` (a shared library to load) or ``"tar"`` (objects of a
            system library with a per-model prefix, for static linking into an app).
        path: the TOML file, or ``None``.
    """

    name: str
    description: str
    memory_budget_bytes: int
    device: dict[str, Any]
    host: dict[str, Any]
    output_format: str
    path: Path | None = None

    @property
    def kind(self) -> str:
        """The device's code generator: ``llvm``, ``opencl``, ``metal``, ..."""
        return self.device["kind"]

    @property
    def is_gpu(self) -> bool:
        return self.kind in GPU_KINDS

    @property
    def system_lib(self) -> bool:
        """Whether the library is built as a system library (static linking)."""
        return self.output_format == "tar"

    def data(self) -> dict[str, Any]:
        """The descriptor as plain data (what its TOML says), for cache keys and build.json."""
        return {
            "name": self.name,
            "description": self.description,
            "memory_budget_bytes": self.memory_budget_bytes,
            "device": self.device,
            "host": self.host,
            "output_format": self.output_format,
        }


def parse_target(data: dict[str, Any], path: Path | str | None = None) -> TargetDescriptor:
    """Validate descriptor data (parsed TOML).

    Raises:
        TargetError: unknown section/key, wrong type, unknown device kind or output format.
    """
    where = path or "<target>"
    check_sections(data, list(_SCHEMA), where, TargetError)
    out = {
        section: {
            k: v
            for k, v in check_table(data.get(section), section, schema, where, TargetError).items()
            if v is not None
        }
        for section, schema in _SCHEMA.items()
    }
    if out["device"]["kind"] not in DEVICE_KINDS:
        raise TargetError(
            f"unknown device.kind {out['device']['kind']!r}; allowed: {', '.join(DEVICE_KINDS)}",
            path=where,
            fix="choose one of the allowed device kinds",
        )
    if out["output"]["format"] not in OUTPUT_FORMATS:
        raise TargetError(
            f"unknown output.format {out['output']['format']!r}; allowed: {', '.join(OUTPUT_FORMATS)}",
            path=where,
            fix="use 'so' for a loadable library or 'tar' for a static system library",
        )
    return TargetDescriptor(
        name=out["target"]["name"],
        description=out["target"].get("description", ""),
        memory_budget_bytes=out["target"]["memory_budget_bytes"],
        device=out["device"],
        host=out["host"],
        output_format=out["output"]["format"],
        path=Path(path) if path else None,
    )


def target_dirs() -> list[Path]:
    """Where target names are looked up: ``./targets`` then the repository's ``targets/``."""
    dirs = [Path.cwd() / "targets", REPO_TARGETS]
    seen, out = set(), []
    for d in dirs:
        r = d.resolve()
        if r not in seen and d.is_dir():
            seen.add(r)
            out.append(d)
    return out


def load_target(name_or_path: str | Path) -> TargetDescriptor:
    """Load a descriptor by name (``s24``) or by path (``targets/s24.toml``).

    Raises:
        TargetError: not found (the message lists the known names), bad TOML, or invalid.
    """
    p = Path(name_or_path)
    if p.suffix != ".toml" or not p.is_file():
        for d in target_dirs():
            cand = d / f"{name_or_path}.toml"
            if cand.is_file():
                p = cand
                break
        else:
            known = sorted({x.stem for d in target_dirs() for x in d.glob("*.toml")})
            raise TargetError(
                f"unknown target {str(name_or_path)!r}; known targets: {', '.join(known)}",
                fix="pass one of the known names or the path of a target .toml",
            )
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"not valid TOML: {e}", path=p, fix="fix the TOML syntax") from e
    return parse_target(data, p)


def list_targets() -> list[TargetDescriptor]:
    """Every descriptor found in :func:`target_dirs`, by name."""
    out: dict[str, TargetDescriptor] = {}
    for d in target_dirs():
        for f in sorted(d.glob("*.toml")):
            desc = load_target(f)
            out.setdefault(desc.name, desc)
    return [out[k] for k in sorted(out)]


@functools.lru_cache(maxsize=1)
def cpuinfo() -> tuple[str, ...]:
    """The lines of ``/proc/cpuinfo``, read once (empty where there is none)."""
    try:
        return tuple(Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return ()


def linux_cpu_flags() -> frozenset[str]:
    """The CPU flags of ``/proc/cpuinfo``: its ``flags`` line on x86, ``Features`` on aarch64
    (e.g. ``asimddp i8mm sve``; empty elsewhere)."""
    for line in cpuinfo():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model_name() -> str:
    """This machine's CPU model as ``/proc/cpuinfo`` names it (e.g. ``AMD EPYC 9R14``), else
    what ``platform`` knows."""
    for ln in cpuinfo():
        if ln.startswith("model name") and ":" in ln:
            return ln.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_identity() -> str:
    """This machine's CPU model and flags (what ``native`` resolves from)."""
    keep = [ln for ln in cpuinfo() if ln.startswith(("model name", "flags", "Features", "CPU part"))]
    if keep:
        return "\n".join(sorted(set(keep)))
    return f"{platform.machine()} {platform.processor()}"
