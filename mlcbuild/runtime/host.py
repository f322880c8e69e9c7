"""Drive a compiled library on the host CPU: Relax VM + paged KV cache, as MLC's engine does.

Per sequence: ``kv_state_add_sequence``; per step: ``kv_state_begin_forward`` with the
sequence ids and token counts, ``embed`` then ``prefill``/``decode``,
``kv_state_end_forward``. Argument orders follow
``tvm/src/runtime/vm/paged_kv_cache.cc`` shipped in the wheel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from mlcbuild.errors import MlcbuildError


def use_all_cores(num_threads: int | None = None) -> int:
    """Size TVM's CPU thread pool before its first parallel kernel: ``TVM_NUM_THREADS`` if the
    user set it, else ``num_threads``, else every logical CPU.

    TVM's default is half the logical CPUs on x86 (it assumes hyper-threading): one thread on
    a 2-core VM, which halved decode speed here (SmolLM-135M q4f32_1: 16.9 vs 29.4 tokens/s).
    The pool reads the variable once, when it starts; later calls change nothing.

    Returns:
        the thread count asked for.
    """
    import os

    if "TVM_NUM_THREADS" not in os.environ:
        os.environ["TVM_NUM_THREADS"] = str(num_threads or os.cpu_count() or 1)
    return int(os.environ["TVM_NUM_THREADS"])


class HostModel:
    """A compiled library and its parameters on the host CPU.

    Args:
        lib_path: the ``lib.so`` of a ``host`` build.
        params: the parameters in entry-function order (NumPy arrays).
        vocab_size: tokens; ids outside ``[0, vocab_size)`` are refused before the VM
            (the embedding gather does not bounds-check).
        context_window_size, prefill_chunk_size: from the recipe's build options, tokens.
        page_size: tokens per KV-cache page.
    """

    def __init__(
        self,
        lib_path: str | Path,
        params: Iterable[np.ndarray],
        vocab_size: int,
        context_window_size: int,
        prefill_chunk_size: int,
        page_size: int = 16,
    ):
        use_all_cores()
        import tvm
        from tvm import relax

        self._tvm = tvm
        self.device = tvm.cpu()
        self.lib = tvm.runtime.load_module(str(lib_path))
        self.vm = relax.VirtualMachine(self.lib, self.device)
        import tvm_ffi

        # one FFI array, converted once: a Python list of ~300 tensors costs ~20 us per VM call
        self.params = tvm_ffi.Array([tvm.runtime.tensor(np.ascontiguousarray(p), self.device) for p in params])
        self._embed_fn, self._prefill_fn, self._decode_fn = (self.vm[n] for n in ("embed", "prefill", "decode"))
        self.vocab_size = vocab_size
        self.context_window_size = context_window_size
        self.prefill_chunk_size = prefill_chunk_size
        self.page_size = page_size
        f = tvm.get_global_func
        self._add_seq = f("vm.builtin.kv_state_add_sequence")
        self._begin = f("vm.builtin.kv_state_begin_forward")
        self._end = f("vm.builtin.kv_state_end_forward")
        self.kv_cache = None
        self.seq_len = 0

    def _shape(self, *xs: int):
        import tvm_ffi

        return tvm_ffi.Shape(list(xs))

    def reset(self) -> None:
        """Start a new sequence (id 0) in a fresh KV cache."""
        S = self._shape
        self.kv_cache = self.vm["create_paged_kv_cache"](
            S(1), S(self.context_window_size), S(self.prefill_chunk_size), S(self.page_size), S(0)
        )
        self._add_seq(self.kv_cache, 0)
        self.seq_len = 0

    def _embed(self, ids: np.ndarray):
        ids = np.asarray(ids, dtype=np.int32)
        if ids.size == 0:
            raise MlcbuildError("empty token sequence")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise MlcbuildError(f"token id out of range [0, {self.vocab_size}): {int(ids.min())}..{int(ids.max())}")
        if self.seq_len + ids.size > self.context_window_size:
            raise MlcbuildError(
                f"sequence of {self.seq_len + ids.size} tokens exceeds the context window ({self.context_window_size})",
                fix="raise build.context_window_size in the recipe or shorten the prompt",
            )
        emb = self._embed_fn(self._tvm.runtime.tensor(ids, self.device), self.params)
        return emb._create_view((1, ids.size, emb.shape[-1]))

    def prefill(self, ids: Iterable[int]) -> np.ndarray:
        """Feed prompt tokens (chunked by ``prefill_chunk_size``).

        Returns:
            logits of the last token, ``[vocab]`` float32.
        """
        if self.kv_cache is None:
            self.reset()
        ids = np.asarray(list(ids), dtype=np.int32)
        logits = None
        for start in range(0, ids.size, self.prefill_chunk_size):
            chunk = ids[start : start + self.prefill_chunk_size]
            emb = self._embed(chunk)
            self._begin(self.kv_cache, self._shape(0), self._shape(chunk.size))
            out, self.kv_cache = self._prefill_fn(emb, self.kv_cache, self.params)
            self._end(self.kv_cache)
            self.seq_len += chunk.size
            logits = out.numpy()
        return logits.reshape(-1)

    def decode(self, token: int) -> np.ndarray:
        """Feed one token. Returns its logits, ``[vocab]`` float32."""
        emb = self._embed(np.asarray([token]))
        self._begin(self.kv_cache, self._shape(0), self._shape(1))
        out, self.kv_cache = self._decode_fn(emb, self.kv_cache, self.params)
        self._end(self.kv_cache)
        self.seq_len += 1
        return out.numpy().reshape(-1)

    def generate(self, prompt_ids: list[int], max_new_tokens: int, stop_ids: Iterable[int] = ()):
        """Greedy generation, yielding each new token id as it is produced.

        Stops after ``max_new_tokens`` or after emitting a token in ``stop_ids`` (EOS),
        which is yielded. Sets ``self.stats``: prefill/decode seconds and token counts.
        """
        import time

        stop = set(stop_ids)
        self.reset()
        t0 = time.perf_counter()
        logits = self.prefill(prompt_ids)
        t1 = time.perf_counter()
        self.stats = {"prefill_tokens": len(prompt_ids), "prefill_s": t1 - t0, "decode_tokens": 0, "decode_s": 0.0}
        n = 0
        while n < max_new_tokens:
            tok = int(np.argmax(logits))
            n += 1
            yield tok
            if n == max_new_tokens or tok in stop:
                break
            t = time.perf_counter()
            logits = self.decode(tok)
            self.stats["decode_s"] += time.perf_counter() - t
            self.stats["decode_tokens"] += 1


def read_artifact(artifact: Path) -> dict:
    """An artifact directory's ``build.json``.

    Raises:
        MlcbuildError: not an artifact directory.
    """

    build_path = Path(artifact) / "build.json"
    if not build_path.is_file():
        raise MlcbuildError(
            "not an artifact directory (no build.json)",
            path=artifact,
            fix="pass the artifact printed by `mlcbuild compile`",
        )
    return _read_record(build_path, ("library", "params"), "compile the recipe again (`mlcbuild compile`)")


def _read_record(path: Path, keys: tuple[str, ...], fix: str) -> dict:
    """A JSON record of ours (``build.json``, ``convert.json``) holding ``keys``.

    Raises:
        MlcbuildError: unreadable, not JSON, or without those keys; naming the file and ``fix``.
    """
    import json

    try:
        record = json.loads(path.read_text())
        assert isinstance(record, dict) and all(k in record for k in keys)
    except (OSError, ValueError, AssertionError) as e:
        raise MlcbuildError(f"unreadable {path.name} ({e or 'not a record of mlcbuild'})", path=path, fix=fix) from e
    return record


def library_path(artifact: Path, build: dict, runtime: dict | None = None) -> Path:
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
    name = str(build.get("library", {}).get("file", ""))
    lib = artifact / name
    if not name or "/" in name or name in (".", "..") or lib.is_symlink() or not lib.is_file():
        raise MlcbuildError(
            f"the library {name!r} named by build.json is missing (or not a plain file in the artifact)",
            path=artifact,
            fix="compile the recipe again (`mlcbuild compile`; a damaged cache entry is rebuilt)",
        )
    if runtime is not None:  # first: a library of another runtime says which to install
        from mlcbuild.artifacts.stamp import check_library_stamp

        check_library_stamp(lib, runtime)
    if file_sha256(lib) != build["library"].get("sha256"):
        raise MlcbuildError(
            "the library's sha256 differs from the one build.json records (corrupt or replaced)",
            path=lib,
            fix="compile the recipe again (`mlcbuild compile`; a damaged cache entry is rebuilt)",
        )
    return lib


def check_weights(build: dict, weights: Path) -> dict:
    """Check converted weights against a build: same scheme and overrides, same parameter list.

    Returns:
        the weights' ``convert.json``.
    Raises:
        MlcbuildError: not a converted weight directory, or converted for another
            scheme or model (parameter names/shapes/dtypes differ).
    """

    info_path = Path(weights) / "convert.json"
    if not info_path.is_file():
        raise MlcbuildError(
            "not a converted weight directory (no convert.json)", path=weights, fix="run `mlcbuild convert` first"
        )
    info = _read_record(info_path, ("scheme", "params"), "convert the checkpoint again (`mlcbuild convert`)")
    quant = build["inputs"]["recipe"]["quantization"]
    scheme = quant["scheme"]
    if info["scheme"] != scheme:
        raise MlcbuildError(
            f"the weights are quantized with {info['scheme']} but the library was built for {scheme}",
            path=weights,
            fix=f"convert the weights with a {scheme} recipe, or compile the library with a {info['scheme']} recipe",
        )
    if info.get("overrides", []) != quant.get("overrides", []):
        raise MlcbuildError(
            f"the weights' [quantization.overrides] {info.get('overrides', [])} differ from the library's "
            f"{quant.get('overrides', [])}",
            path=weights,
            fix="convert the weights and compile the library from the same recipe",
        )
    want = [(p["name"], p["shape"], p["dtype"]) for p in build["params"]]
    have = [(p["name"], p["shape"], p["dtype"]) for p in info["params"]]
    if want != have:
        diff = next(
            (f"{a} vs {b}" for a, b in zip(want, have, strict=False) if a != b),
            f"{len(want)} vs {len(have)} parameters",
        )
        raise MlcbuildError(
            f"the weights do not belong to this library's model (library vs weights: {diff})",
            path=weights,
            fix="convert the checkpoint with the same recipe the library was compiled from",
        )
    return info


def load_host_model(artifact: str | Path, weights: str | Path) -> tuple[HostModel, dict]:
    """A host artifact and converted weights, checked against each other.

    Returns:
        ``(model, chat_config)``.
    Raises:
        MlcbuildError: the artifact is not a host ``.so`` build, the weights do not match
            it (:func:`check_weights`), the library is not the one built (:func:`library_path`),
            its ABI stamp differs from this runtime (:func:`mlcbuild.artifacts.stamp.check_library_stamp`),
            or a shard is missing/corrupt.
    """
    import json

    from mlcbuild.artifacts.stamp import toolchain_stamp
    from mlcbuild.artifacts.tensor_cache import read_tensor_cache

    artifact, weights = Path(artifact), Path(weights)
    build = read_artifact(artifact)
    if build["library"]["format"] != "so":
        raise MlcbuildError(
            f"the artifact was built for target {build.get('target_name')!r} ({build['library']['file']}), which cannot run here",
            path=artifact,
            fix="compile the recipe with --target host to run it on this machine",
        )
    check_weights(build, weights)
    lib = library_path(artifact, build, toolchain_stamp())
    recipe = build["inputs"]["recipe"]
    want = [p["name"] for p in build["params"]]
    tensors = read_tensor_cache(weights)
    b = recipe["build"]
    chat = json.loads((weights / "mlc-chat-config.json").read_text())
    model = HostModel(
        lib,
        [tensors[name] for name in want],
        vocab_size=int(recipe["model"]["config"]["vocab_size"]),
        context_window_size=b["context_window_size"],
        prefill_chunk_size=b["prefill_chunk_size"],
        page_size=b["page_size"],
    )
    return model, chat
