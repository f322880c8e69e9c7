"""The ``mlcbuild`` command line: one module per group of commands, each parses, calls one library
function and renders with rich. Nothing below ``cli/`` imports it."""

from mlcbuild.cli import build, cache, device, run, ship  # noqa: F401  (register the commands)
from mlcbuild.cli.app import main

__all__ = ["main"]
