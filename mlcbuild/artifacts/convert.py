"""``mlcbuild convert``: a Hugging Face checkpoint -> quantized weights in MLC-LLM's format.

Content-addressed like builds: the key covers the architecture's parsed config, the
scheme, the sha256 of every source file (weights and tokenizer) and the mlcbuild
version, so a repeat is a hit. Entries live in the cache's ``weights/`` and hold
``tensor-cache.json``, ``params_shard_*.bin``, the tokenizer files,
``mlc-chat-config.json`` and ``convert.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mlcbuild import __version__
from mlcbuild.artifacts.cache import Cache, CacheResult, content_key, copy_entry, file_sha256
from mlcbuild.artifacts.checkpoint import Checkpoint, open_checkpoint
from mlcbuild.artifacts.info import ParamInfo, WeightsInfo
from mlcbuild.errors import MlcbuildError
from mlcbuild.layout import CONVERT_ENTRY, source_digest
from mlcbuild.spec.recipe import Recipe


@dataclasses.dataclass(kw_only=True)
class ConvertResult(CacheResult):
    """What ``convert`` did (:class:`~mlcbuild.artifacts.cache.CacheResult`) and the weight directory."""

    weights: Path


def check_config(recipe: Recipe, ckpt: Checkpoint) -> None:
    """The checkpoint's ``config.json`` must define the same model as the recipe.

    Compares the architecture's parsed configs (the keys that define the math); numbers
    within a relative 1e-6 are equal (:func:`same_value`).

    Raises:
        MlcbuildError: listing every differing key with both values.
    """
    from mlcbuild.models import get_architecture

    arch = get_architecture(recipe.architecture)
    ours = dataclasses.asdict(recipe.model_config)
    theirs = dataclasses.asdict(arch.config_from_hf(ckpt.config, path=ckpt.config_path))
    diff = [f"{k}: recipe {ours[k]!r} != checkpoint {theirs[k]!r}" for k in ours if not same_value(ours[k], theirs[k])]
    if diff:
        raise MlcbuildError(
            "the checkpoint's config.json differs from the recipe's [model.config]: " + "; ".join(diff),
            path=ckpt.config_path,
            fix=f"use the checkpoint the recipe describes, or copy its config.json into {recipe.path or 'the recipe'}",
        )


def same_value(a: Any, b: Any, rel: float = 1e-6) -> bool:
    """``a == b``, numbers compared with a relative tolerance ``rel`` (inside dicts, lists and
    tuples too): a GGUF or float32 export stores ``rms_norm_eps`` 1e-05 as
    9.999999747378752e-06, the same float32, which must not be a mismatch."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y, rel) for x, y in zip(a, b, strict=True))
    return a == b


def param_specs(recipe: Recipe) -> tuple[Any, list[tuple[str, tuple[int, ...], str]]]:
    """The quantized ``nn.Module`` and its parameters ``[(name, shape, dtype)]`` in entry-function order."""
    from mlcbuild.quant.build import build_model

    model = build_model(recipe)
    specs = [(n, tuple(int(x) for x in p.shape), str(p.dtype)) for n, p in model.named_parameters()]
    return model, specs


def weights_key(recipe: Recipe, ckpt: Checkpoint) -> tuple[str, dict[str, Any]]:
    """The cache key of converted weights and the inputs it hashes."""
    inputs = {
        "kind": "weights",
        "architecture": recipe.architecture,
        "model_config": dataclasses.asdict(recipe.model_config),
        "scheme": recipe.scheme,
        **({"overrides": recipe.canonical()["quantization"]["overrides"]} if recipe.overrides else {}),
        "sources": {f.name: file_sha256(f) for f in ckpt.files},
        "tokenizer": {f.name: file_sha256(f) for f in ckpt.tokenizer_files()},
        "mlcbuild": __version__,
        # the code that makes the weights: a changed quantizer must not hit an old conversion
        "mlcbuild_source": source_digest(CONVERT_ENTRY),
        "format": "tensor-cache",
    }
    if recipe.calibration:  # the codes depend on the calibration text and settings
        text = Path(recipe.calibration["text"])
        if not text.is_file():
            raise MlcbuildError(
                "calibration text file not found",
                path=text,
                fix="set [quantization.calibration] text to an existing file (relative to the recipe)",
            )
        inputs["calibration"] = {**recipe.calibration, "text": file_sha256(text)}
        import torch  # the calibrated codes come from torch's arithmetic

        inputs["torch"] = torch.__version__
    return content_key(inputs), inputs


