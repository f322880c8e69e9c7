"""The hardening findings (issue 19), one test each: no data loss, no corrupt hits, no escapes
from a package, no silent bad builds, errors that print, bounded waits, RPC exposure."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from factories import make_checkpoint, recipe_data, tiny_config

from mlcbuild.artifacts.cache import Cache, CacheCorruptError, LockTimeout, file_sha256, write_manifest
from mlcbuild.artifacts.compile import compile_recipe
from mlcbuild.artifacts.convert import convert_weights, same_value
from mlcbuild.artifacts.info import read_build as read_artifact
from mlcbuild.artifacts.remote import RemoteCache
from mlcbuild.cli import main
from mlcbuild.device.rpc import DeviceError, list_devices, parse_tracker
from mlcbuild.errors import CompileError, MlcbuildError, RecipeError
from mlcbuild.runtime.artifact import library_path
from mlcbuild.ship.package import MANIFEST, PackageModel, package, read_package_config, verify
from mlcbuild.spec.recipe import parse_recipe
from mlcbuild.spec.target import load_target


def _cli(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


def _write_recipe(path: Path, data: dict) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(data))
    return path


def _flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# ---- 1. data loss ---------------------------------------------------------------------------


def test_package_out_never_deletes_what_it_did_not_write(tmp_path, cache_dir, monkeypatch):
    recipe = _write_recipe(tmp_path / "tiny.toml", recipe_data(tiny_config(), "q0f32", name="tiny"))
    host = load_target("host")
    project = tmp_path / "myproject"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.c").write_text("int main(){}")
    with pytest.raises(MlcbuildError, match="not an mlcbuild package"):
        package([PackageModel(recipe)], host, project, cache=Cache(cache_dir))
    assert (project / "src" / "main.c").read_text() == "int main(){}"
    monkeypatch.chdir(project)
    with pytest.raises(MlcbuildError, match="current directory"):
        package([PackageModel(recipe)], host, Path("."), cache=Cache(cache_dir))
    assert (project / "src" / "main.c").is_file()
    monkeypatch.chdir(tmp_path)
    dist = tmp_path / "dist"
    package([PackageModel(recipe)], host, dist, cache=Cache(cache_dir))
    package([PackageModel(recipe)], host, dist, cache=Cache(cache_dir))  # a package of ours is replaced
    assert verify(dist) == []
    (dist / "notes.txt").write_text("mine")
    with pytest.raises(MlcbuildError, match="notes.txt"):
        package([PackageModel(recipe)], host, dist, cache=Cache(cache_dir))
    assert (dist / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".mlcbuild-package-*"))  # no temporary directory left
    cfg = tmp_path / "pkg.toml"
    cfg.write_text(f'[[models]]\nrecipe = "{recipe}"\nmodel_id = "../../x"\n')
    with pytest.raises(MlcbuildError, match="model_id") as e:
        read_package_config(cfg)
    assert "pkg.toml" in str(e.value)


# ---- 2. corrupt cache entries ----------------------------------------------------------------


def test_corrupt_build_is_quarantined_rebuilt_and_refused_by_the_runtime(tmp_path, caplog):
    recipe = parse_recipe(recipe_data(tiny_config(), "q0f32", name="tiny"))
    host = load_target("host")
    cache = Cache(tmp_path / "c")
    first = compile_recipe(recipe, host, cache=cache)
    out = compile_recipe(recipe, host, cache=cache, out=tmp_path / "copy").artifact
    lib = first.artifact / "lib.so"
    _flip(lib)
    with pytest.raises(MlcbuildError, match="sha256 differs"):  # the runtime checks before loading
        library_path(first.artifact, read_artifact(first.artifact))
    with caplog.at_level(logging.WARNING, logger="mlcbuild"):
        again = compile_recipe(recipe, host, cache=cache)
    assert again.cache == "miss" and "does not match its manifest" in caplog.text
    assert len(list((cache.quarantine / "builds").iterdir())) == 1
    assert library_path(again.artifact, read_artifact(again.artifact)).is_file()
    lib.unlink()
    assert compile_recipe(recipe, host, cache=cache).cache == "miss"  # a deleted library is no hit
    assert issubclass(CacheCorruptError, MlcbuildError)
    _flip(out / "lib.so")  # an --out copy is checked by the runtime too
    with pytest.raises(MlcbuildError, match="sha256 differs"):
        library_path(out, read_artifact(out))


def test_corrupt_weights_are_rebuilt_so_convert_again_works(tmp_path):
    cfg = tiny_config()
    make_checkpoint(tmp_path / "ckpt", cfg)
    recipe = parse_recipe(recipe_data(cfg, "q4f32_1"))
    cache = Cache(tmp_path / "c")
    first = convert_weights(recipe, tmp_path / "ckpt", cache=cache)
    shard = sorted(first.weights.glob("params_shard_*.bin"))[0]
    good = file_sha256(shard)
    _flip(shard)
    again = convert_weights(recipe, tmp_path / "ckpt", cache=cache)
    assert again.cache == "miss" and file_sha256(sorted(again.weights.glob("params_shard_*.bin"))[0]) == good


def test_lock_timeout_names_the_holder(tmp_path):
    cache = Cache(tmp_path / "c", lock_timeout_s=1.0)
    cache.locks.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from mlcbuild.artifacts.cache import Cache\n"
         f"c = Cache({str(tmp_path / 'c')!r})\n"
         "with c._lock('k' * 64):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(LockTimeout, match=f"pid {holder.pid}"):
            with cache.building("k" * 64):
                pass
        assert time.monotonic() - t0 < 10
    finally:
        holder.kill()
        holder.wait()


# ---- 3. verify trusts nothing -----------------------------------------------------------------


def test_verify_refuses_paths_outside_symlinks_and_missing_app_files(tmp_path):
    dist = tmp_path / "dist"
    dist.mkdir()
    (tmp_path / "x_tokenizer.json").write_text("{}")
    (dist / "link.json").symlink_to(tmp_path / "x_tokenizer.json")
    app = {
        "target": "host",
        "platform": "so",
        "model_list": [{"model_id": "m", "model_lib": "lib/m.so", "model_path": "m"}],
    }
    (dist / "bundle").mkdir()
    (dist / "bundle" / "mlc-app-config.json").write_text(json.dumps(app))
    outside = file_sha256(tmp_path / "x_tokenizer.json")
    manifest = {
        "files": {
            "../x_tokenizer.json": outside,
            "/etc/hostname": file_sha256(Path("/etc/hostname")) if Path("/etc/hostname").is_file() else "0",
            "link.json": outside,
            "bundle/mlc-app-config.json": file_sha256(dist / "bundle" / "mlc-app-config.json"),
        },
        "libraries": [],
        "platform": "so",
    }
    (dist / MANIFEST).write_text(json.dumps(manifest))
    problems = "\n".join(verify(dist))
    assert "../x_tokenizer.json: a path outside the package" in problems
    assert "/etc/hostname: a path outside the package" in problems
    assert "link.json: a symlink" in problems
    assert "model_lib 'lib/m.so' is not a file" in problems and "model_path 'm' holds no file" in problems


def test_remote_entry_of_another_key_is_rejected(tmp_path):
    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "lib.so").write_bytes(b"\x7fELF fake")
    build = {"key": "a" * 64, "library": {"file": "lib.so", "sha256": file_sha256(entry / "lib.so")}}
    (entry / "build.json").write_text(json.dumps(build))
    write_manifest(entry)
    remote = RemoteCache(str(tmp_path / "remote"))
    remote.upload("b" * 64, "builds", entry)  # a valid entry of key a, stored under key b
    dest = tmp_path / "dest"
    dest.mkdir()
    assert remote.fetch("b" * 64, "builds", dest) is False and remote.rejected == ["b" * 64]
    remote.upload("a" * 64, "builds", entry)
    assert remote.fetch("a" * 64, "builds", dest) is True


# ---- 4. silent bad builds -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("num_key_value_heads", -2, "positive integer"),
        ("num_key_value_heads", 0, "positive integer"),
        ("num_key_value_heads", "2", "positive integer"),
        ("tie_word_embeddings", "false", "boolean"),
        ("head_dim", 16.7, "positive integer"),
        ("rms_norm_eps", "abc", "positive number"),
        ("max_position_embeddings", 0, "positive integer"),
    ],
)
def test_model_config_values_are_typed(key, value, match):
    with pytest.raises(RecipeError, match=match) as e:
        parse_recipe(recipe_data(tiny_config(**{key: value})), "bad.toml")
    assert f"model.config.{key}" in str(e.value) and "bad.toml" in str(e.value)


def test_unknown_keys_warn_or_fail_with_did_you_mean(caplog):
    with caplog.at_level(logging.WARNING, logger="mlcbuild"):
        parse_recipe(recipe_data(tiny_config(rms_norm_esp=1e-5), prefill_chunk_size=512), "r.toml")
    assert "model.config.rms_norm_esp" in caplog.text and "did you mean rms_norm_eps?" in caplog.text
    assert "prefill_chunk_size = 512 exceeds the context" in caplog.text
    data = recipe_data(tiny_config())
    data["build"]["prefil_chunk_size"] = 8
    with pytest.raises(RecipeError, match="did you mean prefill_chunk_size"):
        parse_recipe(data, "r.toml")


def test_float_fields_compare_with_a_tolerance():
    assert same_value(1e-05, float(np.float32(1e-05))) and same_value(10000.0, 10000.000000000002)
    assert not same_value(1e-05, 1e-06) and not same_value({"a": 1.0}, {"a": 1.1})


def test_memory_budget_is_enforced_and_recorded(tmp_path):
    big = parse_recipe(recipe_data(tiny_config(vocab_size=10**10), "q0f32"), "big.toml")
    with pytest.raises(CompileError, match="memory budget") as e:
        compile_recipe(big, load_target("host"), cache=Cache(tmp_path / "c"))
    assert "big.toml" in str(e.value) and "--allow-over-budget" in str(e.value)
    assert not list((tmp_path / "c" / "builds").iterdir())


def test_gpu_kernels_are_checked_against_the_descriptor_limits(tmp_path):
    desc = load_target("s24")
    small = dataclasses.replace(desc, device={**desc.device, "max_threads_per_block": 16})
    recipe = parse_recipe(recipe_data(tiny_config(), "q4f16_1"))
    with pytest.raises(MlcbuildError, match="max_threads_per_block") as e:
        compile_recipe(recipe, small, cache=Cache(tmp_path / "c"))
    assert "s24.toml" in str(e.value)


@pytest.mark.parametrize("bad", ["nan", "int32"])
def test_convert_refuses_nan_and_non_float_tensors(tmp_path, bad):
    from safetensors.numpy import load_file, save_file

    cfg = tiny_config()
    make_checkpoint(tmp_path / "ckpt", cfg)
    f = tmp_path / "ckpt" / "model.safetensors"
    tensors = load_file(str(f))
    name = "model.layers.0.mlp.up_proj.weight"
    if bad == "nan":
        tensors[name][0, 0] = np.nan
    else:
        tensors[name] = tensors[name].astype(np.int32)
    save_file(tensors, str(f), metadata={"format": "pt"})
    with pytest.raises(MlcbuildError, match=name):
        convert_weights(parse_recipe(recipe_data(cfg, "q4f32_1")), tmp_path / "ckpt", cache=Cache(tmp_path / "c"))


def test_eval_json_is_valid_for_a_nan_perplexity(tmp_path, monkeypatch):
    import mlcbuild.cli as cli
    import mlcbuild.runtime.evaluate as ev

    monkeypatch.setattr(cli.run, "_host_model", lambda a, w, c, *_target: (None, {}, a, w))
    monkeypatch.setattr(ev, "text_ids", lambda *a: [1, 2, 3])

    @dataclasses.dataclass
    class Result:
        perplexity: float = float("nan")
        nll: float = float("inf")
        tokens: int = 3
        windows: int = 1
        context: int = 256
        seconds: float = 0.1

    monkeypatch.setattr(ev, "perplexity", lambda *a: Result())
    (tmp_path / "t.txt").write_text("x")
    (tmp_path / "a").mkdir()
    r = _cli("eval", str(tmp_path / "a"), "--weights", str(tmp_path), "--text", str(tmp_path / "t.txt"), "--json")
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout.splitlines()[0])  # strict JSON: no NaN
    assert out["perplexity"] is None and out["nll"] is None and out["tokens"] == 3


# ---- 5. errors that print ------------------------------------------------------------------------


def test_errors_print_literally_without_tracebacks(tmp_path):
    data = recipe_data(tiny_config())
    data["quantization"]["calibration"] = {"text": "x.txt"}
    odd = tmp_path / "a[/b]dir"
    odd.mkdir(parents=True)
    r = _cli("compile", str(_write_recipe(odd / "r[bold].toml", data)))
    assert (
        r.exit_code == 2
        and "[quantization.calibration]" in r.stderr
        and "a[/b]dir/r[bold].toml" in r.stderr.replace("\n", "")
    )
    for key, value in (("num_key_value_heads", "2"), ("rms_norm_eps", "abc")):
        r = _cli("compile", str(_write_recipe(tmp_path / f"{key}.toml", recipe_data(tiny_config(**{key: value})))))
        assert r.exit_code == 2 and f"{key}.toml" in r.stderr and not isinstance(r.exception, TypeError), r.output


def test_verify_shows_file_names_literally(tmp_path):
    dist = tmp_path / "dist"
    (dist / "lib").mkdir(parents=True)
    (dist / "lib" / "[bold]evil.so").write_bytes(b"x")
    (dist / MANIFEST).write_text(json.dumps({"files": {}}))
    r = _cli("verify", str(dist))
    assert r.exit_code == 1 and "lib/[bold]evil.so" in r.stderr


# ---- 6. bounded waits ------------------------------------------------------------------------------


def _silent_server() -> tuple[socket.socket, int]:
    """A TCP server on loopback that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held = []

    def accept():
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return srv, srv.getsockname()[1]


