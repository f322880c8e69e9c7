"""Devices over TVM RPC: a real tracker and server on 127.0.0.1, the host CPU as the device.

devices, targets probe, tune (one kernel, end to end, records loaded by TVM's own
JSONDatabase), a tuned compile, bench (local and over RPC; logits equal to the host
runtime's), and faults (unknown key, busy device, a server killed mid-bench).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from factories import make_checkpoint, tiny_config
from test_convert_run import cli, recipe_file

from mlcbuild.artifacts.cache import Cache
from mlcbuild.artifacts.info import read_build
from mlcbuild.device.rpc import DeviceError, LocalCluster, list_devices, request_session
from mlcbuild.errors import MlcbuildError
from mlcbuild.spec.target import load_target

CFG = tiny_config()
# The decode GEMV of the MLP down projection (batch 1, fused q4 dequantization).
TUNE_KERNEL_PREFIX = "fused_dequantize"


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(key="host") as c:
        yield c


@pytest.fixture(scope="module")
def built(tmp_path_factory, cache_dir):
    """A tiny q4f32_1 checkpoint, converted, and compiled for host."""
    d = tmp_path_factory.mktemp("dev")
    make_checkpoint(d / "ckpt", CFG, seed=3)
    recipe = recipe_file(d, CFG, "q4f32_1")
    conv = json.loads(cli("convert", recipe, "--weights", d / "ckpt", "--json").stdout)
    comp = json.loads(cli("compile", recipe, "--json").stdout)
    return {"recipe": recipe, "weights": conv["weights"], "artifact": comp["artifact"], "dir": d}


def test_devices_lists_the_key(cluster):
    rows = json.loads(cli("devices", "--tracker", cluster.tracker, "--json").stdout)
    assert rows == [{"key": "host", "total": 1, "free": 1, "pending": 0}]


def test_unknown_key_and_busy_device_fail_within_the_wait(cluster):
    with pytest.raises(DeviceError, match="no device with key 'phone'.*host \\(1 servers\\)"):
        request_session(cluster.tracker, "phone", wait_s=2)
    held = request_session(cluster.tracker, "host", wait_s=5)
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="no free device with key 'host'.*within 2 s"):
        request_session(cluster.tracker, "host", wait_s=2)
    assert time.monotonic() - t0 < 10
    del held


def test_probe_writes_then_checks_a_descriptor(cluster, tmp_path):
    import os

    out = tmp_path / "lab-cpu.toml"
    r = json.loads(
        cli("targets", "probe", "--tracker", cluster.tracker, "--key", "host", "--out", out, "--json").output
    )
    assert r["action"] == "written"
    limits = r["limits"]
    assert limits["kind"] == "llvm"  # no GPU on the loopback server
    # The device's TVM thread pool: LocalCluster gives its server every core.
    threads = int(os.environ.get("TVM_NUM_THREADS", os.cpu_count()))
    assert limits["num_cores"] == threads
    assert limits["total_memory_bytes"] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    desc = load_target(out)
    assert desc.name == "lab-cpu" and desc.kind == "llvm" and desc.output_format == "so"
    assert desc.host["num_cores"] == threads
    assert desc.memory_budget_bytes == limits["total_memory_bytes"] // 2
    # An existing file is checked: fine as written, an error once it promises too much.
    again = cli("targets", "probe", "--tracker", cluster.tracker, "--key", "host", "--out", out, "--json")
    assert json.loads(again.output)["action"] == "checked"
    out.write_text(out.read_text().replace(f"num_cores = {threads}", "num_cores = 4096"))
    bad = cli("targets", "probe", "--tracker", cluster.tracker, "--key", "host", "--out", out)
    assert bad.exit_code == 2 and "host.num_cores = 4096 exceeds" in bad.output
    # The failed probe's session ended with it, though the error (and its traceback) lives on
    # in `bad`: the device is free for the next job within the server's re-registration.
    t0 = time.monotonic()
    while list_devices(cluster.tracker)[0].free == 0 and time.monotonic() - t0 < 5:
        time.sleep(0.1)
    assert list_devices(cluster.tracker)[0].free == 1


def test_tune_one_kernel_end_to_end(cluster, built, tmp_path, cache_dir):
    """tune -> records in TVM's format -> a tuned compile with a new key that uses them."""
    from tvm.s_tir import meta_schedule as ms

    from mlcbuild.artifacts.compile import compile_recipe
    from mlcbuild.device.tune import extract_tasks, tune
    from mlcbuild.spec.recipe import load_recipe

    recipe = load_recipe(built["recipe"])
    host = load_target("host")
    tasks = extract_tasks(recipe, host)
    names = [t.name for t in tasks]
    # Batch-1 decode kernels only: 4 GEMVs (qkv, o, gate_up, down) + LM head, the norm, the
    # activation; where the host has an int8 dot product the GEMVs are our fixed int8 kernels
    # (quant/group_int8_gemv.py, already scheduled): nothing to tune there.
    from mlcbuild.compiler.target import int8_dot_isa, tvm_target
    from mlcbuild.kernels.int8_gemv import supports
    from mlcbuild.quant import get_scheme

    recipe_path = built["recipe"]
    if supports(get_scheme(recipe.scheme).dequantize_info(), int8_dot_isa(tvm_target(host))):
        # every q4 decode kernel is a fixed one here (int8 GEMVs with the norms, SwiGLU and
        # residual adds fused in): nothing to tune. Tune a q3 build (float GEMVs) instead.
        assert names == []
        recipe_path = recipe_file(tmp_path, CFG, "q3f16_1")
        recipe = load_recipe(recipe_path)
        tasks = extract_tasks(recipe, host)
        names = [t.name for t in tasks]
    gemvs = [n for n in names if n.startswith(TUNE_KERNEL_PREFIX)]
    assert len(gemvs) == 5 and any(n.startswith("rms_norm") for n in names)
    assert not any(n.startswith("gemv_int8") for n in names)
    kernel = next(n for n in names if n.startswith("rms_norm"))
    logs = tmp_path / "tuning_logs"
    records = logs / "host" / "database_tuning_record.json"
    res = tune(recipe, host, tracker=cluster.tracker, key="host", trials=4, tuning_root=logs,
               cache=Cache(cache_dir), cost_model="random", only=[kernel])  # fmt: skip
    (r,) = res
    assert r.name == kernel and r.trials == 4 and r.best_us > 0 and r.default_us > 0
    # The record is kept only if it beat the default schedule on the device by 5 %.
    assert r.status == ("tuned" if r.best_us * 1.05 <= r.default_us else "default-faster")
    assert records.is_file() == (r.status == "tuned")
    # A second run resumes: nothing measured again; --keep all merges the searched record anyway.
    again = cli("tune", recipe_path, "--target", "host", "--tracker", cluster.tracker, "--key", "host",
                "--trials", 4, "--kernel", kernel, "--cost-model", "random", "--keep", "all",
                "--tuning-logs", logs, "--cache-dir", cache_dir, "--json")  # fmt: skip
    assert [(x["name"], x["status"], x["trials"]) for x in json.loads(again.output)] == [(kernel, "resumed", 0)]
    # TVM's own JSONDatabase loads the records and finds the kernel's workload.
    db = ms.database.JSONDatabase(work_dir=str(logs / "host"), allow_missing=False)
    recs = db.get_all_tuning_records()
    assert len(recs) == 1
    assert db.has_workload(tasks[names.index(kernel)].mod)
    assert np.mean([float(x) for x in recs[0].run_secs]) * 1e6 == pytest.approx(r.best_us, rel=1e-6)
    # The tuned build: a new key, the kernel scheduled from the record.
    plain = compile_recipe(recipe, host, cache=Cache(cache_dir))
    tuned = compile_recipe(recipe, host, cache=Cache(cache_dir), tuning_root=logs)
    assert tuned.key != plain.key
    build = read_build(tuned.artifact).to_json()
    assert build["tuned_kernels"] == [kernel]
    assert build["inputs"]["tuning_records"]["digest"]
    assert read_build(plain.artifact).to_json()["tuned_kernels"] == []


