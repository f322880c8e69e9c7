"""Packages for app teams: compiled libraries, weights, an app config and a manifest, and
their verification.

``package`` builds (or takes from the cache) every model of a list for one target and writes::

    dist/
      lib/libmodel_android.a     # Android targets: every model's system library in one archive
      lib/libmodel_iphone.a      # iOS targets (likewise)
      lib/<model_id>.so          # other targets: one loadable library per model
      <model_id>/                # bundled weights (tensor-cache.json, shards, tokenizer, mlc-chat-config.json)
      mlc-app-config.json        # model ids, library prefixes/files, weight locations, memory estimates
      manifest.json              # sha256 of every file, the ABI stamp, the build and weights keys

in the spirit of MLC-LLM's ``mlc_llm package`` (``mlc-package-config.json`` in,
``mlc-app-config.json`` out). ``verify`` re-hashes every file, finds missing and unlisted
files, and checks each library's ABI stamp (:mod:`mlcbuild.stamp`) and each model's
system-library prefix in the archive.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable

from .cache import Cache, file_sha256
from .errors import MlcbuildError
from .target import TargetDescriptor

MANIFEST = "manifest.json"
APP_CONFIG = "mlc-app-config.json"


@dataclasses.dataclass
class PackageModel:
    """One model of a package.

    Attributes:
        recipe: the recipe file.
        weights: a checkpoint directory to convert and bundle, or ``None``.
        weights_url: where the app downloads converted weights instead (not bundled).
        model_id: the app's name for the model (default: the recipe's model name).
    """

    recipe: Path
    weights: Path | None = None
    weights_url: str | None = None
    model_id: str | None = None


def read_package_config(path: Path) -> tuple[str | None, list[PackageModel]]:
    """A package config (TOML or JSON): ``target`` (optional) and ``[[models]]`` with ``recipe``,
    and optionally ``weights`` (a checkpoint to bundle), ``weights_url``, ``model_id``; paths
    are relative to the file.

    Raises:
        MlcbuildError: unreadable file, no models, or an unknown key.
    """
    import tomllib

    path = Path(path)
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as e:
        raise MlcbuildError(f"cannot read the package config: {e}", path=path, fix="write TOML or JSON") from e
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise MlcbuildError("the package config lists no models", path=path, fix='add [[models]] with recipe = "..."')
    allowed = {"recipe", "weights", "weights_url", "model_id"}
    out = []
    for i, m in enumerate(models):
        unknown = set(m) - allowed
        if unknown or "recipe" not in m:
            raise MlcbuildError(
                f"models[{i}]: " + (f"unknown keys {sorted(unknown)}" if unknown else "no recipe"),
                path=path,
                fix=f"each model has recipe and optionally {', '.join(sorted(allowed - {'recipe'}))}",
            )
        rel = lambda p: (path.parent / p).resolve() if p is not None else None  # noqa: E731
        out.append(PackageModel(rel(m["recipe"]), rel(m.get("weights")), m.get("weights_url"), m.get("model_id")))
    return data.get("target"), out


def platform_of(desc: TargetDescriptor) -> str:
    """``"android"``, ``"iphone"`` (static system libraries merged into ``libmodel_<p>.a``) or
    ``"so"`` (one loadable library per model), from the descriptor's output form and host triple."""
    if desc.output_format != "tar":
        return "so"
    triple = desc.data().get("host", {}).get("mtriple", "")
    return "iphone" if "apple" in triple else "android"


def _archiver() -> str:
    tool = shutil.which("llvm-ar") or shutil.which("ar")
    if tool is None:
        raise MlcbuildError(
            "no archiver (llvm-ar or ar) on PATH", fix="install binutils or llvm (apt install binutils)"
        )
    return tool


def merge_static_libraries(libs: list[tuple[str, Path]], out: Path) -> None:
    """Merge gzipped tars of object files (TVM's system libraries), one per model prefix, into
    one static archive ``out``; members are renamed ``<prefix><member>`` so models never clash.

    Raises:
        MlcbuildError: no archiver, or a library that is not such a tar.
    """
    with tempfile.TemporaryDirectory() as tmp:
        objects = []
        for prefix, lib in libs:
            try:
                with tarfile.open(lib) as tf:
                    for m in tf.getmembers():
                        if m.isfile() and m.name.endswith(".o"):
                            dest = Path(tmp) / f"{prefix}{Path(m.name).name}"
                            dest.write_bytes(tf.extractfile(m).read())
                            objects.append(dest)
            except tarfile.TarError as e:
                raise MlcbuildError(f"not a system library tar: {e}", path=lib, fix="compile it again") from e
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        subprocess.run([_archiver(), "rcs", str(out), *map(str, objects)], check=True, capture_output=True)


def prefix_present(archive_bytes: bytes, prefix: str) -> bool:
    """Whether a model's system-library prefix registered its library blob in the archive."""
    return f"{prefix}__tvm_ffi__library_bin".encode() in archive_bytes


def temporary_bytes(recipe) -> int:
    """Estimated bytes of temporary buffers: one prefill chunk's activations live in one
    decoder layer (hidden in/out/residual, q/k/v, the gated MLP's two intermediates) plus the
    float32 logits of one row. A formula, not a measurement."""
    m, b = recipe.model_config, recipe.build
    act = 2 if "f16" in recipe.scheme else 4
    qkv = (m.num_attention_heads + 2 * m.num_key_value_heads) * m.head_dim
    per_token = 3 * m.hidden_size + qkv + 3 * m.intermediate_size
    return int(b.prefill_chunk_size * per_token * act + m.vocab_size * 4 * b.max_batch_size)


