"""The ``mlcbuild`` command line: parse, call one function, render with rich.

Nothing below this module imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .errors import MlcbuildError

# Tables stay whole when piped (rich would wrap them at 80 columns).
stdout = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole (paths are long)


def _cell(x) -> Text:
    """A table cell shown literally (a :class:`rich.text.Text` as is): file names and keys
    may hold ``[...]``, which rich would read as markup."""
    return x if isinstance(x, Text) else Text(str(x))


def _table(title: str, columns: tuple[str, ...] | list[str], rows) -> None:
    """Print a rich table; every cell and the title shown literally."""
    t = Table(title=escape(title))
    for col in columns:
        t.add_column(escape(col))
    for row in rows:
        t.add_row(*[_cell(x) for x in row])
    stdout.print(t)


def _say(console: Console, label: str, text: str) -> None:
    """``label`` (rich markup of ours) then ``text`` printed literally (paths, messages)."""
    console.print(f"{label}{escape(text)}", highlight=False)


def _on_sigterm(signum, frame):  # let finally-blocks remove partial builds
    raise SystemExit(128 + signum)


def _fail(e: MlcbuildError) -> None:
    _say(err, "[bold red]error:[/] ", f"{e.path + ': ' if e.path else ''}{e.message}")
    if e.fix:
        _say(err, "  [bold]fix:[/] ", e.fix)
    sys.exit(2)


class _Warnings(logging.Handler):
    """The library's warnings (``mlcbuild.*`` loggers) on stderr, printed literally."""

    def emit(self, record: logging.LogRecord) -> None:
        _say(err, "[yellow]warning:[/] ", record.getMessage())


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MlcbuildError as e:
            _fail(e)


