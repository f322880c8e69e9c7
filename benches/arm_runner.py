"""Run a compiled model's prefill and decode on whatever CPU this Python runs on, teacher-forced,
and save the logits: the half of ``benches/arm_emulated.py`` that runs on aarch64 (under
``qemu-aarch64``), with only NumPy, TVM and ``mlcbuild.runtime.engine`` imported.

    python benches/arm_runner.py LIB PARAMS.npz META.json OUT.npz

``META.json``: ``vocab_size``, ``context_window_size``, ``prefill_chunk_size``, ``page_size``,
``prompt`` (token ids) and ``forced`` (the decode steps' input ids). ``OUT.npz``: ``prefill``
``[vocab]`` float32 (the prompt's last logits) and ``decode`` ``[len(forced), vocab]`` float32.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlcbuild.runtime.engine import Engine  # noqa: E402


def main(lib: str, params: str, meta_path: str, out: str) -> None:
    meta = json.loads(Path(meta_path).read_text())
    with np.load(params) as z:
        arrays = [z[f"p{i}"] for i in range(len(z.files))]
    model = Engine.local(
        lib,
        arrays,
        vocab_size=meta["vocab_size"],
        context_window_size=meta["context_window_size"],
        prefill_chunk_size=meta["prefill_chunk_size"],
        page_size=meta["page_size"],
    )
    model.reset()
    first = model.prefill(meta["prompt"]).astype("float32")
    steps = [model.decode(t).astype("float32") for t in meta["forced"]]
    np.savez(out, prefill=first, decode=np.stack(steps))


if __name__ == "__main__":
    main(*sys.argv[1:5])
