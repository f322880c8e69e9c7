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
        required=True,
        help="converted weights (or, with a recipe, a checkpoint to convert: a directory or a .gguf file)",
    )(f)
    return click.argument("artifact", type=click.Path(exists=True, path_type=Path))(f)


def _host_model(artifact: Path, weights_dir: Path, cache):
    """A host model from an artifact, or from a recipe (compiled for host first; a checkpoint
    given as ``weights_dir`` converted first): ``(model, chat config, artifact, weights)``."""
    from mlcbuild.runtime.artifact import open_local

    if artifact.suffix == ".toml":
        r, res = compile_with_progress(artifact, "host", cache)
        artifact = res.artifact
        if not (weights_dir / "tensor-cache.json").is_file() and (
            (weights_dir / "config.json").is_file() or weights_dir.is_file()
        ):
            weights_dir = convert_with_progress(r, weights_dir, cache, None, True).weights
    model, chat = open_local(artifact, weights_dir)
    return model, chat, artifact, weights_dir


@main.command("run")
@_artifact_and_weights
@click.option("--prompt", help="text, tokenized with the checkpoint's tokenizer")
@click.option("--prompt-ids", help="comma-separated token ids, e.g. 1,2,3")
@click.option("--max-new-tokens", type=int, default=32, show_default=True)
@click.option("--ignore-eos", is_flag=True, help="do not stop at the end-of-sequence token")
@click.option("--json", "as_json", is_flag=True, help="print ids, text, tokens/s and peak RSS as JSON")
@cache_options
def run_cmd(artifact, weights_dir, prompt, prompt_ids, max_new_tokens, ignore_eos, as_json, cache) -> None:
    """Generate text greedily on the host CPU with a compiled ARTIFACT (or a recipe, compiled first)."""
    import resource

    if (prompt is None) == (prompt_ids is None):
        raise MlcbuildError("give exactly one of --prompt and --prompt-ids", fix="e.g. --prompt-ids 1,2,3")
    model, chat, artifact, weights_dir = _host_model(artifact, weights_dir, cache)
    tokenizer = None
    tok_path = weights_dir / "tokenizer.json"
    if prompt is not None or tok_path.is_file():
        if not tok_path.is_file():
            raise MlcbuildError(
                "no tokenizer.json with the weights",
                path=weights_dir,
                fix="pass --prompt-ids, or convert a checkpoint that has tokenizer.json",
            )
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tok_path))
    if prompt is not None:
        ids = tokenizer.encode(prompt).ids
    else:
        try:
            ids = [int(x) for x in prompt_ids.split(",") if x.strip()]
        except ValueError as e:
            raise MlcbuildError(f"--prompt-ids must be comma-separated integers: {e}") from e
    eos = chat.get("eos_token_id")
    stop = [] if ignore_eos or eos is None else (eos if isinstance(eos, list) else [eos])
    out_ids: list[int] = []
    shown = ""
    from mlcbuild.runtime.engine import Stats, generate

    st = Stats()
    for tok in generate(model, ids, max_new_tokens, stop, st):
        out_ids.append(tok)
        if tokenizer is not None and not as_json:
            text = tokenizer.decode(out_ids)
            click.echo(text[len(shown) :], nl=False)
            shown = text
    text = tokenizer.decode(out_ids) if tokenizer is not None else ""
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
        err.print(
            f"prefill {result['prefill_tokens_per_s']} tok/s, decode {result['decode_tokens_per_s']} tok/s, "
            f"peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB",
            highlight=False,
        )


@main.command("eval")
@_artifact_and_weights
@click.option("--text", "text_file", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--context", type=int, default=256, show_default=True, help="tokens per evaluation window")
@click.option("--max-tokens", type=int, help="score only the text's first N tokens")
@click.option("--json", "as_json", is_flag=True, help="print {perplexity, nll, tokens, windows, ...} as JSON")
@cache_options
def eval_cmd(artifact, weights_dir, text_file, context, max_tokens, as_json, cache) -> None:
    """Perplexity of a compiled ARTIFACT (or a recipe, compiled first) on the host over a text file."""
    from mlcbuild.runtime.evaluate import perplexity, text_ids

    model, _, artifact, weights_dir = _host_model(artifact, weights_dir, cache)
    ids = text_ids(weights_dir, text_file, max_tokens)
    with Progress(
        TextColumn("perplexity"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task("windows", total=None)
        result = perplexity(model, ids, context, lambda done, total: bar.update(task, completed=done, total=total))
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
