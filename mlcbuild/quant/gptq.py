"""GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", arXiv:2210.17323): the integer codes of a group scheme chosen
column by column so that each column's rounding error is compensated in the columns not yet
quantized, weighted by the inverse Hessian of the layer's reconstruction error.

For a linear layer ``y = x W^T`` (``W`` ``[N, K]``) and calibration inputs ``X`` ``[n, K]``,
the error ``|| X W^T - X Q^T ||^2`` has Hessian ``H = 2 X^T X / n`` (``[K, K]``, the same for
every output row). Algorithm 1 of the paper: zero the weights of columns no input reaches,
damp ``H`` (``+ damp * mean(diag H) * I``), take
the upper Cholesky factor ``U`` of ``H^-1``, then for each column ``i`` (in blocks of
``block_size`` columns, "lazy batch updates"): quantize it, ``e = (w_i - q_i) / U[i, i]``,
``W[:, j] -= e U[i, j]`` for the later columns ``j``. With ``act_order`` columns go in order of
decreasing ``diag H`` (the paper's "act-order" heuristic); groups stay the stored layout's
consecutive ``group_size`` columns, each group's scale fixed from the original weights before
any update ("static groups"), so the codes pack into the same layout as round-to-nearest
(:meth:`mlcbuild.quant.group.GroupQuant.pack`) and the same kernels run them. Without
``act_order`` a group's scale is taken when its first column is reached, from the updated
weights, as in the reference implementation.
"""

from __future__ import annotations

import numpy as np

from mlcbuild.quant.group import GroupQuant


def hessian(x):
    """``H = 2 X^T X / n`` of calibration inputs ``x`` ``[..., K]`` (torch, any float dtype):
    ``[K, K]`` float64."""
    import torch

    x = x.reshape(-1, x.shape[-1]).to(torch.float64)
    return 2.0 * x.T @ x / x.shape[0]


def gptq(w: np.ndarray, h, scheme: GroupQuant, block_size: int = 128, act_order: bool = False, damp: float = 0.01):
    """GPTQ codes and scales of a ``[N, K]`` weight under a group scheme.

    Args:
        w: the float weight ``[N, K]`` (out, in).
        h: the Hessian ``[K, K]`` (:func:`hessian`), torch.
        scheme: the group scheme whose grid (bits, group size, scale rule) the codes use.
        block_size: columns per lazy batch update (the paper's ``B = 128``).
        act_order: process columns by decreasing ``diag(h)`` (static groups, see above).
        damp: ``damp * mean(diag h)`` added to the diagonal (the paper's 1 %).
    Returns:
        ``(codes [N, K_pad] uint32, scale [N, K_pad / group_size] model_dtype)`` for
        :meth:`~mlcbuild.quant.group.GroupQuant.pack`; padded columns code 0.
    Raises:
        ValueError: ``h`` is not ``[K, K]`` or not positive definite after damping.
    """
    import torch

    n, k = w.shape
    if tuple(h.shape) != (k, k):
        raise ValueError(f"Hessian of shape {tuple(h.shape)} for a weight with {k} input columns")
    kp, g, top = scheme.padded_k(k), scheme.group_size, scheme.max_int
    W = torch.zeros((n, kp), dtype=torch.float64)
    W[:, :k] = torch.from_numpy(np.asarray(w, dtype=np.float32)).to(torch.float64)
    H = torch.eye(kp, dtype=torch.float64)
    H[:k, :k] = h.to(torch.float64)
    diag = torch.diagonal(H)  # a view: the edits below change H
    dead = diag == 0  # a column no input reaches: zero weight, unit curvature
    W[:, dead] = 0
    diag[dead] = 1.0
    diag[:k] += damp * diag[:k].mean()
    scale = np.zeros((n, kp // g), dtype=scheme.model_dtype)
    if act_order:  # static groups: every scale from the original weights
        scale[:] = scheme.scales(W.numpy().astype(np.float32))
    perm = torch.argsort(torch.diagonal(H), descending=True) if act_order else torch.arange(kp)
    W, H = W[:, perm], H[perm][:, perm]
    try:
        U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    except RuntimeError as e:  # torch.linalg.LinAlgError subclasses RuntimeError
        raise ValueError(f"the Hessian is not positive definite ({e}); raise the damping") from e
    codes = torch.zeros((n, kp), dtype=torch.float64)
    for b0 in range(0, kp, block_size):
        b1 = min(b0 + block_size, kp)
        Wb = W[:, b0:b1].clone()
        Err = torch.zeros_like(Wb)
        for j in range(b1 - b0):
            col = int(perm[b0 + j])
            grp = col // g
            if not act_order and col % g == 0:  # the group's scale from the updated weights
                upd = torch.cat([Wb[:, j:], W[:, b1:]], dim=1)[:, :g].numpy().astype(np.float32)
                scale[:, grp] = scheme.scales(np.pad(upd, ((0, 0), (0, g - upd.shape[1]))))[:, 0]
            s = torch.from_numpy(scale[:, grp].astype(np.float32)).to(torch.float64)
            safe = torch.where(s == 0, torch.ones_like(s), s)
            c = torch.clamp(torch.round(Wb[:, j] / safe) + top, 0, 2 * top)
            q = (c - top) * s
            codes[:, b0 + j] = c
            e = (Wb[:, j] - q) / U[b0 + j, b0 + j]
            Wb[:, j:] -= e[:, None] * U[b0 + j, b0 + j : b1][None, :]
            Err[:, j] = e
        W[:, b1:] -= Err @ U[b0:b1, b1:]
    inverse = torch.argsort(perm)
    codes = codes[:, inverse]
    codes[:, k:] = top  # padding codes zero weights (after the permutation's inverse)
    return codes.numpy().astype(np.uint32), scale