def test_tune_refuses_android_without_ndk_and_unknown_keys(cluster, built, monkeypatch, cache_dir):
    from mlcbuild.device.tune import tune
    from mlcbuild.spec.recipe import load_recipe

    recipe = load_recipe(built["recipe"])
    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    with pytest.raises(MlcbuildError, match="TVM_NDK_CC is not set"):
        tune(recipe, load_target("android-cpu"), tracker=cluster.tracker, key="host", cache=Cache(cache_dir))
    with pytest.raises(DeviceError, match="no device with key 'pixel'"):
        tune(recipe, load_target("host"), tracker=cluster.tracker, key="pixel", cache=Cache(cache_dir))


def test_bench_local_and_over_rpc(cluster, built, tmp_path):
    """llama-bench records from both paths; the device's logits equal the host runtime's."""
    from pathlib import Path

    from mlcbuild.device.bench import DeviceModel
    from mlcbuild.device.rpc import local_session
    from mlcbuild.runtime.artifact import open_local

    args = [built["artifact"], "--weights", built["weights"], "--prompt-tokens", 40, "--gen-tokens", 8,
            "--repeat", 3, "--json"]  # fmt: skip
    local = json.loads(cli("bench", *args, "--local").stdout)
    # decode only, as llama-bench's -p 0: one tg record; nothing at all is a clear error
    common = [built["artifact"], "--weights", built["weights"], "--repeat", 1, "--json", "--local"]
    (tg_only,) = json.loads(cli("bench", *common, "--prompt-tokens", 0, "--gen-tokens", 4).stdout)
    assert (tg_only["n_prompt"], tg_only["n_gen"], len(tg_only["samples_ts"])) == (0, 4, 1)
    empty = cli("bench", *common, "--prompt-tokens", 0, "--gen-tokens", 0)
    assert empty.exit_code == 2 and "nothing to measure" in empty.output and "--gen-tokens" in empty.output
    remote = json.loads(cli("bench", *args, "--tracker", cluster.tracker, "--key", "host").stdout)
    for recs in (local, remote):
        pp, tg = recs
        assert (pp["n_prompt"], pp["n_gen"], tg["n_prompt"], tg["n_gen"]) == (40, 0, 0, 8)
        for rec in recs:
            assert len(rec["samples_ts"]) == len(rec["samples_ns"]) == 3
            assert rec["avg_ts"] == pytest.approx(np.mean(rec["samples_ts"]), rel=1e-3)
            tokens = rec["n_prompt"] + rec["n_gen"]
            assert rec["samples_ts"][0] == pytest.approx(tokens / (rec["samples_ns"][0] * 1e-9), rel=1e-3)
            assert rec["model_type"] == "llama q4f32_1" and rec["model_n_params"] > 0
        assert pp["ttft_ms"] >= pp["avg_ns"] / 3 / 1e6  # ttft includes the prefill of the last sample
    assert remote[0]["device"] == f"host@{cluster.tracker}"
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(local))
    b.write_text(json.dumps(remote))
    rows = json.loads(cli("bench", "--compare", a, b, "--json").stdout)
    assert [r["test"] for r in rows] == ["pp40", "tg8"]
    # B's tokens/s over A's, rounded to 4 decimals (a relative bound failed for a ratio of 0.0366)
    want = [round(rem["avg_ts"] / loc["avg_ts"], 4) for loc, rem in zip(local, remote, strict=True)]
    assert [r["ratio"] for r in rows] == want
    # Same numbers on the device as on the host runtime.
    host, _ = open_local(built["artifact"], built["weights"])
    ids = [1, 5, 9, 22, 7]
    want = host.prefill(ids)
    dev = DeviceModel(local_session(), Path(built["artifact"]), Path(built["weights"]))
    dev.prefill(np.asarray(ids))
    np.testing.assert_array_equal(dev.last_logits, want)


