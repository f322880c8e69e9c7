"""``mlcbuild verify --mlc``: an artifact, converted weights or a package checked against what
MLC-LLM's engine and apps require (:mod:`mlcbuild.artifacts.mlc_contract`), each finding named
by file."""

from __future__ import annotations

import json
from pathlib import Path

from mlcbuild.artifacts.mlc_contract import (
    CONTRACT,
    Finding,
    check_artifact,
    check_chat_config,
    check_library,
    check_weights,
)
from mlcbuild.errors import MlcbuildError
from mlcbuild.ship.package import APP_CONFIG, BUNDLE, MANIFEST, inside, prefix_present


def check_package_mlc(dist: Path) -> list[Finding]:
    """A package: MLC's ``bundle/`` layout, ``mlc-app-config.json``'s fields, each model's
    system-library prefix (``model_lib`` + ``_``), the libraries' function tables and each
    bundled model's weights and chat config."""
    from mlcbuild.spec.target import load_target

    dist = Path(dist)
    manifest = json.loads((dist / MANIFEST).read_text())
    app_path = dist / APP_CONFIG
    if not app_path.is_file():
        return [Finding("missing", str(app_path), "no bundle/mlc-app-config.json (MLC's app projects read it there)")]
    try:
        entries = json.loads(app_path.read_text())["model_list"]
    except (ValueError, KeyError) as e:
        return [Finding("missing", str(app_path), f"unreadable model_list ({e})")]
    desc = load_target(manifest["target"])
    out: list[Finding] = []
    if manifest.get("platform") == "android" and not desc.is_gpu:
        out.append(Finding("missing", str(dist), f"{desc.name} is CPU-only: MLC's Android app runs OpenCL"))
    libs = [inside(dist, rel) for rel in manifest.get("libraries", [])]
    for lib in [p for p in libs if p is not None and p.is_file()]:
        out += check_library(lib, desc.kind)
    blobs = b"".join(p.read_bytes() for p in libs if p is not None and p.suffix == ".a" and p.is_file())
    where = str(app_path)
    for m in entries:
        mid = m.get("model_id")
        for key, typ in (("model_id", str), ("model_lib", str), ("model_url", str), ("estimated_vram_bytes", int)):
            if not isinstance(m.get(key), typ):
                out.append(Finding("missing", where, f"{mid}: {key} ({typ.__name__}) absent"))
        lib = m.get("model_lib")
        if blobs and isinstance(lib, str):
            if lib.endswith("_"):
                out.append(Finding("missing", where, f"{mid}: model_lib {lib!r} ends with '_' (the app adds one)"))
            elif not prefix_present(blobs, lib + "_"):
                out.append(Finding("missing", where, f"{mid}: no system library {lib + '_'!r} in the archive"))
        url = m.get("model_url")
        if isinstance(url, str) and not url.startswith("https://huggingface.co/"):
            out.append(Finding("note", where, f"{mid}: model_url {url!r} is not a Hugging Face URL"))
        elif isinstance(url, str) and url.startswith("https://huggingface.co/local/"):
            out.append(Finding("note", where, f"{mid}: model_url is a placeholder (bundled weights, no download)"))
        if isinstance(m.get("model_path"), str):
            out += check_weights(dist / BUNDLE / m["model_path"])
    return out


def verify_mlc(path: Path) -> list[Finding]:
    """An artifact (``build.json``), converted weights (``tensor-cache.json``) or a package
    (``manifest.json``) against MLC's contract (:data:`CONTRACT`).

    Raises:
        MlcbuildError: none of those.
    """
    p = Path(path)
    if (p / "build.json").is_file():
        return check_artifact(p)
    if (p / "tensor-cache.json").is_file():
        return check_weights(p)
    if (p / MANIFEST).is_file():
        return check_package_mlc(p)
    raise MlcbuildError(
        "not an artifact, converted weights or a package (no build.json, tensor-cache.json or manifest.json)",
        path=p,
        fix="pass a directory `mlcbuild compile`, `convert` or `package` wrote",
    )


__all__ = ["CONTRACT", "check_chat_config", "check_package_mlc", "verify_mlc"]