@click.group(cls=_Group)
@click.version_option(package_name="mlcbuild")
def main() -> None:
    """mlcbuild: compile LLMs into device libraries with Apache TVM, reproducibly and cached."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    log = logging.getLogger("mlcbuild")
    if not any(isinstance(h, _Warnings) for h in log.handlers):
        log.addHandler(_Warnings(logging.WARNING))


def _set_remote(_ctx, _param, value):
    if value:
        os.environ["MLCBUILD_REMOTE_CACHE"] = value


_remote_option = click.option(
    "--remote",
    callback=_set_remote,
    expose_value=False,
    help="remote build cache: an fsspec URL (shared dir, s3://, gs://, http(s):// read-only); "
    "default $MLCBUILD_REMOTE_CACHE",
)


@main.command("compile")
@_remote_option
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "-t", "target_name", default="host", show_default=True, help="target name or .toml path")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), help="also copy the artifact here")
@click.option("--json", "as_json", is_flag=True, help="print {artifact, key, cache, seconds} as JSON")
@click.option("--allow-over-budget", is_flag=True,
              help="build even if the memory estimate exceeds the target's memory_budget_bytes (recorded)")  # fmt: skip
@click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MLCBUILD_CACHE", help="build cache root"
)
def compile_cmd(recipe: Path, target_name: str, out: Path | None, as_json: bool, allow_over_budget: bool,
                cache_dir: Path | None) -> None:  # fmt: skip
    """Compile RECIPE for a target (default: host) into a cached library."""
    _, result = _compile_with_progress(
        recipe, target_name, cache_dir, out=out, show_phases=not as_json, allow_over_budget=allow_over_budget
    )
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        _say(stdout, f"[green]{result.cache}[/] ", f"{result.artifact}  key {result.key[:16]}  {result.seconds:.2f} s")


def _compile_with_progress(
    recipe_path: Path,
    target_name: str,
    cache_dir: Path | None,
    out: Path | None = None,
    show_phases: bool = False,
    allow_over_budget: bool = False,
):
    """Compile with a rich spinner naming the phase; ``show_phases`` also prints seconds per phase."""
    from .cache import Cache
    from .compile import compile_recipe
    from .recipe import load_recipe
    from .target import load_target

    r = load_recipe(recipe_path)
    desc = load_target(target_name)
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=not show_phases,
    ) as progress:
        task = progress.add_task(f"{r.name} -> {desc.name}: key", total=None)
        started = {"t": time.perf_counter(), "name": "key"}

        def on_phase(name: str) -> None:
            if name == started["name"]:
                return
            if show_phases:
                took = time.perf_counter() - started["t"]
                progress.console.print(f"  {started['name']:<15} {took:7.2f} s", highlight=False)
            started.update(t=time.perf_counter(), name=name)
            progress.update(task, description=f"{r.name} -> {desc.name}: {name}")

        res = compile_recipe(
            r, desc, cache=Cache(cache_dir), out=out, on_phase=on_phase, allow_over_budget=allow_over_budget
        )
    return r, res


def _convert_with_progress(recipe, weights_dir: Path, cache_dir: Path | None, out: Path | None, quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn

    from .cache import Cache
    from .convert import convert_weights

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=quiet,
    ) as progress:
        task = progress.add_task(f"convert {recipe.name} ({recipe.scheme})", total=None)

        def on_tensor(i: int, n: int, name: str) -> None:
            progress.update(task, completed=i, total=n, description=f"convert {name}")

        return convert_weights(recipe, weights_dir, cache=Cache(cache_dir), out=out, on_tensor=on_tensor)


@main.command("convert")
@_remote_option
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--weights",
    "weights_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="local checkpoint (default: download the recipe's source from the hub)",
)
@click.option(
    "--out", "-o", type=click.Path(file_okay=False, path_type=Path), help="also copy the converted weights here"
)
@click.option("--json", "as_json", is_flag=True, help="print {weights, key, cache, seconds} as JSON")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MLCBUILD_CACHE")
def convert_cmd(
    recipe: Path, weights_dir: Path | None, out: Path | None, as_json: bool, cache_dir: Path | None
) -> None:
    """Quantize a checkpoint for RECIPE into MLC-LLM's weight format (tensor-cache.json + shards)."""
    from .checkpoint import fetch
    from .recipe import load_recipe

    r = load_recipe(recipe)
    src = weights_dir if weights_dir is not None else fetch(r.source)
    res = _convert_with_progress(r, src, cache_dir, out, as_json)
    if as_json:
        click.echo(json.dumps(res.to_json()))
    else:
        _say(stdout, f"[green]{res.cache}[/] ", f"{res.weights}  key {res.key[:16]}  {res.seconds:.2f} s")


def _artifact_and_weights(f):
    """The ARTIFACT argument (or a recipe) and ``--weights`` of the commands that run a model."""
    f = click.option(
        "--weights",
        "weights_dir",
        type=click.Path(file_okay=False, path_type=Path),
        required=True,
        help="converted weights (or, with a recipe, a checkpoint to convert)",
    )(f)
    return click.argument("artifact", type=click.Path(exists=True, path_type=Path))(f)


def _host_model(artifact: Path, weights_dir: Path, cache_dir: Path | None):
    """A host model from an artifact, or from a recipe (compiled for host first; a checkpoint
    given as ``weights_dir`` converted first): ``(model, chat config, artifact, weights)``."""
    from .runtime import load_host_model

    if artifact.suffix == ".toml":
        r, res = _compile_with_progress(artifact, "host", cache_dir)
        artifact = res.artifact
        if not (weights_dir / "tensor-cache.json").is_file() and (weights_dir / "config.json").is_file():
            weights_dir = _convert_with_progress(r, weights_dir, cache_dir, None, True).weights
    model, chat = load_host_model(artifact, weights_dir)
    return model, chat, artifact, weights_dir


