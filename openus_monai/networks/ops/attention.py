"""The "teacher attention" of an SS2D layer, as OpenUS defines it, without the L x L maps.

For direction ``k`` and channel ``d`` of the scan, with ``delta = softplus(dt + bias)``,
``A = -exp(A_log)`` and ``S = cumsum(delta * A)``, OpenUS uses the implicit attention of the
recurrence ``attn_k[i, j] = mean_d sum_n C_in B_jn exp(S_i - S_j)`` for ``j <= i`` (zero above the
diagonal). The four direction maps are taken back to row-major token order and summed; pretraining
scores each token by the mean over query rows, ``attn.mean(1)``.

Column sums need no map: ``R_j = sum_{i >= j} C_i exp(S_i - S_j)`` obeys the reverse recurrence
``R_j = C_j + exp(delta_{j+1} A) R_{j+1}``, a scan in which only decays in ``[0, 1]`` multiply, so it
is exact for any sequence length and step size (the direct form ``exp(-S_j) sum_i C_i exp(S_i)``
overflows). Memory is O(L) per channel instead of O(L^2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cross_scan import direction_orders
from .scan_cpu import linear_recurrence

__all__ = ["ScanParams", "attention_map", "attention_scores"]


class ScanParams(tuple):
    """``(delta, A, B, C)`` of an SS2D layer: ``delta [B, K, D, L]`` (after bias and softplus),
    ``A [K, D, N]``, ``B`` and ``C`` ``[B, K, N, L]``, for a map of ``height`` x ``width`` tokens."""

    def __new__(cls, delta, A, B, C, height: int, width: int):
        obj = super().__new__(cls, (delta, A, B, C))
        obj.height, obj.width = height, width
        return obj


def _to_token_order(x: torch.Tensor, orders: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Reorder sequence axes ``dims`` of a per-direction tensor ``[B, K, ...]`` to token order."""
    inverse = orders.argsort(dim=1)
    out = []
    for k in range(orders.shape[0]):
        xk = x[:, k]
        for dim in dims:
            xk = xk.index_select(dim - 1, inverse[k])
        out.append(xk)
    return torch.stack(out, dim=1)


def attention_scores(params: ScanParams) -> torch.Tensor:
    """Each token's mean attention over query rows, in O(L) memory per channel (un-normalised).

    Args:
        params: the layer's :class:`ScanParams`.

    Returns:
        ``[B, L]`` float32, in row-major token order; equal to ``attention_map(params, normalize=False).mean(1)``.
    """
    delta, A, B, C = (t.float() for t in params)
    batch, heads, dim, length = delta.shape
    decay = torch.exp(delta[..., None] * A[None, :, :, None, :])  # [B, K, D, L, N]
    # R_j = C_j + decay_{j+1} R_{j+1}: shift decays one step so position j multiplies R_{j+1}.
    shifted = F.pad(decay[..., 1:, :], (0, 0, 0, 1))
    reach = linear_recurrence(shifted, C.transpose(-1, -2)[:, :, None], dim=3, reverse=True)
    columns = (reach * B.transpose(-1, -2)[:, :, None]).sum(-1).mean(2)  # [B, K, L]
    orders = direction_orders(params.height, params.width, device=delta.device)
    return _to_token_order(columns, orders, dims=(2,)).sum(1) / length


def attention_map(params: ScanParams, normalize: bool = True) -> torch.Tensor:
    """The full ``[B, L, L]`` attention map (queries x keys), as the original OpenUS code builds it.

    Memory is ``B * K * D * L^2``: use it for pictures and tests, and :func:`attention_scores` in training.

    Args:
        params: the layer's :class:`ScanParams`.
        normalize: min-max normalise over the whole batch tensor, as the original does.

    Returns:
        ``[B, L, L]`` float32 in row-major token order.
    """
    delta, A, B, C = (t.float() for t in params)
    length = delta.shape[-1]
    log_decay = delta[..., None] * A[None, :, :, None, :]  # [B, K, D, L, N]
    # S_i - S_j summed term by term (no difference of two large cumsums): [B, K, D, N, L_i, L_j].
    steps = log_decay.movedim(3, -1)[..., None, :].expand(*log_decay.shape[:3], log_decay.shape[-1], length, length)
    below = torch.ones(length, length, dtype=torch.bool, device=delta.device).tril(-1)
    segment = steps.transpose(-1, -2).masked_fill(~below, 0.0).cumsum(-2)
    causal = torch.ones_like(below).tril()
    weights = torch.exp(segment.masked_fill(~causal, float("-inf")))
    c = C.transpose(-1, -2)[:, :, None, :, :, None].movedim(-2, 3)  # [B, K, 1, N, L_i, 1]
    b = B[:, :, None, :, None, :]  # [B, K, 1, N, 1, L_j]
    maps = (c * weights * b).sum(3).mean(2)  # [B, K, L_i, L_j]
    orders = direction_orders(params.height, params.width, device=delta.device)
    attn = _to_token_order(maps, orders, dims=(2, 3)).sum(1)
    if normalize:
        attn = (attn - attn.min()) / (attn.max() - attn.min()).clamp_min(torch.finfo(attn.dtype).tiny)
    return attn
