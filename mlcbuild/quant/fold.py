"""Input-channel scales folded into the op producing a linear's input: the transformation AWQ
(:mod:`.awq`) and SmoothQuant (:mod:`.smoothquant`) share.

For linears ``y = x W^T`` sharing the input ``x`` and per input channel scales ``s``:
``y = (x / s) (W diag(s))^T``. ``W diag(s)`` replaces each weight and ``1 / s`` is folded into
the producer of ``x``: the RMSNorm weight before q/k/v and before gate/up, the rows of
``up_proj`` before ``down_proj``, the rows of ``v_proj`` before ``o_proj`` when every query
head has its own KV head (no GQA). The float model's outputs are unchanged up to rounding.
"""

from __future__ import annotations

from typing import Callable

from mlcbuild.errors import MlcbuildError
from mlcbuild.quant.calibrate import first_layer_inputs, layer_output


def fold_groups(layer) -> list[tuple[object, list, str]]:
    """``[(producer, [linears], kind)]`` of a Llama-layout decoder layer; ``kind`` ``"norm"``
    (scale a norm weight) or ``"rows"`` (scale a linear's output rows and bias).

    Raises:
        MlcbuildError: a layer without ``input_layernorm``, ``self_attn.{q,k,v,o}_proj``,
            ``post_attention_layernorm``, ``mlp.{gate,up,down}_proj``.
    """
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
        raise MlcbuildError(
            f"folding input-channel scales needs the Llama layer layout: {e}",
            fix="use a round-to-nearest or GPTQ scheme for this architecture",
        ) from e
    return groups


def keep_input(key, inputs: dict):
    """A forward pre-hook storing a linear's first input as ``inputs[key]``."""

    def hook(_module, args):
        inputs.setdefault(key, args[0].detach())

    return hook


def scale_layers(
    model,
    ids,
    choose: Callable[[object, list], object],
    method: str,
    after_layer: Callable[[object, object, dict], None] | None = None,
    on_layer: Callable[[int, int], None] | None = None,
) -> None:
    """Fold ``choose(x [n, s, K], [weights [N_i, K]]) -> s [K]`` into every group of every
    decoder layer of a ``transformers`` causal LM (float32, eval), in place, each layer on the
    inputs the already-scaled layers before it produce. ``after_layer(layer, hidden, kwargs)``
    runs once a layer is scaled (AWQ's clipping search).

    Raises:
        MlcbuildError: Gemma (norms multiply by ``1 + w``: a scale cannot fold into them), or a
            layer layout :func:`fold_groups` does not know; ``method`` names the caller.
    """
    import torch

    if "gemma" in type(model).__name__.lower():
        raise MlcbuildError(
            f"{method} folds scales into RMSNorm weights: Gemma's 1 + w norms are not supported",
            fix="use a round-to-nearest or GPTQ scheme for Gemma",
        )
    layers = model.model.layers
    hidden, kwargs = first_layer_inputs(model, ids)
    for i, layer in enumerate(layers):
        groups = fold_groups(layer)
        inputs: dict = {}
        hooks = [lin[0].register_forward_pre_hook(keep_input(j, inputs)) for j, (_, lin, _k) in enumerate(groups)]
        layer_output(layer, hidden, kwargs)
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for j, (producer, linears, kind) in enumerate(groups):
                s = choose(inputs[j], [lin.weight for lin in linears]).to(torch.float32)
                for lin in linears:
                    lin.weight.mul_(s[None, :])
                if kind == "norm":
                    producer.weight.div_(s)
                else:
                    producer.weight.div_(s[:, None])
                    if producer.bias is not None:
                        producer.bias.div_(s)
        if after_layer:
            after_layer(layer, hidden, kwargs)
        hidden = layer_output(layer, hidden, kwargs)
        if on_layer:
            on_layer(i + 1, len(layers))