@main.command("run")
@_artifact_and_weights
@click.option("--prompt", help="text, tokenized with the checkpoint's tokenizer")
@click.option("--prompt-ids", help="comma-separated token ids, e.g. 1,2,3")
@click.option("--max-new-tokens", type=int, default=32, show_default=True)
@click.option("--ignore-eos", is_flag=True, help="do not stop at the end-of-sequence token")
@click.option("--json", "as_json", is_flag=True, help="print ids, text, tokens/s and peak RSS as JSON")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MLCBUILD_CACHE")
def run_cmd(artifact, weights_dir, prompt, prompt_ids, max_new_tokens, ignore_eos, as_json, cache_dir) -> None:
    """Generate text greedily on the host CPU with a compiled ARTIFACT (or a recipe, compiled first)."""
    import resource

    if (prompt is None) == (prompt_ids is None):
        raise MlcbuildError("give exactly one of --prompt and --prompt-ids", fix="e.g. --prompt-ids 1,2,3")
    model, chat, artifact, weights_dir = _host_model(artifact, weights_dir, cache_dir)
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
    for tok in model.generate(ids, max_new_tokens, stop):
        out_ids.append(tok)
        if tokenizer is not None and not as_json:
            text = tokenizer.decode(out_ids)
            click.echo(text[len(shown) :], nl=False)
            shown = text
    text = tokenizer.decode(out_ids) if tokenizer is not None else ""
    st = model.stats
    result = {
        "prompt_ids": ids,
        "output_ids": out_ids,
        "text": text,
        "prefill_tokens_per_s": round(st["prefill_tokens"] / st["prefill_s"], 2) if st["prefill_s"] else None,
        "decode_tokens_per_s": round(st["decode_tokens"] / st["decode_s"], 2) if st["decode_s"] else None,
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
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MLCBUILD_CACHE")
def eval_cmd(artifact, weights_dir, text_file, context, max_tokens, as_json, cache_dir) -> None:
    """Perplexity of a compiled ARTIFACT (or a recipe, compiled first) on the host over a text file."""
    from .evaluate import perplexity, text_ids

    model, _, artifact, weights_dir = _host_model(artifact, weights_dir, cache_dir)
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


@main.group("targets", invoke_without_command=True)
@click.pass_context
def targets_cmd(ctx) -> None:
    """List the target descriptors."""
    if ctx.invoked_subcommand is not None:
        return
    from .target import list_targets

    t = Table(title="targets")
    for col in (
        "name",
        "device",
        "host triple",
        "threads/block",
        "shared mem",
        "warp",
        "memory budget",
        "output",
        "codegen",
    ):
        t.add_column(col)
    for d in list_targets():
        gpu = d.is_gpu
        dev = d.kind + (f" ({d.device['device']})" if d.device.get("device") else "")
        t.add_row(*map(_cell, (
            d.name,
            dev,
            d.host.get("mtriple", ""),
            str(d.device.get("max_threads_per_block", "-")) if gpu else "-",
            f"{d.device['max_shared_memory_per_block']} B"
            if gpu and "max_shared_memory_per_block" in d.device
            else "-",
            str(d.device.get("thread_warp_size", "-")) if gpu else "-",
            f"{d.memory_budget_bytes / 2**30:.1f} GiB",
            ".so" if d.output_format == "so" else ".tar (system lib)",
            "yes" if d.codegen_available() else Text("missing", style="red"),
        )))  # fmt: skip
    stdout.print(t)


_TRACKER = click.option("--tracker", required=True, help="RPC tracker, HOST:PORT")
_KEY = click.option("--key", required=True, help="device key the RPC servers registered with")
_WAIT = click.option(
    "--wait", type=float, default=60.0, show_default=True, help="seconds to wait for the tracker and a free device"
)


@targets_cmd.command("probe")
@_TRACKER
@_KEY
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), help="descriptor to write or check")
@click.option("--name", help="target name for a new descriptor (default: the file's stem or the key)")
@click.option("--mtriple", help="host triple when the device cannot report it (default aarch64-linux-android)")
@_WAIT
@click.option("--json", "as_json", is_flag=True, help="print the device's limits as JSON")
def targets_probe(tracker, key, out, name, mtriple, wait, as_json) -> None:
    """Read a device's limits over RPC; write --out (new file) or check it (existing file)."""
    from .probe import checked, probe_device, write_descriptor
    from .rpc import device_calls, device_session
    from .target import load_target

    with device_session(tracker, key, wait_s=wait) as sess, device_calls("probe", key):
        limits = probe_device(sess)
    result = {"limits": limits.to_json()}
    if out is not None and out.is_file():
        checked(limits, load_target(out))
        result.update(descriptor=str(out), action="checked")
    elif out is not None:
        write_descriptor(limits, name or out.stem, out, mtriple=mtriple)
        result.update(descriptor=str(out), action="written")
    if as_json:
        click.echo(json.dumps(result))
        return
    _table(f"device {key!r} at {tracker}", ("limit", "value"),
           [(k, "-" if v is None else v) for k, v in limits.to_json().items()])  # fmt: skip
    if "action" in result:
        _say(stdout, f"[green]{result['action']}[/] ", str(out))


