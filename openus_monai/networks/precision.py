"""Low-precision inference: GEMM and convolution weights stored in the autocast dtype, cast once, and an
inferer that runs another under autocast (what MONAI's evaluators do only on CUDA)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
from monai.inferers import Inferer, SimpleInferer

from .ss2d import SS2D

__all__ = ["AutocastInferer", "cast_weights_for_autocast"]

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


def _to_float32(output: Any) -> Any:
    """``output`` with every floating tensor (alone, or in a dict, list or tuple) as float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, Mapping):
        return {k: _to_float32(v) for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return type(output)(_to_float32(v) for v in output)
    return output


class AutocastInferer(Inferer):
    """Run ``inferer`` under ``torch.autocast`` on the inputs' device and return float32 outputs, so that the
    post-processing sees what a float32 run gives it.

    With a network passed through :func:`cast_weights_for_autocast`, this is the bundles' ``cpu_bf16`` inference
    (MONAI's ``SupervisedEvaluator`` autocasts only on CUDA)::

        network = cast_weights_for_autocast(network.eval())
        inferer = AutocastInferer(SimpleInferer())

    Args:
        inferer: the inferer to run (default :class:`monai.inferers.SimpleInferer`).
        dtype: the autocast dtype.
    """

    def __init__(self, inferer: Inferer | None = None, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.dtype = dtype

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(inputs.device.type, dtype=self.dtype):
            output = self.inferer(inputs, network, *args, **kwargs)
        return _to_float32(output)
