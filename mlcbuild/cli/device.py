"""``targets``, ``targets probe``, ``devices``, ``tune``, ``bench``: descriptors and devices over TVM RPC."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from mlcbuild.cli.app import (
    _cell,
    _say,
    _table,
    cache_options,
    err,
    main,
    stdout,
)
from mlcbuild.errors import MlcbuildError


@main.group("targets", invoke_without_command=True)
@click.pass_context
def targets_cmd(ctx) -> None:
    """List the target descriptors."""
    if ctx.invoked_subcommand is not None:
        return
    from mlcbuild.compiler.target import codegen_available
    from mlcbuild.spec.target import list_targets

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
            "yes" if codegen_available(d) else Text("missing", style="red"),
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
    from mlcbuild.device.probe import checked, probe_device, write_descriptor
    from mlcbuild.device.rpc import device_calls, device_session
    from mlcbuild.spec.target import load_target

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
    from mlcbuild.device.rpc import list_devices

    keys = list_devices(tracker)
    if as_json:
        click.echo(json.dumps([k.to_json() for k in keys]))
        return
    _table(f"devices at {tracker}", ("key", "servers", "free", "pending"),
           [(k.key, k.total, k.free, k.pending) for k in keys])  # fmt: skip
    if not keys:
        from mlcbuild.device.rpc import NO_AUTH

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
@cache_options
def tune_cmd(recipe, target_name, tracker, key, trials, kernels, cost_model, keep, tuning_logs, session_timeout, as_json,
             cache) -> None:  # fmt: skip
    """Tune RECIPE's static-shape kernels with MetaSchedule on a device; records go to tuning_logs/<target>/."""

    from mlcbuild.device.tune import tune
    from mlcbuild.spec.recipe import load_recipe
    from mlcbuild.spec.target import load_target

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
            r, desc, tracker=tracker, key=key, trials=trials, tuning_root=tuning_logs, cache=cache,
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
    from mlcbuild.device.bench import BenchSpec, DeviceModel, load_records, run_bench, test_name
    from mlcbuild.device.bench import compare as compare_records

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
    from mlcbuild.device.rpc import device_session, local_session

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
