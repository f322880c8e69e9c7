"""What MLC-LLM's engine and apps require of a library, its weights and a package, and the checks
(``mlcbuild verify --mlc``; ``compile`` and ``package`` warn).

Read from mlc-ai/mlc-llm at 79d603f (July 2026): ``cpp/serve/function_table.cc`` (functions
looked up by name, ``GetFunction(name, /*query_imports=*/true)``), ``cpp/metadata/model.cc``
(``_metadata``'s keys), ``cpp/serve/logit_processor.cc`` and ``cpp/serve/sampler/gpu_sampler.cc``
(required kernels), ``python/mlc_llm/protocol/mlc_chat_config.py`` and
``conversation_protocol.py`` (``mlc-chat-config.json``), ``python/mlc_llm/interface/package.py``
and the iOS/Android apps (``bundle/mlc-app-config.json``, ``model_lib`` + ``_`` as the system
library prefix).

The library is read from its bytes (:func:`mlcbuild.artifacts.stamp.library_bytes`), so a
cross-compiled ``lib.tar`` is checked on any machine: function names and each Relax function's
parameter count (the VM executable's ``ErrorContext(fn=..., loc=param[i])`` constants), the
``_metadata`` JSON constant, the system-library symbol.
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from pathlib import Path
from typing import Any

MLC_LLM_COMMIT = "79d603f"
CONTRACT = f"mlc-llm@{MLC_LLM_COMMIT}"  # carried by every library's ABI stamp

# Relax functions MLC's engine calls: name -> parameters (params last where it takes them)
FUNCTIONS = {
    "_metadata": 0,
    "embed": 2,
    "prefill": 3,
    "decode": 3,
    "batch_prefill": 4,
    "batch_decode": 3,
    "create_tir_paged_kv_cache": 5,
    "alloc_embedding_tensor": 0,
    "softmax_with_temperature": 2,
}
# speculative decoding's verify step (function_table.cc looks it up; only speculative modes call
# it): a library whose KV cache has no exact tree attention (soft-capped or windowed attention)
# leaves it out
OPTIONAL_FUNCTIONS = {"batch_verify": 3}
# PrimFuncs the logit processor checks for when it is made (found by name)
LOGIT_KERNELS = ("apply_logit_bias_inplace", "apply_penalty_inplace", "apply_bitmask_inplace")
# the GPU sampler's four (checked when it is made, on these TVM target kinds)
GPU_SAMPLER = {"multinomial_from_uniform": 3, "argsort_probs": 1, "sample_with_top_p": 5, "sampler_take_probs": 5}
GPU_SAMPLER_KINDS = ("metal", "cuda", "vulkan")
# python/mlc_llm/quantization/quantization.py's QUANTIZATION table
MLC_SCHEMES = frozenset(
    "q0f16 q0bf16 q0f32 q3f16_0 q3f16_1 q4f16_0 q4f16_1 q4bf16_0 q4bf16_1 q4f32_1 q4f16_2 q4f16_autoawq "
    "q4f16_ft e5m2_e5m2_f16 e4m3_e4m3_f16 e4m3_e4m3_f16_max_calibrate fp8_e4m3fn_bf16_block_scale "
    "fp8_e4m3fn_bf16_block_scale_static_activation".split()
)
METADATA_KEYS = {  # key -> type, as ModelMetadata::FromJSON reads it (Lookup: required)
    "model_type": str,
    "quantization": str,
    "context_window_size": int,
    "prefill_chunk_size": int,
    "max_batch_size": int,
    "tensor_parallel_shards": int,
    "kv_cache": dict,
    "params": list,
    "memory_usage": dict,
}
KV_CACHE_KEYS = ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim")
CONVERSATION_KEYS = {"roles": dict, "seps": list, "system_template": str, "stop_token_ids": list}
MODEL_CONFIG_KEYS = ("context_window_size", "prefill_chunk_size", "max_batch_size", "tensor_parallel_shards")
TOKENIZER_INFO_KEYS = ("token_postproc_method", "prepend_space_in_encode", "strip_space_in_decode")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One check's result: ``missing`` (MLC's engine or app would stop) or ``note``."""

    level: str
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def library_functions(blob: bytes) -> dict[str, int | None]:
    """Relax functions with parameters -> parameter count, from the ``ErrorContext`` constants;
    every other name of :data:`FUNCTIONS`, :data:`LOGIT_KERNELS`, :data:`GPU_SAMPLER` whose bytes
    occur -> ``None`` (present, arity unknown: zero-parameter functions and PrimFuncs)."""
    arity: dict[str, int | None] = {}
    for fn, i in re.findall(rb"ErrorContext\(fn=([A-Za-z_0-9]+), loc=param\[(\d+)\]", blob):
        arity[fn.decode()] = max(arity.get(fn.decode()) or 0, int(i) + 1)
    for name in (*FUNCTIONS, *OPTIONAL_FUNCTIONS, *LOGIT_KERNELS, *GPU_SAMPLER):
        raw = name.encode()
        # the VM executable's function table: uint64 length + name; a kernel's symbol: a C
        # string, under a system library's prefix ("<prefix>_apply_...")
        if name not in arity and (
            struct.pack("<Q", len(raw)) + raw in blob or re.search(rb"(?<![A-Za-z0-9])" + raw + rb"\x00", blob)
        ):
            arity[name] = None
    return arity


