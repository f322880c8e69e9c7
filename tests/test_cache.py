"""The content-addressed cache: keys, hits, atomic entries, locking, verify and gc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from factories import REPO, recipe_data, tiny_config

import mlcbuild.artifacts.compile as compile_mod
from mlcbuild.artifacts.cache import Cache, content_key
from mlcbuild.artifacts.compile import compile_recipe, key_inputs
from mlcbuild.spec.recipe import parse_recipe
from mlcbuild.spec.target import load_target

TINY = tiny_config()


def _key(data, target="s24", cache=None, tuning_root=None):
    cache = cache or Cache(Path("/nonexistent-cache-for-keys"))
    return content_key(key_inputs(parse_recipe(data), load_target(target), cache, tuning_root))


def test_key_is_stable_and_every_input_changes_it(tmp_path, monkeypatch):
    cache = Cache(tmp_path / "c")
    base = recipe_data(TINY, "q4f16_1")
    k0 = _key(base, cache=cache)
    assert k0 == _key(recipe_data(TINY, "q4f16_1"), cache=cache)
    variants = {
        "name": lambda d: d["model"].update(name="other"),
        "source": lambda d: d["model"].update(source="elsewhere"),
        "hidden_size": lambda d: d["model"]["config"].update(hidden_size=128),
        "rms_norm_eps": lambda d: d["model"]["config"].update(rms_norm_eps=1e-6),
        "scheme": lambda d: d["quantization"].update(scheme="q4f16_0"),
        "context_window_size": lambda d: d["build"].update(context_window_size=64),
        "prefill_chunk_size": lambda d: d["build"].update(prefill_chunk_size=16),
        "max_batch_size": lambda d: d["build"].update(max_batch_size=2),
    }
    keys = {"base": k0}
    for name, change in variants.items():
        d = json.loads(json.dumps(base))
        change(d)
        keys[name] = _key(d, cache=cache)
    keys["target"] = _key(base, target="pixel8", cache=cache)
    tuning = tmp_path / "tuning"
    (tuning / "s24").mkdir(parents=True)
    (tuning / "s24" / "database_workload.json").write_text('["w"]\n')
    (tuning / "s24" / "database_tuning_record.json").write_text('[0, ["r"]]\n')
    keys["tuning_records"] = _key(base, cache=cache, tuning_root=tuning)
    real_stamp = compile_mod.toolchain_stamp
    monkeypatch.setattr(compile_mod, "toolchain_stamp", lambda memo=None: {**real_stamp(memo), "tvm_commit": "other"})
    keys["tvm_commit"] = _key(base, cache=cache)
    monkeypatch.undo()
    import mlcbuild.artifacts.stamp as stamp_mod

    # mlcbuild's own source is an input: an edited schedule or pass must not hit old builds.
    monkeypatch.setattr(stamp_mod, "source_digest", lambda: "edited")
    keys["mlcbuild_source"] = _key(base, cache=cache)
    assert len(set(keys.values())) == len(keys), keys


def test_weights_key_follows_the_conversion_code(tmp_path, monkeypatch):
    """An edited quantizer (or loader) must not hit weights converted by the old code."""
    from factories import make_checkpoint

    import mlcbuild.artifacts.convert as convert_mod
    from mlcbuild.artifacts.checkpoint import Checkpoint

    make_checkpoint(tmp_path / "ckpt", TINY)
    recipe, ckpt = parse_recipe(recipe_data(TINY, "q4f16_1")), Checkpoint(tmp_path / "ckpt")
    k0, inputs = convert_mod.weights_key(recipe, ckpt)
    assert k0 == convert_mod.weights_key(recipe, ckpt)[0] and "mlcbuild_source" in inputs
    monkeypatch.setattr(convert_mod, "source_digest", lambda parts=None: "edited")
    assert convert_mod.weights_key(recipe, ckpt)[0] != k0


def _compile(data, cache_dir, target="s24"):
    return compile_recipe(parse_recipe(data), load_target(target), cache=Cache(cache_dir))


def test_miss_then_hit_without_tvm(tmp_path):
    data = recipe_data(TINY, "q4f16_1", name="hit-test")
    first = _compile(data, tmp_path)
    assert first.cache == "miss"
    second = _compile(data, tmp_path)
    assert second.cache == "hit" and second.key == first.key and second.artifact == first.artifact
    # A hit in a fresh process imports no TVM (the expensive part of a hit, ~5 s).
    recipe = tmp_path / "r.toml"
    recipe.write_text(_toml(data))
    code = (
        "import sys, json; from mlcbuild.cli import main; "
        "sys.argv=['mlcbuild','compile',sys.argv[1],'--target','s24','--json']\n"
        "try:\n main()\nexcept SystemExit: pass\n"
        "print('TVM_IMPORTED' if 'tvm' in sys.modules else 'NO_TVM')"
    )
    env = {**os.environ, "MLCBUILD_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code, str(recipe)], capture_output=True, text=True, env=env, check=True)
    result = json.loads(out.stdout.splitlines()[0])
    assert result["cache"] == "hit" and result["key"] == first.key
    assert out.stdout.strip().endswith("NO_TVM")


def _drop_none(v):
    """TOML has no null: recipes leave JSON nulls out."""
    if isinstance(v, dict):
        return {k: _drop_none(x) for k, x in v.items() if x is not None}
    return v


def _toml(data) -> str:
    """Recipe data as TOML text (``tomli_w``)."""
    import tomli_w

    return tomli_w.dumps(_drop_none(data))


def test_failed_build_leaves_no_entry(tmp_path, monkeypatch):
    import mlcbuild.compiler.build as lower

    def broken(recipe, desc, out_dir, timings, **kw):
        (out_dir / "lib.tar").write_bytes(b"partial")
        raise RuntimeError("codegen crashed")

    monkeypatch.setattr(lower, "build_library", broken)
    with pytest.raises(RuntimeError):
        _compile(recipe_data(TINY, "q4f16_1", name="broken"), tmp_path)
    c = Cache(tmp_path)
    assert c.entries() == [] and list(c.tmp.iterdir()) == [] and list(c.builds.iterdir()) == []


def _spawn(recipe: Path, cache_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mlcbuild.cli", "compile", str(recipe), "--target", "s24", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "MLCBUILD_CACHE": str(cache_dir)},
        cwd=REPO,
    )


def test_killed_build_leaves_nothing_then_concurrent_builds_build_once(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(_toml(recipe_data(TINY, "q4f16_1", name="concurrent")))
    c = Cache(tmp_path / "cache")

    def started() -> subprocess.Popen:
        p = _spawn(recipe, c.root)
        deadline = time.time() + 120
        while time.time() < deadline and not (c.tmp.is_dir() and any(c.tmp.iterdir())):
            time.sleep(0.2)
        assert c.tmp.is_dir() and any(c.tmp.iterdir()), "build never started"
        time.sleep(1.0)  # into the lowering (on its own thread: compiler/fresh_thread.py)
        return p

    # 0. Ctrl-C and SIGTERM in the middle of a build: the shell's exit codes at once, no entry,
    # the work directory already removed (no C++ abort from the abandoned lowering thread)
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        p = started()
        p.send_signal(sig)
        assert p.wait(timeout=30) == code
        assert c.entries() == [] and not any(c.tmp.iterdir())
    # 1. kill -9 in the middle of a build: no entry; gc sweeps the tmp dir
    p = started()
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert c.entries() == [] and not any(c.builds.iterdir())
    assert any("unfinished" in r for r in c.gc())
    assert not any(c.tmp.iterdir())
    # 2. two processes compile one key at once: built once, both succeed with the same entry
    procs = [_spawn(recipe, c.root), _spawn(recipe, c.root)]
    results = []
    for q in procs:
        out, _ = q.communicate(timeout=600)
        assert q.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["cache"] for r in results) == ["hit", "miss"]
    assert results[0]["artifact"] == results[1]["artifact"] and results[0]["key"] == results[1]["key"]
    assert len(c.entries()) == 1


def test_verify_detects_corruption_and_gc_removes_it(tmp_path):
    res = _compile(recipe_data(TINY, "q4f16_1", name="verify"), tmp_path)
    c = Cache(tmp_path)
    assert c.verify() == {res.key: []}
    lib = res.artifact / "lib.tar"
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lib.write_bytes(bytes(data))
    problems = c.verify()[res.key]
    assert problems == ["lib.tar changed (sha256 mismatch)"]
    (res.artifact / "build.json").unlink()
    assert "build.json missing" in c.verify()[res.key]
    removed = c.gc()
    assert any(res.key in r and "corrupt" in r for r in removed)
    assert c.lookup(res.key) is None
    assert _compile(recipe_data(TINY, "q4f16_1", name="verify"), tmp_path).cache == "miss"
