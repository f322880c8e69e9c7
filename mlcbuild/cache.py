"""The content-addressed build cache.

Layout under the root (``MLCBUILD_CACHE``, else the platform's user cache dir)::

    builds/<key>/          one finished build: library, mlc-chat-config.json,
                           build.json, manifest.json (sha256 of every other file)
    weights/<key>/         one finished weight conversion: tensor-cache.json, shards,
                           tokenizer files, convert.json, manifest.json
    tmp/<key>.<nonce>/     a build in progress; renamed into builds/ when complete
    locks/<key>.lock       held while a key is being built
    memo/                  small derived facts (toolchain versions) that spare
                           a cache hit from importing TVM

Builds are written in ``tmp/`` and renamed into ``builds/`` in one atomic step, under
a per-key file lock: two processes compiling one key build it once and both get the
entry; a build that fails or is killed leaves no entry (its tmp dir is swept by the
next build of that key and by ``gc``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import filelock
import platformdirs

from .errors import CacheError

MANIFEST = "manifest.json"


def content_key(obj: Any) -> str:
    """The one hashing function of every cache key: sha256 of canonical JSON.

    Canonical: sorted keys, no whitespace, UTF-8. Returns 64 hex characters.
    """
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_root() -> Path:
    """``$MLCBUILD_CACHE`` if set, else the platform user cache dir (``~/.cache/mlcbuild`` on Linux)."""
    env = os.environ.get("MLCBUILD_CACHE")
    return Path(env) if env else Path(platformdirs.user_cache_dir("mlcbuild"))


@dataclasses.dataclass
class Entry:
    """One finished cache entry."""

    key: str
    path: Path
    size_bytes: int
    created: float
    info: dict[str, Any]


class Cache:
    """A build cache rooted at ``root`` (default :func:`default_root`), backed by a remote
    store when ``remote`` (an fsspec URL; default ``$MLCBUILD_REMOTE_CACHE``) is set
    (:class:`mlcbuild.remote.RemoteCache`): a local miss looks there before building, and a
    local build is uploaded. ``fetched``: keys this object took from the remote."""

    def __init__(self, root: Path | str | None = None, remote: str | None = None):
        from .remote import RemoteCache

        remote = remote or os.environ.get("MLCBUILD_REMOTE_CACHE") or None
        self.remote = RemoteCache(remote) if remote else None
        self.fetched: set[str] = set()
        self.root = Path(root) if root is not None else default_root()
        self.builds = self.root / "builds"
        self.weights = self.root / "weights"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"
        self.memo = self.root / "memo"

    # ---- lookup ---------------------------------------------------------------------------
    def entry_path(self, key: str, kind: str = "builds") -> Path:
        """Where the entry of ``key`` lives; ``kind`` is ``"builds"`` or ``"weights"``."""
        return self.root / kind / key

    def lookup(self, key: str, kind: str = "builds") -> Path | None:
        """The entry's directory if ``key`` is built and has its manifest, else ``None``."""
        p = self.entry_path(key, kind)
        return p if (p / MANIFEST).is_file() else None

    # ---- building -------------------------------------------------------------------------
    @contextlib.contextmanager
    def building(self, key: str, kind: str = "builds", timeout_s: float = -1) -> Iterator[Path | None]:
        """Hold the key's lock; yield ``None`` if the entry exists (locally, or fetched and
        verified from the remote), else a fresh tmp dir to fill (then uploaded to the remote).

        On normal exit the tmp dir gets its manifest and is renamed into place
        atomically. On any exception (including KeyboardInterrupt) it is removed.

        Raises:
            CacheError: the cache root cannot be written.
        """
        try:
            for d in (self.root / kind, self.tmp, self.locks):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(
                f"cannot create the build cache: {e}", path=self.root, fix="set MLCBUILD_CACHE to a writable directory"
            ) from e
        with filelock.FileLock(str(self.locks / f"{key}.lock"), timeout=timeout_s):
            if self.lookup(key, kind) is not None:
                yield None
                return
            for stale in self.tmp.glob(f"{key}.*"):
                shutil.rmtree(stale, ignore_errors=True)
            partial = self.entry_path(key, kind)
            if partial.exists():  # an entry without manifest: never complete, never served
                shutil.rmtree(partial, ignore_errors=True)
            work = self.tmp / f"{key}.{uuid.uuid4().hex[:12]}"
            work.mkdir()
            try:
                if self.remote is not None and self.remote.fetch(key, kind, work):  # verified download
                    os.rename(work, self.entry_path(key, kind))
                    self.fetched.add(key)
                    yield None
                    return
                yield work
                write_manifest(work)
                os.rename(work, self.entry_path(key, kind))
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
            if self.remote is not None:
                self.remote.upload(key, kind, self.entry_path(key, kind))

    # ---- maintenance ----------------------------------------------------------------------
    def entries(self, kind: str = "builds") -> list[Entry]:
        """All finished entries of a kind, oldest first."""
        out = []
        base = self.root / kind
        if not base.is_dir():
            return out
        for p in base.iterdir():
            if not (p / MANIFEST).is_file():
                continue
            try:
                info = json.loads((p / ("build.json" if kind == "builds" else "convert.json")).read_text())
            except (OSError, ValueError):
                info = {}
            size = sum(f.stat().st_size for f in p.iterdir() if f.is_file())
            out.append(Entry(key=p.name, path=p, size_bytes=size, created=(p / MANIFEST).stat().st_mtime, info=info))
        return sorted(out, key=lambda e: e.created)

    def verify(self, kind: str = "builds") -> dict[str, list[str]]:
        """Re-hash every entry of a kind against its manifest.

        Returns:
            ``key -> [problems]`` for every entry (an empty list means intact):
            a missing, extra or changed file, or an unreadable manifest.
        """
        report: dict[str, list[str]] = {}
        base = self.root / kind
        if not base.is_dir():
            return report
        for p in sorted(base.iterdir()):
            report[p.name] = verify_dir(p)
        return report

    def gc(self, *, older_than_s: float | None = None, corrupt: bool = True) -> list[str]:
        """Remove what should not be served or kept.

        Removes: unlocked tmp dirs (builds that died), entries without a manifest,
        corrupt entries (``corrupt=True``), and entries older than ``older_than_s``.

        Returns:
            descriptions of what was removed.
        """
        removed = []
        if self.tmp.is_dir():
            for t in self.tmp.iterdir():
                key = t.name.split(".")[0]
                lock = filelock.FileLock(str(self.locks / f"{key}.lock"), timeout=0)
                try:
                    with lock:
                        shutil.rmtree(t, ignore_errors=True)
                        removed.append(f"tmp/{t.name} (unfinished build)")
                except filelock.Timeout:
                    pass  # being built now
        now = time.time()
        for kind in ("builds", "weights"):
            for key, problems in self.verify(kind).items():
                p = self.entry_path(key, kind)
                reason = None
                if problems and corrupt:
                    reason = "corrupt: " + "; ".join(problems)
                elif (
                    older_than_s is not None
                    and (p / MANIFEST).is_file()
                    and now - (p / MANIFEST).stat().st_mtime > older_than_s
                ):
                    reason = "older than the limit"
                if reason:
                    with filelock.FileLock(str(self.locks / f"{key}.lock")):
                        shutil.rmtree(p, ignore_errors=True)
                    removed.append(f"{kind}/{key} ({reason})")
        return removed