def calibrate(recipe: Recipe, ckpt: Checkpoint) -> tuple[dict | None, Callable[[str], Any]]:
    """A calibrated scheme's work on the checkpoint: ``(codes, read)`` for
    :func:`mlcbuild.artifacts.weights.convert_params`.

    GPTQ: the decoder linears' codes (:func:`mlcbuild.quant.calibrate.gptq_model`), tensors
    read from the checkpoint. AWQ and SmoothQuant: no codes; tensors read from the model after
    :func:`mlcbuild.quant.awq.awq_model` / :func:`mlcbuild.quant.smoothquant.smooth_model`
    scaled it (round-to-nearest then quantizes them).
    Round-to-nearest: ``(None, ckpt.read)``. Calibration loads the checkpoint in
    ``transformers`` (float32 on the CPU: ~4 bytes per parameter) and tokenizes the
    recipe's calibration text with the checkpoint's ``tokenizer.json``.

    Raises:
        MlcbuildError: no tokenizer.json, the text is too short for the samples asked, or
            (AWQ) a layer layout it cannot fold scales into.
    """
    from mlcbuild.quant import get_scheme

    scheme = get_scheme(recipe.scheme)
    if scheme.calibration is None:
        return None, ckpt.read
    from mlcbuild.quant.calibrate import calibrate_model, calibration_ids

    tok = ckpt.dir / "tokenizer.json"
    if not tok.is_file():
        raise MlcbuildError(
            "calibration needs the checkpoint's tokenizer.json", path=ckpt.source, fix="add tokenizer.json"
        )
    c = recipe.calibration
    ids = calibration_ids(tok, Path(c["text"]), c["samples"], c["seq_len"], c["seed"])
    hf = ckpt.hf_model()
    codes = calibrate_model(scheme, hf, ids, c)
    if codes is None:  # the scales were folded into the float model: round its weights
        state = hf.state_dict()
        return None, lambda name: state[name].detach().float().numpy()
    return codes, ckpt.read


