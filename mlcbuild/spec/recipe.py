"""Recipes: a model, a quantization scheme and build options, read from TOML.

A recipe file looks like::

    [model]
    name = "Llama-3.2-1B-Instruct"
    architecture = "llama"
    source = "meta-llama/Llama-3.2-1B-Instruct"   # hub id or local path
    [model.config]                                # the checkpoint's config.json, verbatim
    hidden_size = 2048
    ...
    [quantization]
    scheme = "q4f16_1"
    [quantization.overrides]                      # optional mixed precision (quant.mixed)
    "lm_head" = "q8f16_1"
    [build]
    context_window_size = 4096
    prefill_chunk_size = 512
    max_batch_size = 1

Validation is strict: an unknown key, a wrong type or an unknown name is a
:class:`~mlcbuild.errors.RecipeError` naming the file, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import tomllib
from pathlib import Path
from typing import Any

from mlcbuild.errors import RecipeError
from mlcbuild.spec.schema import Schema, check_sections, check_table

log = logging.getLogger("mlcbuild.spec.recipe")

# section -> key -> (types, required, default)
_SCHEMA: dict[str, Schema] = {
    "model": {
        "name": ((str,), True, None),
        "architecture": ((str,), True, None),
        "source": ((str,), True, None),
        "config": ((dict,), True, None),
    },
    "quantization": {
        "scheme": ((str,), True, None),
        "calibration": ((dict,), False, None),  # calibrated schemes (GPTQ): _CALIBRATION
        "overrides": ((dict,), False, None),  # mixed precision: glob -> scheme (quant.mixed)
    },
    "build": {
        "context_window_size": ((int,), False, None),  # default: config's max_position_embeddings
        "prefill_chunk_size": ((int,), False, 2048),
        "max_batch_size": ((int,), False, 1),
        "page_size": ((int,), False, 16),
        "system_lib_prefix": ((str,), False, None),  # default: derived from model name + scheme
    },
}


# [quantization.calibration] of a calibrated scheme (Frantar et al. 2022 use 128 x 2048 tokens)
_CALIBRATION: Schema = {
    "text": ((str,), True, None),  # a UTF-8 text file, relative to the recipe's directory
    "samples": ((int,), False, 128),
    "seq_len": ((int,), False, 512),
    "seed": ((int,), False, 1),
    "act_order": ((bool,), False, False),
    "damp": ((float,), False, 0.01),
    "alpha": ((float,), False, 0.5),  # SmoothQuant's migration strength (Xiao et al. 2022, Eq. 4)
}


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """Build options of a recipe.

    Attributes:
        context_window_size: maximum tokens in one sequence (prompt + generated), tokens.
        prefill_chunk_size: maximum tokens in one prefill call, tokens.
        max_batch_size: maximum sequences decoded together.
        page_size: tokens per page of the paged KV cache.
        system_lib_prefix: symbol prefix of the static library (Android/iOS), ends with ``_``.
    """

    context_window_size: int
    prefill_chunk_size: int
    max_batch_size: int
    page_size: int
    system_lib_prefix: str


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated recipe.

    Attributes:
        path: the TOML file it came from (``None`` when built in code).
        name: model name, e.g. ``"Llama-3.2-3B-Instruct"``.
        architecture: key of :data:`mlcbuild.models.ARCHITECTURES`, e.g. ``"llama"``.
        source: hub id or local directory of the checkpoint.
        config: the checkpoint's ``config.json`` keys, verbatim.
        scheme: key of :data:`mlcbuild.quant.SCHEMES`, e.g. ``"q4f16_1"``.
        calibration: ``[quantization.calibration]`` of a calibrated scheme (``text`` made
            absolute), or ``None``.
        build: the build options.
        overrides: ``[quantization.overrides]``: module-name glob -> scheme name, in file order
            (:mod:`mlcbuild.quant.mixed`); empty for a single scheme.
    """

    path: Path | None
    name: str
    architecture: str
    source: str
    config: dict[str, Any]
    scheme: str
    build: BuildOptions
    calibration: dict[str, Any] | None = None
    overrides: dict[str, str] = dataclasses.field(default_factory=dict)

    def canonical(self) -> dict[str, Any]:
        """The recipe as plain data, independent of the file's formatting or key order.

        This, not the file's bytes, enters the cache key: reformatting a recipe or
        reordering its keys does not change the key; changing any value does.
        """
        return {
            "model": {
                "name": self.name,
                "architecture": self.architecture,
                "source": self.source,
                "config": self.config,
            },
            "quantization": {"scheme": self.scheme}
            | ({"calibration": self.calibration} if self.calibration else {})
            # a list: the first matching pattern wins, so the order is part of the meaning
            | ({"overrides": [list(kv) for kv in self.overrides.items()]} if self.overrides else {}),
            "build": dataclasses.asdict(self.build),
        }

    @property
    def model_config(self):
        """The architecture's parsed config (a :class:`mlcbuild.models.config.DecoderConfig`)."""
        from mlcbuild.models import get_architecture

        return get_architecture(self.architecture).config_from_hf(self.config, path=self.path)


def default_system_lib_prefix(name: str, scheme: str) -> str:
    """A C-identifier prefix for a static library: ``"<name>_<scheme>_"``, lower case.

    Several models linked into one app binary need distinct prefixes; MLC-LLM's is
    ``f"{model_type}_{quantization}_"`` which collides for two sizes of one family,
    so ours uses the model name.
    """
    slug = re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()
    if not slug or slug[0].isdigit():
        slug = "m_" + slug
    return f"{slug}_{scheme}_"


