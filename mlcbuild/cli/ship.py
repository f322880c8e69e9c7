"""``package``, ``matrix`` and ``verify``: app packages and build matrices."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from mlcbuild.cli.app import (
    _cell,
    _say,
    cache_options,
    err,
    main,
    stdout,
)
from mlcbuild.errors import MlcbuildError


@main.command("package")
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
@click.option("--strict", is_flag=True, help="fail if the package misses anything MLC-LLM's apps require")
@cache_options
def package_cmd(recipes, target_name, weights, config, out, as_json, strict, cache) -> None:
    """Build RECIPES (or a --config's models, ours or MLC's mlc-package-config.json) for one
    target into an app package in MLC-LLM's layout: libraries (Android/iOS: one static
    libmodel_<platform>.a), bundle/ with mlc-app-config.json and the bundled weights, and
    manifest.json with every file's sha256 and the ABI stamp; warn about anything MLC's apps
    would miss (``verify --mlc``)."""
    from mlcbuild.ship.package import PackageModel, package, read_package_config
    from mlcbuild.spec.target import load_target

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
            cache=cache,
            on_model=lambda m, what: progress.update(task, description=f"{what} {m} for {desc.name}"),
        )
    from mlcbuild.ship.mlc_verify import check_package_mlc

    findings = [f for f in check_package_mlc(out) if f.level == "missing" or strict]
    report_mlc(findings)
    if as_json:
        click.echo(json.dumps(manifest))
    else:
        _say(
            stdout, "[green]packaged[/] ", f"{len(manifest['models'])} models, {len(manifest['files'])} files in {out}"
        )
    if strict and findings:
        sys.exit(1)


@main.command("matrix")
@click.argument("recipes", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--targets", "-t", required=True, help="comma-separated target names, e.g. s24,pixel8,iphone15pro")
@click.option("--jobs", "-j", type=int, default=2, show_default=True, help="local worker processes")
@click.option("--ray", "ray_address", help="build on a Ray cluster at this address (pip install ray)")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
@cache_options
def matrix_cmd(recipes, targets, jobs, ray_address, as_json, cache) -> None:
    """Build every RECIPE for every target of --targets, in parallel, sharing the caches; a
    summary of keys, cache hits, library sizes and times (exit 1 if any pair failed)."""
    from mlcbuild.ship.matrix import run_matrix

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
            cache_dir=cache.root,
            remote=cache.remote.url if cache.remote else None,
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
                t.add_row(
                    *map(
                        _cell,
                        (Path(r["recipe"]).stem, r["target"], "-", Text("failed", style="red"), "-", r["error"][:60]),
                    )
                )
            else:
                size = f"{r['size_bytes'] / 2**20:.2f} MiB"
                t.add_row(
                    *map(
                        _cell,
                        (Path(r["recipe"]).stem, r["target"], r["key"][:16], r["cache"], size, f"{r['seconds']:.1f}"),
                    )
                )
        stdout.print(t)
        for r in failed:
            _say(err, "[bold red]error:[/] ", f"{Path(r['recipe']).name} -> {r['target']}: {r['error']}")
    if failed:
        sys.exit(1)


@main.command("verify")
@click.argument("dist", type=click.Path(file_okay=False, path_type=Path))
@click.option("--mlc", is_flag=True, help="check an artifact, converted weights or a package against what "
              "MLC-LLM's engine and apps require (function table, _metadata, chat config, app layout)")  # fmt: skip
@click.option("--strict", is_flag=True, help="with --mlc: notes fail too")
def verify_cmd(dist: Path, mlc: bool, strict: bool) -> None:
    """Re-hash every file of a package against its manifest and check library stamps and
    prefixes; list each problem by file and exit 1 if there is any. With --mlc, DIST may be an
    artifact or converted weights too, and each missing piece is named."""
    if mlc:
        return _verify_mlc(dist, strict)
    from mlcbuild.ship.package import verify

    problems = verify(dist)
    for p in problems:
        _say(err, "[bold red]bad:[/] ", p)
    if problems:
        sys.exit(1)
    _say(stdout, "[green]verified[/] ", str(dist))


def _verify_mlc(path: Path, strict: bool) -> None:
    from mlcbuild.ship.mlc_verify import CONTRACT, verify_mlc

    findings = verify_mlc(path)
    report_mlc(findings)
    if any(f.level == "missing" or strict for f in findings):
        sys.exit(1)
    _say(stdout, "[green]MLC-LLM contract met[/] ", f"{path} ({CONTRACT})")


def report_mlc(findings) -> None:
    """Print ``verify --mlc`` findings on stderr: missing pieces, then notes."""
    for f in findings:
        tag = "[bold red]missing:[/] " if f.level == "missing" else "[yellow]note:[/] "
        _say(err, tag, str(f))
