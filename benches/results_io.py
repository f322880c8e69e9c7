"""Writing a benchmark's JSON result: the fields every result carries, one way."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path


def cpu_model_name() -> str:
    """This machine's CPU model (``/proc/cpuinfo``'s model name; mlcbuild's own reader)."""
    from mlcbuild.spec.target import cpu_model_name as read

    return read()


def write_results(path: str | Path, result: dict) -> Path:
    """Write ``result`` as indented JSON at ``path`` (parents created), adding ``machine``,
    ``date`` (UTC) and ``command`` (this process's command line) where missing.
    """
    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_model_name": cpu_model_name(),
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python", *sys.argv]),
        **result,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return path