@main.command("devices")
@_TRACKER
@click.option("--json", "as_json", is_flag=True)
def devices_cmd(tracker: str, as_json: bool) -> None:
    """List the device keys at an RPC tracker, with free and pending counts."""
    from .rpc import list_devices

    keys = list_devices(tracker)
    if as_json:
        click.echo(json.dumps([k.to_json() for k in keys]))
        return
    _table(f"devices at {tracker}", ("key", "servers", "free", "pending"),
           [(k.key, k.total, k.free, k.pending) for k in keys])  # fmt: skip
    if not keys:
        from .rpc import NO_AUTH

        _say(err, "", f"no device registered; start one with `python -m tvm.exec.rpc_server --tracker {tracker} "
             f"--key KEY --host 127.0.0.1` ({NO_AUTH})")  # fmt: skip


@main.command("tune")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "-t", "target_name", default="host", show_default=True)
@_TRACKER
@_KEY
@click.option("--trials", type=int, default=64, show_default=True, help="candidates measured per kernel")
@click.option("--kernel", "kernels", multiple=True, help="tune only this kernel (repeatable)")
@click.option("--cost-model", type=click.Choice(["xgb", "random"]), default="xgb", show_default=True)
@click.option("--keep", type=click.Choice(["faster", "all"]), default="faster", show_default=True,
              help="keep a kernel's record only if it beats the default schedule on the device, or always")  # fmt: skip
@click.option("--tuning-logs", type=click.Path(file_okay=False, path_type=Path), help="default: the repository's")
@click.option("--session-timeout", type=float, default=60.0, show_default=True, help="s per measurement session")
@click.option("--json", "as_json", is_flag=True, help="print one result per kernel as JSON")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MLCBUILD_CACHE")
def tune_cmd(recipe, target_name, tracker, key, trials, kernels, cost_model, keep, tuning_logs, session_timeout, as_json,
             cache_dir) -> None:  # fmt: skip
    """Tune RECIPE's static-shape kernels with MetaSchedule on a device; records go to tuning_logs/<target>/."""
    from rich.progress import BarColumn, MofNCompleteColumn

    from .cache import Cache
    from .recipe import load_recipe
    from .target import load_target
    from .tune import tune

    r = load_recipe(recipe)
    desc = load_target(target_name)
    with Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err, disable=as_json,
    ) as progress:  # fmt: skip
        bar = progress.add_task("extracting kernels", total=None)

        def on_task(i: int, n: int, task) -> None:
            progress.update(bar, description=f"[{i + 1}/{n}] {task.name}", completed=0, total=trials)

        def on_trials(n: int) -> None:
            progress.advance(bar, n)

        results = tune(
            r, desc, tracker=tracker, key=key, trials=trials, tuning_root=tuning_logs, cache=Cache(cache_dir),
            cost_model=cost_model, only=list(kernels) or None, keep=keep, session_timeout_s=session_timeout,
            on_task=on_task, on_trials=on_trials,
        )  # fmt: skip
    if as_json:
        click.echo(json.dumps([x.to_json() for x in results]))
        return

    def us(x):
        return "-" if x is None else f"{x:.1f}"

    _table(f"tuned {r.name} on {key!r} ({desc.name})",
           ("kernel", "status", "trials", "tuned (µs)", "default (µs)", "search (s)"),
           [(x.name, x.status, x.trials, us(x.best_us), us(x.default_us), f"{x.seconds:.0f}") for x in results])  # fmt: skip


