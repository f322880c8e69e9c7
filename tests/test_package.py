"""package + verify: two recipes for s24 (one static archive) and for host (.so files); a
flipped byte, a missing file, a foreign file and a library stamped by another TVM are named."""

from __future__ import annotations

import json

import pytest
from factories import make_checkpoint, tiny_config
from test_cache import _toml
from test_convert_run import cli


def _recipes(tmp_path):
    from factories import recipe_data

    out = []
    for name, cfg in (("Pkg-A", tiny_config()), ("Pkg-B", tiny_config(hidden_size=96, num_attention_heads=6))):
        p = tmp_path / f"{name}.toml"
        p.write_text(_toml(recipe_data(cfg, "q4f16_1", name=name)))
        out.append(p)
    make_checkpoint(tmp_path / "ckpt-a", tiny_config())
    return out


@pytest.mark.parametrize("target", ["s24", "host"])
def test_package_verifies_and_names_every_tampering(target, tmp_path, cache_dir):
    a, b = _recipes(tmp_path)
    cfg = tmp_path / "package.toml"
    cfg.write_text(
        f'target = "{target}"\n[[models]]\nrecipe = "{a.name}"\nweights = "ckpt-a"\n'
        f'[[models]]\nrecipe = "{b.name}"\nweights_url = "https://example.org/pkg-b"\nmodel_id = "b"\n'
    )
    dist = tmp_path / "dist"
    r = cli("package", "--config", cfg, "--out", dist, "--json", "--cache-dir", cache_dir)
    assert r.exit_code == 0, r.output
    manifest = json.loads(r.stdout.strip().splitlines()[-1])
    assert cli("verify", dist).exit_code == 0
    app = json.loads((dist / "bundle" / "mlc-app-config.json").read_text())  # MLC's bundle/ layout
    ids = [m["model_id"] for m in app["model_list"]]
    assert ids == ["Pkg-A", "b"] and app["model_list"][1]["model_url"] == "https://example.org/pkg-b"
    a_entry = app["model_list"][0]
    assert a_entry["model_path"] == "Pkg-A" and (dist / "bundle" / "Pkg-A" / "tensor-cache.json").is_file()
    assert a_entry["model_url"] == "https://huggingface.co/local/none"  # the recipe source; always present
    r = cli("verify", "--mlc", dist)
    assert r.exit_code == 0, r.output
    mem = a_entry["memory"]
    assert (
        a_entry["estimated_vram_bytes"] == mem["params_bytes"] + mem["kv_cache_bytes"] + mem["temporary_bytes_estimate"]
    )
    if target == "s24":
        assert manifest["libraries"] == ["lib/libmodel_android.a"]
        # MLC's model_lib: the prefix without its "_" (the app loads SystemLib(model_lib + "_"))
        assert [m["model_lib"] for m in manifest["models"]] == ["pkg_a_q4f16_1", "pkg_b_q4f16_1"]
        assert [m["model_lib"] for m in app["model_list"]] == ["pkg_a_q4f16_1", "pkg_b_q4f16_1"]
    else:
        assert manifest["libraries"] == ["lib/Pkg-A.so", "lib/b.so"]
    assert manifest["abi_stamp"]["tvm"] == "0.27.0.post1" and len(manifest["models"][0]["build_key"]) == 64

    lib = dist / manifest["libraries"][0]
    data = lib.read_bytes()
    stamp = json.dumps(manifest["abi_stamp"], separators=(",", ":")).encode()
    assert stamp in data
    shard = next((dist / "bundle" / "Pkg-A").glob("params_shard_*.bin"))
    cases = {
        "flipped": (shard, lambda p: p.write_bytes(bytes([p.read_bytes()[0] ^ 1]) + p.read_bytes()[1:])),
        "missing": (dist / "bundle" / "mlc-app-config.json", lambda p: p.unlink()),
        "foreign": (dist / "lib" / "extra.so", lambda p: p.write_bytes(b"not ours")),
        "other TVM": (lib, lambda p: p.write_bytes(data.replace(b'"tvm":"0.27.0.post1"', b'"tvm":"0.26.0.post1"'))),
    }
    for what, (path, tamper) in cases.items():
        backup = path.read_bytes() if path.exists() else None
        tamper(path)
        r = cli("verify", dist)
        rel = path.relative_to(dist).as_posix()
        assert r.exit_code == 1 and rel in r.output, (what, r.output)
        if what == "other TVM":
            assert "0.26.0.post1" in r.output and "ABI stamp" in r.output
        if backup is None:
            path.unlink()
        else:
            path.write_bytes(backup)
        assert cli("verify", dist).exit_code == 0, what


def test_package_bad_inputs_are_named(tmp_path):
    a, _ = _recipes(tmp_path)
    r = cli("package", a, "--weights", tmp_path / "ckpt-a", "--weights", tmp_path / "ckpt-a", "--target", "host")
    assert r.exit_code == 2 and "2 --weights for 1 recipes" in r.output
    bad = tmp_path / "p.toml"
    bad.write_text('[[models]]\nrecipe = "x.toml"\nweight = "w"\n')
    r = cli("package", "--config", bad)
    assert r.exit_code == 2 and "unknown keys ['weight']" in r.output and "p.toml" in r.output
    assert cli("verify", tmp_path).exit_code == 1  # no manifest


def test_android_cpu_package_is_refused_for_mlcs_app(tmp_path):
    a, _ = _recipes(tmp_path)
    r = cli("package", a, "--target", "android-cpu", "--out", tmp_path / "dist")
    assert r.exit_code != 0 and "OpenCL" in r.output and "s24" in r.output
    assert not (tmp_path / "dist").exists()


def test_mlc_package_config_is_accepted(tmp_path, cache_dir):
    """MLC-LLM's mlc-package-config.json (device, model_list of model/model_id/bundle_weight)."""
    a, b = _recipes(tmp_path)
    (tmp_path / "mlc-package-config.json").write_text(json.dumps({
        "device": "iphone",
        "model_list": [
            {"model": a.name, "model_id": "A", "bundle_weight": True, "weights": "ckpt-a", "estimated_vram_bytes": 1},
            {"model": b.name, "model_id": "B", "model_url": "https://huggingface.co/org/B-MLC"},
        ],
    }))  # fmt: skip
    dist = tmp_path / "dist"
    r = cli("package", "--config", tmp_path / "mlc-package-config.json", "--out", dist, "--cache-dir", cache_dir)
    assert r.exit_code == 0, r.output
    app = json.loads((dist / "bundle" / "mlc-app-config.json").read_text())
    assert app["target"] == "iphone15pro" and (dist / "lib" / "libmodel_iphone.a").is_file()
    a_e, b_e = app["model_list"]
    assert (a_e["model_id"], a_e["model_path"], a_e["model_lib"]) == ("A", "A", "pkg_a_q4f16_1")
    assert b_e["model_url"] == "https://huggingface.co/org/B-MLC" and "model_path" not in b_e
    assert cli("verify", "--mlc", dist).exit_code == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"device": "android", "model_list": [{"model": "HF://mlc-ai/x-MLC", "model_id": "x"}]}))
    r = cli("package", "--config", bad, "--out", tmp_path / "d2")
    assert r.exit_code != 0 and "not a recipe file" in r.output and "bad.json" in r.output
