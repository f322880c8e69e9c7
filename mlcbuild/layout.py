"""The parts of mlcbuild, in the order data flows, and the source digest of what a module depends on.

The pipeline is the architecture: each part may import only the parts before it (and
itself). Models and schemes come before the recipe and target descriptors (``spec``): a
recipe is checked against its architecture's config keys and its scheme's rules, while
models and schemes know nothing of recipes or targets (type-only imports under
``TYPE_CHECKING`` are not dependencies). ``tests/test_layout.py`` parses every import of the package with :func:`import_graph`
and fails on an edge that goes the other way. The cache keys (build, converted weights) hash
the source of exactly the modules their code imports, found the same way
(:func:`source_digest`), so an edit anywhere a key depends on gives a new key and an edit
elsewhere (the CLI, the README) keeps the cache.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

# (part, module prefixes): a module belongs to the first part with a matching prefix
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("mlcbuild.errors", "mlcbuild.layout")),
    ("models", ("mlcbuild.models",)),
    ("quant", ("mlcbuild.quant",)),
    ("spec", ("mlcbuild.spec",)),
    ("kernels", ("mlcbuild.kernels",)),
    ("compiler", ("mlcbuild.compiler",)),
    ("artifacts", ("mlcbuild.artifacts",)),
    ("runtime", ("mlcbuild.runtime",)),
    ("device", ("mlcbuild.device",)),
    ("ship", ("mlcbuild.ship",)),
    ("cli", ("mlcbuild.cli",)),
)
ROOT_MODULE = "mlcbuild"  # the package's __init__ (its version): importable from every part


def part_of(module: str) -> str:
    """The part a dotted module name belongs to (``"base"`` for the package root).

    Raises:
        ValueError: a module outside every part (add it to :data:`PARTS`).
    """
    if module == ROOT_MODULE:
        return "base"
    for name, prefixes in PARTS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    raise ValueError(f"{module}: belongs to no part of mlcbuild.layout.PARTS")


def rank(part: str) -> int:
    """Position of ``part`` in the flow (0 = base)."""
    return [name for name, _ in PARTS].index(part)


def _module_files(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """mlcbuild modules ``module`` imports anywhere in its body (functions included): for
    ``from pkg import name``, ``pkg.name`` where that is a module, else ``pkg``."""
    pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != ROOT_MODULE:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == ROOT_MODULE)
    found.discard(module)
    return found


@functools.lru_cache(maxsize=None)
def import_graph(root: Path = PACKAGE_DIR) -> dict[str, frozenset[str]]:
    """``{module: the mlcbuild modules it imports}`` for every module of the package at
    ``root`` (parsed with ``ast``; nothing is imported)."""
    modules = _module_files(root)
    return {m: frozenset(_imports_of(m, p, modules)) for m, p in modules.items()}


def closure(entry: str, root: Path = PACKAGE_DIR) -> list[str]:
    """``entry`` and every module it imports, directly or not, with the packages around them
    (their ``__init__`` runs on import), sorted."""
    graph = import_graph(root)
    seen: set[str] = set()
    todo = [entry]
    while todo:
        m = todo.pop()
        if m in seen or m not in graph:
            continue
        seen.add(m)
        todo.extend(graph[m])
        parts = m.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    return sorted(seen)


BUILD_ENTRY = "mlcbuild.artifacts.compile"
CONVERT_ENTRY = "mlcbuild.artifacts.convert"


@functools.lru_cache(maxsize=None)
def source_digest(entry: str = BUILD_ENTRY, root: Path = PACKAGE_DIR) -> str:
    """sha256 (hex) of the source of ``entry`` and of every mlcbuild module it imports
    (:func:`closure`): module name and bytes of each file, in name order.

    The compiler is code: a changed schedule, pass, kernel or model definition must give a
    new key even when the version string stays the same; a changed CLI must not.
    ``root``: the package directory (default this one; tests pass an edited copy). Computed
    once per process (a key is computed several times per build).
    """
    files = _module_files(root)
    h = hashlib.sha256()
    for m in closure(entry, root):
        h.update(m.encode() + b"\0" + files[m].read_bytes() + b"\0")
    return h.hexdigest()
