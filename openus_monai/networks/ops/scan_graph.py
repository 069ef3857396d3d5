"""Loop-free selective scan for graph capture: TorchScript scripting, ``torch.export`` and ONNX.

The eager backends (:mod:`.scan_cpu`, :mod:`.scan_fused`) step through the sequence in Python or in C, so a
tracer unrolls their loops for one sequence length and a scripting compiler cannot see inside the kernel.
This form has no data-dependent loop: the recurrence ``h_t = a_t h_{t-1} + b_t`` with ``a_t = exp(delta_t A)``
is solved in closed form inside chunks of ``chunk`` steps and then across chunks (the chunked "state space
dual" form of Mamba-2):

- within a chunk, ``h_t = sum_{s <= t} exp(S_t - S_s) b_s`` with ``S`` the running sum of ``delta * A``
  (a ``[chunk, chunk]`` lower-triangular weight per channel);
- the chunk-final states are combined the same way over chunks, with the chunk totals of ``delta * A``;
- each step then adds ``exp(S_t)`` times the state carried in from the previous chunk.

Every exponent is a sum of ``delta * A <= 0`` over a stretch of steps, so nothing overflows (no division by
a decay). The same graph serves any sequence length, hence any image height and width. Inference only:
it is differentiable, but the eager backends are faster for training.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .scan_inputs import ScanInputs

__all__ = ["CHUNK", "selective_scan_graph", "selective_scan_graph_backend"]

CHUNK = 16  # steps per chunk: work ~ L * CHUNK within chunks + (L / CHUNK)^2 across them


def _segment_weights(cumulative: torch.Tensor) -> torch.Tensor:
    """``exp(S_t - S_s)`` for ``s <= t`` and 0 above the diagonal: ``[..., T] -> [..., T, T]`` (rows ``t``)."""
    steps = cumulative.shape[-1]
    lower = torch.ones(steps, steps, dtype=torch.bool, device=cumulative.device).tril()
    diff = cumulative.unsqueeze(-1) - cumulative.unsqueeze(-2)
    return torch.exp(diff.masked_fill(~lower, float("-inf")))


def selective_scan_graph(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    chunk: int = CHUNK,
) -> torch.Tensor:
    """Selective scan without loops (same contract and numbers as the other backends, float32 accumulation).

    Args:
        u: input ``[B, D, L]``.
        delta: step sizes ``[B, D, L]`` (before ``delta_bias`` and softplus).
        A: diagonal state matrix ``[D, N]``.
        B: input projection ``[B, G, N, L]``, G groups evenly dividing D.
        C: output projection ``[B, G, N, L]``.
        D: skip ``[D]`` or None.
        delta_bias: ``[D]`` or None.
        delta_softplus: apply softplus to ``delta + delta_bias``.
        chunk: steps per chunk (any positive value gives the same numbers).

    Returns:
        ``y`` ``[B, D, L]`` in ``u.dtype``.
    """
    batch, dim, length = u.shape[0], u.shape[1], u.shape[2]
    groups, d_state = B.shape[1], B.shape[2]
    per_group = dim // groups
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    # [B, G, D/G, N, L]
    log_decay = dt.view(batch, groups, per_group, 1, length) * A.float().view(groups, per_group, d_state, 1)
    drive = (dt * u.float()).view(batch, groups, per_group, 1, length) * B.float().view(batch, groups, 1, d_state, length)
    pad = (chunk - length % chunk) % chunk  # steps appended at the end never influence earlier ones
    log_decay, drive = F.pad(log_decay, [0, pad]), F.pad(drive, [0, pad])
    n_chunks = (length + pad) // chunk
    shape = [batch, groups, per_group, d_state, n_chunks, chunk]
    log_decay, drive = log_decay.reshape(shape), drive.reshape(shape)

    within = log_decay.cumsum(-1)  # S_t inside each chunk
    h = torch.matmul(_segment_weights(within), drive.unsqueeze(-1)).squeeze(-1)  # from a zero state
    across = within[..., -1].cumsum(-1)  # running chunk totals [..., n_chunks]
    ends = torch.matmul(_segment_weights(across), h[..., -1:]).squeeze(-1)  # true state at each chunk's end
    carried = F.pad(ends[..., :-1], [1, 0])  # state entering each chunk (zero for the first)
    h = h + torch.exp(within) * carried.unsqueeze(-1)

    h = h.reshape(batch, groups, per_group, d_state, n_chunks * chunk)[..., :length]
    y = (h * C.float().view(batch, groups, 1, d_state, length)).sum(3).reshape(batch, dim, length)
    if D is not None:
        y = y + D.float()[:, None] * u.float()
    return y.to(u.dtype)


def selective_scan_graph_backend(inputs: ScanInputs) -> torch.Tensor:
    """:func:`selective_scan_graph` as a registered backend (``"graph"``: taken under ``torch.export``)."""
    return selective_scan_graph(*inputs)
