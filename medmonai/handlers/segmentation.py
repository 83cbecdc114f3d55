"""TensorBoard overlays of image, reference label and prediction for segmentation validation.

MONAI's ``TensorBoardImageHandler`` logs image, label and prediction as three separate images (animated for 3D);
:class:`TensorBoardSegmentationOverlay` draws them on top of each other, one RGB image per case: the grey image, the
reference in green, the prediction in red (agreement is yellow), on the 2D image or on the axial slice of a 3D
volume that holds the most reference foreground (so the structure is always visible).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch.utils.tensorboard import SummaryWriter

__all__ = ["overlay_rgb", "TensorBoardSegmentationOverlay"]


def _labels(x: torch.Tensor) -> torch.Tensor:
    """A label map ``(*spatial)`` from a label map ``(1, *spatial)`` or scores/one-hot ``(C, *spatial)``."""
    x = torch.as_tensor(x).detach().cpu()
    return x.argmax(0) if x.shape[0] > 1 else x[0].round().long()


def overlay_rgb(image: torch.Tensor, label: torch.Tensor | None, pred: torch.Tensor | None, alpha: float = 0.5):
    """An RGB overlay ``(3, H, W)`` in [0, 1] of one case (channel-first tensors, 2D or 3D).

    Args:
        image: ``(C, *spatial)``; the first channel is shown, min-max scaled.
        label: reference ``(1, *spatial)`` or one-hot ``(C, *spatial)``; foreground in green.
        pred: prediction, same forms (logits/probabilities are arg-maxed); foreground in red.
        alpha: opacity of the colours.

    Returns:
        ``(3, H, W)`` float tensor with rows = the second array axis (as TensorBoard shows ``[i, j]`` images).
    """
    img = torch.as_tensor(image).detach().float().cpu()[0]
    lab = _labels(label) > 0 if label is not None else torch.zeros_like(img, dtype=torch.bool)
    prd = _labels(pred) > 0 if pred is not None else torch.zeros_like(img, dtype=torch.bool)
    if img.ndim == 3:
        counts = lab.flatten(0, 1).sum(0) if lab.any() else prd.flatten(0, 1).sum(0)
        k = int(counts.argmax()) if counts.any() else img.shape[-1] // 2
        img, lab, prd = img[..., k], lab[..., k], prd[..., k]
    lo, hi = img.min(), img.max()
    grey = (img - lo) / (hi - lo).clamp_min(1e-8)
    rgb = grey.expand(3, *grey.shape).clone()
    colour = torch.zeros(3, *grey.shape)
    colour[0] = prd.float()
    colour[1] = lab.float()
    mask = (lab | prd).float()
    rgb = rgb * (1 - alpha * mask) + alpha * colour * mask
    return rgb.clamp(0, 1).transpose(-1, -2)


class TensorBoardSegmentationOverlay:
    """Log image/label/prediction overlays of the last validation batch every ``interval`` epochs.

    Attach to the *evaluator* (its ``state.output`` holds ``image``, ``label`` and ``pred`` per case, decollated by
    MONAI engines); the step is the trainer's epoch when ``epoch_engine`` (the trainer) is given.

    Args:
        summary_writer: a ``SummaryWriter``; if None, one is created in ``log_dir``.
        log_dir: TensorBoard folder when no writer is given.
        tag: image tag.
        max_images: cases per summary.
        interval: log every ``interval``-th evaluator run.
        output_transform: maps ``engine.state.output`` to a list of ``{"image", "label", "pred"}`` dicts.
        epoch_engine: the engine whose epoch is used as the step (the trainer).
    """

    def __init__(
        self,
        summary_writer: Any = None,
        log_dir: str = "./runs",
        tag: str = "val_overlay",
        max_images: int = 4,
        interval: int = 1,
        output_transform: Callable[[Any], Sequence[dict[str, Any]]] | None = None,
        epoch_engine: Engine | None = None,
    ) -> None:
        if summary_writer is None:
            summary_writer = SummaryWriter(log_dir=log_dir)
        self.writer = summary_writer
        self.tag = tag
        self.max_images = max_images
        self.interval = interval
        self.output_transform = output_transform
        self.epoch_engine = epoch_engine
        self._calls = 0

    def attach(self, engine: Engine) -> None:
        """Log when the evaluator completes a run."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Write the overlays of the engine's last output."""
        self._calls += 1
        if (self._calls - 1) % self.interval:
            return
        output = engine.state.output
        if output is None:
            return
        items = self.output_transform(output) if self.output_transform else output
        if isinstance(items, dict):  # a collated batch
            n = len(items["image"])
            items = [{k: items[k][i] for k in ("image", "label", "pred") if k in items} for i in range(n)]
        images = [overlay_rgb(d["image"], d.get("label"), d.get("pred")) for d in list(items)[: self.max_images]]
        if not images:
            return
        h = max(i.shape[1] for i in images)
        w = max(i.shape[2] for i in images)
        batch = torch.zeros(len(images), 3, h, w)
        for n, im in enumerate(images):
            batch[n, :, : im.shape[1], : im.shape[2]] = im
        step = self.epoch_engine.state.epoch if self.epoch_engine is not None else self._calls
        self.writer.add_images(self.tag, batch, step, dataformats="NCHW")
        self.writer.flush()
