"""The model's chat template as MLC-LLM's ``Conversation`` (``conv_template`` of
``mlc-chat-config.json``; ``python/mlc_llm/protocol/conversation_protocol.py``), and the
tokenizer facts MLC-LLM's runtime detects (``tokenizer_info``; ``cpp/tokenizers/tokenizers.cc``
``Tokenizer::DetectTokenizerInfo``).

MLC's engine does not run jinja2: it builds a prompt as
``system_template(system_message) + Σ roles[role] + role_content_sep + content + seps[role is
assistant]``, then ``roles["assistant"] + role_empty_sep`` for the reply. :func:`conversation`
finds those pieces by rendering probe conversations with the model's template (its own
jinja2 rendering, :class:`mlcbuild.artifacts.chat_template.ChatTemplate`) and keeps them only
if :func:`render` of the result reproduces the template's text for a multi-turn conversation
with a system message (and without one, where the template writes a default one);
otherwise it says why (:class:`NotExpressible`). A template that writes no system block when
none is given differs in that one case: MLC's engine always writes ``system_template``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlcbuild.artifacts.chat_template import ChatTemplate

_S, _U, _A, _U2 = "MLCBUILD_SYSTEM_MESSAGE", "MLCBUILD_USER_ONE", "MLCBUILD_ASSISTANT_ONE", "MLCBUILD_USER_TWO"
SYSTEM_SLOT = "{system_message}"


class NotExpressible(ValueError):
    """The chat template does something MLC's Conversation cannot (the message says what)."""


def _split(block: str, content: str, what: str) -> tuple[str, str]:
    if block.count(content) != 1:
        raise NotExpressible(f"the {what} message is not copied into the prompt as it is")
    head, tail = block.split(content)
    return head, tail


def _after(longer: str, prefix: str, what: str) -> str:
    if not longer.startswith(prefix):
        raise NotExpressible(f"adding {what} rewrites the earlier prompt")
    return longer[len(prefix) :]


def conversation(template: ChatTemplate, stop: list[tuple[int, str]], name: str) -> dict[str, Any]:
    """MLC's ``Conversation`` JSON for ``template``.

    Args:
        stop: ``(id, text)`` of the tokens that end a reply (``stop_token_ids``, ``stop_str``).
        name: the template's name in the JSON.
    Raises:
        NotExpressible: the template's prompts are not of MLC's form.
    """
    r = template.render
    sys_msg, user1, asst1 = ({"role": "system", "content": _S}, {"role": "user", "content": _U},
                             {"role": "assistant", "content": _A})  # fmt: skip
    s = r([sys_msg], add_generation_prompt=False)
    su = r([sys_msg, user1], add_generation_prompt=False)
    sua = r([sys_msg, user1, asst1], add_generation_prompt=False)
    suau = r([sys_msg, user1, asst1, {"role": "user", "content": _U2}], add_generation_prompt=False)
    gen = _after(r([sys_msg, user1], add_generation_prompt=True), su, "the generation prompt")
    user_head, user_tail = _split(_after(su, s, "a user message"), _U, "user")
    asst_head, asst_tail = _split(_after(sua, su, "an assistant message"), _A, "assistant")
    if _after(suau, sua, "a second user message") != user_head + _U2 + user_tail:
        raise NotExpressible("the second user message is framed differently from the first")
    if asst_head != gen:
        raise NotExpressible(f"the reply prompt {gen!r} differs from an assistant message's head {asst_head!r}")
    sys_head, sys_tail = _split(s, _S, "system")
    # the default system message a template adds when none is given (SmolLM2's, Qwen's)
    plain = r([user1], add_generation_prompt=False)
    lead = plain[: plain.index(user_head + _U)] if user_head + _U in plain else None
    if lead is None:
        raise NotExpressible("a user message without a system message is framed differently")
    if lead == "":
        default = ""
    elif lead.startswith(sys_head) and lead.endswith(sys_tail):
        default = lead[len(sys_head) : len(lead) - len(sys_tail)]
    else:
        raise NotExpressible(f"without a system message the prompt starts {lead!r}, not a system block")
    conv = _conversation(name, sys_head + SYSTEM_SLOT + sys_tail, default, user_head, asst_head,
                         [user_tail, asst_tail], stop)  # fmt: skip
    probes = [[sys_msg, user1, asst1, {"role": "user", "content": _U2}]]
    if lead:  # a template that writes no system block without a system message: MLC always does
        probes.append([user1, asst1, {"role": "user", "content": _U2}])
    for messages in probes:
        if render(conv, messages) != r(messages, add_generation_prompt=True):
            raise NotExpressible("MLC's prompt for a multi-turn conversation differs from the template's")
    return conv


