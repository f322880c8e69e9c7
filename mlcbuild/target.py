"""Target descriptors: a real device described in TOML, turned into a ``tvm.target.Target``.

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

``mtriple``/``mcpu`` may be ``"native"``: this machine's CPU. :func:`tvm_target` is
the one function that turns a descriptor into a TVM target.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import tomllib
from pathlib import Path
from typing import Any

from .errors import TargetError
from .schema import Schema, check_sections, check_table

REPO_TARGETS = Path(__file__).resolve().parent.parent / "targets"
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

    def check_codegen(self, memo_dir: Path | None = None) -> None:
        """Fail at once if the installed TVM cannot generate code for this target.

        Raises:
            TargetError: e.g. Vulkan, whose SPIR-V code generator is not in the PyPI wheel.
        """
        from .stamp import available_codegens

        if self.kind not in available_codegens(memo_dir):
            hint = {
                "vulkan": "the apache-tvm wheel from PyPI is built without Vulkan (SPIR-V); build TVM from source "
                "with -DUSE_VULKAN=ON and install it into this environment, or use an OpenCL target (s24, pixel8)",
            }.get(self.kind, f"install a TVM build with the {self.kind} code generator")
            raise TargetError(
                f"the installed TVM cannot generate code for device kind {self.kind!r} (no target.build.{self.kind})",
                path=self.path or self.name,
                fix=hint,
            )

    def codegen_available(self) -> bool:
        try:
            self.check_codegen()
            return True
        except TargetError:
            return False


def _native_host() -> dict[str, Any]:
    """This machine's CPU as LLVM sees it, with the ISA level capped where LLVM is slow.

    On x86 with AVX2+FMA the CPU is given as ``x86-64-v3``: with the exact CPU name of an
    AVX-512 machine, LLVM 22 spent ~90 s per vectorized GEMV (notes from the feasibility spike).
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
        cpu = "x86-64-v3" if has_avx2 else "x86-64"
        # AVX-VNNI (256-bit vpdpbusd, used by the int8 decode GEMVs) costs LLVM no compile
        # time. Read from the kernel: under KVM, LLVM names this machine's CPU "rocketlake",
        # which lacks it.
        if has_avx2 and "avx_vnni" in linux_cpu_flags():
            return {"mtriple": triple, "mcpu": cpu, "mattr": ["+avxvnni"]}
    return {"mtriple": triple, "mcpu": cpu}


@functools.lru_cache(maxsize=1)
def linux_cpu_flags() -> frozenset[str]:
    """The ``flags`` of ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


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
    device = {k: v for k, v in desc.device.items()}
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


def _cpu_identity() -> str:
    """This machine's CPU model and flags (what ``native`` resolves from)."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        keep = [
            ln for ln in info.read_text().splitlines() if ln.startswith(("model name", "flags", "Features", "CPU part"))
        ]
        return "\n".join(sorted(set(keep)))
    return f"{platform.machine()} {platform.processor()}"


def full_target_json(desc: TargetDescriptor, memo_dir: Path | None = None) -> dict[str, Any]:
    """:func:`target_json`, memoized in ``memo_dir`` so that a cache hit needs no TVM.

    The memo is keyed by the descriptor's data, the toolchain and (for ``native``
    descriptors) this machine's CPU identity and core count.
    """
    from .cache import content_key
    from .stamp import toolchain_stamp

    native = "native" in (desc.host.get("mtriple"), desc.host.get("mcpu"))
    ident = content_key(
        {
            "target": desc.data(),
            "toolchain": toolchain_stamp(memo_dir),
            "cpu": (_cpu_identity(), os.cpu_count()) if native or not desc.host.get("num_cores") else None,
        }
    )
    path = memo_dir / f"target-{ident[:24]}.json" if memo_dir else None
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    data = target_json(desc)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        tmp.replace(path)
    return data