@main.command("bench")
@click.argument("artifact", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--weights", "weights_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="converted weights (`mlcbuild convert`)")  # fmt: skip
@click.option("--tracker", help="RPC tracker, HOST:PORT")
@click.option("--key", help="device key")
@click.option("--local", is_flag=True, help="run on this machine (an in-process session)")
@click.option("--prompt-tokens", type=int, default=128, show_default=True)
@click.option("--gen-tokens", type=int, default=64, show_default=True)
@click.option("--repeat", type=int, default=5, show_default=True)
@_WAIT
@click.option("--session-timeout", type=float, default=600.0, show_default=True,
              help="s; the device ends the session after this (a hung device fails then)")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print llama-bench-style records as JSON")
@click.option("--compare", nargs=2, type=click.Path(dir_okay=False, path_type=Path), help="A.json B.json: print B/A")
def bench_cmd(artifact, weights_dir, tracker, key, local, prompt_tokens, gen_tokens, repeat, wait, session_timeout,
              as_json, compare) -> None:  # fmt: skip
    """Measure prefill (pp) and decode (tg) of ARTIFACT with --weights on a device (or --local)."""
    from .bench import BenchSpec, DeviceModel, load_records, run_bench, test_name
    from .bench import compare as compare_records

    if compare:
        rows = compare_records(load_records(compare[0]), load_records(compare[1]))
        if as_json:
            click.echo(json.dumps(rows))
            return
        _table(f"{compare[1]} / {compare[0]}", ("test", "A", "B", "A tok/s", "B tok/s", "B / A"),
               [(x["test"], x["a"], x["b"], f"{x['a_ts']:.2f}", f"{x['b_ts']:.2f}", f"{x['ratio']:.3f}")
                for x in rows])  # fmt: skip
        return
    if artifact is None or weights_dir is None:
        raise MlcbuildError("give ARTIFACT and --weights (or --compare A.json B.json)")
    if local == bool(tracker or key) or (not local and not (tracker and key)):
        raise MlcbuildError("give either --tracker HOST:PORT --key KEY, or --local")
    from .rpc import device_session, local_session

    device = "local" if local else f"{key}@{tracker}"
    with (
        contextlib.nullcontext(local_session())
        if local
        else device_session(tracker, key, wait_s=wait, session_timeout_s=session_timeout)
    ) as sess:
        with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(), console=err,
                      transient=True, disable=as_json) as progress:  # fmt: skip
            progress.add_task(f"uploading and measuring on {device}", total=None)
            model = DeviceModel(sess, artifact, weights_dir, key=key or "local")
            records = run_bench(model, BenchSpec(prompt_tokens, gen_tokens, repeat), device)
        del model
    if as_json:
        click.echo(json.dumps(records, indent=1))
        return
    _table(f"{records[0]['model_type']} on {device}", ("test", "t/s", "± stddev", "TTFT (ms)", "samples t/s"),
           [(test_name(rec), f"{rec['avg_ts']:.2f}", f"{rec['stddev_ts']:.2f}", rec.get("ttft_ms", "-"),
             " ".join(f"{x:.2f}" for x in rec["samples_ts"])) for rec in records])  # fmt: skip