def convert_weights(
    recipe: Recipe,
    weights_dir: Path,
    *,
    cache: Cache | None = None,
    out: Path | None = None,
    on_tensor: Callable[[int, int, str], None] | None = None,
) -> ConvertResult:
    """Convert a local checkpoint for ``recipe`` (or return the cached conversion).

    Args:
        weights_dir: the checkpoint directory.
        out: if given, the converted files are also copied there.
        on_tensor: progress callback ``(index, total, name)``.
    Raises:
        MlcbuildError: config mismatch, missing/corrupt files or tensors; nothing is left
            in the cache or ``out`` on failure.
    """
    from mlcbuild.artifacts.tensor_cache import write_tensor_cache
    from mlcbuild.artifacts.weights import convert_params
    from mlcbuild.models import get_architecture
    from mlcbuild.quant import get_scheme

    t0 = time.perf_counter()
    cache = cache or Cache()
    ckpt = open_checkpoint(weights_dir)
    check_config(recipe, ckpt)
    key, inputs = weights_key(recipe, ckpt)
    status = "hit"
    if cache.lookup(key, "weights") is None:
        with cache.building(key, "weights") as work:
            if work is not None:
                status = "miss"
                model, specs = param_specs(recipe)
                arch = get_architecture(recipe.architecture)
                pmap = arch.hf_param_map(recipe.model_config)
                total = len(specs)
                codes, read = calibrate(recipe, ckpt)
                schemes: dict[str, str] = {}  # parameter -> its module's scheme (mixed precision)

                def progress():
                    for i, (name, arr) in enumerate(
                        convert_params(model, specs, pmap, read, codes, schemes, ckpt.blocks)
                    ):
                        if arr.dtype.kind == "f" and not np.isfinite(arr).all():  # e.g. calibration diverged
                            src = pmap.get(name, pmap.get(name.rsplit(".", 1)[0] + ".weight", ([name], None)))[0]
                            raise MlcbuildError(
                                f"parameter {name} (from {', '.join(src)}) converts to NaN or infinite values",
                                path=ckpt.source,
                                fix="check the checkpoint's tensors and the calibration settings",
                            )
                        if on_tensor:
                            on_tensor(i + 1, total, name)
                        yield name, arr

                bits = get_scheme(recipe.scheme).bits
                source_params = sum(math.prod(s) for n, s, _ in _source_shapes(ckpt, pmap, bits))
                index = write_tensor_cache(
                    work, progress(), source_params=source_params, schemes=schemes, quantization=quantization(recipe)
                )
                toks = []
                for f in ckpt.tokenizer_files():
                    shutil.copy2(f, work / f.name)
                    toks.append(f.name)
                from mlcbuild.artifacts.chat_config import chat_config

                chat = chat_config(recipe, work if toks else None)
                chat["tokenizer_files"] = toks
                (work / "mlc-chat-config.json").write_text(json.dumps(chat, indent=2) + "\n")
                WeightsInfo(
                    key=key,
                    inputs=inputs,
                    source_dir=str(ckpt.source),
                    scheme=recipe.scheme,
                    overrides=quantization(recipe).get("overrides", []),
                    params=tuple(ParamInfo(n, tuple(s), d) for n, s, d in specs),
                    metadata=index["metadata"],
                    seconds=round(time.perf_counter() - t0, 3),
                ).write(work)
            if work is None and key in cache.fetched:
                status = "remote"
    path = cache.entry_path(key, "weights")
    result_dir = copy_entry(path, out)
    return ConvertResult(weights=result_dir, key=key, cache=status, seconds=time.perf_counter() - t0)


def quantization(recipe: Recipe) -> dict[str, Any]:
    """``{"scheme": name, "overrides": [[pattern, scheme], ...]}`` (overrides only when given),
    as ``tensor-cache.json``'s metadata and ``convert.json`` record it."""
    q = recipe.canonical()["quantization"]
    return {k: q[k] for k in ("scheme", "overrides") if k in q}


def _source_shapes(ckpt: Checkpoint, pmap, bits: int | None) -> list[tuple[str, tuple[int, ...], str]]:
    """``(name, shape, "")`` of the checkpoint's weights the model reads; a pre-quantized
    linear (``<prefix>.qweight`` + ``.scales``, :mod:`mlcbuild.quant.checkpoint_formats`)
    counts as its logical ``[N, K]`` (``bits``: the recipe scheme's; ``None``, a float scheme:
    such tensors are not counted)."""
    names = {n for srcs, _ in pmap.values() for n in srcs}
    packed = {n.removesuffix(".weight") for n in names}
    out, qweight, scales = [], {}, {}
    for n, shape in ckpt.tensor_shapes().items():
        if n in names:
            out.append((n, shape, ""))
        elif bits and n.endswith(".qweight") and n.removesuffix(".qweight") in packed:
            qweight[n.removesuffix(".qweight")] = shape
        elif n.endswith(".scales") and n.removesuffix(".scales") in packed:
            scales[n.removesuffix(".scales")] = shape
    for prefix, (rows, cols) in qweight.items():
        n_out = scales.get(prefix, (0, cols))[1]
        # GPTQ packs along K ([K / p, N]), AutoAWQ along N ([K, N / p]); p = 32 / bits
        k = rows * 32 // bits if cols == n_out else rows
        out.append((prefix + ".weight", (n_out, k), ""))
    return out
