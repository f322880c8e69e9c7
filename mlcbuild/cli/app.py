"""The ``mlcbuild`` group and what every command shares: the consoles, literal printing
(rich markup escaped), errors as ``error:``/``fix:`` lines with exit 2, the library's warnings,
and the options declared once (``--cache-dir`` with ``--remote``, ``--json``)."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mlcbuild.errors import MlcbuildError

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


def cache_options(f):
    """``--cache-dir`` (default ``$MLCBUILD_CACHE``) and ``--remote`` (default
    ``$MLCBUILD_REMOTE_CACHE``), handed to the command as one ``cache``
    (:class:`mlcbuild.artifacts.cache.Cache`)."""
    import functools

    @click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MLCBUILD_CACHE",
                  help="build cache root")  # fmt: skip
    @click.option("--remote", envvar="MLCBUILD_REMOTE_CACHE",
                  help="remote build cache: an fsspec URL (shared dir, s3://, gs://, http(s):// read-only)")  # fmt: skip
    @functools.wraps(f)
    def wrapper(*args, cache_dir=None, remote=None, **kwargs):
        from mlcbuild.artifacts.cache import Cache

        return f(*args, cache=Cache(cache_dir, remote=remote or None), **kwargs)

    return wrapper


def json_option(what: str):
    """``--json``: print ``what`` as JSON instead of tables (the command's ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help=f"print {what} as JSON")
