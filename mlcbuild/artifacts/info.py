"""The records of an artifact (``build.json``) and of converted weights (``convert.json``).

Both are typed and versioned (``schema_version``); :func:`read_build` and :func:`read_weights`
are the only readers, used by the runtime, bench, packages, the cache and the tests. A
record of a newer schema is refused (install the mlcbuild that wrote it); one without a
version is of schema 1.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

from mlcbuild.errors import MlcbuildError

SCHEMA_VERSION = 1
BUILD_FILE = "build.json"
WEIGHTS_FILE = "convert.json"


@dataclasses.dataclass(frozen=True)
class ParamInfo:
    """One parameter of the entry functions: name, shape (elements per axis), dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ParamInfo:
        return cls(str(d["name"]), tuple(int(x) for x in d["shape"]), str(d["dtype"]))


@dataclasses.dataclass(frozen=True)
class LibraryInfo:
    """The compiled library: file name in the artifact, ``"so"`` or ``"tar"`` (a system
    library for static linking), its system-library prefix, sha256 and size (bytes)."""

    file: str
    format: str
    sha256: str
    size_bytes: int = 0
    system_lib_prefix: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LibraryInfo:
        return cls(
            file=str(d["file"]),
            format=str(d.get("format", "so")),
            sha256=str(d["sha256"]),
            size_bytes=int(d.get("size_bytes", 0)),
            system_lib_prefix=d.get("system_lib_prefix"),
        )


class _Record:
    """What both records share: JSON in and out, one file in their directory."""

    FILE: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        """The record as plain JSON data, as ``build.json``/``convert.json`` hold it (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def write(self, directory: Path) -> Path:
        """Write the record into ``directory`` (``build.json`` / ``convert.json``); returns its path."""
        path = Path(directory) / self.FILE
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def _parse(cls, d: dict[str, Any]) -> dict[str, Any]:
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]):
        """Raises ``KeyError``/``TypeError``/``ValueError`` on a malformed record (see :func:`read_build`)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**cls._parse({k: v for k, v in d.items() if k in known}))


@dataclasses.dataclass(frozen=True)
class BuildInfo(_Record):
    """``build.json``: what was compiled, from what, and how.

    Attributes:
        key: the build's cache key (64 hex chars).
        inputs: what the key hashes: ``recipe`` (canonical recipe), ``target``
            (``descriptor`` and ``tvm`` target JSON), ``tuning_records``, ``toolchain``.
        library: the library file (:class:`LibraryInfo`).
        params: the parameters in entry-function order.
        memory: the memory estimate (bytes; ``params_bytes``, ``kv_cache_bytes``, ``total_bytes``, ...).
        seconds: wall time per compile phase and ``total``, s.
    """

    key: str
    library: LibraryInfo
    inputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    params: tuple[ParamInfo, ...] = ()
    target_name: str = ""
    created: str = ""
    recipe_file: str | None = None
    recipe_sha256: str = ""
    target_sha256: str = ""
    stamp: dict[str, Any] = dataclasses.field(default_factory=dict)
    abi_stamp: str = ""
    memory: dict[str, Any] = dataclasses.field(default_factory=dict)
    memory_budget_bytes: int | None = None
    allow_over_budget: bool = False
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    workarounds: tuple[str, ...] = ()
    tuned_kernels: tuple[str, ...] = ()
    model_params: int = 0
    """The model's parameters (weights as the checkpoint holds them, not packed storage words)."""
    schema_version: int = SCHEMA_VERSION
    FILE: ClassVar[str] = BUILD_FILE

    # ---- what readers ask of it ----
    @property
    def recipe(self) -> dict[str, Any]:
        """The canonical recipe (``model``, ``quantization``, ``build`` tables)."""
        return self.inputs["recipe"]

    @property
    def scheme(self) -> str:
        return self.recipe["quantization"]["scheme"]

    @property
    def overrides(self) -> list:
        return self.recipe["quantization"].get("overrides", [])

    @property
    def vocab_size(self) -> int:
        return int(self.recipe["model"]["config"]["vocab_size"])

    @property
    def build_options(self) -> dict[str, Any]:
        """The recipe's build table: ``context_window_size``, ``prefill_chunk_size``, ``page_size`` (tokens), ..."""
        return self.recipe["build"]

    @property
    def descriptor(self) -> dict[str, Any]:
        """The target descriptor's data."""
        return self.inputs["target"]["descriptor"]

    @property
    def device_kind(self) -> str:
        """TVM's device kind of the target: ``llvm``, ``opencl``, ``vulkan``, ``metal``, ``cuda``, ..."""
        return self.descriptor["device"]["kind"]

    @property
    def tvm_host(self) -> dict[str, Any]:
        """The TVM host target's attributes (``mtriple``, ``mcpu``, ``num-cores``, ...)."""
        return self.inputs["target"]["tvm"].get("host") or {}

    @property
    def n_params(self) -> int:
        """The model's parameters (:attr:`model_params`; for records written before it, the
        stored elements, packed words counted once)."""
        if self.model_params:
            return self.model_params
        import math

        return sum(math.prod(p.shape) for p in self.params)

    @classmethod
    def _parse(cls, d: dict[str, Any]) -> dict[str, Any]:
        d["library"] = LibraryInfo.from_json(d["library"])
        d["params"] = tuple(ParamInfo.from_json(p) for p in d.get("params", []))
        d["workarounds"] = tuple(d.get("workarounds", ()))
        d["tuned_kernels"] = tuple(d.get("tuned_kernels", ()))
        return d


