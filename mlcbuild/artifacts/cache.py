"""The content-addressed build cache.

Layout under the root (``MLCBUILD_CACHE``, else the platform's user cache dir)::

    builds/<key>/          one finished build: library, mlc-chat-config.json,
                           build.json, manifest.json (sha256 of every other file)
    weights/<key>/         one finished weight conversion: tensor-cache.json, shards,
                           tokenizer files, convert.json, manifest.json
    tmp/<key>.<nonce>/     a build in progress; renamed into builds/ when complete
    locks/<key>.lock       held while a key is being built (``<key>.owner``: the holder's pid)
    memo/                  small derived facts (toolchain versions) that spare
                           a cache hit from importing TVM; ``memo/verified/``: each
                           entry file's size, mtime and inode when its sha256 last matched
    quarantine/<kind>/     entries whose files stopped matching their manifest (kept for
                           inspection, never served; ``cache gc`` removes them)

Builds are written in ``tmp/`` and renamed into ``builds/`` in one atomic step, under
a per-key file lock: two processes compiling one key build it once and both get the
entry; a build that fails or is killed leaves no entry (its tmp dir is swept by the
next build of that key and by ``gc``). Every file and the directory are fsynced before the
rename that publishes an entry, so a power cut cannot publish an entry with empty files.

A hit is served only after the entry's files match its manifest (:func:`check_entry`:
names, sizes, sha256, and the key recorded inside ``build.json``/``convert.json``); the
sha256 is recomputed only when a file's size, mtime or inode changed since it last matched.
An entry that does not match is moved to ``quarantine/`` with a warning and built again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import filelock
import platformdirs

from mlcbuild.artifacts.info import BUILD_FILE, WEIGHTS_FILE, BuildInfo, WeightsInfo, read_info
from mlcbuild.errors import CacheError, MlcbuildError

MANIFEST = "manifest.json"
INFO_FILES = {"builds": BUILD_FILE, "weights": WEIGHTS_FILE}  # each records its entry's key
DEFAULT_LOCK_TIMEOUT_S = 1800.0  # a cold 3B build takes ~15 s, a calibrated conversion minutes
log = logging.getLogger("mlcbuild.artifacts.cache")


class CacheCorruptError(CacheError):
    """A cache entry's files do not match its manifest (changed, missing, extra, or an
    entry of another key): it is quarantined and built again, never served."""


class LockTimeout(CacheError):
    """Another process held a key's build lock for longer than the lock timeout."""


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
    info: BuildInfo | WeightsInfo | None  # None: its record is unreadable

    def describe(self) -> dict[str, Any]:
        """``{"model", "scheme", "target"}`` of the entry (``None`` where unknown; weights have no target)."""
        if isinstance(self.info, BuildInfo):
            model = self.info.recipe.get("model", {}).get("name")
            return {"model": model, "scheme": self.info.scheme, "target": self.info.target_name}
        if isinstance(self.info, WeightsInfo):
            return {"model": Path(self.info.source_dir or "?").name, "scheme": self.info.scheme, "target": None}
        return {"model": None, "scheme": None, "target": None}


@dataclasses.dataclass
class CacheResult:
    """What ``compile``/``convert`` did: the entry's key (64 hex chars), ``"hit"``, ``"miss"``
    or ``"remote"``, and the wall time of the whole call (s). Subclasses add the directory."""

    key: str
    cache: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """``{<directory field>: path, "key", "cache", "seconds"}``."""
        dirs = {k: str(v) for k, v in vars(self).items() if isinstance(v, Path)}
        return dirs | {"key": self.key, "cache": self.cache, "seconds": round(self.seconds, 3)}


