"""The parts of mlcbuild import only the parts before them, and each cache key hashes the
source of exactly the parts its code uses (an edit there gives a new key)."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest

from mlcbuild import layout

PKG = Path(layout.__file__).resolve().parent


def test_no_part_imports_a_later_part():
    graph = layout.import_graph()
    upward = [
        f"{m} ({layout.part_of(m)}) imports {d} ({layout.part_of(d)})"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if layout.rank(layout.part_of(d)) > layout.rank(layout.part_of(m))
    ]
    assert upward == []


def test_no_module_over_500_lines():
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}


def _edited(tmp_path: Path, rel: str) -> Path:
    root = tmp_path / "mlcbuild"
    shutil.copytree(PKG, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / rel).write_text((root / rel).read_text() + "\n# edited\n")
    layout.import_graph.cache_clear()
    return root


def _rel(obj) -> str:
    return Path(inspect.getsourcefile(obj)).resolve().relative_to(PKG).as_posix()


def _conversion_code() -> list[str]:
    """The files whose code decides converted weights: the model builder, the quantizers,
    the chat config written beside the shards, the shard writer."""
    from mlcbuild.artifacts import convert, tensor_cache
    from mlcbuild.artifacts.chat_config import chat_config
    from mlcbuild.quant import group
    from mlcbuild.quant.build import build_model

    return [_rel(build_model), _rel(chat_config), _rel(group), _rel(convert), _rel(tensor_cache), "models/decoder.py"]


def test_an_edit_to_conversion_code_changes_the_weights_key(tmp_path):
    base = layout.source_digest(layout.CONVERT_ENTRY)
    for i, rel in enumerate(_conversion_code()):
        root = _edited(tmp_path / str(i), rel)
        assert layout.source_digest(layout.CONVERT_ENTRY, root) != base, rel


@pytest.mark.parametrize(
    "rel",
    [
        "spec/recipe.py",
        "models/decoder.py",
        "quant/group_nn.py",
        "kernels/int8_gemv.py",
        "compiler/pipeline.py",
        "compiler/schedules.py",
        "artifacts/compile.py",
    ],
)
def test_an_edit_to_each_part_of_a_build_changes_the_build_key(tmp_path, rel):
    assert layout.source_digest(layout.BUILD_ENTRY, _edited(tmp_path, rel)) != layout.source_digest(layout.BUILD_ENTRY)


@pytest.mark.parametrize(
    "rel", ["cli/__init__.py", "cli/run.py", "ship/package.py", "device/bench.py", "runtime/engine.py"]
)
def test_an_edit_outside_a_key_keeps_it(tmp_path, rel):
    root = _edited(tmp_path, rel)
    for entry in (layout.BUILD_ENTRY, layout.CONVERT_ENTRY):
        assert layout.source_digest(entry, root) == layout.source_digest(entry)


def test_conversion_does_not_depend_on_the_compiler():
    assert not [m for m in layout.closure(layout.CONVERT_ENTRY) if layout.part_of(m) in ("kernels", "compiler")]
