"""``compile``, ``convert`` and ``schemes``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlcbuild.cli.app import (
    _say,
    cache_options,
    err,
    main,
    stdout,
)


@main.command("compile")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "-t", "target_name", default="host", show_default=True, help="target name or .toml path")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), help="also copy the artifact here")
@click.option("--json", "as_json", is_flag=True, help="print {artifact, key, cache, seconds} as JSON")
@click.option("--allow-over-budget", is_flag=True,
              help="build even if the memory estimate exceeds the target's memory_budget_bytes (recorded)")  # fmt: skip
@click.option("--dump-ir", type=click.Path(file_okay=False, path_type=Path),
              help="also write the module's TVMScript after export and after each pipeline phase here")  # fmt: skip
@click.option("--strict", is_flag=True, help="fail if the artifact misses anything MLC-LLM's engine requires")
@cache_options
def compile_cmd(recipe: Path, target_name: str, out: Path | None, as_json: bool, allow_over_budget: bool,
                dump_ir: Path | None, strict: bool, cache) -> None:  # fmt: skip
    """Compile RECIPE for a target (default: host) into a cached library; warn about anything
    MLC-LLM's engine would miss (``verify --mlc``)."""
    _, result = compile_with_progress(
        recipe,
        target_name,
        cache,
        out=out,
        show_phases=not as_json,
        allow_over_budget=allow_over_budget,
        dump_ir=dump_ir,
    )
    from mlcbuild.artifacts.mlc_contract import check_artifact
    from mlcbuild.cli.ship import report_mlc

    findings = [f for f in check_artifact(result.artifact) if f.level == "missing" or strict]
    report_mlc(findings)
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        _say(stdout, f"[green]{result.cache}[/] ", f"{result.artifact}  key {result.key[:16]}  {result.seconds:.2f} s")
    if strict and findings:
        sys.exit(1)


def compile_with_progress(
    recipe_path: Path,
    target_name: str,
    cache,
    out: Path | None = None,
    show_phases: bool = False,
    allow_over_budget: bool = False,
    dump_ir: Path | None = None,
):
    """Compile with a rich spinner naming the phase; ``show_phases`` also prints seconds per phase."""
    from mlcbuild.artifacts.compile import compile_recipe
    from mlcbuild.spec.recipe import load_recipe
    from mlcbuild.spec.target import load_target

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
            r, desc, cache=cache, out=out, on_phase=on_phase, allow_over_budget=allow_over_budget, dump_ir=dump_ir
        )
    return r, res


def convert_with_progress(recipe, weights_dir: Path, cache, out: Path | None, quiet: bool):

    from mlcbuild.artifacts.convert import convert_weights

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

        return convert_weights(recipe, weights_dir, cache=cache, out=out, on_tensor=on_tensor)


@main.command("convert")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--weights",
    "weights_dir",
    type=click.Path(exists=True, path_type=Path),
    help="local checkpoint: a Hugging Face directory or a .gguf file (default: download the recipe's source)",
)
@click.option(
    "--out", "-o", type=click.Path(file_okay=False, path_type=Path), help="also copy the converted weights here"
)
@click.option("--json", "as_json", is_flag=True, help="print {weights, key, cache, seconds} as JSON")
@cache_options
def convert_cmd(recipe: Path, weights_dir: Path | None, out: Path | None, as_json: bool, cache) -> None:
    """Quantize a checkpoint for RECIPE into MLC-LLM's weight format (tensor-cache.json + shards)."""
    from mlcbuild.artifacts.checkpoint import fetch
    from mlcbuild.spec.recipe import load_recipe

    r = load_recipe(recipe)
    src = weights_dir if weights_dir is not None else fetch(r.source)
    res = convert_with_progress(r, src, cache, out, as_json)
    if as_json:
        click.echo(json.dumps(res.to_json()))
    else:
        _say(stdout, f"[green]{res.cache}[/] ", f"{res.weights}  key {res.key[:16]}  {res.seconds:.2f} s")


@main.command("schemes")
def schemes_cmd() -> None:
    """List the quantization schemes."""
    from mlcbuild.quant import SCHEMES

    t = Table(title="quantization schemes")
    for col in ("name", "weights", "group", "activations", "layout"):
        t.add_column(col)
    for s in SCHEMES.values():
        d = s.describe()
        if d.get("kind") == "ggml":
            t.add_row(s.name, f"GGUF {d['ggml_type']} blocks, imported exactly", "32", d["model_dtype"], d["layout"])
        elif d.get("kind") in ("group", "group-zero-point"):
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


@main.command("recipe")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--scheme", help="quantization scheme (default for a GGUF file: the exact import of its blocks)")
@click.option("--name", help="model name (default: the file's or directory's name)")
@click.option("--context-window", "context", type=int, help="tokens (default: the model's, at most 4096)")
@click.option("--model-source", help="the recipe's model.source (default: SOURCE as given)")
@click.option(
    "--calibration-text",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a calibrated scheme's text (GPTQ, AWQ, SmoothQuant)",
)
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="write the recipe here")
def recipe_cmd(source: Path, scheme, name, context, model_source, calibration_text, out: Path | None) -> None:
    """Write a recipe for SOURCE: a checkpoint directory, its config.json, or a .gguf file."""
    from mlcbuild.artifacts.recipe_writer import recipe_from, recipe_toml

    data = recipe_from(source, scheme, name=name, context_window_size=context, model_source=model_source,
                       calibration_text=calibration_text)  # fmt: skip
    text = recipe_toml(data, f"written by `mlcbuild recipe {source}`")
    if out is None:
        click.echo(text, nl=False)
        return
    out.write_text(text)
    _say(err, "[green]wrote[/] ", str(out))
