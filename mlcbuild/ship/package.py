"""Packages for app teams: compiled libraries, weights, an app config and a manifest, and
their verification.

``package`` builds (or takes from the cache) every model of a list for one target and writes::

    dist/
      lib/libmodel_android.a     # Android targets: every model's system library in one archive
      lib/libmodel_iphone.a      # iOS targets (likewise)
      lib/<model_id>.so          # other targets: one loadable library per model
      bundle/mlc-app-config.json # model ids, libraries, weight locations, memory estimates
      bundle/<model_id>/         # bundled weights (tensor-cache.json, shards, tokenizer, mlc-chat-config.json)
      .mlcbuild-package          # marks the directory as ours: a later package may replace it
      manifest.json              # sha256 of every file, the ABI stamp, the build and weights keys

MLC-LLM's ``mlc_llm package`` layout (``python/mlc_llm/interface/package.py``: ``lib/`` and
``bundle/``), which its iOS and Android app projects copy as they are. ``mlc-app-config.json``
has MLC's fields: ``model_id``; ``model_lib`` (a system library's prefix without its trailing
``_``: the app loads ``SystemLib(model_lib + "_")``; a ``.so`` path on other targets);
``model_url`` always, in the Hugging Face form the apps read (the Android app dereferences it
for bundled models too); ``model_path`` (under ``bundle/``) for bundled weights;
``estimated_vram_bytes``. MLC's Android app runs its engine on OpenCL only: an Android
package of a CPU-only build is refused. ``mlc-package-config.json`` (MLC's input) is read too
(:func:`mlcbuild.ship.package_config.read_package_config`). ``verify`` re-hashes every file, finds missing and unlisted
files, and checks each library's ABI stamp (:mod:`mlcbuild.artifacts.stamp`) and each model's
system-library prefix in the archive.

``package`` never deletes what it did not write: ``--out`` must be new, empty, or a previous
package of ours (its marker present and every file in it listed in its manifest); the
package is written into a temporary directory beside it and renamed in when complete.
Every name taken from input (model ids) must be one plain path component. ``verify``
resolves every manifest path inside the package and refuses anything else and symlinks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable

from mlcbuild.artifacts.cache import Cache, file_sha256
from mlcbuild.artifacts.info import read_build
from mlcbuild.errors import MlcbuildError
from mlcbuild.ship.package_config import _MODEL_ID, PackageModel, check_model_id, read_package_config

__all__ = ["PackageModel", "package", "read_package_config", "verify"]
from mlcbuild.spec.target import TargetDescriptor

MANIFEST = "manifest.json"
BUNDLE = "bundle"
APP_CONFIG = f"{BUNDLE}/mlc-app-config.json"
MARKER = ".mlcbuild-package"
MARKER_TEXT = "mlcbuild-package/1\n"


def _walk(root: Path) -> tuple[list[str], list[str]]:
    """``(files, symlinks)`` under ``root`` as POSIX paths relative to it; symlinks are
    listed, never followed."""
    files, links = [], []
    for d, dirs, names in os.walk(root, followlinks=False):
        for n in [*dirs, *names]:
            p = Path(d) / n
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                links.append(rel)
            elif n in names:
                files.append(rel)
    return sorted(files), sorted(links)


def inside(root: Path, rel: str) -> Path | None:
    """``root / rel`` if ``rel`` is a relative path that stays inside ``root`` through no
    symlink, else ``None``."""
    if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "\0" in rel:
        return None
    parts = Path(rel).parts
    if any(p in ("..", ".") for p in parts) or Path(rel).is_absolute():
        return None
    p = Path(root) / rel
    try:
        p.resolve(strict=False).relative_to(Path(root).resolve())
    except ValueError:
        return None
    cur = Path(root)
    for part in parts:
        cur = cur / part
        if cur.is_symlink():
            return None
    return p


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that ``package`` could not replace without deleting what it did not write.

    Raises:
        MlcbuildError: the current directory or one above it, a file, or a non-empty
            directory that is not a package of ours (or holds files its manifest lacks).
    """
    real = out.resolve()
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise MlcbuildError(
            "--out is the current directory or one above it; a package replaces its directory whole",
            path=out,
            fix="give a new directory, e.g. --out dist",
        )
    if not out.exists():
        return
    if not out.is_dir() or out.is_symlink():
        raise MlcbuildError("--out exists and is not a directory", path=out, fix="give a new directory")
    if not any(out.iterdir()):
        return
    if not (out / MARKER).is_file():
        raise MlcbuildError(
            "--out is a non-empty directory that is not an mlcbuild package; nothing was written or deleted",
            path=out,
            fix="give a new or empty directory (a previous package of mlcbuild is replaced)",
        )
    try:
        listed = set(json.loads((out / MANIFEST).read_text())["files"]) | {MANIFEST}
    except (OSError, ValueError, KeyError, TypeError):
        listed = set()
    files, links = _walk(out)
    foreign = sorted(set(files) - listed) + links
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise MlcbuildError(
            f"--out is a previous package holding files it did not write ({shown}); nothing was written or deleted",
            path=out,
            fix="move those files out of it, or give another --out",
        )


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


