"""The mamba-ssm CUDA selective-scan kernel, imported directly.

``import mamba_ssm`` pulls in Triton kernels and other modules that fail on machines without them;
the compiled extension ``selective_scan_cuda`` alone is all this backend needs.
"""

from __future__ import annotations

import torch
from monai.utils import optional_import

from .scan_inputs import ScanInputs

selective_scan_cuda, HAS_MAMBA_SSM = optional_import("selective_scan_cuda")

__all__ = ["HAS_MAMBA_SSM", "selective_scan_mamba_ssm"]


class _MambaSelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
        out, x, *_ = selective_scan_cuda.fwd(u, delta, A, B, C, D, None, delta_bias, delta_softplus)
        ctx.delta_softplus = delta_softplus
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, x)
        return out

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, delta_bias, x = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, ddelta_bias, *_ = selective_scan_cuda.bwd(
            u, delta, A, B, C, D, None, delta_bias, dout.contiguous(), x, None, None, ctx.delta_softplus, False
        )
        return du, ddelta, dA, dB, dC, (dD if D is not None else None), (ddelta_bias if delta_bias is not None else None), None


def selective_scan_mamba_ssm(inputs: ScanInputs) -> torch.Tensor:
    """mamba-ssm's fused kernel (CUDA tensors only). Inputs as :class:`~.scan_inputs.ScanInputs`."""
    u, delta, A, B, C, D, delta_bias, delta_softplus = inputs
    if not HAS_MAMBA_SSM:
        raise RuntimeError("the mamba_ssm scan backend needs mamba-ssm's compiled 'selective_scan_cuda' extension")
    if not u.is_cuda:
        raise RuntimeError("the mamba_ssm scan backend runs on CUDA tensors only; got a tensor on " + str(u.device))
    A = A.float()
    D = D.float() if D is not None else None
    delta_bias = delta_bias.float() if delta_bias is not None else None
    return _MambaSelectiveScan.apply(u, delta, A, B, C, D, delta_bias, delta_softplus)
