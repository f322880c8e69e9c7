"""Package configs: ours (TOML or JSON ``[[models]]``) and MLC-LLM's ``mlc-package-config.json``,
as the list of models :func:`mlcbuild.ship.package.package` builds; model ids checked as
plain names."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from mlcbuild.errors import MlcbuildError

_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_model_id(model_id: str, where: Path | str | None) -> str:
    """``model_id`` if it is one plain path component (letters, digits, ``._-``, not
    starting with ``.`` or ``-``; the package's ``<model_id>/`` and ``lib/<model_id>.so``).

    Raises:
        MlcbuildError: anything else (``../x``, ``/etc``, ``a/b``), naming ``where``.
    """
    if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id) or model_id in ("lib",):
        raise MlcbuildError(
            f"model_id {model_id!r} is not a plain name (it names a directory and a file inside the package)",
            path=where,
            fix="use letters, digits, '.', '_' and '-' only, starting with a letter or digit (not 'lib')",
        )
    return model_id


@dataclasses.dataclass
class PackageModel:
    """One model of a package.

    Attributes:
        recipe: the recipe file.
        weights: a checkpoint directory to convert and bundle, or ``None``.
        weights_url: where the app downloads converted weights instead (not bundled).
        model_id: the app's name for the model (default: the recipe's model name).
    """

    recipe: Path
    weights: Path | None = None
    weights_url: str | None = None
    model_id: str | None = None
    config: Path | None = None  # the package config that listed it (named in errors)


def read_package_config(path: Path) -> tuple[str | None, list[PackageModel]]:
    """A package config (TOML or JSON): ``target`` (optional) and ``[[models]]`` with ``recipe``,
    and optionally ``weights`` (a checkpoint to bundle), ``weights_url``, ``model_id``; paths
    are relative to the file. MLC-LLM's ``mlc-package-config.json`` is read too
    (:func:`_from_mlc_package_config`).

    Raises:
        MlcbuildError: unreadable file, no models, or an unknown key.
    """
    import tomllib

    path = Path(path)
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as e:
        raise MlcbuildError(f"cannot read the package config: {e}", path=path, fix="write TOML or JSON") from e
    if isinstance(data, dict) and "model_list" in data:
        data = _from_mlc_package_config(data, path)
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list) or not models or not all(isinstance(m, dict) for m in models):
        raise MlcbuildError("the package config lists no models", path=path, fix='add [[models]] with recipe = "..."')
    allowed = {"recipe", "weights", "weights_url", "model_id"}
    out = []
    for i, m in enumerate(models):
        unknown = set(m) - allowed
        if unknown or "recipe" not in m:
            raise MlcbuildError(
                f"models[{i}]: " + (f"unknown keys {sorted(unknown)}" if unknown else "no recipe"),
                path=path,
                fix=f"each model has recipe and optionally {', '.join(sorted(allowed - {'recipe'}))}",
            )
        rel = lambda p: (path.parent / p).resolve() if p is not None else None  # noqa: E731
        if m.get("model_id") is not None:
            check_model_id(m["model_id"], path)
        for k in ("recipe", "weights", "weights_url", "model_id"):
            if m.get(k) is not None and not isinstance(m[k], str):
                raise MlcbuildError(f"models[{i}].{k} must be a string", path=path, fix=f'write {k} = "..."')
        out.append(PackageModel(rel(m["recipe"]), rel(m.get("weights")), m.get("weights_url"), m.get("model_id"), path))
    return data.get("target"), out


MLC_DEVICES = {"android": "s24", "iphone": "iphone15pro"}  # MLC's "device" -> our default target


def _from_mlc_package_config(data: dict, path: Path) -> dict:
    """MLC-LLM's ``mlc-package-config.json`` (``device``, ``model_list`` of ``model``, ``model_id``,
    ``bundle_weight``, ...) as our package config: ``model`` names a recipe file (no model hub
    is reached); a bundled model's weights are the recipe's ``model.source`` checkpoint, or the
    entry's ``weights``; others download from ``model`` if it is a URL, else from the recipe's
    source (:func:`model_url`). ``device`` picks the default target (:data:`MLC_DEVICES`).

    Raises:
        MlcbuildError: an entry whose ``model`` is not a recipe file.
    """
    from mlcbuild.spec.recipe import load_recipe

    models = []
    for i, m in enumerate(data["model_list"] if isinstance(data["model_list"], list) else []):
        model = m.get("model") if isinstance(m, dict) else None
        rec = (path.parent / model) if isinstance(model, str) else None
        if rec is None or not rec.is_file():
            raise MlcbuildError(
                f"model_list[{i}].model {model!r} is not a recipe file (mlcbuild builds from recipes; "
                "prebuilt MLC weights on a hub are not fetched)",
                path=path,
                fix='set "model" to a recipe .toml (relative to this file); `mlcbuild recipe` writes one',
            )
        entry = {"recipe": model, "model_id": m.get("model_id")}
        if m.get("bundle_weight"):
            entry["weights"] = m.get("weights") or load_recipe(rec).source
        elif isinstance(m.get("model_url"), str):
            entry["weights_url"] = m["model_url"]
        models.append({k: v for k, v in entry.items() if v is not None})
    return {"target": MLC_DEVICES.get(data.get("device")), "models": models}
