"""Our aarch64 kernels (NEON prefill matmuls, ``sdot`` int8 decode GEMVs) run on an emulated
Arm CPU and give the x86 host build's logits. Needs ``make arm-emulation`` (QEMU user mode,
the cross linker, an aarch64 Python + TVM in ``.arm64/``); skipped without it."""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benches"))

pytestmark = pytest.mark.skipif(
    not (
        (REPO / ".arm64/root/usr/bin/python3.11").is_file()
        and shutil.which("qemu-aarch64-static")
        and shutil.which("aarch64-linux-gnu-gcc")
    ),
    reason="no emulated aarch64 CPU here (make arm-emulation)",
)


def test_q4_sdot_build_on_emulated_arm_equals_host(tmp_path, cache_dir):
    """q4f32_1, 17-token prompt then 8 decode steps (teacher-forced with the host's greedy ids):
    the aarch64 library's logits equal the x86 host library's within 1e-5 x max (measured
    4e-7), and it holds ``sdot`` instructions (the int8 decode GEMVs); its prefill logits are
    within 2e-2 x max of ``transformers`` on the dequantized weights."""
    import arm_emulated as A
    import torch

    from mlcbuild.artifacts.cache import Cache
    from mlcbuild.spec.target import load_target, parse_target

    hf = A.hf_model()
    cache = Cache(cache_dir)
    lib, arrays, recipe = A.build(hf, "q4f32_1", load_target("host"), cache)
    ref, forced = A.run_host(lib, arrays, recipe, 8)
    arm = parse_target(tomllib.loads(A.ARM_TARGET), path="linux-arm64-dotprod")
    arm_lib, arm_arrays, _ = A.build(hf, "q4f32_1", arm, cache)
    assert A.count_instructions(arm_lib)["sdot"] > 0
    ours, _ = A.run_emulated(arm_lib, arm_arrays, recipe, forced, tmp_path)
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()
    with torch.no_grad():  # and both are the model: prefill logits near transformers on the
        # NumPy reference's dequantized weights (the LM head's one-token GEMV quantizes its input
        # to int8: measured 0.6 % of max; tests/test_parity.py emulates that for an exact bound)
        deq = A.dequantized_model(hf, "q4f32_1")(torch.tensor([A.PROMPT])).logits[0, -1].numpy()
    assert np.abs(ours[0] - deq).max() <= 2e-2 * np.abs(deq).max()