def render(conv: dict[str, Any], messages: list[dict[str, str]]) -> str:
    """The prompt MLC's ``Conversation.as_prompt`` builds for text ``messages`` (a leading
    system message replaces ``system_message``), ending with the reply prompt."""
    system = conv["system_message"]
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    out = conv["system_template"].replace(SYSTEM_SLOT, system)
    seps = list(conv["seps"]) * (2 if len(conv["seps"]) == 1 else 1)
    for m in messages:
        slot = "{" + m["role"] + "_message}"
        body = conv["role_templates"][m["role"]].replace(slot, m["content"])
        out += conv["roles"][m["role"]] + conv["role_content_sep"] + body + seps[m["role"] == "assistant"]
    return out + conv["roles"]["assistant"] + conv["role_empty_sep"]


def _conversation(name, system_template, system_message, user, assistant, seps, stop) -> dict[str, Any]:
    """MLC's Conversation JSON (``conversation_protocol.py``'s fields) with these pieces."""
    return {
        "name": name,
        "system_template": system_template,
        "system_message": system_message,
        "add_role_after_system_message": True,
        "roles": {"user": user, "assistant": assistant},
        "role_templates": {"user": "{user_message}", "assistant": "{assistant_message}", "tool": "{tool_message}"},
        "messages": [],
        "seps": seps,
        "role_content_sep": "",
        "role_empty_sep": "",
        "stop_str": [text for _, text in stop if text],
        "stop_token_ids": [i for i, _ in stop],
        "function_string": "",
        "use_function_calling": False,
    }


def plain_lm(stop: list[tuple[int, str]]) -> dict[str, Any]:
    """MLC's ``LM`` template (``python/mlc_llm/conversation_template/``: no roles, no system
    prompt): text in, text out."""
    return _conversation("LM", SYSTEM_SLOT, "", "", "", [""], stop)


def _types(node: Any, kind: str) -> list[dict]:
    """``node`` and, for a ``Sequence``, its members (``kind``: ``decoders`` or ``normalizers``)."""
    if not isinstance(node, dict):
        return []
    return node.get(kind, []) if node.get("type") == "Sequence" else [node]


def tokenizer_info(tokenizer_json: Path) -> dict[str, Any]:
    """``token_postproc_method``, ``prepend_space_in_encode``, ``strip_space_in_decode`` as
    MLC-LLM's ``DetectTokenizerInfo`` finds them in ``tokenizer.json``: a ``ByteLevel`` decoder
    means ``byte_level`` (else ``byte_fallback``), a ``Prepend "▁"`` normalizer a prepended
    space, a ``Strip " " 1 0`` decoder a stripped one."""
    obj = json.loads(Path(tokenizer_json).read_text())
    decoders = _types(obj.get("decoder"), "decoders")
    kinds = [d.get("type") for d in decoders]
    method = "byte_level" if "ByteLevel" in kinds else "byte_fallback"
    if "ByteLevel" in kinds and "ByteFallback" in kinds:  # MLC keeps the last one it sees
        method = "byte_level" if kinds[::-1].index("ByteLevel") < kinds[::-1].index("ByteFallback") else "byte_fallback"
    prepend = any(
        n.get("type") == "Prepend" and n.get("prepend") == "\u2581"
        for n in _types(obj.get("normalizer"), "normalizers")
    )
    strip = any(d.get("type") == "Strip" and d.get("content") == " " and d.get("start") == 1 and d.get("stop") == 0
                for d in decoders)  # fmt: skip
    return {"token_postproc_method": method, "prepend_space_in_encode": prepend, "strip_space_in_decode": strip}
