"""The command line: output forms, exit codes, and errors that name the file and key."""

from __future__ import annotations

import json

from click.testing import CliRunner
from factories import recipe_data, tiny_config
from test_cache import _toml

from mlcbuild.cli import main


def run(*args, **env):
    return CliRunner().invoke(main, list(args), env=env or None, catch_exceptions=False)


def test_targets_table():
    r = run("targets")
    assert r.exit_code == 0
    for name in ("host", "s24", "pixel8", "iphone15pro", "android-cpu"):
        assert name in r.output


def test_schemes_table():
    r = run("schemes")
    assert r.exit_code == 0 and "q4f16_1" in r.output and "q3f16_1" in r.output


def test_invalid_recipe_exit_2_names_file_and_key(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text(_toml(recipe_data(tiny_config(), "q4f16_1")).replace("[build]\n", "[build]\nbatch = 2\n"))
    r = run("compile", str(p), "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 2
    assert "bad.toml" in r.output and "build.batch" in r.output and "max_batch_size" in r.output


def test_vulkan_target_fails_at_once(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(_toml(recipe_data(tiny_config(), "q4f16_1")))
    vk = tmp_path / "vk.toml"
    vk.write_text(
        '[target]\nname = "vk"\nmemory_budget_bytes = 1\n[device]\nkind = "vulkan"\n'
        '[host]\nmtriple = "aarch64-linux-android"\n[output]\nformat = "tar"\n'
    )
    r = run("compile", str(recipe), "--target", str(vk), "--cache-dir", str(tmp_path / "c"))
    assert r.exit_code == 2 and "vulkan" in r.output and "USE_VULKAN" in r.output
    assert not (tmp_path / "c" / "builds").exists() or not any((tmp_path / "c" / "builds").iterdir())


def test_compile_json_out_and_cache_commands(tmp_path, cache_dir):
    recipe = tmp_path / "r.toml"
    recipe.write_text(_toml(recipe_data(tiny_config(), "q4f16_1", name="cli-tiny")))
    out = tmp_path / "out"
    r = run("compile", str(recipe), "--target", "s24", "--json", "--out", str(out), "--cache-dir", str(cache_dir))
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(res) == {"artifact", "key", "cache", "seconds"} and len(res["key"]) == 64
    assert res["artifact"] == str(out)
    assert {"lib.tar", "build.json", "mlc-chat-config.json", "manifest.json"} <= {p.name for p in out.iterdir()}
    again = json.loads(run("compile", str(recipe), "--target", "s24", "--json", "--cache-dir", str(cache_dir)).stdout)
    assert again["cache"] == "hit" and again["key"] == res["key"]
    ls = json.loads(run("cache", "ls", "--json", "--cache-dir", str(cache_dir)).stdout)
    assert any(e["key"] == res["key"] and e["target"] == "s24" and e["kind"] == "builds" for e in ls)
    v = run("cache", "verify", "--cache-dir", str(cache_dir))
    assert v.exit_code == 0 and "0 corrupt" in v.output
