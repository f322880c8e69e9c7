"""A remote build cache shared by machines: any ``fsspec`` URL (a shared directory,
``s3://``, ``gs://``, an ``http(s)://`` mirror for read-only use).

Layout under the URL, per kind (``builds``, ``weights``)::

    <kind>/<key>.tar          the entry's files (manifest.json included), uncompressed tar
    <kind>/<key>.sha256       the tar's sha256, hex

A download is used only if the tar's sha256 equals the recorded one and every file equals
the entry's own ``manifest.json``; otherwise it is rejected (logged) and the entry is built
locally and uploaded over the bad one. Uploads go tar first, digest last, so a reader never
sees a digest without its tar. Upload failures (a read-only mirror, a network error) are
logged and never fail a build.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
from pathlib import Path

log = logging.getLogger("mlcbuild.remote")


class RemoteCache:
    """The remote store at ``url`` (``fsspec.core.url_to_fs``); ``http(s)://`` is read-only."""

    def __init__(self, url: str):
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.read_only = self.url.startswith(("http://", "https://"))
        self.rejected: list[str] = []  # keys whose remote entry failed verification

    def _path(self, key: str, kind: str, ext: str) -> str:
        return f"{self.root}/{kind}/{key}.{ext}"

    def fetch(self, key: str, kind: str, dest: Path) -> bool:
        """Download ``key``'s entry into the empty directory ``dest``; ``True`` if it was there
        and verified, ``False`` if absent or rejected (``dest`` then emptied)."""
        from .cache import verify_dir

        try:
            want = self.fs.cat_file(self._path(key, kind, "sha256")).decode().strip()
            blob = self.fs.cat_file(self._path(key, kind, "tar"))
        except FileNotFoundError:
            return False
        except Exception as e:  # an unreachable store is a miss, not a failed build
            log.warning("remote cache %s unreadable for %s: %s", self.url, key[:16], e)
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
        problems = verify_dir(dest)
        if problems:
            return self._reject(key, "; ".join(problems), dest)
        return True

    def _reject(self, key: str, why: str, dest: Path) -> bool:
        log.warning("remote cache entry %s rejected (%s): building locally", key[:16], why)
        self.rejected.append(key)
        for f in Path(dest).iterdir():
            f.unlink()
        return False

    def upload(self, key: str, kind: str, entry: Path) -> None:
        """Upload a finished local entry (skipped for read-only stores; failures logged)."""
        if self.read_only:
            return
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for f in sorted(Path(entry).iterdir()):
                if f.is_file():
                    tf.add(f, arcname=f.name)
        blob = buf.getvalue()
        try:
            self.fs.makedirs(f"{self.root}/{kind}", exist_ok=True)
            self.fs.pipe_file(self._path(key, kind, "tar"), blob)
            self.fs.pipe_file(self._path(key, kind, "sha256"), hashlib.sha256(blob).hexdigest().encode())
        except Exception as e:
            log.warning("remote cache %s: upload of %s failed: %s", self.url, key[:16], e)
