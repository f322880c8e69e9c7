"""A GGUF file (llama.cpp's format) as a checkpoint: config, tokenizer, chat template and tensors.

The metadata becomes a Hugging Face ``config.json`` and tokenizer files (``tokenizer.json``,
``tokenizer_config.json``, ``chat_template.jinja``) through ``transformers``' own GGUF
reader (``transformers/modeling_gguf_pytorch_utils.py``, ``integrations/ggml.py``), so a
converted GGUF carries what ``transformers`` would load from it. Tensors are read with the
``gguf`` package (``GGUFReader``, memory-mapped) and named as the checkpoint's Hugging Face
names by its ``TensorNameMap`` (``gguf/tensor_mapping.py``); block formats are dequantized by
``gguf.quants.dequantize`` (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, ...).

llama.cpp's ``convert_hf_to_gguf.py`` (``LlamaModel.permute``) reorders the rows of a Llama
model's ``q_proj``/``k_proj`` for its interleaved RoPE; :func:`unpermute_rows` undoes it, as
``transformers``' ``reverse_permute_weights`` does. A permutation of rows keeps every block of
a row intact, so the raw blocks (:meth:`GGUFCheckpoint.blocks`) are unpermuted exactly too.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from mlcbuild.errors import MlcbuildError

MAGIC = b"GGUF"
# general.architecture -> (our architecture, rows of q/k permuted by convert_hf_to_gguf.py)
ARCHITECTURES = {"llama": ("llama", True), "qwen2": ("qwen2", False), "qwen3": ("qwen3", False)}
# tokenizer.ggml.pre values whose split llama.cpp defines as "\\p{N}" then GPT-2's regex
# (src/llama-vocab.cpp, the LLAMA_VOCAB_PRE_TYPE_SMOLLM case) and transformers' GGUF reader
# (integrations/gguf/gguf_tokenizer_mapping.py, GGUF_PRE_TOKENIZER_SPLITS) does not know: it
# falls back to a plain ByteLevel split, which cuts "  4" into 3 tokens where the model's own
# tokenizer.json (Digits(individual_digits) + ByteLevel) and llama.cpp make 2.
DIGIT_SPLIT_PRE = frozenset({"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva"})
_FIX_FILE = "pass a complete .gguf file (llama.cpp's convert_hf_to_gguf.py writes them); download it again if cut short"


def is_gguf(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts with GGUF's magic bytes."""
    p = Path(path)
    if not p.is_file():
        return False
    with p.open("rb") as f:
        return f.read(4) == MAGIC