def test_server_killed_mid_bench_is_a_clear_error_within_seconds(built):
    from pathlib import Path

    from mlcbuild.device.bench import DeviceModel

    with LocalCluster(key="doomed") as c:
        sess = request_session(c.tracker, "doomed", wait_s=10)
        model = DeviceModel(sess, Path(built["artifact"]), Path(built["weights"]), key="doomed")
        model.decode(np.asarray([1, 2]))
        c.kill_servers()
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="the device 'doomed' went away during decode"):
            model.decode(np.asarray([3, 4, 5]))
        took = time.monotonic() - t0
        print(f"device loss detected in {took:.3f} s")
        assert took < 10


def test_records_merge_keeps_the_best_per_workload(tmp_path):
    from mlcbuild.artifacts.records import merge_records, read_database

    def db(d, workloads, records):
        d.mkdir()
        (d / "database_workload.json").write_text("".join(json.dumps(w) + "\n" for w in workloads))
        (d / "database_tuning_record.json").write_text("".join(json.dumps(r) + "\n" for r in records))
        return d

    w1, w2 = ["11", "modA"], ["22", "modB"]
    dest = db(tmp_path / "logs", [w1], [[0, [["t1"], [3e-6, 3e-6], {"kind": "llvm"}, []]]])
    run = db(tmp_path / "run", [w2, w1], [
        [0, [["t2"], [5e-6], {"kind": "llvm"}, []]],
        [1, [["t1-worse"], [4e-6], {"kind": "llvm"}, []]],
        [1, [["t1-better"], [1e-6, 2e-6], {"kind": "llvm"}, []]],
        [1, [["t1-failed"], [1e10], {"kind": "llvm"}, []]],
    ])  # fmt: skip
    res = merge_records(dest, run)
    assert res.added == ["22"] and [x[0] for x in res.improved] == ["11"] and res.kept == 2
    out = read_database(dest)
    assert out.workloads == [w1, w2]  # existing lines stay, new ones appended
    assert out.best[0][1][0] == ["t1-better"] and out.mean_s(0) == pytest.approx(1.5e-6)
    assert out.best[1][1][0] == ["t2"]
    lines = (dest / "database_tuning_record.json").read_text().splitlines()
    assert [json.loads(x)[0] for x in lines] == [0, 1]  # one record per workload, workload order
    (dest / "database_tuning_record.json").write_text("[0, [broken\n")
    with pytest.raises(MlcbuildError, match="line 1 is not JSON"):
        read_database(dest)