def model_url(weights_url: str | None, source: str, model_id: str) -> str:
    """``model_url`` of an app config entry: ``weights_url`` if given, else the recipe's source
    as a Hugging Face URL (``org/name``, ``hf://org/name``, ``HF://...``: MLC's package writes
    ``https://huggingface.co/org/name``), else ``https://huggingface.co/local/<model_id>``, a
    placeholder for bundled weights the app never downloads (``verify --mlc`` notes it)."""
    if weights_url:
        return weights_url
    hub = re.fullmatch(r"(?:hf://|HF://)?([A-Za-z0-9][\w.-]*/[\w.-]+)", source)
    if hub and not Path(source).exists():
        return f"https://huggingface.co/{hub.group(1)}"
    return f"https://huggingface.co/local/{model_id}"


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
    from mlcbuild.artifacts.compile import compile_recipe
    from mlcbuild.artifacts.convert import convert_weights
    from mlcbuild.artifacts.stamp import read_library_stamp
    from mlcbuild.spec.recipe import load_recipe

    cache = cache or Cache()
    out = Path(out).absolute()
    _check_out(out)
    plat = platform_of(desc)
    if plat == "android" and not desc.is_gpu:
        raise MlcbuildError(
            f"{desc.name} is a CPU-only Android target: MLC-LLM's Android app (mlc4j) runs its engine on OpenCL, "
            "so its library would not load there",
            path=desc.path,
            fix="package for an Android GPU target (s24, pixel8), or ship this target's lib.tar from "
            "`mlcbuild compile` with your own runtime",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".mlcbuild-package-", dir=out.parent))
    old = None
    try:
        entries, libs, stamp = [], [], None
        for pm in models:
            recipe = load_recipe(pm.recipe)
            model_id = check_model_id(
                pm.model_id or re.sub(r"[^0-9A-Za-z._-]+", "-", recipe.name).strip(".-") or "model",
                pm.config or pm.recipe,
            )
            if any(e["model_id"] == model_id for e in entries):
                raise MlcbuildError(f"two models named {model_id!r}", path=pm.recipe, fix="give one a model_id")
            if on_model:
                on_model(model_id, "compile")
            res = compile_recipe(recipe, desc, cache=cache)
            build = read_build(res.artifact)
            lib = res.artifact / build.library.file
            stamp = stamp or read_library_stamp(lib)
            entry: dict[str, Any] = {"model_id": model_id, "recipe": recipe.name, "build_key": res.key}
            if plat == "so":
                dest = work / "lib" / f"{model_id}.so"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(lib, dest)
                entry["model_lib"] = f"lib/{dest.name}"
            else:
                prefix = build.library.system_lib_prefix
                if any(e.get("model_lib") == prefix.removesuffix("_") for e in entries):
                    raise MlcbuildError(
                        f"two models share the system-lib prefix {prefix!r}",
                        path=pm.recipe,
                        fix="set build.system_lib_prefix in one recipe",
                    )
                libs.append((prefix, lib))
                entry["model_lib"] = prefix.removesuffix("_")  # the app adds the "_"
            if pm.weights is not None:
                if on_model:
                    on_model(model_id, "convert")
                conv = convert_weights(recipe, pm.weights, cache=cache)
                shutil.copytree(conv.weights, work / BUNDLE / model_id)
                entry["model_path"], entry["weights_key"] = model_id, conv.key
            entry["model_url"] = model_url(pm.weights_url, recipe.source, model_id)
            mem = build.memory
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
        (work / APP_CONFIG).parent.mkdir(parents=True, exist_ok=True)
        (work / APP_CONFIG).write_text(json.dumps(app, indent=2) + "\n")
        (work / MARKER).write_text(MARKER_TEXT)
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
        _check_out(out)  # again: the directory may have changed during the builds
        if out.exists() and any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=".mlcbuild-package-old-", dir=out.parent))
            out.rename(old / "package")
        elif out.exists():
            out.rmdir()
        work.rename(out)
        return manifest
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def verify(dist: Path) -> list[str]:
    """Problems found in a package directory, each naming its file; empty when it verifies.

    Checks: ``manifest.json`` readable; every listed path relative and inside the package
    (no ``..``, no absolute path, through no symlink: anything else is refused, never read);
    no symlink anywhere in it; every listed file present with its sha256; no file that the
    manifest does not list; every library's ABI stamp equal to the manifest's; each model's
    system-library prefix present in the merged archive; every library and weight directory
    that ``mlc-app-config.json`` names present and listed (its model ids plain names).
    """
    from mlcbuild.artifacts.stamp import read_library_stamp

    dist = Path(dist)
    try:
        manifest = json.loads((dist / MANIFEST).read_text())
        files = manifest["files"]
        assert isinstance(files, dict) and isinstance(manifest.get("models", []), list)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
        return [f"{dist / MANIFEST}: unreadable manifest ({e or 'no files table'})"]
    problems = []
    present, links = _walk(dist)
    problems += [f"{rel}: a symlink (refused: a package holds plain files only)" for rel in links]
    safe: dict[str, Path] = {}
    for rel, sha in files.items():
        p = inside(dist, rel)
        if p is None:
            problems.append(f"{rel}: a path outside the package (refused, not read)")
        elif not p.is_file() or p.is_symlink():
            problems.append(f"{rel}: missing")
        elif file_sha256(p) != sha:
            problems.append(f"{rel}: sha256 differs from the manifest (modified or corrupt)")
        else:
            safe[rel] = p
    for rel in present:
        if rel != MANIFEST and rel not in files:
            problems.append(f"{rel}: not in the manifest (foreign file)")
    for rel in manifest.get("libraries", []):
        if rel not in files:
            problems.append(f"{rel}: a library the manifest's files do not list")
            continue
        p = inside(dist, rel)  # a changed library is still read for its stamp (the likelier cause named)
        if p is None or not p.is_file():
            continue
        stamp = read_library_stamp(p)
        if stamp != manifest.get("abi_stamp"):
            problems.append(f"{rel}: ABI stamp {stamp} differs from the package's {manifest.get('abi_stamp')}")
        if p.suffix == ".a":
            data = p.read_bytes()
            for m in manifest.get("models", []):
                if not prefix_present(data, f"{m.get('model_lib')}_"):
                    problems.append(f"{rel}: system-lib prefix {m.get('model_lib')!r} of {m.get('model_id')} not found")
    problems += _verify_app_config(
        dist, manifest, {rel: p for rel in files if (p := inside(dist, rel)) and p.is_file()}
    )
    return problems


