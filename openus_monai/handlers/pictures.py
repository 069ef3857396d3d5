"""Every epoch, a picture of what the masking saw: view, attention, loss prior, ALP, mask, reconstruction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from ignite import distributed as idist
from ignite.engine import Engine, Events

__all__ = ["MaskingPictureHandler"]


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)


class MaskingPictureHandler:
    """Log to TensorBoard, at the end of every epoch, one row of 6 panels from the last iteration's first
    global view: image, teacher attention, loss prior, ALP, chosen mask, reconstruction (rank 0 only).

    Args:
        masking: the :class:`~openus_monai.methods.SelfAdaptiveMasking` (its ``last`` maps); the view and its
            reconstruction are the ``images`` entry of the last iteration output.
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter``; or ``log_dir`` to create one.
        tag: image tag.
    """

    def __init__(self, masking, summary_writer=None, log_dir: str | None = None, tag: str = "masking") -> None:
        self.masking, self.writer, self.log_dir, self.tag = masking, summary_writer, log_dir, tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def panels(self, sample: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """``[3, H, 6 * W]`` picture, or None when the last masks carried no maps (``random_block``)."""
        last = self.masking.last
        if not last or "view" not in sample:
            return None
        view = sample["view"][0, :1]
        size = view.shape[-2:]
        up = lambda m: F.interpolate(m.float().reshape(1, 1, *m.shape[-2:]), size=size, mode="nearest")[0]  # noqa: E731
        row = [view, up(last["attention"]), up(last["loss_prior"]), up(last["alp"]), up(last["mask"]), sample["reconstruction"][0, :1]]
        return torch.cat([_to_unit(p) for p in row], dim=-1).expand(3, -1, -1)

    def __call__(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        output = engine.state.output[0] if isinstance(engine.state.output, (list, tuple)) else engine.state.output
        picture = self.panels((output or {}).get("images") or {})
        if picture is None:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=self.log_dir)
        self.writer.add_image(self.tag, picture, engine.state.epoch)
        self.writer.flush()
