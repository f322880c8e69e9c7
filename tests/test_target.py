"""Target descriptors: shipped ones, validation, and backends this TVM cannot generate."""

from __future__ import annotations

import pytest

from mlcbuild.compiler.target import check_codegen, target_json
from mlcbuild.errors import TargetError
from mlcbuild.spec.target import list_targets, load_target, parse_target

EXPECTED = {"host", "s24", "pixel8", "iphone15pro", "android-cpu"}


def test_shipped_targets():
    names = {d.name for d in list_targets()}
    assert EXPECTED <= names
    s24 = load_target("s24")
    j = target_json(s24)
    assert j["kind"] == "opencl" and j["device"] == "adreno"
    assert j["max_threads_per_block"] == 512 and j["max_shared_memory_per_block"] == 32768
    assert j["host"]["mtriple"] == "aarch64-linux-android"
    assert set(j["host"]["mattr"]) == {"+neon", "+dotprod", "+i8mm", "+fullfp16"}
    assert s24.output_format == "tar" and s24.system_lib
    assert load_target("host").output_format == "so"
    ip = target_json(load_target("iphone15pro"))
    assert ip["kind"] == "metal" and ip["host"]["mtriple"] == "arm64-apple-ios"
    assert target_json(load_target("android-cpu"))["kind"] == "llvm"
    assert target_json(load_target("pixel8"))["device"] == "mali"


def test_every_target_states_limits_and_budget():
    for d in list_targets():
        assert d.memory_budget_bytes > 0
        if d.is_gpu:
            for k in ("max_threads_per_block", "max_shared_memory_per_block", "thread_warp_size"):
                assert k in d.device, (d.name, k)


def _vulkan(tmp_path):
    p = tmp_path / "vk.toml"
    p.write_text(
        """
[target]
name = "vk"
memory_budget_bytes = 1000
[device]
kind = "vulkan"
max_threads_per_block = 256
[host]
mtriple = "aarch64-linux-android"
[output]
format = "tar"
"""
    )
    return p


def test_vulkan_fails_at_once_with_what_to_install(tmp_path):
    desc = load_target(_vulkan(tmp_path))
    with pytest.raises(TargetError) as e:
        check_codegen(desc)
    msg = str(e.value)
    assert "vulkan" in msg and "USE_VULKAN" in msg and "vk.toml" in msg


def test_unknown_target_lists_known():
    with pytest.raises(TargetError) as e:
        load_target("galaxy-s99")
    assert "s24" in str(e.value) and "host" in str(e.value)


def test_unknown_key_and_kind():
    base = {
        "target": {"name": "x", "memory_budget_bytes": 1},
        "device": {"kind": "opencl"},
        "host": {"mtriple": "aarch64-linux-android"},
        "output": {"format": "tar"},
    }
    bad = {**base, "device": {"kind": "opencl", "max_thread_per_block": 3}}
    with pytest.raises(TargetError, match="device.max_thread_per_block"):
        parse_target(bad, "t.toml")
    with pytest.raises(TargetError, match="allowed: llvm"):
        parse_target({**base, "device": {"kind": "directx"}}, "t.toml")
    with pytest.raises(TargetError, match="output.format"):
        parse_target({**base, "output": {"format": "dylib"}}, "t.toml")


def test_shared_library_linking_per_triple(monkeypatch, tmp_path):
    """This machine links a .so with its own compiler, Linux on another architecture with that
    architecture's GNU cross compiler when it is on PATH, and refuses Apple (and a foreign
    Linux without the cross compiler), naming the fix."""
    import stat

    from mlcbuild.compiler.link import cross_linker, link_kind

    def desc(triple: str):
        return parse_target(
            {
                "target": {"name": "t", "memory_budget_bytes": 1 << 30},
                "device": {"kind": "llvm"},
                "host": {"mtriple": triple, "num_cores": 2},
                "output": {"format": "so"},
            }
        )

    assert link_kind(load_target("host")) == "cc"
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH: no cross compiler
    assert cross_linker("aarch64-linux-gnu") is None
    with pytest.raises(TargetError) as e:
        link_kind(desc("aarch64-linux-gnu"))
    assert "gcc-aarch64-linux-gnu" in e.value.fix
    gcc = tmp_path / "aarch64-linux-gnu-gcc"
    gcc.write_text("#!/bin/sh\n")
    gcc.chmod(gcc.stat().st_mode | stat.S_IEXEC)
    assert cross_linker("aarch64-linux-gnu") == str(gcc) and link_kind(desc("aarch64-linux-gnu")) == "cross"
    assert cross_linker("aarch64-linux-android") is None and cross_linker("arm64-apple-ios") is None
    with pytest.raises(TargetError):
        link_kind(desc("arm64-apple-ios"))