def _calibration(quant: dict[str, Any], scheme, path, where) -> dict[str, Any] | None:
    """The checked ``[quantization.calibration]`` table (``text`` absolute), or ``None``.

    Raises:
        RecipeError: a calibrated scheme without the table, the table with another scheme,
            or a malformed table.
    """
    table = quant.get("calibration")
    if scheme.calibration is None:
        if table is not None:
            raise RecipeError(
                f"[quantization.calibration] given, but {scheme.name} is round-to-nearest (nothing to calibrate)",
                path=where,
                fix="remove [quantization.calibration], or use a calibrated scheme such as q4f16_gptq",
            )
        return None
    if table is None:
        raise RecipeError(
            f"scheme {scheme.name} is calibrated ({scheme.calibration}) and needs [quantization.calibration]",
            path=where,
            fix='add [quantization.calibration] with text = "a text file" (samples, seq_len, seed optional)',
        )
    out = check_table(table, "quantization.calibration", _CALIBRATION, where, RecipeError)
    if not 0.0 <= out["alpha"] <= 1.0:
        raise RecipeError(
            f"quantization.calibration.alpha = {out['alpha']} is outside 0..1",
            path=where,
            fix="SmoothQuant's migration strength is between 0 (no migration) and 1; 0.5 suits most models",
        )
    text = Path(out["text"])
    if not text.is_absolute() and path is not None:
        text = Path(path).resolve().parent / text
    out["text"] = str(text)
    return out


def parse_recipe(data: dict[str, Any], path: Path | str | None = None) -> Recipe:
    """Validate recipe data (already parsed from TOML) and return a :class:`Recipe`.

    Raises:
        RecipeError: unknown section or key, wrong type, unknown architecture or scheme,
            a model config the architecture rejects, or inconsistent build options.
    """
    from mlcbuild.models import ARCHITECTURES, get_architecture
    from mlcbuild.quant import SCHEMES

    where = path if path is not None else "<recipe>"
    check_sections(data, list(_SCHEMA), where, RecipeError)
    model = check_table(data.get("model"), "model", _SCHEMA["model"], where, RecipeError)
    quant = check_table(data.get("quantization"), "quantization", _SCHEMA["quantization"], where, RecipeError)
    build = check_table(data.get("build", {}), "build", _SCHEMA["build"], where, RecipeError)

    if model["architecture"] not in ARCHITECTURES:
        raise RecipeError(
            f"unknown model.architecture {model['architecture']!r}; supported: {', '.join(sorted(ARCHITECTURES))}",
            path=where,
            fix="choose one of the supported architectures",
        )
    if quant["scheme"] not in SCHEMES:
        raise RecipeError(
            f"unknown quantization.scheme {quant['scheme']!r}; allowed: {', '.join(SCHEMES)}",
            path=where,
            fix="choose one of the allowed schemes",
        )
    calibration = _calibration(quant, SCHEMES[quant["scheme"]], path, where)
    overrides = {}
    if quant.get("overrides") is not None:
        from mlcbuild.quant.mixed import check_overrides

        overrides = check_overrides(quant["overrides"], SCHEMES[quant["scheme"]], SCHEMES, where)
    cfg = get_architecture(model["architecture"]).config_from_hf(model["config"], path=where)
    from mlcbuild.models.config_keys import unknown_keys

    for line in unknown_keys(model["architecture"], model["config"]):
        log.warning("%s: %s", where, line)
    SCHEMES[quant["scheme"]].check_model(cfg, path=where)
    from mlcbuild.quant.zeropoint import check_checkpoint_quantization

    check_checkpoint_quantization(model["config"], SCHEMES[quant["scheme"]], where)

    if build["context_window_size"] is None:
        build["context_window_size"] = cfg.max_position_embeddings
    if build["prefill_chunk_size"] > build["context_window_size"]:
        if "prefill_chunk_size" in (data.get("build") or {}):  # the default 2048 is clamped without a word
            log.warning(
                "%s: build.prefill_chunk_size = %d exceeds the context (%d tokens); %d is used",
                where, build["prefill_chunk_size"], build["context_window_size"], build["context_window_size"],
            )  # fmt: skip
        build["prefill_chunk_size"] = build["context_window_size"]
    prefix = build["system_lib_prefix"] or default_system_lib_prefix(model["name"], quant["scheme"])
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*_", prefix):
        raise RecipeError(
            f"build.system_lib_prefix {prefix!r} must be a C identifier ending in '_'",
            path=where,
            fix="use letters, digits and '_' only, ending with '_'",
        )
    build["system_lib_prefix"] = prefix
    return Recipe(
        path=Path(path) if path is not None else None,
        name=model["name"],
        architecture=model["architecture"],
        source=model["source"],
        config=dict(model["config"]),
        scheme=quant["scheme"],
        build=BuildOptions(**build),
        calibration=calibration,
        overrides=overrides,
    )


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe TOML file.

    Raises:
        RecipeError: the file is missing, is not valid TOML, or fails validation.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError("recipe file not found", path=path, fix="pass the path of a recipes/*.toml file")
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"not valid TOML: {e}", path=path, fix="fix the TOML syntax at the position given") from e
    return parse_recipe(data, path)
