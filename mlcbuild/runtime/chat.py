"""Chat: the model's own template, a conversation whose KV cache lives across turns, sampling.

The template is the checkpoint's, rendered as ``transformers`` renders it
(:class:`mlcbuild.artifacts.chat_template.ChatTemplate`).

A turn renders the whole conversation with the generation prompt and feeds only the tokens
the KV cache does not hold yet; where the rendering of earlier turns changed (a template
that rewrites history, or a reply that tokenizes differently from the ids generated) the
cache is rolled back to the common prefix (``vm.builtin.kv_state_popn``), as MLC-LLM's
engine reuses a prefix.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from mlcbuild.artifacts.chat_template import ChatTemplate, stop_ids
from mlcbuild.errors import MlcbuildError
from mlcbuild.runtime.engine import Engine, Stats

__all__ = ["ChatTemplate", "Conversation", "Sampler", "load_tokenizer", "stop_ids", "stream_text"]


@dataclasses.dataclass
class Sampler:
    """Next-token choice from ``[vocab]`` float32 logits, as ``transformers``' generation
    processors apply them (``generation/logits_process.py``): repetition penalty (Keskar et
    al. 2019: a seen token's logit divided by the penalty if positive, multiplied if
    negative), temperature, top-k, top-p (the smallest set of tokens whose probability
    reaches ``top_p``). ``temperature`` 0: greedy (argmax), the default. ``softmax``: the
    library's (:meth:`mlcbuild.runtime.engine.Engine.softmax`, set by the caller), used in
    place of NumPy's where given.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    softmax: Callable[[np.ndarray, float], np.ndarray | None] | None = None

    def __post_init__(self):
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise MlcbuildError(
                "sampling needs --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0, --repetition-penalty > 0",
                fix="correct the sampling options",
            )
        self._rng = np.random.default_rng(self.seed)

    def __call__(self, logits: np.ndarray, history: list[int]) -> int:
        x = np.asarray(logits, dtype=np.float64).reshape(-1).copy()
        if self.repetition_penalty != 1.0 and history:
            seen = np.unique(np.asarray(history))
            v = x[seen]
            x[seen] = np.where(v < 0, v * self.repetition_penalty, v / self.repetition_penalty)
        if self.temperature == 0:
            return int(np.argmax(x))
        if self.top_k and self.top_k < x.size:  # before the temperature: the same set
            x[x < np.partition(x, -self.top_k)[-self.top_k]] = -np.inf
        p = self.softmax(x, self.temperature) if self.softmax else None
        if p is None:
            x /= self.temperature
            p = np.exp(x - x.max())
        p = np.asarray(p, np.float64)
        p /= p.sum()
        if self.top_p < 1.0:
            order = np.argsort(-p, kind="stable")
            keep = np.cumsum(p[order]) - p[order] < self.top_p  # at least the most likely token
            p[order[~keep]] = 0.0
            p /= p.sum()
        return int(self._rng.choice(p.size, p=p))


class Conversation:
    """A multi-turn chat with ``engine``: the KV cache holds the conversation so far.

    Args:
        engine: the model. tokenizer: a ``tokenizers.Tokenizer``. template: its chat template.
        stop: ids that end a reply. sampler: the next-token choice (default greedy).
        system: an optional system message.
    """

    def __init__(self, engine: Engine, tokenizer, template: ChatTemplate, stop: set[int],
                 sampler: Sampler | None = None, system: str | None = None):  # fmt: skip
        self.engine, self.tokenizer, self.template, self.stop = engine, tokenizer, template, stop
        self.sampler = sampler or Sampler()
        self.system = system
        self.stats = Stats()
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (``/reset``): an empty history and a fresh KV cache."""
        self.messages: list[dict[str, str]] = [{"role": "system", "content": self.system}] if self.system else []
        self.fed: list[int] = []  # the ids the KV cache holds, in order
        self.engine.reset()

    def _feed(self, ids: list[int]) -> np.ndarray:
        """Make the cache hold ``ids``: keep the common prefix, pop the rest, prefill the new tail.
        Returns the last token's logits."""
        common = 0
        for a, b in zip(self.fed, ids, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # the last token is fed again for its logits
        if common < len(self.fed):
            self.engine.popn(len(self.fed) - common)
        self.fed = ids[:common]
        logits = self.engine.prefill(ids[common:])
        self.fed = list(ids)
        return logits

    def say(self, text: str, max_new_tokens: int = 256) -> Iterator[int]:
        """The reply to user message ``text``, token by token (the stop token not yielded);
        the reply joins the history. ``self.stats`` gets this turn's times."""
        self.messages.append({"role": "user", "content": text})
        ids = self.tokenizer.encode(self.template.render(self.messages), add_special_tokens=False).ids
        if len(ids) + 1 > self.engine.context_window_size:
            self.messages.pop()
            raise MlcbuildError(
                f"the conversation ({len(ids)} tokens) fills the context window ({self.engine.context_window_size})",
                fix="/reset to start over, or compile with a larger context_window_size",
            )
        st = self.stats = Stats()
        t = time.perf_counter()
        logits = self._feed(ids)
        st.prefill_tokens, st.prefill_s = len(ids), time.perf_counter() - t
        reply: list[int] = []
        while len(reply) < max_new_tokens and self.engine.seq_len < self.engine.context_window_size:
            tok = self.sampler(logits, self.fed)
            if tok in self.stop:
                break
            reply.append(tok)
            yield tok
            t = time.perf_counter()
            logits = self.engine.decode(tok)
            self.fed.append(tok)
            st.decode_step_s.append(time.perf_counter() - t)
        self.messages.append({"role": "assistant", "content": self.tokenizer.decode(reply)})


def load_tokenizer(weights: Path):
    """The ``tokenizers.Tokenizer`` of ``weights/tokenizer.json``.

    Raises:
        MlcbuildError: no ``tokenizer.json`` there.
    """
    path = Path(weights) / "tokenizer.json"
    if not path.is_file():
        raise MlcbuildError(
            "no tokenizer.json with the weights", path=weights, fix="convert a checkpoint that has tokenizer.json"
        )
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def stream_text(tokenizer, ids: Iterator[int], emit: Callable[[str], None]) -> list[int]:
    """Decode ``ids`` as they come and ``emit`` each new piece of text (whole characters only:
    a multi-byte character split across tokens waits for its last token). Returns the ids."""
    out: list[int] = []
    shown = ""
    for tok in ids:
        out.append(tok)
        text = tokenizer.decode(out)
        if text.endswith("\ufffd"):
            continue
        emit(text[len(shown) :])
        shown = text
    text = tokenizer.decode(out)
    if len(text) > len(shown):
        emit(text[len(shown) :])
    return out
