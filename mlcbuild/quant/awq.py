"""AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and
Acceleration", arXiv:2306.00978): per input channel scales that protect the weights of
salient channels (large mean activation) before round-to-nearest group quantization.

For a linear ``y = x W^T`` with input channel scales ``s``: ``y = (x / s) (W diag(s))^T``; the
weight ``W diag(s)`` is quantized and ``1 / s`` folded into the op that produces ``x`` (the
RMSNorm weight before q/k/v and gate/up, the rows of ``up_proj`` before ``down_proj``, the rows
of ``v_proj`` before ``o_proj`` when every query head has its own KV head). Section 3.2's
search: ``s = mean|x|^alpha`` (normalized by ``sqrt(max * min)``) for ``alpha`` in
``0, 1/grid, ..., (grid-1)/grid``, keeping the one whose quantized linear best reproduces
the float output on the calibration inputs. Layers are processed in order, each on the
inputs the already-scaled layers before it produce; the scaled float weights are then
quantized by the scheme's round-to-nearest (``convert`` as usual), so the same layout and
kernels run them.
"""

from __future__ import annotations

from typing import Callable

from ..errors import MlcbuildError
from .calibrate import first_layer_inputs, layer_output


def _rtn(w, scheme):
    """Round-to-nearest ``w`` ``[N, K]`` (torch) under ``scheme``, dequantized, float64."""
    import torch

    arr = w.detach().float().numpy()
    deq = scheme.dequantize(*scheme.quantize(arr, "NK"), arr.shape[1], "NK")
    return torch.from_numpy(deq).to(torch.float64)


def search_scales(x, weights: list, scheme, grid: int = 20):
    """The AWQ input-channel scales ``[K]`` for linears ``weights`` (each ``[N_i, K]``, torch)
    sharing the calibration input ``x`` ``[n, K]``: the ``alpha`` minimizing the summed squared
    output error of the round-to-nearest scaled weights (``s = 1`` at ``alpha = 0``)."""
    import torch

    x = x.reshape(-1, x.shape[-1]).to(torch.float64)
    mean = x.abs().mean(dim=0).clamp(min=1e-8)
    ref = [x @ w.to(torch.float64).T for w in weights]
    best, best_s = None, torch.ones_like(mean)
    for i in range(grid):
        s = mean.pow(i / grid)
        s = s / (s.max() * s.min()).sqrt()
        err = sum(
            float(((x / s) @ _rtn(w.to(torch.float64) * s, scheme).T - r).pow(2).sum())
            for w, r in zip(weights, ref, strict=True)
        )
        if best is None or err < best:
            best, best_s = err, s
    return best_s


def _keep_input(key, inputs: dict):
    """A forward pre-hook storing a linear's input as ``inputs[key]``."""

    def hook(_module, args):
        inputs.setdefault(key, args[0].detach())

    return hook


def awq_model(model, ids, scheme, grid: int = 20, on_layer: Callable[[int, int], None] | None = None) -> None:
    """Scale a Llama-layout ``transformers`` causal LM (float32, eval) in place for AWQ on
    calibration ``ids`` ``[n, s]``: its linears then hold ``W diag(s)`` and the producers of
    their inputs ``1 / s``; the model's float outputs are unchanged up to rounding.

    Raises:
        MlcbuildError: a layer without the Llama layout (``input_layernorm``,
            ``self_attn.{q,k,v,o}_proj``, ``post_attention_layernorm``, ``mlp.{gate,up,down}_proj``)
            or with a norm that is not a plain weight multiply (Gemma's ``1 + w``).
    """
    import torch

    if "gemma" in type(model).__name__.lower():
        raise MlcbuildError("AWQ folds scales into RMSNorm weights: Gemma's 1 + w norms are not supported")
    layers = model.model.layers
    hidden, kwargs = first_layer_inputs(model, ids)
    for i, layer in enumerate(layers):
        try:
            attn, mlp = layer.self_attn, layer.mlp
            groups = [
                (layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj], "norm"),
                (layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], "norm"),
                (mlp.up_proj, [mlp.down_proj], "rows"),
            ]
            if attn.v_proj.weight.shape[0] == attn.o_proj.weight.shape[1]:  # no GQA: o's inputs are v's rows
                groups.append((attn.v_proj, [attn.o_proj], "rows"))
        except AttributeError as e:
            raise MlcbuildError(f"AWQ needs the Llama layer layout: {e}") from e
        inputs: dict = {}
        hooks = [lin[0].register_forward_pre_hook(_keep_input(j, inputs)) for j, (_, lin, _k) in enumerate(groups)]
        layer_output(layer, hidden, kwargs)
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for j, (producer, linears, kind) in enumerate(groups):
                s = search_scales(inputs[j], [lin.weight for lin in linears], scheme, grid).to(torch.float32)
                for lin in linears:
                    lin.weight.mul_(s[None, :])
                if kind == "norm":
                    producer.weight.div_(s)
                else:
                    producer.weight.div_(s[:, None])
                    if producer.bias is not None:
                        producer.bias.div_(s)
        hidden = layer_output(layer, hidden, kwargs)
        if on_layer:
            on_layer(i + 1, len(layers))


__all__ = ["awq_model", "search_scales"]
