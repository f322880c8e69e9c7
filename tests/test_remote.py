"""The remote build cache on real stores on loopback: a shared directory (read-write) and an
HTTP mirror of it (Python's http.server, read-only through fsspec's HTTP filesystem)."""

from __future__ import annotations

import functools
import hashlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

from factories import recipe_data, tiny_config

from mlcbuild.artifacts.cache import Cache, verify_dir
from mlcbuild.artifacts.compile import compile_recipe
from mlcbuild.spec.recipe import parse_recipe
from mlcbuild.spec.target import load_target


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_shared_remote_builds_once_and_rejects_tampering(tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    recipe, desc = parse_recipe(recipe_data(tiny_config(), "q4f32_1", name="remote-tiny")), load_target("host")

    def build(name, url=str(remote)):
        cache = Cache(tmp_path / name, remote=url)
        return compile_recipe(recipe, desc, cache=cache), cache

    first, _ = build("c1")
    second, _ = build("c2")
    assert (first.cache, second.cache) == ("miss", "remote") and first.key == second.key
    assert (
        not verify_dir(second.artifact)
        and (second.artifact / "lib.so").read_bytes() == (first.artifact / "lib.so").read_bytes()
    )

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(remote)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mirror, cache = build("c3", f"http://127.0.0.1:{server.server_address[1]}")
        assert mirror.cache == "remote" and cache.remote.read_only
    finally:
        server.shutdown()

    tar = remote / "builds" / f"{first.key}.tar"
    blob = bytearray(tar.read_bytes())
    blob[len(blob) // 2] ^= 1
    tar.write_bytes(bytes(blob))  # a flipped byte: the digest no longer matches
    rebuilt, cache = build("c4")
    assert rebuilt.cache == "miss" and cache.remote.rejected == [first.key]
    assert build("c5")[0].cache == "remote"  # the rebuild was uploaded over the bad entry

    # consistently re-digested, but a file differs from the entry's manifest: still rejected
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(tar.read_bytes())) as tf:
        files = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
    files["mlc-chat-config.json"] = files["mlc-chat-config.json"].replace(b'"temperature"', b'"temperaturE"')
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    tar.write_bytes(out.getvalue())
    (remote / "builds" / f"{first.key}.sha256").write_text(hashlib.sha256(out.getvalue()).hexdigest())
    cache = Cache(tmp_path / "c6", remote=str(remote))
    (tmp_path / "c6-work").mkdir()
    assert not cache.remote.fetch(first.key, "builds", tmp_path / "c6-work")
    assert cache.remote.rejected == [first.key] and not any((tmp_path / "c6-work").iterdir())