def unpermute_rows(n_rows: int, n_head: int) -> np.ndarray:
    """Row order undoing ``convert_hf_to_gguf.py``'s ``LlamaModel.permute`` of a ``[n_rows, ...]``
    q or k weight with ``n_head`` heads (k: the KV heads): ``hf = gguf[unpermute_rows(...)]``."""
    rows = np.arange(n_rows)
    permuted = rows.reshape(n_head, 2, n_rows // n_head // 2).swapaxes(1, 2).reshape(n_rows)
    return np.argsort(permuted)


class GGUFCheckpoint:
    """A GGUF file read as a Hugging Face checkpoint (:class:`mlcbuild.artifacts.checkpoint.Checkpoint`'s interface).

    Attributes:
        path: the file. dir: a private directory holding the derived ``config.json`` and
            tokenizer files (removed with the object). config: the Hugging Face config dict.
        files: ``[path]`` (what the weights key hashes).
    Raises:
        MlcbuildError: not a GGUF file, truncated or unreadable, or an architecture we do
            not read (naming the file).
    """

    def __init__(self, path: str | Path):
        import gguf

        self.path = self.source = Path(path)
        if not is_gguf(self.path):
            raise MlcbuildError("not a GGUF file (no GGUF magic bytes)", path=self.path, fix=_FIX_FILE)
        try:
            self._reader = gguf.GGUFReader(str(self.path))
            arch = str(self._reader.fields["general.architecture"].contents())
        except (ValueError, KeyError, IndexError, OSError) as e:
            raise MlcbuildError(f"unreadable GGUF file ({type(e).__name__}: {e})", path=self.path, fix=_FIX_FILE) from e
        if arch not in ARCHITECTURES:
            raise MlcbuildError(
                f"GGUF architecture {arch!r} is not one mlcbuild reads; supported: {', '.join(ARCHITECTURES)}",
                path=self.path,
                fix="convert a supported model, or its Hugging Face checkpoint directory",
            )
        self.architecture, self._permuted = ARCHITECTURES[arch]
        self._tensors = {t.name: t for t in self._reader.tensors}
        self.files = [self.path]
        self.dir = Path(tempfile.mkdtemp(prefix="mlcbuild-gguf-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.dir, True)
        self.config = self._derive_hf_files()
        self.config_path = self.path
        n_layers = int(self.config["num_hidden_layers"])
        self._names = gguf.get_tensor_name_map({v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch], n_layers)

    def _derive_hf_files(self) -> dict[str, Any]:
        """``config.json`` and the tokenizer files from the metadata, by ``transformers``."""
        import transformers

        kw = {"gguf_file": self.path.name}
        try:
            cfg = transformers.AutoConfig.from_pretrained(self.path.parent, **kw)
            tok = transformers.AutoTokenizer.from_pretrained(self.path.parent, **kw)
        except Exception as e:  # transformers raises ValueError/KeyError/... for metadata it cannot map
            raise MlcbuildError(
                f"transformers cannot read the GGUF metadata ({type(e).__name__}: {e})", path=self.path, fix=_FIX_FILE
            ) from e
        config = cfg.to_diff_dict()  # what differs from the class defaults, as a config.json holds
        # bookkeeping of transformers, and the tokenizer's unk id (not a model key)
        for k in (
            "transformers_version",
            "_name_or_path",
            "_model_name_or_path",
            "dtype",
            "torch_dtype",
            "unk_token_id",
        ):
            config.pop(k, None)
        self._fix_pre_tokenizer(tok)
        config["architectures"] = [type(cfg).__name__.removesuffix("Config") + "ForCausalLM"]
        config["tie_word_embeddings"] = "output.weight" not in self._tensors
        (self.dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        tok.save_pretrained(str(self.dir))
        return config

    def _fix_pre_tokenizer(self, tok) -> None:
        """Split digits one by one before the byte-level regex for the ``tokenizer.ggml.pre``
        types in :data:`DIGIT_SPLIT_PRE`, as llama.cpp tokenizes them (``tok``: a fast tokenizer,
        changed in place)."""
        from tokenizers import pre_tokenizers

        field = self._reader.fields.get("tokenizer.ggml.pre")
        if field is None or str(field.contents()) not in DIGIT_SPLIT_PRE:
            return
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
            ]
        )

    # ---- the Checkpoint interface ------------------------------------------------------------
    def _gguf_name(self, name: str) -> str:
        found = self._names.get_name(name, try_suffixes=(".weight", ".bias"))
        if found is None or found not in self._tensors:
            raise MlcbuildError(
                f"tensor {name} is not in the GGUF file" + (f" (as {found})" if found else ""),
                path=self.path,
                fix="check that the file holds the model the recipe describes",
            )
        return found

    def _row_order(self, name: str, n_rows: int) -> np.ndarray | None:
        if not self._permuted:
            return None
        heads = {"q_proj": "num_attention_heads", "k_proj": "num_key_value_heads"}
        key = next((v for k, v in heads.items() if f".self_attn.{k}.weight" in name), None)
        return None if key is None else unpermute_rows(n_rows, int(self.config[key]))

    @functools.cached_property
    def tensor_names(self) -> list[str]:
        """The Hugging Face names of the tensors the file holds."""
        inverse = {}
        for hf in self._hf_candidates():
            try:
                inverse[self._gguf_name(hf)] = hf
            except MlcbuildError:
                pass
        return sorted(inverse.values())

    def _hf_candidates(self) -> list[str]:
        from mlcbuild.models import get_architecture

        arch = get_architecture(self.architecture)
        cfg = arch.config_from_hf(self.config, path=self.path)
        return sorted({n for srcs, _ in arch.hf_param_map(cfg).values() for n in srcs} | {"lm_head.weight"})

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """``name -> shape`` (Hugging Face order, ``[N, K]`` for a linear) of the tensors held."""
        out = {}
        for name in self.tensor_names:
            t = self._tensors[self._gguf_name(name)]
            out[name] = tuple(int(x) for x in reversed(t.shape.tolist()))
        return out

    def ggml_type(self, name: str) -> str:
        """The GGML type name of tensor ``name`` (``"Q4_1"``, ``"F32"``, ...)."""
        return self._tensors[self._gguf_name(name)].tensor_type.name

    def blocks(self, name: str) -> tuple[str, np.ndarray]:
        """Tensor ``name`` as stored: ``(GGML type name, uint8 [rows, bytes per row])``, rows in
        Hugging Face order (``q_proj``/``k_proj`` unpermuted)."""
        t = self._tensors[self._gguf_name(name)]
        data = np.asarray(t.data)
        raw = data.view(np.uint8).reshape(data.shape[0], -1) if data.ndim > 1 else data.view(np.uint8)[None]
        order = self._row_order(name, raw.shape[0])
        return t.tensor_type.name, raw if order is None else raw[order]

    def read(self, name: str, raw: bool = False) -> np.ndarray:
        """Tensor ``name`` dequantized to float32 NumPy by ``gguf.quants.dequantize``
        (``[N, K]`` for a linear); ``raw`` is accepted for the interface and changes nothing.

        Raises:
            MlcbuildError: the tensor is absent, or holds NaN/Inf.
        """
        from gguf.quants import dequantize

        gname = self._gguf_name(name)
        t = self._tensors[gname]
        arr = np.asarray(dequantize(np.asarray(t.data), t.tensor_type), dtype=np.float32)
        arr = arr.reshape(tuple(int(x) for x in reversed(t.shape.tolist())))
        order = self._row_order(name, arr.shape[0])
        if order is not None:
            arr = arr[order]
        if not np.isfinite(arr).all():
            raise MlcbuildError(
                f"tensor {name} ({gname}) holds NaN or infinite values", path=self.path, fix="use an intact file"
            )
        return arr

    def tokenizer_files(self) -> list[Path]:
        """The derived tokenizer files (``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``)."""
        from mlcbuild.artifacts.checkpoint import TOKENIZER_FILES

        return [self.dir / n for n in (*TOKENIZER_FILES, "chat_template.jinja") if (self.dir / n).is_file()]

    def hf_model(self):
        """The model as ``transformers`` loads the file (float32, eval)."""
        import torch
        import transformers

        return transformers.AutoModelForCausalLM.from_pretrained(
            self.path.parent, gguf_file=self.path.name, dtype=torch.float32
        ).eval()