def copy_entry(entry: Path, out: Path | None) -> Path:
    """Copy an entry's files to ``out`` (created if needed); returns ``out``, or ``entry`` when ``out`` is None."""
    if out is None:
        return entry
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in entry.iterdir():
        if f.is_file():
            shutil.copy2(f, out / f.name)
    return out


def write_manifest(directory: Path) -> None:
    """Write ``manifest.json``: sha256 and size of every other file in ``directory``."""
    files = {
        f.name: {"sha256": file_sha256(f), "size": f.stat().st_size}
        for f in sorted(directory.iterdir())
        if f.is_file() and f.name != MANIFEST
    }
    (directory / MANIFEST).write_text(json.dumps({"files": files}, indent=1, sort_keys=True))


def verify_dir(directory: Path) -> list[str]:
    """Problems of one entry against its manifest (empty when intact)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError):
        return ["manifest.json missing or unreadable (incomplete entry)"]
    problems = []
    present = {f.name for f in directory.iterdir() if f.is_file() and f.name != MANIFEST}
    for name, meta in manifest.items():
        f = directory / name
        if not f.is_file():
            problems.append(f"{name} missing")
        elif file_sha256(f) != meta["sha256"]:
            problems.append(f"{name} changed (sha256 mismatch)")
    for name in sorted(present - set(manifest)):
        problems.append(f"{name} not in manifest")
    return problems
