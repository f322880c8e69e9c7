"""RoPE settings from a config.json (no TVM import)."""

from __future__ import annotations

from typing import Any

from ..errors import RecipeError


def parse_rope_scaling(cfg: dict[str, Any], path) -> tuple[float, dict[str, Any]]:
    """Read RoPE base and scaling from a config.json, in either spelling.

    Accepts ``rope_theta`` + ``rope_scaling`` (transformers 4.x configs, what the hub
    serves) and ``rope_parameters`` (transformers 5.x). Supported types: ``default``
    and ``llama3`` (Llama 3.1/3.2; see ``_compute_llama3_parameters`` in
    ``transformers/modeling_rope_utils.py``).

    Returns:
        ``(rope_theta, rope_scaling)`` where ``rope_scaling`` has a ``rope_type`` key.
    Raises:
        RecipeError: an unsupported scaling type or missing llama3 parameters.
    """
    params = cfg.get("rope_parameters") or {}
    scaling = dict(cfg.get("rope_scaling") or params or {})
    theta = float(cfg.get("rope_theta", params.get("rope_theta", 10000.0)))
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return theta, {"rope_type": "default"}
    if rope_type == "llama3":
        needed = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        missing = [k for k in needed if k not in scaling]
        if missing:
            raise RecipeError(
                f"model.config.rope_scaling of type llama3 lacks {', '.join(missing)}",
                path=path,
                fix="copy rope_scaling from the checkpoint's config.json verbatim",
            )
        out = {"rope_type": "llama3"}
        out.update({k: float(scaling[k]) for k in needed})
        return theta, out
    raise RecipeError(
        f"model.config.rope_scaling type {rope_type!r} is not supported; supported: default, llama3",
        path=path,
        fix="use a checkpoint with a supported RoPE scaling, or add the type to mlcbuild/models/common.py",
    )
