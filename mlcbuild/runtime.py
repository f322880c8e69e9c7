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

from .errors import MlcbuildError


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
        import tvm
        from tvm import relax

        self._tvm = tvm
        self.device = tvm.cpu()
        self.lib = tvm.runtime.load_module(str(lib_path))
        self.vm = relax.VirtualMachine(self.lib, self.device)
        self.params = [tvm.runtime.tensor(np.ascontiguousarray(p), self.device) for p in params]
        self.vocab_size = vocab_size
        self.context_window_size = context_window_size
        self.prefill_chunk_size = prefill_chunk_size
        self.page_size = page_size
        f = tvm.get_global_func
        self._add_seq = f("vm.builtin.kv_state_add_sequence")
        self._remove_seq = f("vm.builtin.kv_state_remove_sequence")
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
        emb = self.vm["embed"](self._tvm.runtime.tensor(ids, self.device), self.params)
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
            out, self.kv_cache = self.vm["prefill"](emb, self.kv_cache, self.params)
            self._end(self.kv_cache)
            self.seq_len += chunk.size
            logits = out.numpy()
        return logits.reshape(-1)

    def decode(self, token: int) -> np.ndarray:
        """Feed one token. Returns its logits, ``[vocab]`` float32."""
        emb = self._embed(np.asarray([token]))
        self._begin(self.kv_cache, self._shape(0), self._shape(1))
        out, self.kv_cache = self.vm["decode"](emb, self.kv_cache, self.params)
        self._end(self.kv_cache)
        self.seq_len += 1
        return out.numpy().reshape(-1)

    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy generation: the ``max_new_tokens`` ids after the prompt."""
        self.reset()
        logits = self.prefill(prompt_ids)
        out = []
        for _ in range(max_new_tokens):
            tok = int(np.argmax(logits))
            out.append(tok)
            if len(out) == max_new_tokens:
                break
            logits = self.decode(tok)
        return out