def test_ir_serialization_works_with_the_pinned_ffi():
    """MetaSchedule serializes every workload with ToJSONGraph; apache-tvm-ffi 0.1.15.post2
    segfaults there (an ABI break against apache-tvm 0.27.0.post1's libtvm.so)."""
    import importlib.metadata

    import tvm

    assert importlib.metadata.version("apache-tvm-ffi") == "0.1.14.post1"
    x = tvm.tirx.const(7, "int32")
    assert tvm.ir.load_json(tvm.ir.save_json(x)).value == 7


def test_android_shared_library_needs_the_ndk(built, tmp_path, monkeypatch):
    """The failed build leaves nothing behind (its own cache: the session's is shared with
    other pytest-xdist workers' builds in progress)."""
    from mlcbuild.artifacts.compile import compile_recipe
    from mlcbuild.spec.recipe import load_recipe

    monkeypatch.delenv("TVM_NDK_CC", raising=False)
    t = tmp_path / "android-so.toml"
    t.write_text(load_target("android-cpu").path.read_text().replace('format = "tar"', 'format = "so"'))
    cache = Cache(tmp_path / "cache")
    with pytest.raises(MlcbuildError, match="TVM_NDK_CC is not set"):
        compile_recipe(load_recipe(built["recipe"]), load_target(t), cache=cache)
    assert cache.entries() == [] and not list(cache.tmp.glob("*"))