def library_metadata(blob: bytes) -> dict[str, Any] | None:
    """The ``_metadata`` JSON constant (written with sorted keys: it starts
    ``{"attention_sink_size"``), or ``None``."""
    start = blob.find(b'{"attention_sink_size"')
    if start < 0:
        return None
    try:
        return json.JSONDecoder().raw_decode(blob[start:].decode("utf-8", errors="replace"))[0]
    except ValueError:
        return None


def check_library(path: Path, kind: str, prefix: str | None = None) -> list[Finding]:
    """The function table, ``_metadata`` and (system libraries) the prefix of the library at
    ``path`` for a TVM target ``kind``."""
    from mlcbuild.artifacts.stamp import library_bytes, read_library_stamp

    blob = library_bytes(path)
    where = str(path)
    out: list[Finding] = []
    found = library_functions(blob)
    wanted = dict(FUNCTIONS) | ({n: None for n in LOGIT_KERNELS})
    if kind in GPU_SAMPLER_KINDS:
        wanted |= GPU_SAMPLER
    for name, n in wanted.items():
        if name not in found:
            out.append(Finding("missing", where, f"function {name} (MLC's engine looks it up by name)"))
        elif n and found[name] is not None and found[name] != n:
            out.append(Finding("missing", where, f"function {name} takes {found[name]} arguments, MLC passes {n}"))
    for name, n in OPTIONAL_FUNCTIONS.items():
        if name not in found:
            out.append(Finding("note", where, f"no {name}: MLC's speculative decoding modes are unavailable"))
        elif found[name] not in (None, n):
            out.append(Finding("missing", where, f"function {name} takes {found[name]} arguments, MLC passes {n}"))
    meta = library_metadata(blob)
    if meta is None:
        out.append(Finding("missing", where, "_metadata's JSON (ModelMetadata::FromModule aborts without it)"))
    else:
        out += check_metadata(meta, where)
    if prefix is not None:
        if not prefix.endswith("_"):
            out.append(Finding("missing", where, f"system-lib prefix {prefix!r} must end with '_' (the app adds it)"))
        elif (prefix + "__tvm_ffi__library_bin").encode() not in blob:
            out.append(Finding("missing", where, f"no system library registered under {prefix!r}"))
    stamp = read_library_stamp(path) or {}
    if stamp.get("mlc_contract") != CONTRACT:
        out.append(Finding("note", where, f"ABI stamp's mlc_contract {stamp.get('mlc_contract')!r}, not {CONTRACT!r}"))
    return out


