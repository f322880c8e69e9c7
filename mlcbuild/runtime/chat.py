"""Chat: the model's own template, a conversation whose KV cache lives across turns, sampling.

The template is the checkpoint's (``tokenizer_config.json``'s ``chat_template``, or
``chat_template.jinja``; a GGUF file's ``tokenizer.chat_template`` arrives as the latter),
rendered by jinja2 in the environment ``transformers.apply_chat_template`` uses
(``transformers/utils/chat_template_utils.py``): a sandbox with ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension, ``raise_exception``, ``strftime_now`` and a
``tojson`` that does not escape HTML, and the tokenizer's special tokens as variables.

A turn renders the whole conversation with the generation prompt and feeds only the tokens
the KV cache does not hold yet; where the rendering of earlier turns changed (a template
that rewrites history, or a reply that tokenizes differently from the ids generated) the
cache is rolled back to the common prefix (``vm.builtin.kv_state_popn``), as MLC-LLM's
engine reuses a prefix.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from mlcbuild.errors import MlcbuildError
from mlcbuild.runtime.engine import Engine, Stats

_SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def _token_text(t: Any) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: a string or ``{"content": ...}``."""
    return t.get("content") if isinstance(t, dict) else t


@dataclasses.dataclass
class ChatTemplate:
    """A chat template and the special tokens it may use.

    Attributes:
        source: the jinja2 text. special: ``bos_token`` etc. as strings.
    """

    source: str
    special: dict[str, str]

    @classmethod
    def load(cls, weights: Path) -> ChatTemplate:
        """The template beside converted weights (or in a checkpoint directory).

        Raises:
            MlcbuildError: no template there (naming the files looked for).
        """
        weights = Path(weights)
        cfg: dict[str, Any] = {}
        cfg_path = weights / "tokenizer_config.json"
        if cfg_path.is_file():
            try:
                cfg = json.loads(cfg_path.read_text())
            except ValueError as e:
                raise MlcbuildError(f"not valid JSON: {e}", path=cfg_path, fix="restore the tokenizer files") from e
        template = cfg.get("chat_template")
        if isinstance(template, list):  # named templates: transformers takes "default"
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        jinja = weights / "chat_template.jinja"
        if template is None and jinja.is_file():
            template = jinja.read_text()
        if not template:
            raise MlcbuildError(
                "no chat template (tokenizer_config.json's chat_template or chat_template.jinja)",
                path=weights,
                fix="convert a checkpoint that has one, or pass --prompt-ids / --prompt without --chat",
            )
        special = {k: _token_text(cfg[k]) for k in _SPECIAL if _token_text(cfg.get(k)) is not None}
        return cls(template, special)

    @functools.cached_property
    def _compiled(self):
        """The template compiled once, in ``transformers``' jinja2 environment."""
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = tojson
        env.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.now().strftime(f))
        try:
            return env.from_string(self.source)
        except jinja2.TemplateError as e:
            raise MlcbuildError(f"the chat template is not valid jinja2: {e}", fix="restore the tokenizer files") from e

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The conversation as the model reads it, as ``transformers.apply_chat_template(...,
        tokenize=False)`` renders it.

        Raises:
            MlcbuildError: the template raised (``raise_exception``) or is not valid jinja2.
        """
        import jinja2

        template = self._compiled
        try:
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.special)
        except jinja2.TemplateError as e:
            raise MlcbuildError(f"the chat template failed: {e}", fix="check the messages' roles") from e


@dataclasses.dataclass
class Sampler:
    """Next-token choice from ``[vocab]`` float32 logits, as ``transformers``' generation
    processors apply them (``generation/logits_process.py``): repetition penalty (Keskar et
    al. 2019: a seen token's logit divided by the penalty if positive, multiplied if
    negative), temperature, top-k, top-p (the smallest set of tokens whose probability
    reaches ``top_p``). ``temperature`` 0: greedy (argmax), the default.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

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
        x /= self.temperature
        if self.top_k and self.top_k < x.size:
            x[x < np.partition(x, -self.top_k)[-self.top_k]] = -np.inf
        p = np.exp(x - x.max())
        p /= p.sum()
        if self.top_p < 1.0:
            order = np.argsort(-p, kind="stable")
            keep = np.cumsum(p[order]) - p[order] < self.top_p  # at least the most likely token
            p[order[~keep]] = 0.0
            p /= p.sum()
        return int(self._rng.choice(p.size, p=p))


def stop_ids(chat_config: dict[str, Any], tokenizer, template: ChatTemplate | None = None) -> set[int]:
    """The ids that end a reply: the config's ``eos_token_id`` (one or a list) and the
    template's ``eos_token``."""
    eos = chat_config.get("eos_token_id")
    out = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    text = (template.special if template else {}).get("eos_token")
    if text is not None and tokenizer.token_to_id(text) is not None:
        out.add(tokenizer.token_to_id(text))
    return out


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
