"""``mlcbuild compile``: recipe + target -> a cached artifact directory.

The key is :func:`mlcbuild.artifacts.cache.content_key` of every input that can change the
library: the canonical recipe, the descriptor and the full TVM target JSON, the
digest of the applied tuning records, and the toolchain stamp (mlcbuild, TVM and
its commit, TVM FFI, LLVM). A hit touches no TVM code.

An artifact directory holds ``lib.so`` or ``lib.tar``, ``mlc-chat-config.json``
(MLC-LLM's schema), ``build.json`` (inputs, hashes, stamp, timings) and the cache's
``manifest.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

from mlcbuild.artifacts.cache import Cache, CacheResult, content_key, copy_entry, file_sha256
from mlcbuild.artifacts.chat_config import chat_config
from mlcbuild.artifacts.info import BuildInfo, LibraryInfo, ParamInfo, read_build
from mlcbuild.artifacts.records import tuning_digest
from mlcbuild.artifacts.stamp import toolchain_stamp
from mlcbuild.compiler.target import check_codegen, target_json
from mlcbuild.errors import CompileError
from mlcbuild.spec.recipe import Recipe
from mlcbuild.spec.target import TargetDescriptor, cpu_identity

REPO_TUNING_LOGS = Path(__file__).resolve().parents[2] / "tuning_logs"
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "uint32": 4, "int8": 1, "int32": 4}


@dataclasses.dataclass(kw_only=True)
class CompileResult(CacheResult):
    """What ``compile`` did (:class:`~mlcbuild.artifacts.cache.CacheResult`) and the artifact
    directory (in the cache, or ``--out``)."""

    artifact: Path


def tuning_dir(desc: TargetDescriptor, root: Path | None = None) -> Path:
    """``tuning_logs/<target name>/`` (under ``root``, default the repository's)."""
    return (root or REPO_TUNING_LOGS) / desc.name


def full_target_json(desc: TargetDescriptor, memo_dir: Path | None = None) -> dict[str, Any]:
    """:func:`target_json`, memoized in ``memo_dir`` so that a cache hit needs no TVM.

    The memo is keyed by the descriptor's data, the toolchain and (for ``native``
    descriptors) this machine's CPU identity and core count.
    """
    native = "native" in (desc.host.get("mtriple"), desc.host.get("mcpu"))
    ident = content_key(
        {
            "target": desc.data(),
            "toolchain": toolchain_stamp(memo_dir),
            "cpu": (cpu_identity(), os.cpu_count()) if native or not desc.host.get("num_cores") else None,
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


def key_inputs(recipe: Recipe, desc: TargetDescriptor, cache: Cache, tuning_root: Path | None = None) -> dict[str, Any]:
    """Every input of the build, as plain data; its :func:`content_key` is the cache key."""
    return {
        "recipe": recipe.canonical(),
        "target": {"descriptor": desc.data(), "tvm": full_target_json(desc, cache.memo)},
        "tuning_records": tuning_digest(tuning_dir(desc, tuning_root)),
        "toolchain": toolchain_stamp(cache.memo),
    }


def memory_estimate(
    recipe: Recipe, params: list[tuple[str, tuple[int, ...], str]], kv_dtype: str | None = None
) -> dict[str, int]:
    """Device memory the model needs, bytes: parameters + KV cache at the full context window.

    KV cache = 2 (K and V) x layers x KV heads x head dim x context tokens x batch x dtype bytes.
    Temporary activation buffers are not included.
    """
    import math

    from mlcbuild.quant import get_scheme

    param_bytes = sum(math.prod(shape) * _DTYPE_BYTES.get(dtype, 4) for _, shape, dtype in params)
    m = recipe.model_config
    b = recipe.build
    kv = 2 * m.num_hidden_layers * m.num_key_value_heads * m.head_dim * b.context_window_size * b.max_batch_size
    kv_bytes = kv * _DTYPE_BYTES[kv_dtype or get_scheme(recipe.scheme).model_dtype]
    return {
        "params_bytes": int(param_bytes),
        "kv_cache_bytes": int(kv_bytes),
        "total_bytes": int(param_bytes + kv_bytes),
    }


def check_budget(memory: dict[str, int], recipe: Recipe, desc: TargetDescriptor, allow: bool) -> None:
    """Refuse a build whose memory estimate (:func:`memory_estimate`) exceeds the target's
    ``memory_budget_bytes``, unless ``allow``.

    Raises:
        CompileError: naming the estimate's parts, the budget and the ways out.
    """
    budget = desc.memory_budget_bytes
    if memory["total_bytes"] <= budget or allow:
        return
    gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
    raise CompileError(
        f"{recipe.name} needs an estimated {gib(memory['total_bytes'])} (parameters {gib(memory['params_bytes'])} + "
        f"KV cache {gib(memory['kv_cache_bytes'])} at {recipe.build.context_window_size} tokens), over "
        f"{desc.name}'s memory budget of {gib(budget)} (target.memory_budget_bytes in {desc.path or desc.name})",
        path=recipe.path,
        fix="use a smaller scheme or build.context_window_size, a target with more memory, or pass "
        "--allow-over-budget (recorded in build.json)",
    )


def check_float16(recipe: Recipe, desc: TargetDescriptor) -> None:
    """Refuse a float16 scheme for a GPU whose descriptor says ``[device] float16 = false``
    (an OpenCL device without ``cl_khr_fp16``, e.g. PoCL's CPU device: its OpenCL compiler
    rejects every kernel that uses ``half``).

    Raises:
        CompileError: naming the descriptor and the float32 scheme to use instead.
    """
    from mlcbuild.quant import get_scheme

    if not desc.is_gpu or desc.device.get("float16", True):
        return
    if get_scheme(recipe.scheme).model_dtype == "float16":
        alt = recipe.scheme.replace("f16", "f32", 1)
        raise CompileError(
            f"target {desc.name!r} has no float16 arithmetic ([device] float16 = false) and the recipe's "
            f"scheme {recipe.scheme} computes in float16",
            path=str(desc.path) if desc.path else None,
            fix=f'use a float32 scheme for this target (scheme = "{alt}" in [quantization])',
        )


def compile_recipe(
    recipe: Recipe,
    desc: TargetDescriptor,
    *,
    cache: Cache | None = None,
    out: Path | None = None,
    tuning_root: Path | None = None,
    on_phase: Callable[[str], None] | None = None,
    allow_over_budget: bool = False,
    dump_ir: Path | None = None,
) -> CompileResult:
    """Compile ``recipe`` for ``desc``, or return the cached artifact.

    Args:
        cache: the build cache (default: :func:`mlcbuild.artifacts.cache.default_root`).
        out: if given, the artifact's files are also copied there.
        tuning_root: where ``<target>/database_*.json`` tuning records live.
        on_phase: progress callback, called with each phase name.
        allow_over_budget: build even when the memory estimate exceeds the target's budget
            (recorded in ``build.json``); a hit of such a build is refused without it too.
        dump_ir: a directory that gets the module's TVMScript as exported and after each
            pipeline phase (``NN-<phase>.py``); on a hit the module is lowered again for it.
    Raises:
        TargetError: the target's backend cannot be generated by the installed TVM.
        CompileError: the memory estimate exceeds the target's budget (:func:`check_budget`).
        RecipeError, MlcbuildError: invalid inputs or a failed build (no entry is left).
    """
    t_start = time.perf_counter()
    cache = cache or Cache()
    check_codegen(desc, cache.memo)
    check_float16(recipe, desc)
    if on_phase:
        on_phase("key")
    inputs = key_inputs(recipe, desc, cache, tuning_root)
    key = content_key(inputs)
    status = "hit"
    path = cache.lookup(key)
    if path is None:
        with cache.building(key) as work:
            if work is not None:
                status = "miss"
                _build_into(work, recipe, desc, inputs, key, tuning_root, on_phase, allow_over_budget, dump_ir)
            elif key in cache.fetched:
                status = "remote"
        path = cache.entry_path(key)
    if status != "miss":  # a hit of a build made with --allow-over-budget
        check_budget(read_build(path).memory, recipe, desc, allow_over_budget)
        if dump_ir is not None:  # a hit has no IR to show: lower again, up to machine code
            from mlcbuild.compiler.export import lower_module

            lower_module(recipe, desc, tuning_dir(desc, tuning_root) if inputs["tuning_records"] else None, dump_ir)
    artifact = copy_entry(path, out)
    return CompileResult(artifact=artifact, key=key, cache=status, seconds=time.perf_counter() - t_start)


def _build_into(
    work: Path,
    recipe: Recipe,
    desc: TargetDescriptor,
    inputs: dict[str, Any],
    key: str,
    tuning_root: Path | None,
    on_phase: Callable[[str], None] | None,
    allow_over_budget: bool = False,
    dump_ir: Path | None = None,
) -> None:
    from mlcbuild.artifacts.stamp import abi_stamp, with_stamp
    from mlcbuild.compiler.build import build_library
    from mlcbuild.compiler.export import compute_dtype
    from mlcbuild.compiler.target import tvm_target
    from mlcbuild.quant import get_scheme
    from mlcbuild.quant.build import build_model

    # the budget before any lowering: parameter shapes need only the module, not its export
    target = tvm_target(desc)
    shapes = [(n, tuple(int(x) for x in p.shape), str(p.dtype)) for n, p in build_model(recipe).named_parameters()]
    float_model = build_model(dataclasses.replace(recipe, scheme="q0f32", overrides={}, calibration=None))
    model_params = sum(math.prod(int(x) for x in p.shape) for _, p in float_model.named_parameters())
    estimate = memory_estimate(recipe, shapes, kv_dtype=compute_dtype(get_scheme(recipe.scheme), target))
    check_budget(estimate, recipe, desc, allow_over_budget)

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    tdir = tuning_dir(desc, tuning_root) if inputs["tuning_records"] else None
    workarounds: list[str] = []
    tuned: list[str] = []
    lib_path, exported = build_library(
        recipe,
        desc,
        work,
        timings,
        tuning_dir=tdir,
        on_phase=on_phase,
        workarounds=workarounds,
        tuned=tuned,
        finalize=lambda mod: with_stamp(mod, abi_stamp(inputs["toolchain"])),
        dump_ir=dump_ir,
    )
    total = time.perf_counter() - t0
    (work / "mlc-chat-config.json").write_text(json.dumps(chat_config(recipe), indent=2) + "\n")
    BuildInfo(
        key=key,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        recipe_file=str(recipe.path) if recipe.path else None,
        recipe_sha256=content_key(inputs["recipe"]),
        target_name=desc.name,
        target_sha256=content_key(inputs["target"]),
        inputs=inputs,
        stamp=inputs["toolchain"],
        abi_stamp=abi_stamp(inputs["toolchain"]),  # also compiled into the library
        library=LibraryInfo(
            file=lib_path.name,
            format=desc.output_format,
            system_lib_prefix=recipe.build.system_lib_prefix if desc.system_lib else None,
            sha256=file_sha256(lib_path),
            size_bytes=lib_path.stat().st_size,
        ),
        params=tuple(ParamInfo(n, tuple(s), d) for n, s, d in exported.params),
        memory=memory_estimate(recipe, exported.params, kv_dtype=exported.compute_dtype),
        memory_budget_bytes=desc.memory_budget_bytes,
        allow_over_budget=allow_over_budget,
        seconds={**{k: round(v, 3) for k, v in timings.items()}, "total": round(total, 3)},
        workarounds=tuple(workarounds),
        tuned_kernels=tuple(tuned),
        model_params=model_params,
    ).write(work)
