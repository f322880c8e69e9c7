"""MLC-LLM's weight format: ``tensor-cache.json`` + ``params_shard_<i>.bin``.

Shards hold at most ``SHARD_CAP`` bytes (32 MiB); a tensor of at least half the cap
gets a shard of its own. Each shard record carries the md5 of its bytes; each tensor
record its name, shape, dtype, ``format: "raw"``, nbytes and byteOffset, and, for a linear's or
embedding's parameters, the ``quantization`` scheme of its module (mixed precision,
:mod:`mlcbuild.quant.mixed`; TVM's loader ignores the extra key)::

    {"metadata": {"ParamSize": 291, "ParamBytes": 1.7e9, "BitsPerParam": 4.5,
                  "Quantization": {"scheme": "q4f16_1", "overrides": [["lm_head", "q8f16_1"]]}},
     "records": [{"dataPath": "params_shard_0.bin", "format": "raw-shard", "nbytes": 33554432,
                  "md5sum": "...", "records": [{"name": ..., "shape": [...], "dtype": "uint32",
                                                "format": "raw", "nbytes": ..., "byteOffset": 0,
                                                "quantization": "q4f16_1"}]}]}

Tensors are written as they come (one shard file open at a time).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import numpy as np

from mlcbuild.errors import MlcbuildError

SHARD_CAP = 32 * 1024 * 1024
INDEX_FILE = "tensor-cache.json"


class _ShardWriter:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.shards: list[dict] = []
        self._f = None
        self._md5 = None
        self._records: list[dict] = []
        self._size = 0

    def _open(self) -> None:
        self._close()
        path = f"params_shard_{len(self.shards)}.bin"
        self._f = open(self.out_dir / path, "wb")
        self._md5 = hashlib.md5()
        self._records = []
        self._size = 0
        self.shards.append({"dataPath": path, "format": "raw-shard"})

    def _close(self) -> None:
        if self._f is not None:
            self._f.close()
            self.shards[-1].update(nbytes=self._size, md5sum=self._md5.hexdigest(), records=self._records)
            self._f = None

    def add(self, name: str, arr: np.ndarray) -> None:
        data = np.ascontiguousarray(arr)
        nbytes = data.nbytes
        big = nbytes >= SHARD_CAP // 2
        if self._f is None or big or self._size + nbytes > SHARD_CAP:
            self._open()
        self._records.append(
            {
                "name": name,
                "shape": list(data.shape),
                "dtype": str(data.dtype),
                "format": "raw",
                "nbytes": nbytes,
                "byteOffset": self._size,
            }
        )
        buf = memoryview(data.reshape(-1).view(np.uint8))
        self._f.write(buf)
        self._md5.update(buf)
        self._size += nbytes
        if big:
            self._close()

    def finish(self) -> list[dict]:
        self._close()
        return self.shards


def write_tensor_cache(
    out_dir: Path,
    tensors: Iterable[tuple[str, np.ndarray]],
    source_params: int | None = None,
    schemes: dict[str, str] | None = None,
    quantization: dict | None = None,
) -> dict:
    """Write tensors into shards and the index.

    Args:
        out_dir: an existing directory.
        tensors: ``(name, array)`` in the order the compiled model takes its parameters.
        source_params: number of weights in the source checkpoint, for ``BitsPerParam``.
        schemes: parameter name -> quantization scheme of its module, written as the record's
            ``quantization`` (read once ``tensors`` is exhausted: it may be filled as they come).
        quantization: the recipe's scheme and overrides, written as ``metadata.Quantization``.
    Returns:
        the index (also written to ``tensor-cache.json``).
    """
    w = _ShardWriter(out_dir)
    count, total = 0, 0
    for name, arr in tensors:
        w.add(name, arr)
        count += 1
        total += arr.nbytes
    shards = w.finish()
    for shard in shards:
        for rec in shard["records"]:
            if schemes and rec["name"] in schemes:
                rec["quantization"] = schemes[rec["name"]]
    index = {
        "metadata": {
            "ParamSize": count,
            "ParamBytes": total,
            "BitsPerParam": round(total * 8 / source_params, 4) if source_params else None,
        }
        | ({"Quantization": quantization} if quantization else {}),
        "records": shards,
    }
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
    return index


def verify_tensor_cache(directory: Path, verify_md5: bool = True) -> dict:
    """Check a converted weight directory: index present, every shard present, of the
    indexed size and (``verify_md5``) md5. Returns the index.

    Raises:
        MlcbuildError: the index or a shard is missing, a shard's size or md5 differs
            from the index (corrupt or truncated).
    """
    index_path = directory / INDEX_FILE
    if not index_path.is_file():
        raise MlcbuildError(f"no {INDEX_FILE}", path=directory, fix="pass a directory written by `mlcbuild convert`")
    index = json.loads(index_path.read_text())
    for shard in index["records"]:
        path = directory / shard["dataPath"]
        if not path.is_file():
            raise MlcbuildError("weight shard is missing", path=path, fix="convert the weights again")
        if path.stat().st_size != shard["nbytes"]:
            raise MlcbuildError(
                f"weight shard has {path.stat().st_size} bytes, the index says {shard['nbytes']}",
                path=path,
                fix="the shard is truncated: convert the weights again",
            )
        if verify_md5:
            h = hashlib.md5()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() != shard["md5sum"]:
                raise MlcbuildError("weight shard md5 mismatch (corrupt)", path=path, fix="convert the weights again")
    return index


def read_tensor_cache(directory: Path, verify_md5: bool = True) -> dict[str, np.ndarray]:
    """All tensors of a converted weight directory, by name (memory-mapped shards).

    Raises:
        MlcbuildError: as :func:`verify_tensor_cache`.
    """
    index = verify_tensor_cache(directory, verify_md5)
    out: dict[str, np.ndarray] = {}
    for shard in index["records"]:
        raw = np.memmap(directory / shard["dataPath"], dtype=np.uint8, mode="r")
        for rec in shard["records"]:
            a = raw[rec["byteOffset"] : rec["byteOffset"] + rec["nbytes"]].view(rec["dtype"])
            out[rec["name"]] = a.reshape(rec["shape"])
    return out
