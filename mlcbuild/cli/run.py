"""``run`` and ``eval``: a compiled model on this machine."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mlcbuild.cli.app import (
    _say,
    cache_options,
    err,
    main,
    stdout,
)
from mlcbuild.cli.build import compile_with_progress, convert_with_progress
from mlcbuild.errors import MlcbuildError


def _artifact_and_weights(f):
    """The ARTIFACT argument (or a recipe) and ``--weights`` of the commands that run a model."""
    f = click.option(
        "--weights",
        "weights_dir",
        type=click.Path(exists=True, path_type=Path),
        help="converted weights (or, with a recipe, a checkpoint to convert: a directory or a .gguf file; "
        "default with a recipe: its model.source)",
    )(f)
    f = click.option(
        "--target",
        "-t",
        "target_name",
        default="host",
        show_default=True,
        help="with a recipe: the target to compile for and run on here (host, or pocl: OpenCL on PoCL)",
    )(f)
    return click.argument("artifact", type=click.Path(exists=True, path_type=Path))(f)


def _host_model(artifact: Path, weights_dir: Path | None, cache, target_name: str = "host"):
    """A model loaded here from an artifact, or from a recipe (compiled for ``target_name``
    first; a checkpoint given as ``weights_dir``, default the recipe's source, converted
    first): ``(model, chat config, artifact, weights)``. It runs on the artifact's device: the
    CPU, or OpenCL for a ``pocl`` build (:func:`mlcbuild.runtime.artifact.open_local`)."""
    from mlcbuild.runtime.artifact import open_local

    if artifact.suffix == ".toml":
        r, res = compile_with_progress(artifact, target_name, cache)
        artifact = res.artifact
        if weights_dir is None:
            from mlcbuild.artifacts.checkpoint import fetch

            weights_dir = fetch(r.source)
        if not (weights_dir / "tensor-cache.json").is_file() and (
            (weights_dir / "config.json").is_file() or weights_dir.is_file()
        ):
            weights_dir = convert_with_progress(r, weights_dir, cache, None, True).weights
    if weights_dir is None:
        raise MlcbuildError("--weights is needed with an artifact", fix="pass the weights `mlcbuild convert` printed")
    model, chat = open_local(artifact, weights_dir)
    return model, chat, artifact, weights_dir


def _sampling(f):
    """``--temperature``, ``--top-p``, ``--top-k``, ``--repetition-penalty``, ``--seed`` -> ``sampler``."""
    opts = [
        click.option("--temperature", type=float, default=0.0, show_default=True, help="0: greedy"),
        click.option("--top-p", type=float, default=1.0, show_default=True),
        click.option("--top-k", type=int, default=0, show_default=True, help="0: all tokens"),
        click.option("--repetition-penalty", type=float, default=1.0, show_default=True),
        click.option("--seed", type=int, help="seed of the sampling RNG (reproducible runs)"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _sampler(temperature, top_p, top_k, repetition_penalty, seed):
    from mlcbuild.runtime.chat import Sampler

    return Sampler(temperature, top_p, top_k, repetition_penalty, seed)


def _rate(st) -> str:
    return f"prefill {st.prefill_tokens_per_s} tok/s, decode {st.decode_tokens_per_s} tok/s"


@main.command("run")
@_artifact_and_weights
@click.option("--prompt", help="text, tokenized with the checkpoint's tokenizer")
@click.option("--prompt-ids", help="comma-separated token ids, e.g. 1,2,3")
@click.option(
    "--chat", "as_chat", is_flag=True, help="--prompt is one user turn, rendered by the model's chat template"
)
@click.option("--max-new-tokens", type=int, default=32, show_default=True)
@click.option("--ignore-eos", is_flag=True, help="do not stop at the end-of-sequence token")
@click.option("--json", "as_json", is_flag=True, help="print ids, text, tokens/s and peak RSS as JSON")
@_sampling
@cache_options
def run_cmd(
    artifact,
    weights_dir,
    target_name,
    prompt,
    prompt_ids,
    as_chat,
    max_new_tokens,
    ignore_eos,
    as_json,
    cache,
    **sampling,
):
    """Generate text here with a compiled ARTIFACT (or a recipe, compiled first for --target)."""
    import resource

    from mlcbuild.runtime.chat import ChatTemplate, load_tokenizer, stop_ids, stream_text
    from mlcbuild.runtime.engine import Stats, generate

    if (prompt is None) == (prompt_ids is None):
        raise MlcbuildError("give exactly one of --prompt and --prompt-ids", fix="e.g. --prompt-ids 1,2,3")
    if as_chat and prompt is None:
        raise MlcbuildError("--chat takes --prompt (a user message)", fix='e.g. --chat --prompt "Hello"')
    sampler = _sampler(**sampling)
    model, chat, artifact, weights_dir = _host_model(artifact, weights_dir, cache, target_name)
    sampler.softmax = model.softmax  # the library's softmax_with_temperature
    has_tokenizer = (weights_dir / "tokenizer.json").is_file()
    tokenizer = load_tokenizer(weights_dir) if prompt is not None or has_tokenizer else None
    template = ChatTemplate.load(weights_dir) if as_chat else None
    if template is not None:
        ids = tokenizer.encode(template.render([{"role": "user", "content": prompt}]), add_special_tokens=False).ids
    elif prompt is not None:
        ids = tokenizer.encode(prompt).ids
    else:
        try:
            ids = [int(x) for x in prompt_ids.split(",") if x.strip()]
        except ValueError as e:
            raise MlcbuildError(f"--prompt-ids must be comma-separated integers: {e}") from e
    stop = set() if ignore_eos else stop_ids(chat, tokenizer, template) if tokenizer else stop_ids(chat, None)
    st = Stats()
    tokens = generate(model, ids, max_new_tokens, stop, st, sampler)
    if tokenizer is not None and not as_json:
        out_ids = stream_text(tokenizer, tokens, lambda piece: click.echo(piece, nl=False))
    else:
        out_ids = list(tokens)
    shown = [t for t in out_ids if t not in stop] if template is not None else out_ids
    text = tokenizer.decode(shown) if tokenizer is not None else ""
    result = {
        "prompt_ids": ids,
        "output_ids": out_ids,
        "text": text,
        "prefill_tokens_per_s": st.prefill_tokens_per_s,
        "decode_tokens_per_s": st.decode_tokens_per_s,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if as_json:
        click.echo(json.dumps(result))
    else:
        if tokenizer is None:
            click.echo(" ".join(map(str, out_ids)), nl=False)
        click.echo()
        err.print(f"{_rate(st)}, peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB", highlight=False)


@main.command("chat")
@_artifact_and_weights
@click.option("--system", help="a system message")
@click.option("--max-new-tokens", type=int, default=256, show_default=True, help="per reply")
@_sampling
@cache_options
def chat_cmd(artifact, weights_dir, target_name, system, max_new_tokens, cache, **sampling) -> None:
    """Chat here with a compiled ARTIFACT (or a recipe, for --target): one line per user turn;
    /reset starts over, /stats shows the last turn's speed, /exit (or end of input) ends."""
    from mlcbuild.runtime.chat import ChatTemplate, Conversation, load_tokenizer, stop_ids, stream_text

    sampler = _sampler(**sampling)
    model, chat, _, weights_dir = _host_model(artifact, weights_dir, cache, target_name)
    sampler.softmax = model.softmax  # the library's softmax_with_temperature
    tokenizer, template = load_tokenizer(weights_dir), ChatTemplate.load(weights_dir)
    conv = Conversation(model, tokenizer, template, stop_ids(chat, tokenizer, template), sampler, system)
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            err.print("[bold]>>> [/]", end="")
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            return
        line = line.rstrip("\n")
        if line.strip() == "/reset":
            conv.reset()
            err.print("(conversation reset)", highlight=False)
            continue
        if line.strip() == "/stats":
            err.print(_rate(conv.stats), highlight=False)
            continue
        if not line.strip():
            continue
        stream_text(tokenizer, conv.say(line, max_new_tokens), lambda piece: click.echo(piece, nl=False))
        click.echo()


