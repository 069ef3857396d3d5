"""Every epoch, a picture of what the masking saw: view, attention, loss prior, ALP, mask, reconstruction."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from ignite import distributed as idist
from ignite.engine import Engine, Events

from .picture_png import OPENUS_PANEL_TITLES, save_panels_png

__all__ = ["MaskingPictureHandler"]


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)


class MaskingPictureHandler:
    """At the end of every epoch (rank 0 only), one row of 6 panels from the last iteration's first global view:
    image, teacher attention, loss prior, ALP, chosen mask, reconstruction; logged to TensorBoard and written as
    a labelled PNG, ``<log_dir>/pictures/<tag>_epoch<NNNN>.png`` (each panel titled).

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

    def row(self, sample: dict[str, torch.Tensor]) -> list[torch.Tensor] | None:
        """The six ``[1, H, W]`` panels scaled to [0, 1], or None when the last masks carried no maps
        (``random_block``)."""
        last = self.masking.last
        if not last or "view" not in sample:
            return None
        view = sample["view"][0, :1]
        size = view.shape[-2:]
        up = lambda m: F.interpolate(m.float().reshape(1, 1, *m.shape[-2:]), size=size, mode="nearest")[0]  # noqa: E731
        row = [view, up(last["attention"]), up(last["loss_prior"]), up(last["alp"]), up(last["mask"]), sample["reconstruction"][0, :1]]
        return [_to_unit(p) for p in row]

    def panels(self, sample: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """``[3, H, 6 * W]`` picture, or None when the last masks carried no maps (``random_block``)."""
        row = self.row(sample)
        return None if row is None else torch.cat(row, dim=-1).expand(3, -1, -1)

    def __call__(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        output = engine.state.output[0] if isinstance(engine.state.output, (list, tuple)) else engine.state.output
        row = self.row((output or {}).get("images") or {})
        if row is None:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=self.log_dir)
        epoch = engine.state.epoch
        self.writer.add_image(self.tag, torch.cat(row, dim=-1).expand(3, -1, -1), epoch)
        self.writer.flush()
        folder = Path(self.log_dir or self.writer.log_dir) / "pictures"
        save_panels_png(dict(zip(OPENUS_PANEL_TITLES, row)), folder / f"{self.tag}_epoch{epoch:04d}.png", title=f"epoch {epoch}")