class Cache:
    """A build cache rooted at ``root`` (default :func:`default_root`), backed by a remote
    store when ``remote`` (an fsspec URL; default ``$MLCBUILD_REMOTE_CACHE``) is set
    (:class:`mlcbuild.artifacts.remote.RemoteCache`): a local miss looks there before building, and a
    local build is uploaded. ``fetched``: keys this object took from the remote."""

    def __init__(self, root: Path | str | None = None, remote: str | None = None, lock_timeout_s: float | None = None):
        from mlcbuild.artifacts.remote import RemoteCache

        remote = remote or os.environ.get("MLCBUILD_REMOTE_CACHE") or None
        self.remote = RemoteCache(remote) if remote else None
        self.fetched: set[str] = set()
        self.quarantined: list[str] = []  # "<kind>/<key>" moved aside by this object
        self.root = Path(root) if root is not None else default_root()
        self.builds = self.root / "builds"
        self.weights = self.root / "weights"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"
        self.memo = self.root / "memo"
        self.quarantine = self.root / "quarantine"
        if lock_timeout_s is None:
            lock_timeout_s = float(os.environ.get("MLCBUILD_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT_S))
        self.lock_timeout_s = lock_timeout_s

    # ---- lookup ---------------------------------------------------------------------------
    def entry_path(self, key: str, kind: str = "builds") -> Path:
        """Where the entry of ``key`` lives; ``kind`` is ``"builds"`` or ``"weights"``."""
        return self.root / kind / key

    def lookup(self, key: str, kind: str = "builds") -> Path | None:
        """The entry's directory if ``key`` is built and its files match its manifest
        (:func:`check_entry`), else ``None``. :meth:`building` then quarantines an entry that
        does not match (under the key's lock) and builds it again.
        """
        p = self.entry_path(key, kind)
        if not (p / MANIFEST).is_file():
            return None
        return p if not check_entry(p, key, kind, self.memo / "verified") else None

    def _quarantine(self, p: Path, key: str, kind: str, problems: list[str]) -> None:
        error = CacheCorruptError(
            f"cache entry {kind}/{key[:16]} does not match its manifest: {'; '.join(problems)}",
            path=p,
            fix="nothing to do: it is moved to quarantine/ and built again",
        )
        dest = self.quarantine / kind / f"{key}.{time.strftime('%Y%m%dT%H%M%S')}.{uuid.uuid4().hex[:6]}"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(p, dest)
        except OSError:
            shutil.rmtree(p, ignore_errors=True)
            dest = None
        (self.memo / "verified" / f"{kind}-{key}.json").unlink(missing_ok=True)
        self.quarantined.append(f"{kind}/{key}")
        log.warning("%s (quarantined to %s); building it again", error.message, dest or "nowhere: removed")

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        """The key's build lock, waited for at most ``lock_timeout_s``; the holder's pid is
        written beside it (``<key>.owner``) so a waiter can name it.

        Raises:
            LockTimeout: another process held it past the timeout (its pid named, and
                whether that process is stopped).
        """
        lock = filelock.FileLock(str(self.locks / f"{key}.lock"))
        owner = self.locks / f"{key}.owner"
        deadline = time.monotonic() + self.lock_timeout_s
        warned = False
        while True:
            try:
                lock.acquire(timeout=min(5.0, max(0.0, deadline - time.monotonic())))
                break
            except filelock.Timeout:
                holder = _read_owner(owner)
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"the build of {key[:16]} has been locked by {holder} for over {self.lock_timeout_s:.0f} s",
                        path=self.locks / f"{key}.lock",
                        fix="wait for that process to finish, or stop it (a stopped process holds the lock "
                        "until it ends); set MLCBUILD_LOCK_TIMEOUT to wait longer",
                    ) from None
                if not warned:
                    log.warning("waiting for the build of %s held by %s", key[:16], holder)
                    warned = True
        try:
            owner.write_text(json.dumps({"pid": os.getpid(), "since": time.time()}))
            yield
        finally:
            owner.unlink(missing_ok=True)
            lock.release()

    # ---- building -------------------------------------------------------------------------
    @contextlib.contextmanager
    def building(self, key: str, kind: str = "builds") -> Iterator[Path | None]:
        """Hold the key's lock; yield ``None`` if the entry exists (locally, or fetched and
        verified from the remote), else a fresh tmp dir to fill (then uploaded to the remote).

        On normal exit the tmp dir gets its manifest and is renamed into place
        atomically. On any exception (including KeyboardInterrupt) it is removed.

        Raises:
            CacheError: the cache root cannot be written.
            LockTimeout: another process held the key's lock past ``lock_timeout_s``.
        """
        try:
            for d in (self.root / kind, self.tmp, self.locks):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(
                f"cannot create the build cache: {e}", path=self.root, fix="set MLCBUILD_CACHE to a writable directory"
            ) from e
        with self._lock(key):
            if self.lookup(key, kind) is not None:
                yield None
                return
            for stale in self.tmp.glob(f"{key}.*"):
                shutil.rmtree(stale, ignore_errors=True)
            partial = self.entry_path(key, kind)
            if (partial / MANIFEST).is_file():  # a published entry whose files no longer match
                self._quarantine(partial, key, kind, check_entry(partial, key, kind))
            elif partial.exists():  # an entry without manifest: never complete, never served
                shutil.rmtree(partial, ignore_errors=True)
            work = self.tmp / f"{key}.{uuid.uuid4().hex[:12]}"
            work.mkdir()
            try:
                if self.remote is not None and self.remote.fetch(key, kind, work):  # verified download
                    publish(work, self.entry_path(key, kind))
                    self.fetched.add(key)
                    yield None
                    return
                yield work
                write_manifest(work)
                publish(work, self.entry_path(key, kind))
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
                info = read_info(p, kind)
            except MlcbuildError:
                info = None
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
            report[p.name] = check_entry(p, p.name, kind)
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
        if self.quarantine.is_dir():
            for q in sorted(self.quarantine.glob("*/*")):
                shutil.rmtree(q, ignore_errors=True)
                removed.append(f"quarantine/{q.parent.name}/{q.name} (quarantined)")
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
                    with self._lock(key):
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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path) -> None:
    """Write ``manifest.json``: sha256 and size of every other file in ``directory``; every
    file, the manifest and the directory are fsynced (what :func:`publish` then renames is on disk)."""
    files = {}
    for f in sorted(directory.iterdir()):
        if f.is_file() and f.name != MANIFEST:
            _fsync(f)
            files[f.name] = {"sha256": file_sha256(f), "size": f.stat().st_size}
    (directory / MANIFEST).write_text(json.dumps({"files": files}, indent=1, sort_keys=True))
    _fsync(directory / MANIFEST)
    _fsync(directory)


