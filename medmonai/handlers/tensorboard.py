"""TensorBoard image summaries of input batches (2D images, or the central slice of 3D volumes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch.utils.tensorboard import SummaryWriter

__all__ = ["TensorBoardInputImages", "TensorBoardLearningRate"]


def _images_of(batch: Any) -> torch.Tensor:
    """``batch["image"]``, for a collated dict batch or a decollated list of per-sample dicts (MONAI engines)."""
    if isinstance(batch, dict):
        return batch["image"]
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], dict):
        return torch.stack([torch.as_tensor(d["image"]) for d in batch])
    return batch[0]


class TensorBoardInputImages:
    """Log the first ``max_images`` images of a batch to TensorBoard every ``interval`` epochs.

    Works for classification, where MONAI's ``TensorBoardImageHandler`` (built for image/label/prediction
    volumes) does not fit: images are min-max scaled per image, 3D volumes show their central axial slice, the first
    channel is shown. Use it on the trainer to see what the network really receives (after augmentation).

    Args:
        summary_writer: a ``SummaryWriter``; if None, one is created in ``log_dir``.
        log_dir: TensorBoard folder when no writer is given.
        tag: image tag.
        batch_transform: takes ``engine.state.batch`` and returns the image tensor (B, C, *spatial);
            default: the ``image`` of a dictionary batch, collated or decollated (MONAI engines decollate).
        max_images: number of images per summary.
        interval: log every ``interval`` epochs.
    """

    def __init__(
        self,
        summary_writer: Any = None,
        log_dir: str = "./runs",
        tag: str = "input_images",
        batch_transform: Callable[[Any], torch.Tensor] | None = None,
        max_images: int = 8,
        interval: int = 1,
    ) -> None:
        if summary_writer is None:
            summary_writer = SummaryWriter(log_dir=log_dir)
        self.writer = summary_writer
        self.tag = tag
        self.batch_transform = batch_transform or _images_of
        self.max_images = max_images
        self.interval = interval

    def attach(self, engine: Engine) -> None:
        """Log at the end of every ``interval``-th epoch."""
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    @staticmethod
    def to_grid_images(images: torch.Tensor, max_images: int = 8) -> torch.Tensor:
        """(B, C, *spatial) -> (N, 1, H, W) in [0, 1]: first channel, central slice of 3D, per-image min-max."""
        x = torch.as_tensor(images).detach().float().cpu()[:max_images, :1]
        if x.ndim == 5:
            x = x[..., x.shape[-1] // 2]
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-8)
        return x.transpose(-1, -2)  # arrays are [i, j] = [x, y]: show rows = j

    def __call__(self, engine: Engine) -> None:
        """Write the summary for the engine's last batch."""
        batch = engine.state.batch
        if batch is None:
            return
        grid = self.to_grid_images(self.batch_transform(batch), self.max_images)
        self.writer.add_images(self.tag, grid, engine.state.epoch, dataformats="NCHW")
        self.writer.flush()


class TensorBoardLearningRate:
    """Log the learning rate of every optimizer parameter group to TensorBoard at each epoch start.

    Args:
        optimizer: the optimizer.
        summary_writer: a ``SummaryWriter``; if None, one is created in ``log_dir``.
        log_dir: TensorBoard folder when no writer is given.
        tag: scalar tag prefix (``lr/group_0``...).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, summary_writer: Any = None, log_dir: str = "./runs", tag="lr"):
        if summary_writer is None:
            summary_writer = SummaryWriter(log_dir=log_dir)
        self.optimizer = optimizer
        self.writer = summary_writer
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        """Log at every epoch start."""
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Write the current learning rates."""
        for i, group in enumerate(self.optimizer.param_groups):
            name = group.get("name", f"group_{i}")
            self.writer.add_scalar(f"{self.tag}/{name}", float(group["lr"]), engine.state.epoch)
