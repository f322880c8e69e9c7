"""AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and
Acceleration", arXiv:2306.00978): per input channel scales that protect the weights of
salient channels (large mean activation) before round-to-nearest group quantization.

For a linear ``y = x W^T`` with input channel scales ``s``: ``y = (x / s) (W diag(s))^T``; the
weight ``W diag(s)`` is quantized and ``1 / s`` folded into the op that produces ``x``
(:mod:`.fold`, shared with SmoothQuant). Section 3.2's
search: ``s = mean|x|^alpha`` (normalized by ``sqrt(max * min)``) for ``alpha`` in
``0, 1/grid, ..., (grid-1)/grid``, keeping the one whose quantized linear best reproduces
the float output on the calibration inputs. Layers are processed in order, each on the
inputs the already-scaled layers before it produce; the scaled float weights are then
quantized by the scheme's round-to-nearest (``convert`` as usual), so the same layout and
kernels run them. Before that, the reference implementation's clipping search (``auto_clip``,
:func:`search_clip`) shrinks each group's range where that lowers the group's output error.
"""

from __future__ import annotations

from typing import Callable

from mlcbuild.quant.calibrate import layer_output
from mlcbuild.quant.fold import keep_input, scale_layers


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


def search_clip(x, w, scheme, grid: int = 20, max_shrink: float = 0.5, rows_per_batch: int = 256, tokens: int = 512):
    """AWQ's weight clipping (Lin et al. 2023, Section 3.3 and the reference implementation's
    ``auto_clip``): per output row and group of ``w`` ``[N, K]`` (torch), the clip ratio ``r``
    in ``1, 1 - 1/grid, ..., 1 - max_shrink`` of the group's ``max|w|`` whose round-to-nearest
    codes best reproduce that group's partial products ``x_g w_g^T`` on calibration inputs
    ``x`` ``[n, K]`` (``tokens`` rows taken evenly). Returns the clip values ``[N, K_pad / group]``
    (float32): clamping ``w`` to them before quantizing makes the scale ``r max|w| / max_int``.
    """
    import torch

    g, qmax = scheme.group_size, scheme.max_int
    n_out, k = w.shape
    kp = scheme.padded_k(k)
    x = x.reshape(-1, k).to(torch.float32)
    x = x[torch.linspace(0, x.shape[0] - 1, min(tokens, x.shape[0])).long()]
    x = torch.nn.functional.pad(x, (0, kp - k)).reshape(x.shape[0], kp // g, g)  # [n, ng, G]
    wp = torch.nn.functional.pad(w.detach().to(torch.float32), (0, kp - k))
    out = []
    for r0 in range(0, n_out, rows_per_batch):
        wg = wp[r0 : r0 + rows_per_batch].reshape(-1, kp // g, g)  # [b, ng, G]
        ref = torch.einsum("nkg,okg->nok", x, wg)  # [n, b, ng]
        orig = wg.abs().amax(dim=-1)  # [b, ng]
        best_err = torch.full_like(orig, float("inf"))
        best = orig.clone()
        for i in range(int(max_shrink * grid)):
            clip = orig * (1 - i / grid)
            scale = (clip / qmax).to(getattr(torch, scheme.model_dtype)).to(torch.float32)  # stored scale
            safe = torch.where(scale == 0, torch.ones_like(scale), scale)[..., None]
            wq = torch.clamp(torch.round(torch.clamp(wg, -clip[..., None], clip[..., None]) / safe), -qmax, qmax) * safe
            err = (torch.einsum("nkg,okg->nok", x, wq) - ref).pow(2).mean(dim=0)  # [b, ng]
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better, clip, best)
        out.append(best)
    return torch.cat(out)


def awq_model(
    model, ids, scheme, grid: int = 20, clip: bool = True, on_layer: Callable[[int, int], None] | None = None
) -> None:
    """Scale a Llama-layout ``transformers`` causal LM (float32, eval) in place for AWQ on
    calibration ``ids`` ``[n, s]``: its linears then hold ``W diag(s)`` and the producers of
    their inputs ``1 / s`` (:func:`mlcbuild.quant.fold.scale_layers`); the model's float outputs
    are unchanged up to rounding. With ``clip``, every linear but q/k is then clamped to its
    :func:`search_clip` limits (this changes the float model: the limits are what
    round-to-nearest then quantizes best).

    Raises:
        MlcbuildError: Gemma, or a layer without the Llama layout (:func:`.fold.fold_groups`).
    """
    import torch

    def clip_layer(layer, hidden, kwargs):  # on the inputs the scaled layer now sees; q/k skipped as the reference
        attn, mlp = layer.self_attn, layer.mlp
        linears = [attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        inputs: dict = {}
        hooks = [lin.register_forward_pre_hook(keep_input(j, inputs)) for j, lin in enumerate(linears)]
        layer_output(layer, hidden, kwargs)
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for j, lin in enumerate(linears):
                w = lin.weight
                limit = search_clip(inputs[j], w, scheme, grid)  # [N, K_pad / G]
                limit = limit.repeat_interleave(scheme.group_size, dim=1)[:, : w.shape[1]]
                w.copy_(torch.maximum(torch.minimum(w, limit), -limit))

    scale_layers(
        model,
        ids,
        lambda x, weights: search_scales(x, weights, scheme, grid),
        "AWQ",
        after_layer=clip_layer if clip else None,
        on_layer=on_layer,
    )


__all__ = ["awq_model", "search_clip", "search_scales"]
