"""One engine: the paged-KV-cache step protocol of a compiled library, on the host or over RPC.

Per sequence: ``create_tir_paged_kv_cache`` then ``kv_state_add_sequence``; per step:
``kv_state_begin_forward`` with the sequence ids and token counts, ``embed`` then
``prefill``/``decode``, ``kv_state_end_forward``. Argument orders follow
``tvm/src/runtime/vm/paged_kv_cache.cc`` shipped in the wheel, as MLC-LLM's engine calls them
(``cpp/serve/model.cc``). The same :class:`Engine` drives a library loaded in this process
(:meth:`Engine.local`) and one loaded on a device through an RPC session
(:func:`mlcbuild.device.bench.remote_engine`): every call goes through ``get_function``, so
what crosses an RPC link per step is a few token ids and handles.

:func:`prefill`, :func:`decode_one_token` and :func:`generate` are greedy generation in the
shape of gpt-fast's ``generate.py``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from mlcbuild.errors import MlcbuildError
from mlcbuild.runtime.host_memory import host_tensors
from mlcbuild.runtime.threads import DecodeThreads, decode_threads


def use_all_cores(num_threads: int | None = None) -> int:
    """Size TVM's CPU thread pool before its first parallel kernel: ``TVM_NUM_THREADS`` if the
    user set it, else ``num_threads``, else every logical CPU.

    TVM's default is half the logical CPUs on x86 (it assumes hyper-threading): one thread on
    a 2-core VM, which halved decode speed here (SmolLM-135M q4f32_1: 16.9 vs 29.4 tokens/s).
    The pool reads the variable once, when it starts; later calls change nothing.

    Threads are left unpinned (``TVM_BIND_THREADS=0`` unless the user set it): TVM pins each
    worker to a core, so with another process busy on one core every parallel kernel waited for
    a worker sharing that core with it. Measured (SmolLM2-135M q4f32_1, 2 threads, a busy loop
    pinned to one of the 2 cores, pp32/tg16): pinned 12.3 / 1.4 tokens/s, unpinned 566 / 28.5;
    idle, unpinned equals pinned within this VM's noise (pp128 1168-1268, tg64 247-303).

    Returns:
        the thread count asked for.
    """
    import os

    os.environ.setdefault("TVM_BIND_THREADS", "0")
    if "TVM_NUM_THREADS" not in os.environ:
        os.environ["TVM_NUM_THREADS"] = str(num_threads or os.cpu_count() or 1)
    return int(os.environ["TVM_NUM_THREADS"])


class Engine:
    """A compiled library's Relax VM, its parameters and one sequence's paged KV cache.

    Args:
        vm: ``tvm.relax.VirtualMachine`` of the library (local or on an RPC session).
        params: the parameters in entry-function order, an FFI array on ``device``.
        device: where the VM runs.
        vocab_size: tokens; ids outside ``[0, vocab_size)`` are refused before the VM
            (the embedding gather does not bounds-check).
        context_window_size, prefill_chunk_size, page_size: from the recipe's build options, tokens.
        get_function: global-function lookup: ``tvm.get_global_func`` here,
            ``session.get_function`` over RPC.
        threads: chooses each step's CPU thread count by measured decode time
            (:mod:`mlcbuild.runtime.threads`); :meth:`local` gives one to CPU engines.
    """

    def __init__(
        self,
        vm,
        params,
        device,
        *,
        vocab_size: int,
        context_window_size: int,
        prefill_chunk_size: int,
        page_size: int = 16,
        get_function: Callable[[str], Any] | None = None,
        threads: DecodeThreads | None = None,
    ):
        import tvm
        import tvm_ffi

        self._tensor = tvm.runtime.tensor
        f = get_function or tvm.get_global_func
        self.vm, self.params, self.device = vm, params, device
        self.vocab_size = vocab_size
        self.context_window_size = context_window_size
        self.prefill_chunk_size = prefill_chunk_size
        self.page_size = page_size
        self._fns = {n: vm[n] for n in ("embed", "prefill", "decode", "create_tir_paged_kv_cache")}
        self._shape, self._item = f("ffi.Shape"), f("ffi.ArrayGetItem")
        self._add_seq = f("vm.builtin.kv_state_add_sequence")
        self._begin = f("vm.builtin.kv_state_begin_forward")
        self._end = f("vm.builtin.kv_state_end_forward")
        self._popn = f("vm.builtin.kv_state_popn")
        self.kv_cache = None
        self.seq_len = 0
        self.threads = threads
        # per-step constants, made once: FFI shapes by token count (1.6 us each per step
        # otherwise), the embedding view's function (Tensor._create_view: 6.5 us), and on the
        # CPU of this process one token's id tensor written in place through a NumPy view of its
        # memory (tvm.runtime.tensor per step: 20.6 us). Measured on a 2-core Zen 4 VM, where a
        # decode step of SmolLM2-135M q4f32_1 takes 3.5-4.5 ms: ~30 us less per step.
        self._shapes: dict[tuple[bool, tuple[int, ...]], Any] = {}
        self._local_shape = tvm_ffi.Shape
        self._create_view = tvm.get_global_func("runtime.TVMTensorCreateView")  # here, as Tensor._create_view
        self._one_id = self._one_id_view = None
        if int(device.dlpack_device_type()) == 1:  # kDLCPU in this process (RPC devices carry a session mask)
            self._one_id = tvm.runtime.empty((1,), "int32", device)
            self._one_id_view = np.from_dlpack(self._one_id)

    def _shape_of(self, *dims: int, here: bool = False):
        """The FFI shape of ``dims`` where the VM runs (``here``: in this process, for a view),
        made once per distinct value."""
        shape = self._shapes.get((here, dims))
        if shape is None:
            shape = self._shapes[(here, dims)] = self._local_shape(dims) if here else self._shape(*dims)
        return shape

    @classmethod
    def local(
        cls, lib_path: str | Path, params: Iterable[np.ndarray], *, device_kind: str = "llvm", **sizes: int
    ) -> Engine:
        """A ``.so`` loaded in this process with NumPy ``params`` (entry-function order), run on
        the device of ``device_kind`` (the target descriptor's ``device.kind``: ``llvm`` the CPU,
        ``opencl`` an OpenCL device through :mod:`mlcbuild.runtime.devices`; the CPU runs the
        VM's shape functions beside it); ``sizes``: the keyword arguments of :class:`Engine`
        (``vocab_size``, ...).

        Raises:
            MlcbuildError: the device's runtime or the device is missing (:func:`mlcbuild.runtime.devices.device_for`).
        """
        max_threads = use_all_cores()
        import tvm
        import tvm_ffi
        from tvm import relax

        from mlcbuild.runtime.devices import device_for

        device = device_for(device_kind)  # before the library: its device modules need the runtime's loader
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), device)
        # one FFI array, converted once: a Python list of ~300 tensors costs ~20 us per VM call
        if device_kind == "llvm":  # on transparent huge pages (host_memory)
            arr = tvm_ffi.Array(host_tensors(list(params), device))
        else:
            arr = tvm_ffi.Array([tvm.runtime.tensor(np.ascontiguousarray(p), device) for p in params])
        return cls(vm, arr, device, threads=decode_threads(max_threads) if device_kind == "llvm" else None, **sizes)

    def reset(self) -> None:
        """Start a new sequence (id 0) in a fresh KV cache."""
        S = self._shape
        self.kv_cache = None  # free the old one first (on a device: its memory)
        self.kv_cache = self._fns["create_tir_paged_kv_cache"](
            S(1), S(self.context_window_size), S(self.prefill_chunk_size), S(self.page_size), S(0)
        )
        self._add_seq(self.kv_cache, 0)
        self.seq_len = 0

    def popn(self, n: int) -> None:
        """Drop the last ``n`` tokens of sequence 0 from the KV cache (a rolled-back turn)."""
        if n > self.seq_len:
            raise MlcbuildError(f"cannot drop {n} tokens of a sequence of {self.seq_len}")
        if n:
            self._popn(self.kv_cache, 0, n)
            self.seq_len -= n

    def step(self, ids: np.ndarray, phase: str):
        """One forward of ``ids`` (``[n]`` int32, n ≤ the prefill chunk) through ``phase``
        (``"prefill"`` or ``"decode"``, n = 1) of sequence 0.

        Returns:
            the logits, a ``[1, 1, vocab]`` float32 tensor left on the device (of the last token).
        Raises:
            MlcbuildError: empty ``ids``, an id out of range, or past the context window.
        """
        ids = np.asarray(ids, dtype=np.int32).reshape(-1)
        if ids.size == 0:
            raise MlcbuildError("empty token sequence")
        lo, hi = (int(ids[0]),) * 2 if ids.size == 1 else (int(ids.min()), int(ids.max()))
        if lo < 0 or hi >= self.vocab_size:
            raise MlcbuildError(f"token id out of range [0, {self.vocab_size}): {lo}..{hi}")
        if self.seq_len + ids.size > self.context_window_size:
            raise MlcbuildError(
                f"sequence of {self.seq_len + ids.size} tokens exceeds the context window ({self.context_window_size})",
                fix="raise build.context_window_size in the recipe or shorten the prompt",
            )
        if self.kv_cache is None:
            self.reset()
        if self.threads is not None:
            self.threads.before(phase)
            start = time.perf_counter()
        if ids.size == 1 and self._one_id is not None:
            self._one_id_view[0] = ids[0]
            tokens = self._one_id
        else:
            tokens = self._tensor(ids, self.device)
        emb = self._fns["embed"](tokens, self.params)
        # [1, n, hidden]: a view, no copy
        emb = self._create_view(emb, self._shape_of(1, ids.size, int(emb.shape[-1]), here=True), emb.dtype, 0)
        self._begin(self.kv_cache, self._shape_of(0), self._shape_of(ids.size))
        res = self._fns[phase](emb, self.kv_cache, self.params)  # (logits, kv cache): taken apart where it is
        out, self.kv_cache = self._item(res, 0), self._item(res, 1)
        self._end(self.kv_cache)
        if self.threads is not None and phase == "decode":
            self.threads.after(time.perf_counter() - start)
        self.seq_len += ids.size
        return out

    def forward(self, ids: Iterable[int]):
        """Prompt tokens in chunks of ``prefill_chunk_size``; the last token's logits tensor on the device."""
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int32).reshape(-1)
        if ids.size == 0:
            raise MlcbuildError("empty token sequence")
        out = None
        for start in range(0, ids.size, self.prefill_chunk_size):
            out = self.step(ids[start : start + self.prefill_chunk_size], "prefill")
        return out

    def prefill(self, ids: Iterable[int]) -> np.ndarray:
        """Feed prompt tokens (chunked). Returns the last token's logits, ``[vocab]`` float32."""
        return self.forward(ids).numpy().reshape(-1)

    def decode(self, token: int) -> np.ndarray:
        """Feed one token. Returns its logits, ``[vocab]`` float32."""
        return self.step(np.asarray([token]), "decode").numpy().reshape(-1)

    def softmax(self, logits: np.ndarray, temperature: float) -> np.ndarray | None:
        """Probabilities ``[vocab]`` float32 of ``logits`` (``[vocab]``) at ``temperature`` by the
        library's own ``softmax_with_temperature`` (MLC's; 0: greedy one-hot), or ``None`` for a
        library without it (built before it existed)."""
        try:
            fn = self.vm["softmax_with_temperature"]
        except AttributeError:
            return None
        x = self._tensor(np.asarray(logits, np.float32).reshape(1, 1, -1), self.device)
        t = self._tensor(np.asarray([temperature], np.float32), self.device)
        return fn(x, t).numpy().reshape(-1)

    def sync(self) -> None:
        """Wait for the device to finish what was queued."""
        self.device.sync()


