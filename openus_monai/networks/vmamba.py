"""VMamba v2 encoder ("v05_noz", channel-first) as used by OpenUS, with presets in the timm style."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import DropPath
from torch.utils.checkpoint import checkpoint

from .layers import LayerNorm2d, Mlp2d, init_linear_and_norm, plain_tensor
from .ops.attention import ScanParams, attention_map, attention_scores
from .ss2d import SS2D

__all__ = ["VMamba", "VSSBlock", "vmamba_base", "vmamba_small", "vmamba_tiny"]

STRIDE = 32  # stem /4, then three /2 downsamplings


class VSSBlock(nn.Module):
    """``x + SS2D(norm(x))`` then ``x + MLP(norm2(x))``, each branch with stochastic depth."""

    def __init__(self, dim: int, drop_path: float = 0.0, mlp_ratio: float = 4.0, **ss2d_kwargs) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.op = SS2D(dim, **ss2d_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm2d(dim)
        self.mlp = Mlp2d(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, return_scan_params: bool = False):
        """``[B, C, H, W] -> [B, C, H, W]`` (and the SS2D :class:`ScanParams` if asked)."""
        if torch.jit.is_scripting():  # maps only: no scan parameters in a scripted model
            x = x + self.drop_path(self.op(self.norm(x)))
            return x + self.drop_path(self.mlp(self.norm2(x)))
        mixed = self.op(self.norm(x), return_scan_params=return_scan_params)
        params = None
        if return_scan_params:
            mixed, params = mixed
        x = x + self.drop_path(mixed)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return (x, params) if return_scan_params else x


class VMambaStage(nn.Module):
    """``blocks`` at one resolution, then (except for the last stage) ``downsample`` by 2."""

    def __init__(self, blocks: Sequence[VSSBlock], downsample: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.downsample = downsample


def _downsample(dim_in: int, dim_out: int) -> nn.Sequential:
    # Identity slots keep the original's state-dict indices (`downsample.1`, `downsample.3`).
    return nn.Sequential(nn.Identity(), nn.Conv2d(dim_in, dim_out, 3, 2, 1), nn.Identity(), LayerNorm2d(dim_out))


def _stem(in_channels: int, dim: int) -> nn.Sequential:
    # Keys `patch_embed.{0,2,5,7}` as in the original; the Identity slots hold its (channel-first) permutes.
    return nn.Sequential(
        nn.Conv2d(in_channels, dim // 2, 3, 2, 1),
        nn.Identity(),
        LayerNorm2d(dim // 2),
        nn.Identity(),
        nn.GELU(),
        nn.Conv2d(dim // 2, dim, 3, 2, 1),
        nn.Identity(),
        LayerNorm2d(dim),
    )


class VMamba(nn.Module):
    """VMamba encoder of OpenUS: four stages of VSS blocks with a LayerNorm on every stage output.

    Inputs must have a height and width divisible by 32 (otherwise a ``ValueError`` says so; pad
    first, e.g. with ``monai.transforms.DivisiblePadd(k=32)``). State-dict keys equal the original
    OpenUS backbone's, so its checkpoints load with :func:`load_openus_checkpoint`.

    Args:
        depths: blocks per stage.
        dims: channels of stage 0 (doubling per stage), or the 4 channel counts.
        in_channels: 1 (grayscale ultrasound) or 3.
        d_state, ssm_ratio, dt_rank: SS2D settings (OpenUS: 1, 2.0, ``ceil(C / 16)``).
        mlp_ratio: MLP width relative to the block's channels.
        drop_path_rate: stochastic depth, rising linearly from 0 to this over all blocks.
        use_checkpoint: gradient checkpointing of every block while training (less memory, more time).
        scan_backend: force a selective-scan backend for every SS2D (default: automatic).

    Example::

        enc = VMamba(depths=(1, 1, 2, 2), dims=32)
        maps = enc(torch.randn(2, 3, 64, 64))              # 4 maps [2, C_i, 64 / 2^(i+2), ...]
        maps, scores = enc(x, return_attention=True)       # scores [2, L_last], un-normalised
        tokens = enc.forward_tokens(x, mask=None)          # [2, 1 + L_last, C_3]
    """

    def __init__(
        self,
        depths: Sequence[int] = (2, 2, 15, 2),
        dims: int | Sequence[int] = 96,
        in_channels: int = 3,
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        dt_rank: int | str = "auto",
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
        scan_backend: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(dims, int):
            dims = [dims * 2**i for i in range(len(depths))]
        if len(dims) != len(depths):
            raise ValueError(f"dims {list(dims)} and depths {list(depths)} must have the same length")
        self.depths, self.dims = tuple(depths), tuple(dims)
        self.in_channels = in_channels
        self.use_checkpoint = use_checkpoint
        # the architecture (not training options such as drop path), for self-describing exports (networks.record)
        self.network_args = {"depths": list(depths), "dims": list(dims), "in_channels": in_channels, "d_state": d_state,
                             "ssm_ratio": ssm_ratio, "dt_rank": dt_rank, "mlp_ratio": mlp_ratio}
        self.patch_embed = _stem(in_channels, dims[0])
        self.masked_embed = nn.Parameter(torch.zeros(1, dims[0]))

        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, start = [], 0
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            blocks = [
                VSSBlock(dim, rates[start + j], mlp_ratio, d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank, scan_backend=scan_backend)
                for j in range(depth)
            ]
            start += depth
            last = i == len(depths) - 1
            stages.append(VMambaStage(blocks, nn.Identity() if last else _downsample(dim, dims[i + 1])))
        self.layers = nn.ModuleList(stages)
        for i, dim in enumerate(dims):
            self.add_module(f"outnorm{i}", LayerNorm2d(dim))
        self.apply(init_linear_and_norm)
        for module in self.modules():  # kernels in the layout the channel-last convolutions want: no reorder per call
            if isinstance(module, nn.Conv2d):
                module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)

    @property
    def num_features(self) -> int:
        """Channels of the last stage, ``C_3``."""
        return self.dims[-1]

    def __prepare_scriptable__(self) -> nn.Module:
        """What ``torch.jit.script`` compiles instead: :class:`~openus_monai.networks.scripting.ScriptableVMamba`
        (the same modules, the four maps only)."""
        from .scripting import ScriptableVMamba

        return ScriptableVMamba(self)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"VMamba expects [B, {self.in_channels}, H, W], got {list(x.shape)}")
        h, w = x.shape[-2:]
        if h % STRIDE or w % STRIDE:
            raise ValueError(
                f"VMamba needs height and width divisible by {STRIDE}, got {h} x {w}; "
                f"pad or resize first (e.g. monai.transforms.DivisiblePadd(k={STRIDE}))"
            )

    def _apply_mask(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Write the mask token over stem cells where the (nearest-upsampled) ``mask [B, h, w]`` is set."""
        grid = x.shape[-2:]
        if mask.ndim != 3 or mask.shape[0] != x.shape[0] or grid[0] % mask.shape[1] or grid[1] % mask.shape[2]:
            raise ValueError(f"mask must be [B, h, w] with h, w dividing the stem grid {tuple(grid)}; got {list(mask.shape)}")
        cells = F.interpolate(mask[:, None].float(), size=grid, mode="nearest").bool()
        return torch.where(cells, self.masked_embed.to(x.dtype)[:, :, None, None], x)

    def _run_block(self, block: VSSBlock, x: torch.Tensor, want_params: bool):
        if self.use_checkpoint and self.training and torch.is_grad_enabled() and not want_params:
            return checkpoint(block, x, use_reentrant=False)
        return block(x, return_scan_params=want_params) if want_params else block(x)

    def forward_features(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, return_scan_params: bool = False
    ) -> tuple[list[torch.Tensor], ScanParams | None]:
        """Stage maps, and optionally the scan parameters of the last block of the last stage.

        Args:
            x: ``[B, in_channels, H, W]``, H and W divisible by 32.
            mask: optional ``[B, h, w]`` bool; masked stem cells are replaced by the mask token.
            return_scan_params: capture the :class:`ScanParams` of ``layers[-1].blocks[-1]``.

        Returns:
            four maps ``[B, C_i, H / 2^(i+2), W / 2^(i+2)]`` (channel-last memory) after their output norms,
            and the params (or None).
        """
        self._check_input(x)
        # channel-last memory end to end: convolutions, norms, projections and the fused scan all read and
        # write [B, H, W, C] storage, so no permute has to copy between blocks
        x = self.patch_embed(plain_tensor(x).contiguous(memory_format=torch.channels_last))
        if mask is not None:
            x = self._apply_mask(x, mask)
        maps, params = [], None
        for i, stage in enumerate(self.layers):
            last_stage = i == len(self.layers) - 1
            for j, block in enumerate(stage.blocks):
                want = return_scan_params and last_stage and j == len(stage.blocks) - 1
                x = self._run_block(block, x, want)
                if want:
                    x, params = x
            maps.append(getattr(self, f"outnorm{i}")(x))
            x = stage.downsample(x)
        return maps, params

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, return_attention: bool = False):
        """Args:
            x: ``[B, in_channels, H, W]``.
            mask: optional ``[B, h, w]`` bool mask (see :meth:`forward_features`).
            return_attention: also return each last-stage token's teacher-attention score.

        Returns:
            list of four ``[B, C_i, H_i, W_i]`` maps; with ``return_attention``, ``(maps, scores)`` with
            ``scores [B, L_last]`` (mean over query rows, un-normalised, row-major tokens).
        """
        maps, params = self.forward_features(x, mask, return_scan_params=return_attention)
        if not return_attention:
            return maps
        return maps, attention_scores(params)

    @staticmethod
    def tokens_from_map(feature_map: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w] -> [B, 1 + h*w, C]``: the mean token followed by the tokens in row-major order."""
        tokens = feature_map.flatten(2).transpose(1, 2)
        return torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)

    def forward_tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, in_channels, H, W] -> [B, 1 + HW/1024, C_3]``: mean ("cls") token, then last-stage tokens."""
        return self.tokens_from_map(self.forward_features(x, mask)[0][-1])

    def attention_map(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """The full ``[B, L_last, L_last]`` teacher attention map of the last block (for pictures and tests)."""
        _, params = self.forward_features(x, return_scan_params=True)
        return attention_map(params, normalize=normalize)


def vmamba_tiny(**kwargs) -> VMamba:
    """VMamba-T: depths (2, 2, 5, 2), dims 96."""
    return VMamba(**{"depths": (2, 2, 5, 2), "dims": 96, **kwargs})


def vmamba_small(**kwargs) -> VMamba:
    """VMamba-S, the OpenUS backbone: depths (2, 2, 15, 2), dims 96; 49,380,096 parameters without the mask token."""
    return VMamba(**{"depths": (2, 2, 15, 2), "dims": 96, **kwargs})


def vmamba_base(**kwargs) -> VMamba:
    """VMamba-B: depths (2, 2, 15, 2), dims 128."""
    return VMamba(**{"depths": (2, 2, 15, 2), "dims": 128, **kwargs})
