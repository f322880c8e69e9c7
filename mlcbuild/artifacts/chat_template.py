"""A checkpoint's chat template, rendered as ``transformers.apply_chat_template`` renders it.

The template is the checkpoint's (``tokenizer_config.json``'s ``chat_template``, or
``chat_template.jinja``; a GGUF file's ``tokenizer.chat_template`` arrives as the latter),
rendered by jinja2 in the environment ``transformers`` uses
(``transformers/utils/chat_template_utils.py``): a sandbox with ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension, ``raise_exception``, ``strftime_now`` and a
``tojson`` that does not escape HTML, and the tokenizer's special tokens as variables.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from mlcbuild.errors import MlcbuildError

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


def stop_ids(chat_config: dict[str, Any], tokenizer, template: ChatTemplate | None = None) -> set[int]:
    """The ids that end a reply: the config's ``eos_token_id`` (one or a list) and the
    template's ``eos_token``."""
    eos = chat_config.get("eos_token_id")
    out = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    text = (template.special if template else {}).get("eos_token")
    if text is not None and tokenizer.token_to_id(text) is not None:
        out.add(tokenizer.token_to_id(text))
    return out
