"""Checkpoint tensors -> the compiled model's parameters, quantized, one tensor at a time.

The architecture's ``hf_param_map`` says how each of our unquantized parameters is
made from checkpoint tensors (q/k/v concatenated, ...); the quantized module that
owns it (``quantize_weight``) turns it into ``q_weight``/``q_scale``; anything else
is cast to its parameter's dtype. Output follows the order the entry functions
take their parameters in.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from mlcbuild.errors import MlcbuildError
from mlcbuild.quant.base import module_scheme, module_tensors

_QUANT_SUFFIXES = (".q_weight", ".q_scale", ".q_zero", ".perm")


def _source_name(param_name: str) -> str:
    for suffix in _QUANT_SUFFIXES:
        if param_name.endswith(suffix):
            return param_name[: -len(suffix)] + ".weight"
    return param_name


def _module_at(model, dotted: str):
    obj = model
    for part in dotted.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def convert_params(
    model,
    params: list[tuple[str, tuple[int, ...], str]],
    param_map: dict[str, tuple[list[str], Callable[..., np.ndarray]]],
    read: Callable[[str], np.ndarray],
    codes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    schemes: dict[str, str] | None = None,
    blocks: Callable[[str], tuple[str, np.ndarray]] | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, array)`` for every parameter of the compiled model, in order.

    Args:
        model: the quantized ``nn.Module`` (its modules own ``quantize_weight``).
        params: ``[(name, shape, dtype)]`` of the compiled entry functions.
        param_map: ``our_name -> ([checkpoint names], combine)`` from the architecture.
        read: checkpoint name -> float array (float32 recommended); with ``raw=True`` (modules
            that import packed tensors, :class:`mlcbuild.quant.zeropoint_nn.ZeroPointLinear`)
            the tensor in its stored dtype.
        codes: checkpoint weight name -> ``(codes, scale)`` chosen by a calibrated method
            (GPTQ, :func:`mlcbuild.quant.calibrate.gptq_model`); a quantized parameter whose
            checkpoint tensors all have them is packed from them (through the same
            ``combine``: a row concatenation or the identity) instead of rounded, if its module's
            scheme is the calibrated one (a mixed-precision override is rounded by its own).
        blocks: checkpoint name -> ``(GGML type, uint8 blocks [rows, bytes])`` of a GGUF file
            (:meth:`mlcbuild.artifacts.gguf_file.GGUFCheckpoint.blocks`), for the schemes that
            import GGML blocks exactly (:mod:`mlcbuild.quant.ggml`).
        schemes: if given, filled with parameter name -> its module's scheme name (the
            ``quantization`` attribute :func:`mlcbuild.quant.mixed.quantize_model` sets) as
            parameters are yielded.
    Raises:
        MlcbuildError: a checkpoint tensor is missing or a converted shape is wrong.
    """
    pending: dict[str, np.ndarray] = {}
    for name, shape, dtype in params:
        if name not in pending:
            src = _source_name(name)
            if src not in param_map:
                raise MlcbuildError(
                    f"no checkpoint mapping for parameter {name}", fix="add it to the architecture's hf_param_map"
                )
            hf_names, combine = param_map[src]
            owner = _module_at(model, src.rsplit(".", 1)[0])
            prefix = src.rsplit(".", 1)[0]
            tensors = module_tensors(owner, hf_names, combine, read, codes, blocks) if src != name else None
            if tensors is not None:
                pending.update({f"{prefix}.{k}": v for k, v in tensors.items()})
            else:
                pending[src] = combine(*(np.asarray(read(n), dtype=np.float32) for n in hf_names))
        arr = pending.pop(name)
        if schemes is not None:
            owner_scheme = module_scheme(_module_at(model, name.rsplit(".", 1)[0]))
            if owner_scheme is not None:
                schemes[name] = owner_scheme
        if tuple(arr.shape) != tuple(shape):
            raise MlcbuildError(
                f"parameter {name}: converted shape {tuple(arr.shape)} != compiled shape {tuple(shape)}",
                fix="the checkpoint's config.json differs from the recipe's [model.config]",
            )
        yield name, np.ascontiguousarray(arr.astype(dtype, copy=False))