@main.command("eval")
@_artifact_and_weights
@click.option("--text", "text_file", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--context", type=int, default=256, show_default=True, help="tokens per evaluation window")
@click.option("--max-tokens", type=int, help="score only the text's first N tokens")
@click.option(
    "--score-from",
    type=int,
    default=1,
    show_default=True,
    help="first scored position of each window (llama-perplexity: context/2 + 1)",
)
@click.option("--json", "as_json", is_flag=True, help="print {perplexity, nll, tokens, windows, ...} as JSON")
@cache_options
def eval_cmd(artifact, weights_dir, target_name, text_file, context, max_tokens, score_from, as_json, cache) -> None:
    """Perplexity of a compiled ARTIFACT (or a recipe, compiled first for --target) over a text file."""
    from mlcbuild.runtime.evaluate import perplexity, text_ids

    model, _, artifact, weights_dir = _host_model(artifact, weights_dir, cache, target_name)
    ids = text_ids(weights_dir, text_file, max_tokens)
    with Progress(
        TextColumn("perplexity"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task("windows", total=None)
        result = perplexity(
            model, ids, context, lambda done, total: bar.update(task, completed=done, total=total), score_from
        )
    out = dataclasses.asdict(result) | {"text": str(text_file), "artifact": str(artifact)}
    bad = [k for k, v in out.items() if isinstance(v, float) and not math.isfinite(v)]
    out = {k: (None if k in bad else v) for k, v in out.items()}  # JSON has no NaN: null, and exit 1
    if as_json:
        click.echo(json.dumps(out, allow_nan=False))
    if bad:
        _say(err, "[bold red]error:[/] ", f"{', '.join(bad)} not finite: the model's logits overflowed or are NaN "
             f"({artifact} with {weights_dir})")  # fmt: skip
        sys.exit(1)
    if not as_json:
        stdout.print(
            f"perplexity {result.perplexity:.4f} over {result.tokens} tokens "
            f"({result.windows} windows of {result.context}, {result.seconds:.1f} s)",
            highlight=False,
        )
