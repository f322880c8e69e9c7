"""Perplexity of a compiled model on the host over a text file (``mlcbuild eval``).

The text is tokenized with the checkpoint's ``tokenizer.json`` and cut into consecutive,
non-overlapping windows of ``context`` tokens (the last one shorter); each window starts a
fresh sequence. Within a window of tokens ``t_0 .. t_{n-1}`` the model predicts
``t_1 .. t_{n-1}``: ``nll = -sum_i log softmax(logits_{i-1})[t_i]`` in float64, and
``perplexity = exp(sum nll / tokens scored)``. This is the fixed-window evaluation of
Hugging Face's perplexity guide (``stride = context``) and of ``llama-perplexity``; the
logits come from one prefill of ``t_0`` and one decode step per further token, so the KV
cache path the app runs is the one measured.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from mlcbuild.errors import MlcbuildError


@dataclasses.dataclass(frozen=True)
class Perplexity:
    """A perplexity result.

    Attributes:
        perplexity: ``exp(nll / tokens)``.
        nll: summed negative log-likelihood, nats.
        tokens: tokens scored (every token of the text except each window's first).
        windows: windows evaluated; context: tokens per window.
        seconds: wall time of the evaluation, s.
    """

    perplexity: float
    nll: float
    tokens: int
    windows: int
    context: int
    seconds: float


def windows(ids: list[int], context: int) -> list[list[int]]:
    """``ids`` in consecutive windows of ``context`` tokens; a last window of one token (nothing
    to score) is dropped.

    Raises:
        MlcbuildError: ``context`` below 2, or fewer than 2 tokens.
    """
    if context < 2:
        raise MlcbuildError(f"--context must be at least 2 tokens, got {context}")
    out = [ids[i : i + context] for i in range(0, len(ids), context)]
    out = [w for w in out if len(w) >= 2]
    if not out:
        raise MlcbuildError("the text has fewer than 2 tokens: nothing to score", fix="pass a longer text file")
    return out


def log_prob(logits: np.ndarray, token: int) -> float:
    """``log softmax(logits)[token]`` of ``[vocab]`` float32 logits, computed in float64."""
    x = logits.astype(np.float64)
    m = x.max()
    return float(x[token] - m - math.log(np.exp(x - m).sum()))


def perplexity(
    model,
    ids: list[int],
    context: int,
    on_window: Callable[[int, int], None] | None = None,
    score_from: int = 1,
) -> Perplexity:
    """Perplexity of ``model`` (a :class:`mlcbuild.runtime.engine.Engine`) over token ``ids``.

    Args:
        context: tokens per window (at most the build's context window).
        on_window: called with (windows done, windows in all) after each window (progress).
        score_from: the first position of a window that is scored (1: all but the first);
            ``context // 2 + 1`` is ``llama-perplexity``'s method (``tools/perplexity/perplexity.cpp``:
            logits ``first = n_ctx/2 .. n_ctx-2`` predict tokens ``first+1 .. n_ctx-1``, the
            ``n_ctx/2 - 1`` last of each chunk), which also scores whole windows only.
    Raises:
        MlcbuildError: ``context`` longer than the build's context window, or as :func:`windows`.
    """
    if context > model.context_window_size:
        raise MlcbuildError(
            f"--context {context} exceeds the library's context window ({model.context_window_size} tokens)",
            fix=f"pass --context {model.context_window_size} or less, or rebuild with a larger context_window_size",
        )
    if not 1 <= score_from < context:
        raise MlcbuildError(f"--score-from must be in 1..{context - 1}, got {score_from}")
    todo = [w for w in windows(ids, context) if len(w) > score_from]
    start = time.perf_counter()
    nll, scored = 0.0, 0
    for k, window in enumerate(todo):
        model.reset()
        logits = model.prefill(window[:score_from])
        for i in range(score_from, len(window)):
            nll -= log_prob(logits, window[i])
            scored += 1
            if i + 1 < len(window):
                logits = model.decode(window[i])
        if on_window:
            on_window(k + 1, len(todo))
    return Perplexity(
        perplexity=math.exp(nll / scored),
        nll=nll,
        tokens=scored,
        windows=len(todo),
        context=context,
        seconds=time.perf_counter() - start,
    )


def reference_perplexity(hf, ids: list[int], context: int) -> float:
    """``transformers``' perplexity of causal LM ``hf`` over the same :func:`windows` of
    ``ids``: the mean of each window's shifted cross-entropy (``labels=input_ids``), weighted
    by the tokens it scores. The reference ``eval`` is checked against."""
    import torch

    nll, n = 0.0, 0
    with torch.no_grad():
        for w in windows(ids, context):
            x = torch.tensor([w])
            nll += hf(input_ids=x, labels=x).loss.double().item() * (len(w) - 1)
            n += len(w) - 1
    return math.exp(nll / n)


def text_ids(weights: Path, text_file: Path, max_tokens: int | None = None) -> list[int]:
    """The text file's token ids by the ``tokenizer.json`` beside the converted weights.

    Raises:
        MlcbuildError: no tokenizer with the weights, or the text file is missing or empty.
    """
    tok_path = Path(weights) / "tokenizer.json"
    if not tok_path.is_file():
        raise MlcbuildError(
            "no tokenizer.json with the weights", path=weights, fix="convert a checkpoint that has tokenizer.json"
        )
    text_file = Path(text_file)
    if not text_file.is_file():
        raise MlcbuildError("text file not found", path=text_file, fix="pass an existing UTF-8 text file")
    text = text_file.read_text(encoding="utf-8")
    if not text.strip():
        raise MlcbuildError("the text file is empty", path=text_file, fix="pass a text file with content")
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tok_path)).encode(text).ids
    return ids[:max_tokens] if max_tokens else ids