@main.command("package")
@_remote_option
@click.argument("recipes", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "-t", "target_name", help="target name or .toml path (default: the config's, else host)")
@click.option(
    "--weights",
    "weights",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="a checkpoint to convert and bundle, one per recipe in order",
)
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), help="package config (TOML/JSON)")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("dist"), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
@click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MLCBUILD_CACHE", help="build cache root"
)
def package_cmd(recipes, target_name, weights, config, out, as_json, cache_dir) -> None:
    """Build RECIPES (or a --config's models) for one target into an app package: libraries
    (Android/iOS: one static libmodel_<platform>.a), bundled weights, mlc-app-config.json and
    manifest.json with every file's sha256 and the ABI stamp."""
    from .cache import Cache
    from .package import PackageModel, package, read_package_config
    from .target import load_target

    if bool(recipes) == bool(config):
        raise MlcbuildError(
            "give recipes or --config, not both or neither", fix="e.g. mlcbuild package a.toml --target s24"
        )
    if config:
        cfg_target, models = read_package_config(config)
        target_name = target_name or cfg_target
    else:
        if weights and len(weights) != len(recipes):
            raise MlcbuildError(
                f"{len(weights)} --weights for {len(recipes)} recipes", fix="give one --weights per recipe, or none"
            )
        models = [PackageModel(r, weights[i] if weights else None) for i, r in enumerate(recipes)]
    desc = load_target(target_name or "host")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err) as progress:
        task = progress.add_task(f"package for {desc.name}", total=None)
        manifest = package(
            models,
            desc,
            out,
            cache=Cache(cache_dir) if cache_dir else None,
            on_model=lambda m, what: progress.update(task, description=f"{what} {m} for {desc.name}"),
        )
    if as_json:
        click.echo(json.dumps(manifest))
    else:
        _say(stdout, "[green]packaged[/] ", f"{len(manifest['models'])} models, {len(manifest['files'])} files in {out}")


@main.command("matrix")
@_remote_option
@click.argument("recipes", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--targets", "-t", required=True, help="comma-separated target names, e.g. s24,pixel8,iphone15pro")
@click.option("--jobs", "-j", type=int, default=2, show_default=True, help="local worker processes")
@click.option("--ray", "ray_address", help="build on a Ray cluster at this address (pip install ray)")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
@click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MLCBUILD_CACHE", help="build cache root"
)
def matrix_cmd(recipes, targets, jobs, ray_address, as_json, cache_dir) -> None:
    """Build every RECIPE for every target of --targets, in parallel, sharing the caches; a
    summary of keys, cache hits, library sizes and times (exit 1 if any pair failed)."""
    from .matrix import run_matrix

    names = [t.strip() for t in targets.split(",") if t.strip()]
    total = len(recipes) * len(names)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as progress:
        task = progress.add_task("matrix", total=total)
        rows = run_matrix(
            list(recipes),
            names,
            jobs=jobs,
            cache_dir=cache_dir,
            ray_address=ray_address,
            on_done=lambda row: progress.update(
                task, advance=1, description=f"{Path(row['recipe']).stem} -> {row['target']}"
            ),
        )
    failed = [r for r in rows if "error" in r]
    if as_json:
        click.echo(json.dumps(rows))
    else:
        t = Table(title=f"{len(rows)} builds, {len(failed)} failed")
        for col in ("recipe", "target", "key", "cache", "size", "seconds"):
            t.add_column(col)
        for r in rows:
            if "error" in r:
                t.add_row(*map(_cell, (Path(r["recipe"]).stem, r["target"], "-", Text("failed", style="red"), "-",
                                       r["error"][:60])))
            else:
                size = f"{r['size_bytes'] / 2**20:.2f} MiB"
                t.add_row(*map(_cell, (Path(r["recipe"]).stem, r["target"], r["key"][:16], r["cache"], size,
                                       f"{r['seconds']:.1f}")))
        stdout.print(t)
        for r in failed:
            _say(err, "[bold red]error:[/] ", f"{Path(r['recipe']).name} -> {r['target']}: {r['error']}")
    if failed:
        sys.exit(1)


