"""SS2D: the 2D selective-scan mixer of VMamba v2 (the "v05_noz" form OpenUS uses)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import LayerNorm2d, Linear2d
from .ops.attention import ScanParams
from .ops.cross_scan import cross_merge, cross_scan
from .ops.scan_fused import MAX_STATE, fused_scan
from .ops.scan_graph import selective_scan_graph
from .ops.scan_triton import triton_fused_scan
from .ops.selective_scan import resolve_backend, selective_scan

__all__ = ["SS2D"]


class SS2D(nn.Module):
    """Four-direction selective scan over a ``[B, C, H, W]`` map.

    ``in_proj`` (1x1, no bias) -> depthwise 3x3 conv (no bias) -> SiLU -> cross scan into 4 sequences
    -> per-direction projections to ``dt, B, C`` -> selective scan -> cross merge -> LayerNorm2d ->
    ``out_proj`` (1x1, no bias). No z-gate. Parameter names and shapes follow VMamba/OpenUS so their
    checkpoints load unchanged.

    Args:
        dim: channels ``C`` in and out.
        d_state: SSM state size ``N``.
        ssm_ratio: ``d_inner = ssm_ratio * C``.
        dt_rank: rank of the step-size projection; ``"auto"`` is ``ceil(C / 16)``.
        d_conv: depthwise kernel size.
        dt_min, dt_max, dt_init_floor: range of the initial step sizes (Mamba's initialisation).
        scan_backend: force a selective-scan backend (default: automatic, see :func:`selective_scan`).
    """

    directions = 4
    __constants__ = ["directions"]  # so that TorchScript sees the class attribute

    def __init__(
        self,
        dim: int,
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        dt_rank: int | str = "auto",
        d_conv: int = 3,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        scan_backend: str | None = None,
    ) -> None:
        super().__init__()
        d_inner = int(ssm_ratio * dim)
        self.d_inner, self.d_state = d_inner, d_state
        self.dt_rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        self.scan_backend = scan_backend
        k = self.directions

        self.in_proj = Linear2d(dim, d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=False)
        self.act = nn.SiLU()
        self.x_proj_weight = nn.Parameter(torch.empty(k, self.dt_rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, self.dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        self.A_logs = nn.Parameter(torch.empty(k * d_inner, d_state))
        self.Ds = nn.Parameter(torch.empty(k * d_inner))
        self.out_norm = LayerNorm2d(d_inner)
        self.out_proj = Linear2d(d_inner, dim, bias=False)
        self._init_ssm(dt_min, dt_max, dt_init_floor)

    @torch.no_grad()
    def _init_ssm(self, dt_min: float, dt_max: float, dt_init_floor: float) -> None:
        """Mamba's initialisation: S4D-real ``A``, unit ``D``, step sizes log-uniform in ``[dt_min, dt_max]``."""
        bound = self.d_inner**-0.5
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_projs_weight, -std, std)
        dt = torch.exp(torch.rand_like(self.dt_projs_bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        self.A_logs.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).expand_as(self.A_logs))
        self.Ds.fill_(1.0)

    def ssm_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ScanParams]:
        """The scan's input sequences and parameters for ``x``.

        Args:
            x: ``[B, C, H, W]``.

        Returns:
            ``xs [B, K, D, L]`` and :class:`ScanParams` (``dt`` before bias/softplus in ``delta``).
        """
        height, width = x.shape[-2:]
        xs, dts, a, bs, cs = self._projections(x)
        return xs, ScanParams(dts, a, bs, cs, height, width)

    def _projections(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``xs [B, K, D, L]``, ``dts [B, K, D, L]`` (before bias/softplus), ``A [K, D, N]``, ``B, C [B, K, N, L]``."""
        x = self.act(self.conv2d(self.in_proj(x)))
        xs = cross_scan(x)  # [B, K, D, L]
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, bs, cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        a = -torch.exp(self.A_logs.float()).view(self.directions, self.d_inner, self.d_state)
        return xs, dts, a, bs, cs

    def forward(self, x: torch.Tensor, return_scan_params: bool = False):
        """Args:
            x: ``[B, C, H, W]``.
            return_scan_params: also return the :class:`ScanParams` with ``delta`` after bias and softplus
                (what the teacher-attention functions take).

        Returns:
            ``[B, C, H, W]``, and the scan parameters if asked.
        """
        if torch.jit.is_scripting():  # the code below (backend choice, C kernel, tuples) is not compiled
            return self._forward_graph(x)
        backend = resolve_backend(x.device, self.scan_backend)
        if backend == "fused_cpu" and not return_scan_params and self.d_state <= MAX_STATE:
            return self._forward_fused(x)
        if backend == "triton" and not return_scan_params:  # opt-in; same layout and semantics as fused_scan
            return self._forward_fused(x, triton_fused_scan)
        batch, _, height, width = x.shape
        xs, params = self.ssm_inputs(x)
        dts, a, bs, cs = params
        flat = batch, self.directions * self.d_inner, height * width
        ys = selective_scan(
            xs.reshape(flat),
            dts.reshape(flat),
            a.view(-1, self.d_state),
            bs,
            cs,
            self.Ds,
            delta_bias=self.dt_projs_bias.view(-1),
            delta_softplus=True,
            backend=backend,
        )
        y = cross_merge(ys.view(batch, self.directions, self.d_inner, -1), height, width)
        out = self.out_proj(self.out_norm(y.to(x.dtype)))
        if not return_scan_params:
            return out
        delta = F.softplus(dts.float() + self.dt_projs_bias.float()[None, :, :, None])
        return out, ScanParams(delta, a, bs, cs, height, width)

    def _forward_graph(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on the loop-free scan (:func:`~.ops.scan_graph.selective_scan_graph`): what a
        scripted model runs, at any height and width.

        Args:
            x: ``[B, C, H, W]``.

        Returns:
            ``[B, C, H, W]``.
        """
        batch, height, width = x.shape[0], x.shape[2], x.shape[3]
        xs, dts, a, bs, cs = self._projections(x)
        channels = self.directions * self.d_inner
        ys = selective_scan_graph(
            xs.reshape(batch, channels, height * width),
            dts.reshape(batch, channels, height * width),
            a.view(-1, self.d_state),
            bs,
            cs,
            self.Ds,
            self.dt_projs_bias.view(-1),
            True,
        )
        y = cross_merge(ys.view(batch, self.directions, self.d_inner, height * width), height, width)
        return self.out_proj(self.out_norm(y.to(x.dtype)))

    def _forward_fused(self, x: torch.Tensor, scan=fused_scan) -> torch.Tensor:
        """:meth:`forward` on the fused CPU kernel: the same numbers, computed token-major and channel-last,
        so the cross scan, the four scans and the cross merge are one kernel call with no copies in between.

        Args:
            x: ``[B, C, H, W]``.
            scan: :func:`fused_scan` or a function with its signature (the opt-in Triton kernels).

        Returns:
            ``[B, C, H, W]`` (a channel-last view).
        """
        batch, _, height, width = x.shape
        k, rank, n = self.directions, self.dt_rank, self.d_state
        x = self.act(self.conv2d(self.in_proj(x)))
        tokens = x.permute(0, 2, 3, 1).reshape(batch, height * width, self.d_inner)  # [B, L, D], a view if channel-last
        x_dbl = torch.matmul(tokens, self.x_proj_weight.view(-1, self.d_inner).t()).view(batch, -1, k, rank + 2 * n)
        dts, bs, cs = torch.split(x_dbl, [rank, n, n], dim=-1)  # dts [B, L, K, R]: projected inside the scan
        a = -torch.exp(self.A_logs.float()).view(k, self.d_inner, n)
        y = scan(tokens, dts, a, bs, cs, self.Ds.view(k, self.d_inner), height, width, self.dt_projs_bias, True,
                 delta_weight=self.dt_projs_weight)  # [B, L, D]
        norm = self.out_norm
        y = F.layer_norm(y.to(x.dtype), norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        out = F.linear(y, self.out_proj.weight, self.out_proj.bias)  # [B, L, C]
        return out.view(batch, height, width, -1).permute(0, 3, 1, 2)