@dataclasses.dataclass
class Stats:
    """Timings of one :func:`generate`: the prompt's tokens and prefill seconds, and the
    seconds of each decode step (s)."""

    prefill_tokens: int = 0
    prefill_s: float = 0.0
    decode_step_s: list[float] = dataclasses.field(default_factory=list)

    @property
    def decode_tokens(self) -> int:
        return len(self.decode_step_s)

    @property
    def decode_s(self) -> float:
        return sum(self.decode_step_s)

    @property
    def prefill_tokens_per_s(self) -> float | None:
        return round(self.prefill_tokens / self.prefill_s, 2) if self.prefill_s else None

    @property
    def decode_tokens_per_s(self) -> float | None:
        return round(self.decode_tokens / self.decode_s, 2) if self.decode_s else None


Sample = Callable[[np.ndarray, list[int]], int]
"""Next-token choice: ``(logits [vocab] float32, ids so far) -> id``."""


def greedy(logits: np.ndarray, _history: list[int]) -> int:
    """The most likely token (what the tests compare with ``transformers``' greedy search)."""
    return int(np.argmax(logits))


def prefill(engine: Engine, ids: list[int], sample: Sample = greedy) -> int:
    """A fresh sequence of prompt ``ids``; returns the next token."""
    engine.reset()
    return sample(engine.prefill(ids), list(ids))


