"""A remote build cache shared by machines: any ``fsspec`` URL (a shared directory,
``s3://``, ``gs://``, an ``http(s)://`` mirror for read-only use).

Layout under the URL, per kind (``builds``, ``weights``)::

    <kind>/<key>.tar          the entry's files (manifest.json included), uncompressed tar
    <kind>/<key>.sha256       the tar's sha256, hex

A download is used only if the tar's sha256 equals the recorded one, it holds plain files
only, every file equals the entry's own ``manifest.json``, and the key recorded inside its
``build.json``/``convert.json`` is the key it was fetched for
(:func:`mlcbuild.artifacts.cache.check_entry`); otherwise it is rejected (logged) and the entry is
built locally and uploaded over the bad one. Uploads go tar first, digest last, so a
reader never sees a digest without its tar. Upload failures (a read-only mirror, a network
error) are logged and never fail a build.

Every remote operation is bounded (``timeout_s``, default ``$MLCBUILD_REMOTE_TIMEOUT`` or
30 s): a store that does not answer costs one timeout, is then skipped for the rest of the
process, and the warning says why. The filesystem is opened only when the remote is first
needed, so a local hit never touches it: an unknown scheme or a missing fsspec backend
(``s3fs`` for ``s3://``) is a :class:`~mlcbuild.errors.CacheError` on the first miss.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
import threading
from pathlib import Path
from typing import Any, Callable

from mlcbuild.errors import CacheError

log = logging.getLogger("mlcbuild.artifacts.remote")
DEFAULT_TIMEOUT_S = 30.0


def _reason(e: BaseException) -> str:
    """An exception as one line that is never empty (a bare ``TimeoutError`` prints as '')."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def bounded(fn: Callable[[], Any], timeout_s: float) -> Any:
    """``fn()`` in a daemon thread, waited for at most ``timeout_s`` seconds.

    Raises:
        TimeoutError: no result in time (the thread is left to finish or die on its own).
        Exception: whatever ``fn`` raised.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            box["error"] = e

    t = threading.Thread(target=run, daemon=True, name="mlcbuild-remote")
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise TimeoutError(f"no answer within {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class RemoteCache:
    """The remote store at ``url`` (``fsspec.core.url_to_fs``); ``http(s)://`` is read-only.

    Args:
        url: the store, e.g. ``/shared/mlcbuild``, ``s3://bucket/cache``, ``https://mirror``.
        timeout_s: the longest one remote operation may take, s.
    """

    def __init__(self, url: str, timeout_s: float | None = None):
        self.url = url.rstrip("/")
        self.read_only = self.url.startswith(("http://", "https://"))
        self.timeout_s = (
            float(os.environ.get("MLCBUILD_REMOTE_TIMEOUT", DEFAULT_TIMEOUT_S)) if timeout_s is None else timeout_s
        )
        self.rejected: list[str] = []  # keys whose remote entry failed verification
        self.down: str | None = None  # why the store is skipped for the rest of the process
        self._fs = None
        self.root = ""

    @property
    def fs(self):
        """The fsspec filesystem, opened on first use.

        Raises:
            CacheError: an unknown scheme or a scheme whose fsspec package is not installed.
        """
        if self._fs is None:
            import fsspec

            kwargs: dict[str, Any] = {}
            if self.read_only:
                import aiohttp

                kwargs["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(total=self.timeout_s)}
            try:
                self._fs, self.root = fsspec.core.url_to_fs(self.url, **kwargs)
            except (ImportError, ValueError) as e:
                raise CacheError(
                    f"the remote cache {self.url} cannot be opened: {_reason(e)}",
                    fix="install the filesystem's package (s3fs for s3://, gcsfs for gs://), or fix --remote / "
                    "MLCBUILD_REMOTE_CACHE (a directory, s3://, gs://, http(s)://)",
                ) from e
        return self._fs

    def _path(self, key: str, kind: str, ext: str) -> str:
        return f"{self.root}/{kind}/{key}.{ext}"

    def fetch(self, key: str, kind: str, dest: Path) -> bool:
        """Download ``key``'s entry into the empty directory ``dest``; ``True`` if it was there
        and verified, ``False`` if absent, unreachable or rejected (``dest`` then emptied).

        Raises:
            CacheError: the store's URL cannot be opened (:attr:`fs`).
        """
        from mlcbuild.artifacts.cache import check_entry

        if self.down is not None:
            return False
        fs = self.fs
        try:
            want = bounded(lambda: fs.cat_file(self._path(key, kind, "sha256")), self.timeout_s).decode().strip()
            blob = bounded(lambda: fs.cat_file(self._path(key, kind, "tar")), self.timeout_s)
        except FileNotFoundError:
            return False
        except Exception as e:  # an unreachable store is a miss, not a failed build
            self._mark_down(e, f"unreadable for {key[:16]}")
            return False
        if hashlib.sha256(blob).hexdigest() != want:
            return self._reject(key, "its sha256 differs from the recorded digest", dest)
        try:
            with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
                members = tf.getmembers()
                if any(not m.isfile() or "/" in m.name or m.name.startswith(".") for m in members):
                    return self._reject(key, "it holds paths other than plain files", dest)
                tf.extractall(dest, filter="data")
        except tarfile.TarError as e:
            return self._reject(key, f"unreadable tar ({e})", dest)
        problems = check_entry(dest, key, kind)
        if problems:
            return self._reject(key, "; ".join(problems), dest)
        return True

    def _mark_down(self, e: BaseException, what: str) -> None:
        self.down = _reason(e)
        log.warning("remote cache %s %s (%s): skipped for the rest of this run", self.url, what, self.down)

    def _reject(self, key: str, why: str, dest: Path) -> bool:
        log.warning("remote cache entry %s rejected (%s): building locally", key[:16], why)
        self.rejected.append(key)
        for f in Path(dest).iterdir():
            f.unlink()
        return False

    def upload(self, key: str, kind: str, entry: Path) -> None:
        """Upload a finished local entry (skipped for read-only or unreachable stores; failures logged)."""
        if self.read_only or self.down is not None:
            return
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for f in sorted(Path(entry).iterdir()):
                if f.is_file():
                    tf.add(f, arcname=f.name)
        blob = buf.getvalue()
        fs = self.fs

        def put() -> None:
            fs.makedirs(f"{self.root}/{kind}", exist_ok=True)
            fs.pipe_file(self._path(key, kind, "tar"), blob)
            fs.pipe_file(self._path(key, kind, "sha256"), hashlib.sha256(blob).hexdigest().encode())

        try:
            bounded(put, self.timeout_s)
        except Exception as e:
            self._mark_down(e, f"upload of {key[:16]} failed")
