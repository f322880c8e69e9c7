"""``mlcbuild recipe``: a recipe written from a checkpoint's ``config.json`` or a GGUF file.

For a GGUF file the scheme defaults to the exact import of its blocks (:mod:`mlcbuild.quant.ggml`):
the type most of its decoder linears are stored in, with an override for every module stored
in another importable type (SmolLM2's Q4_1 file keeps its embedding in Q8_0).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from mlcbuild.errors import MlcbuildError

DEFAULT_CONTEXT_CAP = 4096  # tokens: a recipe's default context window at most (KV-cache memory)


def _drop_nulls(x: Any) -> Any:
    """TOML has no null: ``None`` values (and keys holding them) are left out."""
    if isinstance(x, dict):
        return {k: _drop_nulls(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_drop_nulls(v) for v in x if v is not None]
    return x


def gguf_scheme(ckpt, act: str = "16") -> tuple[str, dict[str, str]]:
    """The exact import scheme of a GGUF checkpoint and its overrides (module glob -> scheme).

    Raises:
        MlcbuildError: a linear or embedding stored in a type no scheme imports exactly.
    """
    from mlcbuild.quant.ggml import FLOAT_TYPES, FORMATS

    def scheme(t: str) -> str:
        return f"q{FORMATS[t][0]}f{act}_ggml_{t.lower()}"

    types = {n.removesuffix(".weight"): ckpt.ggml_type(n) for n in ckpt.tensor_names if n.endswith("proj.weight")}
    types |= {
        m: ckpt.ggml_type(m + ".weight")
        for m in ("model.embed_tokens", "lm_head")
        if m + ".weight" in ckpt.tensor_names
    }
    bad = sorted({f"{m} ({t})" for m, t in types.items() if t not in FORMATS and t not in FLOAT_TYPES})
    if bad:
        raise MlcbuildError(
            f"no scheme imports these tensors exactly: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}",
            path=ckpt.source,
            fix="pass --scheme (e.g. q4f16_1: the dequantized weights are quantized again), or use a "
            "Q4_0/Q4_1/Q8_0 file (llama-quantize --pure)",
        )
    quantized = Counter(t for m, t in types.items() if t in FORMATS and m.startswith("model.layers."))
    if not quantized:
        raise MlcbuildError("the GGUF file holds no Q4_0/Q4_1/Q8_0 linears to import", path=ckpt.source,
                            fix="pass --scheme (e.g. q0f16 for a float file)")  # fmt: skip
    base = quantized.most_common(1)[0][0]
    overrides = {module: scheme(t) for module, t in types.items() if t in FORMATS and t != base}
    return scheme(base), overrides


def recipe_from(
    source: str | Path,
    scheme: str | None = None,
    name: str | None = None,
    context_window_size: int | None = None,
    model_source: str | None = None,
    calibration_text: str | Path | None = None,
) -> dict[str, Any]:
    """A recipe (as TOML data) for a checkpoint: a directory or ``config.json`` (Hugging Face),
    or a ``.gguf`` file.

    Args:
        scheme: the quantization scheme; default, for a GGUF file, its exact import (:func:`gguf_scheme`).
        name: the model name (default the directory's or file's name).
        context_window_size: tokens (default the model's ``max_position_embeddings``, at most 4096).
        model_source: the recipe's ``model.source`` (default ``source`` as given).
        calibration_text: a calibrated scheme's ``[quantization.calibration]`` text file.
    Raises:
        MlcbuildError: an unreadable source, an architecture we do not build, or no scheme.
    """
    from mlcbuild.artifacts.checkpoint import open_checkpoint
    from mlcbuild.models import ARCHITECTURES

    src = Path(source)
    overrides: dict[str, str] = {}
    if src.is_file() and src.suffix == ".json":
        try:
            config = json.loads(src.read_text())
        except ValueError as e:
            raise MlcbuildError(f"not valid JSON: {e}", path=src, fix="pass a checkpoint's config.json") from e
        default_name = src.parent.name
    else:
        ckpt = open_checkpoint(src)
        config = ckpt.config
        default_name = src.stem if src.is_file() else src.name
        if scheme is None and hasattr(ckpt, "ggml_type"):
            scheme, overrides = gguf_scheme(ckpt)
    if scheme is None:
        raise MlcbuildError("no --scheme given", path=src, fix="pass --scheme, e.g. --scheme q4f16_1")
    arch = config.get("model_type")
    if arch not in ARCHITECTURES:
        raise MlcbuildError(
            f"model_type {arch!r} is not an architecture mlcbuild builds; supported: {', '.join(sorted(ARCHITECTURES))}",
            path=src,
            fix="use a checkpoint of a supported architecture",
        )
    window = context_window_size or min(int(config.get("max_position_embeddings", 2048)), DEFAULT_CONTEXT_CAP)
    quant: dict[str, Any] = {"scheme": scheme}
    if overrides:
        quant["overrides"] = overrides
    if calibration_text is not None:
        quant["calibration"] = {"text": str(Path(calibration_text).resolve())}
    return {
        "model": {
            "name": name or default_name,
            "architecture": arch,
            "source": model_source or str(source),
            "config": _drop_nulls(config),
        },
        "quantization": quant,
        "build": {"context_window_size": window, "prefill_chunk_size": min(512, window)},
    }


def recipe_toml(data: dict[str, Any], comment: str = "") -> str:
    """The recipe as TOML text (``tomli_w``), validated by :func:`mlcbuild.spec.recipe.parse_recipe` first.

    Raises:
        RecipeError: the data is not a valid recipe.
    """
    import tomli_w

    from mlcbuild.spec.recipe import parse_recipe

    parse_recipe(data)
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    return head + tomli_w.dumps(data)