@main.command("verify")
@click.argument("dist", type=click.Path(file_okay=False, path_type=Path))
def verify_cmd(dist: Path) -> None:
    """Re-hash every file of a package against its manifest and check library stamps and
    prefixes; list each problem by file and exit 1 if there is any."""
    from .package import verify

    problems = verify(dist)
    for p in problems:
        _say(err, "[bold red]bad:[/] ", p)
    if problems:
        sys.exit(1)
    _say(stdout, "[green]verified[/] ", str(dist))


@main.command("schemes")
def schemes_cmd() -> None:
    """List the quantization schemes."""
    from .quant import SCHEMES

    t = Table(title="quantization schemes")
    for col in ("name", "weights", "group", "activations", "layout"):
        t.add_column(col)
    for s in SCHEMES.values():
        d = s.describe()
        if d.get("kind") in ("group", "group-zero-point"):
            how = f", {d['calibration']}" if d.get("calibration", "round-to-nearest") != "round-to-nearest" else ""
            how = f", zero points, from {d['imported_from']}" if "imported_from" in d else how
            t.add_row(
                s.name,
                f"int{d['bits']} ({d['elems_per_word']} per uint32{how})",
                str(d["group_size"]),
                d["model_dtype"],
                d["layout"],
            )
        else:
            t.add_row(s.name, "unquantized", "-", d["model_dtype"], "-")
    stdout.print(t)


@main.group("cache")
def cache_cmd() -> None:
    """Inspect and maintain the build cache."""


@cache_cmd.command("ls")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MLCBUILD_CACHE")
@click.option("--json", "as_json", is_flag=True)
def cache_ls(cache_dir: Path | None, as_json: bool) -> None:
    """List cache entries."""
    from .cache import Cache

    c = Cache(cache_dir)
    rows = []
    for kind in ("builds", "weights"):
        for e in c.entries(kind):
            if kind == "builds":
                rec = e.info.get("inputs", {}).get("recipe", {})
                model, scheme = rec.get("model", {}).get("name"), rec.get("quantization", {}).get("scheme")
                target = e.info.get("target_name")
            else:
                model, scheme, target = Path(e.info.get("source_dir", "?")).name, e.info.get("scheme"), None
            rows.append(
                {
                    "kind": kind,
                    "key": e.key,
                    "path": str(e.path),
                    "size_bytes": e.size_bytes,
                    "model": model,
                    "scheme": scheme,
                    "target": target,
                }
            )
    if as_json:
        click.echo(json.dumps(rows))
        return
    _table(f"cache {c.root}", ("kind", "key", "model", "scheme", "target", "size"),
           [(r["kind"], r["key"][:16], r["model"], r["scheme"], r["target"] or "-",
             f"{r['size_bytes'] / 2**20:.1f} MiB") for r in rows])  # fmt: skip


@cache_cmd.command("verify")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MLCBUILD_CACHE")
def cache_verify(cache_dir: Path | None) -> None:
    """Re-hash every entry; report corrupt ones (exit 1 if any)."""
    from .cache import Cache

    c = Cache(cache_dir)
    report = {f"{kind}/{k}": v for kind in ("builds", "weights") for k, v in c.verify(kind).items()}
    bad = {k: v for k, v in report.items() if v}
    for k, problems in report.items():
        if problems:
            _say(stdout, "[red]corrupt[/] ", f"{k}: " + "; ".join(problems))
        else:
            _say(stdout, "[green]ok[/]      ", k)
    stdout.print(f"{len(report)} entries, {len(bad)} corrupt")
    if bad:
        sys.exit(1)


@cache_cmd.command("gc")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MLCBUILD_CACHE")
@click.option("--older-than-days", type=float, default=None, help="also remove entries older than this")
def cache_gc(cache_dir: Path | None, older_than_days: float | None) -> None:
    """Remove unfinished builds, corrupt entries and (optionally) old entries."""
    from .cache import Cache

    removed = Cache(cache_dir).gc(older_than_s=older_than_days * 86400 if older_than_days is not None else None)
    for r in removed:
        _say(stdout, "removed ", r)
    stdout.print(f"{len(removed)} removed")


if __name__ == "__main__":  # pragma: no cover
    main()