def package(
    models: list[PackageModel],
    desc: TargetDescriptor,
    out: Path,
    cache: Cache | None = None,
    on_model: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Build every model for ``desc`` (through the cache) and write the package into ``out``.

    Returns:
        the manifest (also ``out/manifest.json``).
    Raises:
        MlcbuildError: a recipe, conversion or build error; two models with one id or
            library prefix; a prefix missing from the merged archive. ``out`` is written into
            a temporary directory first and replaced only when complete.
    """
    from .compile import compile_recipe
    from .convert import convert_weights
    from .recipe import load_recipe
    from .stamp import read_library_stamp

    cache = cache or Cache()
    out = Path(out)
    plat = platform_of(desc)
    work = Path(tempfile.mkdtemp(prefix=".mlcbuild-package-", dir=out.parent if out.parent.exists() else None))
    try:
        entries, libs, stamp = [], [], None
        for pm in models:
            recipe = load_recipe(pm.recipe)
            model_id = pm.model_id or re.sub(r"[^0-9A-Za-z._-]+", "-", recipe.name)
            if any(e["model_id"] == model_id for e in entries):
                raise MlcbuildError(f"two models named {model_id!r}", path=pm.recipe, fix="give one a model_id")
            if on_model:
                on_model(model_id, "compile")
            res = compile_recipe(recipe, desc, cache=cache)
            build = json.loads((res.artifact / "build.json").read_text())
            lib = res.artifact / build["library"]["file"]
            stamp = stamp or read_library_stamp(lib)
            entry: dict[str, Any] = {"model_id": model_id, "recipe": recipe.name, "build_key": res.key}
            if plat == "so":
                dest = work / "lib" / f"{model_id}.so"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(lib, dest)
                entry["model_lib"] = f"lib/{dest.name}"
            else:
                prefix = build["library"]["system_lib_prefix"]
                if any(e.get("model_lib") == prefix for e in entries):
                    raise MlcbuildError(
                        f"two models share the system-lib prefix {prefix!r}",
                        path=pm.recipe,
                        fix="set build.system_lib_prefix in one recipe",
                    )
                libs.append((prefix, lib))
                entry["model_lib"] = prefix
            if pm.weights is not None:
                if on_model:
                    on_model(model_id, "convert")
                conv = convert_weights(recipe, pm.weights, cache=cache)
                shutil.copytree(conv.weights, work / model_id)
                entry["model_path"], entry["weights_key"] = model_id, conv.key
            elif pm.weights_url:
                entry["model_url"] = pm.weights_url
            mem = build["memory"]
            tmp_bytes = temporary_bytes(recipe)
            entry["memory"] = {
                "params_bytes": mem["params_bytes"],
                "kv_cache_bytes": mem["kv_cache_bytes"],
                "temporary_bytes_estimate": tmp_bytes,
            }
            entry["estimated_vram_bytes"] = mem["params_bytes"] + mem["kv_cache_bytes"] + tmp_bytes
            entries.append(entry)
        if libs:
            archive = work / "lib" / f"libmodel_{plat}.a"
            merge_static_libraries(libs, archive)
            data = archive.read_bytes()
            missing = [p for p, _ in libs if not prefix_present(data, p)]
            if missing:
                raise MlcbuildError(f"system-lib prefixes {missing} missing from the archive", path=archive)
        app = {"target": desc.name, "platform": plat, "model_list": entries}
        (work / APP_CONFIG).write_text(json.dumps(app, indent=2) + "\n")
        files = {p.relative_to(work).as_posix(): file_sha256(p) for p in sorted(work.rglob("*")) if p.is_file()}
        manifest = {
            "format": "mlcbuild-package/1",
            "target": desc.name,
            "platform": plat,
            "abi_stamp": stamp,
            "models": [{k: e[k] for k in ("model_id", "model_lib", "build_key") if k in e}
                       | ({"weights_key": e["weights_key"]} if "weights_key" in e else {}) for e in entries],
            "libraries": sorted(f for f in files if f.startswith("lib/")),
            "files": files,
        }  # fmt: skip
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
        return manifest
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def verify(dist: Path) -> list[str]:
    """Problems found in a package directory, each naming its file; empty when it verifies.

    Checks: ``manifest.json`` readable; every listed file present with its sha256; no file
    that the manifest does not list; every library's ABI stamp equal to the manifest's; each
    model's system-library prefix present in the merged archive.
    """
    from .stamp import read_library_stamp

    dist = Path(dist)
    try:
        manifest = json.loads((dist / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return [f"{dist / MANIFEST}: unreadable manifest ({e})"]
    problems = []
    files = manifest.get("files", {})
    for rel, sha in files.items():
        p = dist / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif file_sha256(p) != sha:
            problems.append(f"{rel}: sha256 differs from the manifest (modified or corrupt)")
    for p in sorted(dist.rglob("*")):
        rel = p.relative_to(dist).as_posix()
        if p.is_file() and rel != MANIFEST and rel not in files:
            problems.append(f"{rel}: not in the manifest (foreign file)")
    for rel in manifest.get("libraries", []):
        p = dist / rel
        if not p.is_file():
            continue
        stamp = read_library_stamp(p)
        if stamp != manifest.get("abi_stamp"):
            problems.append(f"{rel}: ABI stamp {stamp} differs from the package's {manifest.get('abi_stamp')}")
        if p.suffix == ".a":
            data = p.read_bytes()
            for m in manifest.get("models", []):
                if not prefix_present(data, m["model_lib"]):
                    problems.append(f"{rel}: system-lib prefix {m['model_lib']!r} of {m['model_id']} not found")
    return problems
