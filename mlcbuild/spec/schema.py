"""Validation of TOML tables against a small schema (shared by recipes and target descriptors).

A schema maps ``key -> (types, required, default)``. Errors name the file, the
``section.key`` and what is allowed, and are raised as the caller's error class.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from mlcbuild.errors import MlcbuildError

Schema = dict[str, tuple[tuple[type, ...], bool, Any]]
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    dict: "a table",
    bool: "a boolean",
    float: "a number",
    list: "an array",
}


def did_you_mean(name: str, allowed) -> str:
    """``" (did you mean X?)"`` for the closest allowed name (``difflib``), or ``""``."""
    near = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {near[0]}?)" if near else ""


def _refuse_unknown(found, allowed, name, listing: str, path: Path | str, error: type[MlcbuildError]) -> None:
    """Raise ``error`` for the first name of ``found`` not in ``allowed``; ``name(x)`` shows one
    name as the file writes it, ``listing`` introduces the allowed ones."""
    unknown = sorted(set(found) - set(allowed))
    if unknown:
        raise error(
            f"unknown {name(unknown[0])}{did_you_mean(unknown[0], allowed)}; {listing}: {', '.join(allowed)}",
            path=path,
            fix=f"remove or rename {name(unknown[0]).split(' ', 1)[1]}",
        )


def check_sections(data: dict[str, Any], allowed: list[str], path: Path | str, error: type[MlcbuildError]) -> None:
    """Raise ``error`` for a section not in ``allowed``."""
    shown = [f"[{s}]" for s in allowed]
    _refuse_unknown([f"[{s}]" for s in data], shown, lambda s: f"section {s}", "allowed sections", path, error)


def check_table(
    table: Any, section: str, schema: Schema, path: Path | str, error: type[MlcbuildError]
) -> dict[str, Any]:
    """Validate one table; return it with defaults filled in.

    Raises:
        error: the table is missing or not a table, has an unknown key, lacks a required
            key, or a value has the wrong type (a boolean is never an integer) or is a
            non-positive integer.
    """
    if not isinstance(table, dict):
        raise error(f"missing section [{section}] (or it is not a table)", path=path, fix=f"add a [{section}] table")
    _refuse_unknown(table, list(schema), lambda k: f"key {section}.{k}", f"allowed keys in [{section}]", path, error)
    out: dict[str, Any] = {}
    for key, (types, required, default) in schema.items():
        if key not in table:
            if required:
                raise error(
                    f"missing required key {section}.{key}", path=path, fix=f"add {key} = ... under [{section}]"
                )
            out[key] = default
            continue
        value = table[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            want = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
            raise error(
                f"{section}.{key} must be {want}, got {type(value).__name__} {value!r}",
                path=path,
                fix=f"give {section}.{key} {want}",
            )
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
            raise error(f"{section}.{key} must be positive, got {value}", path=path, fix=f"set {section}.{key} >= 1")
        out[key] = value
    return out