def _verify_app_config(dist: Path, manifest: dict, safe: dict[str, Path]) -> list[str]:
    """Problems of ``bundle/mlc-app-config.json``: each model's id a plain name, its ``model_lib``
    (a ``.so`` platform: a listed file) and ``model_path`` (listed files under ``bundle/<path>``) present.
    ``safe``: the listed files present inside the package (their hashes are checked apart)."""
    if APP_CONFIG not in safe:
        # listed but missing or changed: reported above
        return [] if APP_CONFIG in manifest["files"] else [f"{APP_CONFIG}: not in the package"]
    try:
        models = json.loads(safe[APP_CONFIG].read_text())["model_list"]
        assert isinstance(models, list) and all(isinstance(m, dict) for m in models)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return [f"{APP_CONFIG}: unreadable (no model_list)"]
    problems = []
    so = manifest.get("platform") == "so"
    for m in models:
        mid = m.get("model_id")
        if not isinstance(mid, str) or not _MODEL_ID.fullmatch(mid):
            problems.append(f"{APP_CONFIG}: model_id {mid!r} is not a plain name")
            continue
        lib = m.get("model_lib")
        if so and (not isinstance(lib, str) or lib not in safe):
            problems.append(f"{APP_CONFIG}: {mid}'s model_lib {lib!r} is not a file of the package")
        path = m.get("model_path")  # relative to bundle/
        if path is not None:
            full = f"{BUNDLE}/{path.rstrip('/')}" if isinstance(path, str) else None
            if full is None or inside(dist, full) is None:
                problems.append(f"{APP_CONFIG}: {mid}'s model_path {path!r} is outside the package")
            elif not any(rel.startswith(full + "/") for rel in safe):
                problems.append(f"{APP_CONFIG}: {mid}'s model_path {path!r} holds no file of the package")
            elif f"{full}/tensor-cache.json" not in safe:
                problems.append(f"{APP_CONFIG}: {mid}'s model_path {path!r} has no tensor-cache.json")
    return problems
