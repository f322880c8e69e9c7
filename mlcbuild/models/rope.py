"""RoPE settings from a config.json (no TVM import)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mlcbuild.errors import RecipeError


@dataclasses.dataclass(frozen=True)
class RopeSpec:
    """A RoPE the model applies itself (:func:`mlcbuild.models.common.rotate`), per layer.

    Attributes:
        theta: the base.
        factor: linear scaling (``inv_freq / factor``: HF ``linear``).
        ext_factors: LongRoPE's per-frequency divisors (``d / 2`` of them: the checkpoint's
            ``short_factor``), or ``None``.
        attention_factor: cos and sin are multiplied by it (LongRoPE's
            ``sqrt(1 + ln(s) / ln(L_orig))``).
    """

    theta: float
    factor: float = 1.0
    ext_factors: tuple[float, ...] | None = None
    attention_factor: float = 1.0

    def inv_freq(self, dim: int) -> np.ndarray:
        """``[dim / 2]`` float32 inverse frequencies, in float32 arithmetic as HF
        ``_compute_default_rope_parameters`` (``1 / theta ** (2 i / dim)``),
        ``_compute_linear_scaling_rope_parameters`` (``/ factor``) and
        ``_compute_longrope_parameters`` (``1 / (ext * theta ** (2 i / dim))``) compute them."""
        exps = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
        base = np.float32(self.theta) ** exps
        if self.ext_factors is not None:
            base = np.asarray(self.ext_factors, dtype=np.float32) * base
        return ((np.float32(1) / base) / np.float32(self.factor)).astype(np.float32)


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
