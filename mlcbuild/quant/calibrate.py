"""Calibration for GPTQ: the checkpoint's own ``transformers`` model run on calibration text,
one decoder layer at a time (Frantar et al. 2022, section 4: each layer is quantized with the
inputs that the already-quantized layers before it produce).

Per layer: the Hessian ``2 X^T X / n`` of every ``nn.Linear``'s input is accumulated over the
calibration tokens with the layer's original weights; each linear is quantized with
:func:`.gptq.gptq` and its weight replaced by the dequantized codes; the layer is run again
to give the next layer its inputs. (Within a layer all linears see the original weights'
activations, AutoGPTQ's ``true_sequential=False``.) The LM head and embeddings are left to
round-to-nearest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from mlcbuild.errors import MlcbuildError
from mlcbuild.quant.gptq import gptq


def calibration_ids(tokenizer_json: Path, text_file: Path, n_samples: int, seq_len: int, seed: int):
    """``n_samples`` windows of ``seq_len`` tokens at seeded random offsets of the text.

    Returns:
        ``[n_samples, seq_len]`` int64 torch tensor.
    Raises:
        MlcbuildError: the text file is missing, or shorter than ``n_samples * seq_len`` tokens.
    """
    import torch
    from tokenizers import Tokenizer

    text_file = Path(text_file)
    if not text_file.is_file():
        raise MlcbuildError("calibration text file not found", path=text_file, fix="pass an existing UTF-8 text file")
    ids = Tokenizer.from_file(str(tokenizer_json)).encode(text_file.read_text(encoding="utf-8")).ids
    need = n_samples * seq_len
    if len(ids) < need:
        raise MlcbuildError(
            f"the calibration text has {len(ids)} tokens, fewer than samples x sequence length = "
            f"{n_samples} x {seq_len} = {need}",
            path=text_file,
            fix="use a longer calibration text, or fewer samples or a shorter sequence length",
        )
    rng = np.random.default_rng(seed)
    starts = rng.choice(len(ids) - seq_len + 1, size=n_samples, replace=False)
    return torch.tensor(np.array([ids[s : s + seq_len] for s in starts]), dtype=torch.int64)


def _accumulate(name: str, sums: dict, counts: dict):
    """A forward pre-hook adding ``X^T X`` (float64) of a linear's input to ``sums[name]``
    and its row count to ``counts[name]``."""
    import torch

    def hook(_module, args):
        x = args[0].reshape(-1, args[0].shape[-1]).to(torch.float64)
        sums[name] = sums[name] + x.T @ x if name in sums else x.T @ x
        counts[name] = counts.get(name, 0) + x.shape[0]

    return hook


class _Captured(Exception):
    """Raised by the hook on the first decoder layer once its inputs are recorded."""


def first_layer_inputs(model, ids):
    """The first decoder layer's hidden states and keyword arguments (positions, mask, RoPE
    tables) for calibration ``ids`` ``[n, s]``: the model runs up to that layer only.

    Returns:
        ``(hidden [n, s, d], kwargs)``; every layer of the model takes the same ``kwargs``.
    """
    import torch

    seen: dict = {}

    def capture(_module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        seen["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Captured

    handle = model.model.layers[0].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    except _Captured:
        pass
    finally:
        handle.remove()
    return seen["hidden"], seen["kwargs"]


def layer_output(layer, hidden, kwargs):
    """A decoder layer's output hidden states (layers return a tensor or a tuple)."""
    import torch

    with torch.no_grad():
        result = layer(hidden, **kwargs)
    return result[0] if isinstance(result, tuple) else result


def gptq_model(
    model,
    ids,
    scheme,
    act_order: bool = False,
    damp: float = 0.01,
    block_size: int = 128,
    on_layer: Callable[[int, int], None] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """GPTQ every decoder linear of a ``transformers`` causal LM (float32, eval mode) on
    calibration ``ids`` ``[n, s]``; the model's linears are left holding the dequantized codes.

    Returns:
        ``{checkpoint weight name: (codes [N, K_pad] uint32, scale [N, groups])}`` for
        :meth:`~mlcbuild.quant.group.GroupQuant.pack` (names as in the checkpoint, e.g.
        ``model.layers.0.self_attn.q_proj.weight``).
    """
    import torch

    layers = model.model.layers
    hidden, kwargs = first_layer_inputs(model, ids)
    prefix = next(n for n, m in model.named_modules() if m is layers)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, layer in enumerate(layers):
        linears = {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
        sums: dict = {}
        counts: dict = {}
        handles = [m.register_forward_pre_hook(_accumulate(n, sums, counts)) for n, m in linears.items()]
        layer_output(layer, hidden, kwargs)
        for h in handles:
            h.remove()
        for name, module in linears.items():
            h = 2.0 * sums[name] / counts[name]
            w = module.weight.detach().float().numpy()
            codes, scale = gptq(w, h, scheme, block_size=block_size, act_order=act_order, damp=damp)
            deq = scheme.dequantize(*scheme.pack(codes, scale, layout="NK"), w.shape[1], layout="NK")
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(deq))
            out[f"{prefix}.{i}.{name}.weight"] = (codes, scale)
        hidden = layer_output(layer, hidden, kwargs)
        if on_layer:
            on_layer(i + 1, len(layers))
    return out


def calibrate_model(scheme, model, ids, settings: dict) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Run ``scheme``'s calibration method on a ``transformers`` causal LM (float32, eval) and
    calibration ``ids`` ``[n, s]`` int64, with the recipe's ``[quantization.calibration]`` ``settings``.

    Returns:
        GPTQ: the codes and scales per checkpoint weight (:func:`gptq_model`); AWQ (Lin et al.
        2023) and SmoothQuant (Xiao et al. 2022) rewrite ``model``'s weights in place and
        return ``None``: its state dict is then the checkpoint to round.
    """
    if scheme.calibration == "gptq":
        return gptq_model(model, ids, scheme, act_order=settings["act_order"], damp=settings["damp"])
    if scheme.calibration == "awq":
        from mlcbuild.quant.awq import awq_model

        awq_model(model, ids, scheme)
    else:
        from mlcbuild.quant.smoothquant import smooth_model

        smooth_model(model, ids, settings["alpha"])
    return None