def check_metadata(meta: dict[str, Any], where: str) -> list[Finding]:
    """``_metadata``'s keys and their JSON types, as ``ModelMetadata::FromJSON`` reads them."""
    out = []
    for key, typ in METADATA_KEYS.items():
        if not isinstance(meta.get(key), typ) or isinstance(meta.get(key), bool):
            out.append(Finding("missing", where, f"_metadata key {key} ({typ.__name__}) absent or of another type"))
    kv = meta.get("kv_cache") if isinstance(meta.get("kv_cache"), dict) else {}
    out += [Finding("missing", where, f"_metadata kv_cache.{k} (int) absent") for k in KV_CACHE_KEYS
            if not isinstance(kv.get(k), int)]  # fmt: skip
    for i, p in enumerate(meta.get("params") or []):
        if not (isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("shape"), list)
                and isinstance(p.get("dtype"), str) and isinstance(p.get("preprocs"), list)):  # fmt: skip
            out.append(Finding("missing", where, f"_metadata params[{i}] lacks name/shape/dtype/preprocs"))
            break
    if isinstance(meta.get("quantization"), str) and meta["quantization"] not in MLC_SCHEMES:
        out.append(Finding("note", where, f"quantization {meta['quantization']!r} is not one of MLC-LLM's schemes: "
                           "its engine runs the library, its Python tools (convert_weight, gen_config) do not know it"))  # fmt: skip
    return out


def check_chat_config(path: Path, need_tokenizer: bool = False) -> list[Finding]:
    """``mlc-chat-config.json`` against MLC's ChatConfig and Conversation protocols;
    ``need_tokenizer``: beside weights (tokenizer files named and present)."""
    where = str(path)
    try:
        chat = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        return [Finding("missing", where, f"unreadable ({e})")]
    out = []
    conv = chat.get("conv_template")
    if not isinstance(conv, dict):
        out.append(Finding("missing", where, f"conv_template is {conv!r}, not a Conversation object"))
    else:
        for key, typ in CONVERSATION_KEYS.items():
            if not isinstance(conv.get(key), typ):
                out.append(Finding("missing", where, f"conv_template.{key} ({typ.__name__}) absent"))
        if isinstance(conv.get("seps"), list) and not 1 <= len(conv["seps"]) <= 2:
            out.append(Finding("missing", where, "conv_template.seps must hold 1 or 2 separators"))
        if conv.get("name") == "LM" and need_tokenizer:
            out.append(
                Finding("note", where, "conv_template is MLC's plain LM template (no chat template expressible)")
            )
    mc = chat.get("model_config")
    mc = mc if isinstance(mc, dict) else {}
    out += [
        Finding("missing", where, f"model_config.{k} absent")
        for k in MODEL_CONFIG_KEYS
        if not isinstance(mc.get(k), int)
    ]
    info = chat.get("tokenizer_info")
    if info is not None and (not isinstance(info, dict) or any(k not in info for k in TOKENIZER_INFO_KEYS)):
        out.append(Finding("missing", where, f"tokenizer_info {info!r} is used as given by MLC: incomplete"))
    if need_tokenizer:
        files = chat.get("tokenizer_files") or []
        if "tokenizer.json" not in files:
            out.append(Finding("missing", where, "tokenizer_files does not name tokenizer.json"))
        out += [
            Finding("missing", where, f"tokenizer file {f} absent")
            for f in files
            if not (Path(path).parent / f).is_file()
        ]
    return out


def check_artifact(artifact: Path) -> list[Finding]:
    """A compile artifact: its library and ``mlc-chat-config.json``."""
    from mlcbuild.artifacts.info import read_build

    build = read_build(artifact)
    kind = build.inputs.get("target", {}).get("tvm", {}).get("kind", "llvm")
    lib = Path(artifact) / build.library.file
    out = check_library(lib, kind, build.library.system_lib_prefix)
    return out + check_chat_config(Path(artifact) / "mlc-chat-config.json")


def check_weights(weights: Path) -> list[Finding]:
    """Converted weights: ``tensor-cache.json`` (MLC's loader's name since 2025-09; older
    runtimes read ``ndarray-cache.json``) and ``mlc-chat-config.json`` with its tokenizer."""
    out = []
    if not (Path(weights) / "tensor-cache.json").is_file():
        out.append(Finding("missing", str(weights), "tensor-cache.json absent"))
    out.append(Finding("note", str(weights), "tensor-cache.json is read by MLC-LLM runtimes from 2025-09 on "
                       "(older apps look for ndarray-cache.json)"))  # fmt: skip
    return out + check_chat_config(Path(weights) / "mlc-chat-config.json", need_tokenizer=True)