def decode_one_token(engine: Engine, token: int, history: list[int], sample: Sample = greedy) -> int:
    """Feed ``token`` (the last of ``history``); returns the next one."""
    return sample(engine.decode(token), history)


def generate(
    engine: Engine,
    prompt_ids: list[int],
    max_new_tokens: int,
    stop_ids: Iterable[int] = (),
    stats: Stats | None = None,
    sample: Sample = greedy,
) -> Iterator[int]:
    """Generation (greedy by default), yielding each new token id as it is produced.

    Stops after ``max_new_tokens`` or after a token in ``stop_ids`` (EOS), which is yielded.
    ``stats`` (if given) receives the prefill and decode times (s) and token counts.
    """
    stop, stats = set(stop_ids), stats if stats is not None else Stats()
    history = list(prompt_ids)
    t = time.perf_counter()
    tok = prefill(engine, prompt_ids, sample)
    stats.prefill_tokens, stats.prefill_s = len(prompt_ids), time.perf_counter() - t
    for n in range(1, max_new_tokens + 1):
        yield tok
        if n == max_new_tokens or tok in stop:
            return
        t = time.perf_counter()
        history.append(tok)
        tok = decode_one_token(engine, tok, history, sample)
        stats.decode_step_s.append(time.perf_counter() - t)