def publish(work: Path, dest: Path) -> None:
    """Rename a finished directory into place and fsync its new parent (the rename is then durable)."""
    os.rename(work, dest)
    _fsync(dest.parent)


def _read_owner(owner: Path) -> str:
    """``"pid N (stopped)"`` from a lock's owner file, or ``"another process"``."""
    try:
        pid = int(json.loads(owner.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
    state = ""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        state = {"T": " (stopped)", "t": " (stopped by a debugger)", "Z": " (a zombie)"}.get(fields[0], "")
    except (OSError, IndexError):
        pass
    return f"pid {pid}{state}"


def _plain_name(name: str) -> bool:
    """A manifest name that stays inside its entry: one path component, not ``.``/``..``."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def check_entry(
    directory: Path, key: str | None = None, kind: str | None = None, memo: Path | None = None
) -> list[str]:
    """Problems of one cache entry (empty when intact): :func:`verify_dir`, plus, with
    ``key`` and ``kind``, the key recorded in its ``build.json``/``convert.json`` and (builds)
    the library's sha256 recorded there.

    ``memo`` (a directory): a file's sha256 is trusted when its size, mtime and inode equal
    those recorded there when it last matched; otherwise it is hashed again (and recorded).
    """
    problems = verify_dir(directory, memo / f"{kind}-{key}.json" if memo is not None and key else None)
    if problems or key is None or kind not in INFO_FILES:
        return problems
    try:
        info = read_info(directory, kind)
    except MlcbuildError:
        return [f"{INFO_FILES[kind]} missing or unreadable"]
    if info.key != key:
        return [f"{INFO_FILES[kind]} records the key {info.key[:16]}, not {key[:16]} (an entry of another key)"]
    if isinstance(info, BuildInfo):
        lib = info.library
        manifest = json.loads((directory / MANIFEST).read_text())["files"]
        if lib.file not in manifest:
            return [f"the library {lib.file!r} named by build.json is not in the manifest"]
        if manifest[lib.file]["sha256"] != lib.sha256:
            return [f"{lib.file}: sha256 differs from build.json's"]
    return problems


def verify_dir(directory: Path, memo_file: Path | None = None) -> list[str]:
    """Problems of one entry against its manifest (empty when intact): a name that leaves the
    entry, a symlink or non-file, a missing, changed (size or sha256) or unlisted file.

    ``memo_file``: sizes, mtimes and inodes of files whose sha256 matched before (see
    :func:`check_entry`); rewritten when a file had to be hashed.
    """
    try:
        manifest = json.loads((directory / MANIFEST).read_text())["files"]
        assert isinstance(manifest, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return ["manifest.json missing or unreadable (incomplete entry)"]
    memo: dict[str, list] = {}
    if memo_file is not None and memo_file.is_file():
        try:
            memo = json.loads(memo_file.read_text())
        except ValueError:
            memo = {}
    problems, seen = [], {}
    for name, meta in manifest.items():
        f = directory / name
        if not _plain_name(name):
            problems.append(f"{name!r}: a path that leaves the entry")
            continue
        if f.is_symlink() or not f.is_file():
            problems.append(f"{name} missing" if not f.is_symlink() else f"{name} is a symlink")
            continue
        st = f.stat()
        if not isinstance(meta, dict) or st.st_size != meta.get("size", st.st_size):
            problems.append(
                f"{name} changed (size {st.st_size} != {meta.get('size') if isinstance(meta, dict) else '?'})"
            )
            continue
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino, meta.get("sha256")]
        if memo.get(name) != stamp:
            if file_sha256(f) != meta.get("sha256"):
                problems.append(f"{name} changed (sha256 mismatch)")
                continue
        seen[name] = stamp
    for f in sorted(directory.iterdir()):
        if f.name != MANIFEST and f.name not in manifest:
            problems.append(f"{f.name} not in manifest")
    if memo_file is not None and not problems and seen != memo:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps(seen))
        tmp.replace(memo_file)
    return problems