@dataclasses.dataclass(frozen=True)
class WeightsInfo(_Record):
    """``convert.json``: converted weights.

    Attributes:
        key: the weights' cache key. inputs: what it hashes (recipe, checkpoint digest, sources).
        scheme, overrides: the recipe's quantization (``[[pattern, scheme], ...]``).
        params: the converted tensors in entry-function order.
        metadata: ``tensor-cache.json``'s metadata (parameter counts, bytes).
        seconds: wall time of the conversion, s.
    """

    key: str
    scheme: str
    params: tuple[ParamInfo, ...]
    inputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    source_dir: str = ""
    overrides: list = dataclasses.field(default_factory=list)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    schema_version: int = SCHEMA_VERSION
    FILE: ClassVar[str] = WEIGHTS_FILE

    @classmethod
    def _parse(cls, d: dict[str, Any]) -> dict[str, Any]:
        d["params"] = tuple(ParamInfo.from_json(p) for p in d["params"])
        d["scheme"] = str(d["scheme"])
        return d


def _read(path: Path, cls, what: str, fix: str):
    if not path.is_file():
        raise MlcbuildError(f"not {what} (no {path.name})", path=path.parent, fix=fix)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        version = int(data.get("schema_version", 1))
        if version > SCHEMA_VERSION:
            raise MlcbuildError(
                f"{path.name} is of schema {version}; this mlcbuild reads up to {SCHEMA_VERSION}",
                path=path,
                fix="upgrade mlcbuild, or build it again with this one",
            )
        return cls.from_json(data)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MlcbuildError(f"unreadable {path.name} ({e or 'not a record of mlcbuild'})", path=path, fix=fix) from e


def read_build(artifact: str | Path) -> BuildInfo:
    """An artifact directory's ``build.json``.

    Raises:
        MlcbuildError: no ``build.json``, unreadable, malformed or of a newer schema.
    """
    return _read(Path(artifact) / BUILD_FILE, BuildInfo, "an artifact directory",
                 "pass the artifact printed by `mlcbuild compile`, or compile the recipe again")  # fmt: skip


def read_weights(weights: str | Path) -> WeightsInfo:
    """A converted weight directory's ``convert.json``.

    Raises:
        MlcbuildError: no ``convert.json``, unreadable, malformed or of a newer schema.
    """
    return _read(Path(weights) / WEIGHTS_FILE, WeightsInfo, "a converted weight directory",
                 "run `mlcbuild convert` (again) for these weights")  # fmt: skip


def read_info(directory: Path, kind: str) -> BuildInfo | WeightsInfo:
    """The record of a cache entry of ``kind`` (``"builds"`` or ``"weights"``)."""
    return read_build(directory) if kind == "builds" else read_weights(directory)
