"""matrix: every (recipe, target) pair in parallel local processes, sharing the cache."""

from __future__ import annotations

import json

from factories import recipe_data, tiny_config
from test_cache import _toml
from test_convert_run import cli
from test_package import _recipes


def test_matrix_reports_every_pair_then_hits(tmp_path, cache_dir):
    """The package test's two recipes for its two targets (the session cache: whichever test
    runs first builds, the other hits)."""
    recipes = _recipes(tmp_path)
    bad = tmp_path / "Mat-Bad.toml"
    bad.write_text("[model]\nname = 1\n")
    cache = cache_dir
    args = ["matrix", *recipes, "--targets", "host,s24", "--jobs", "2", "--json", "--cache-dir", cache]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert [(row["recipe"].rsplit("/", 1)[1], row["target"]) for row in rows] == [
        ("Pkg-A.toml", "host"), ("Pkg-A.toml", "s24"), ("Pkg-B.toml", "host"), ("Pkg-B.toml", "s24"),
    ]  # fmt: skip
    assert all(row["cache"] in ("miss", "hit") and len(row["key"]) == 64 and row["size_bytes"] > 0 for row in rows)
    assert len({row["key"] for row in rows}) == 4
    again = json.loads(cli(*args).stdout.strip().splitlines()[-1])
    assert [row["cache"] for row in again] == ["hit"] * 4 and [r["key"] for r in again] == [r["key"] for r in rows]
    r = cli("matrix", recipes[0], bad, "--targets", "host", "--cache-dir", cache)
    assert r.exit_code == 1 and "Mat-Bad.toml" in r.output and "1 failed" in r.output


def test_matrix_on_a_local_ray_cluster(tmp_path, cache_dir):
    """``--ray local`` starts a one-machine Ray cluster: each pair a Ray task (the same rows,
    the same key as a local build of the pair)."""
    import pytest

    pytest.importorskip("ray")
    p = tmp_path / "Ray-A.toml"
    p.write_text(_toml(recipe_data(tiny_config(), "q4f16_1", name="Pkg-A")))
    r = cli("matrix", p, "--targets", "host", "--ray", "local", "--json", "--cache-dir", cache_dir)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    local = json.loads(cli("compile", p, "--target", "host", "--json", "--cache-dir", cache_dir).stdout)
    assert len(rows) == 1 and rows[0]["cache"] in ("miss", "hit") and rows[0]["target"] == "host"
    assert rows[0]["key"] == local["key"] and local["cache"] == "hit"
