"""One entry point for the selective scan, dispatching to the best available backend."""

from __future__ import annotations

import os
import torch

from .scan_cpu import selective_scan_cpu
from .scan_cuda import HAS_MAMBA_SSM, selective_scan_mamba_ssm
from .scan_fused import fused_scan_available, fused_scan_error, selective_scan_fused_cpu
from .scan_graph import selective_scan_graph_backend
from .scan_inputs import ScanBackend, ScanInputs
from .scan_reference import selective_scan_reference
from .scan_triton import selective_scan_triton, triton_scan_error

__all__ = ["SCAN_BACKENDS", "available_backends", "resolve_backend", "selective_scan"]

ENV_VAR = "OPENUS_SCAN_BACKEND"

#: the backends, by name; each takes one :class:`~openus_monai.networks.ops.scan_inputs.ScanInputs`
SCAN_BACKENDS: dict[str, ScanBackend] = {
    "reference": selective_scan_reference,
    "fused_cpu": selective_scan_fused_cpu,
    "torch": selective_scan_cpu,
    "mamba_ssm": selective_scan_mamba_ssm,
    "graph": selective_scan_graph_backend,
    # opt-in only, never in available_backends: run on one GPU (H200) so far, and it refuses inputs past int32 indexing
    "triton": selective_scan_triton,
}


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on ``device`` in this environment, fastest first."""
    device = torch.device(device)
    # the fused kernel is one custom op (openus_monai::fused_selective_scan) to torch.compile and torch.export,
    # but a TorchScript tracer or scripting compiler cannot call it: they get the pure-PyTorch scan
    fused = ["fused_cpu"] if device.type == "cpu" and not (torch.jit.is_tracing() or torch.jit.is_scripting()) and fused_scan_available() else []
    if torch.compiler.is_exporting():  # torch.export (and the ONNX exporter on it): one portable graph for every length
        return ["graph"] + fused + ["torch", "reference"]
    if device.type == "cuda":
        names = ["mamba_ssm"] if HAS_MAMBA_SSM else []
    else:
        names = fused
    return names + ["torch", "reference"]


def resolve_backend(device: torch.device | str, backend: str | None = None) -> str:
    """The backend to use: ``backend``, else ``$OPENUS_SCAN_BACKEND``, else the fastest available.

    Raises:
        ValueError: unknown backend name.
        RuntimeError: a forced backend that cannot run here, with the reason.
    """
    name = backend or os.environ.get(ENV_VAR) or None
    usable = available_backends(device)
    if name is None:
        return usable[0]
    if name not in SCAN_BACKENDS:
        raise ValueError(f"unknown selective-scan backend {name!r} (from {ENV_VAR} or argument); choose from {sorted(SCAN_BACKENDS)}")
    if name == "triton":  # opt-in: usable whenever its kernels can run here
        error = triton_scan_error(device)
        if error:
            raise RuntimeError(f"selective-scan backend 'triton' was forced but cannot run on {torch.device(device)}: {error}")
        return name
    if name not in usable:
        if name == "fused_cpu":
            if torch.device(device).type != "cpu":
                why = "it runs on CPU tensors only"
            elif fused_scan_error():
                why = f"the kernel could not be built ({fused_scan_error()})"
            else:
                why = "a TorchScript tracer or scripting compiler is capturing the graph and cannot call the C kernel"
        else:
            why = "mamba-ssm's compiled 'selective_scan_cuda' is not importable" if not HAS_MAMBA_SSM else "it runs on CUDA tensors only"
        raise RuntimeError(f"selective-scan backend {name!r} was forced but cannot run on {torch.device(device)}: {why}")
    return name


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Selective scan (Mamba S6): ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t h_t + D u_t``.

    Args:
        u, delta, A, B, C, D, delta_bias, delta_softplus: the scan's inputs, shapes as documented once in
            :class:`~openus_monai.networks.ops.scan_inputs.ScanInputs`.
        backend: ``"reference"`` (sequential, autograd through the loop: the test oracle),
            ``"fused_cpu"`` (a C kernel compiled on first use: one pass forward, one pass backward),
            ``"torch"`` (fast pure PyTorch: chunked recurrence, hand-written reverse-scan backward),
            ``"mamba_ssm"`` (mamba-ssm's CUDA kernel), ``"graph"`` (loop-free, for ``torch.export`` / ONNX /
            scripting: any length in one graph), ``"triton"`` (fused Triton kernels on CUDA, opt-in only;
            the fastest on a GPU: ``benchmarks/gpu_check.sh``); default ``$OPENUS_SCAN_BACKEND`` or the fastest
            one available for ``u.device``.

    Returns:
        ``y`` ``[B, D, L]`` in ``u.dtype`` (accumulated in float32).
    """
    inputs = ScanInputs(u, delta, A, B, C, D, delta_bias, delta_softplus)
    return SCAN_BACKENDS[resolve_backend(u.device, backend)](inputs)