def test_a_tracker_that_never_answers_is_a_bounded_error():
    srv, port = _silent_server()
    try:
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="did not answer"):
            list_devices(f"127.0.0.1:{port}", wait_s=2.0)
        assert time.monotonic() - t0 < 8
    finally:
        srv.close()


def test_a_remote_that_never_answers_costs_one_timeout_with_the_reason(tmp_path, caplog):
    srv, port = _silent_server()
    try:
        remote = RemoteCache(f"http://127.0.0.1:{port}", timeout_s=1.0)
        dest = tmp_path / "d"
        dest.mkdir()
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="mlcbuild"):
            assert remote.fetch("k" * 64, "builds", dest) is False
            assert remote.fetch("j" * 64, "builds", dest) is False  # skipped: no second wait
        assert time.monotonic() - t0 < 6 and "Timeout" in caplog.text
    finally:
        srv.close()


def test_an_unknown_remote_scheme_matters_only_on_a_miss(tmp_path, cache_dir):
    recipe = parse_recipe(recipe_data(tiny_config(), "q0f32", name="tiny"))
    host = load_target("host")
    assert compile_recipe(recipe, host, cache=Cache(cache_dir)).cache in ("hit", "miss")
    assert compile_recipe(recipe, host, cache=Cache(cache_dir, remote="nosuch://x/y")).cache == "hit"
    with pytest.raises(MlcbuildError, match="nosuch://x/y cannot be opened"):
        compile_recipe(recipe, host, cache=Cache(tmp_path / "c", remote="nosuch://x/y"))


# ---- 7. RPC exposure ---------------------------------------------------------------------------------


def test_rpc_fix_messages_bind_loopback_and_warn(caplog):
    with pytest.raises(DeviceError) as e:
        list_devices(f"127.0.0.1:{_free_port()}", wait_s=0.5)
    assert "--host 127.0.0.1" in str(e.value) and "no authentication" in str(e.value)
    assert "0.0.0.0" not in str(e.value)
    with caplog.at_level(logging.WARNING, logger="mlcbuild"):
        assert parse_tracker("lab-host:9190") == ("lab-host", 9190)  # parsed only: nothing is contacted
    assert "not on loopback" in caplog.text and "no authentication" in caplog.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
