"""``cache ls``, ``cache verify``, ``cache gc``."""

from __future__ import annotations

import json
import sys

import click

from mlcbuild.cli.app import (
    _say,
    _table,
    cache_options,
    main,
    stdout,
)


@main.group("cache")
def cache_cmd() -> None:
    """Inspect and maintain the build cache."""


@cache_cmd.command("ls")
@cache_options
@click.option("--json", "as_json", is_flag=True)
def cache_ls(cache, as_json: bool) -> None:
    """List cache entries."""

    c = cache
    rows = []
    for kind in ("builds", "weights"):
        for e in c.entries(kind):
            rows.append({"kind": kind, "key": e.key, "path": str(e.path), "size_bytes": e.size_bytes, **e.describe()})
    if as_json:
        click.echo(json.dumps(rows))
        return
    _table(f"cache {c.root}", ("kind", "key", "model", "scheme", "target", "size"),
           [(r["kind"], r["key"][:16], r["model"], r["scheme"], r["target"] or "-",
             f"{r['size_bytes'] / 2**20:.1f} MiB") for r in rows])  # fmt: skip


@cache_cmd.command("verify")
@cache_options
def cache_verify(cache) -> None:
    """Re-hash every entry; report corrupt ones (exit 1 if any)."""

    c = cache
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
@cache_options
@click.option("--older-than-days", type=float, default=None, help="also remove entries older than this")
def cache_gc(cache, older_than_days: float | None) -> None:
    """Remove unfinished builds, corrupt entries and (optionally) old entries."""

    removed = cache.gc(older_than_s=older_than_days * 86400 if older_than_days is not None else None)
    for r in removed:
        _say(stdout, "removed ", r)
    stdout.print(f"{len(removed)} removed")


if __name__ == "__main__":  # pragma: no cover
    main()
