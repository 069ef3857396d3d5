"""Low-precision inference: GEMM and convolution weights stored in the autocast dtype, cast once."""

from __future__ import annotations

import torch
import torch.nn as nn

from .ss2d import SS2D

__all__ = ["cast_weights_for_autocast"]

# modules whose weights autocast feeds to a lower-precision op (linear, matmul, convolution)
_GEMM_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@torch.no_grad()
def cast_weights_for_autocast(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Store the weights that ``torch.autocast`` would cast to ``dtype`` on every call in ``dtype`` once.

    Under ``torch.autocast(device, dtype)`` a float32 model's linear and convolution weights are cast on each
    forward: at batch 1 on the CPU those casts cost VMamba-S about a tenth of its bfloat16 forward. After this
    call the linear and convolution modules (and SS2D's ``x_proj_weight``, a matrix product's operand) hold
    ``dtype`` weights and biases, so autocast has nothing left to cast; what autocast keeps in float32 keeps its
    float32 parameters (norms, the selective scan's ``A``, ``D``, step-size projection and bias). Outputs equal
    autocast's on the float32 model (the same roundings of the same weights).

    Use it for inference, always under autocast (a cast module fed float32 outside autocast raises a dtype
    mismatch)::

        model = cast_weights_for_autocast(model.eval())
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)

    bfloat16 is faster than float32 only where the CPU computes in it natively (``avx512_bf16`` or AMX on x86);
    elsewhere autocast emulates it, several times slower (``benchmarks/bench_vmamba.py --profile`` prints which).

    Args:
        model: any module; changed in place (its optimiser, if any, no longer matches its parameters).
        dtype: the autocast dtype, ``torch.bfloat16`` or ``torch.float16``.

    Returns:
        ``model``.
    """
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.bfloat16 or torch.float16 (an autocast dtype), got {dtype}")
    for module in model.modules():
        if isinstance(module, _GEMM_MODULES):
            names = ("weight", "bias")
        elif isinstance(module, SS2D):
            names = ("x_proj_weight",)
        else:
            continue
        for name in names:
            param = getattr(module, name)
            if param is not None and param.is_floating_point():
                param.data = param.data.to(dtype)
    return model
