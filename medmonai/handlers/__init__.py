"""Ignite handlers for the bundles: resumable checkpoints, early stopping, best-weight restore, TensorBoard extras.

TensorBoard extras: input images, learning rates, segmentation overlays; plus a training time budget.
"""

from __future__ import annotations

from medmonai.handlers import checkpoint, segmentation, tensorboard, time_budget
from medmonai.handlers.checkpoint import EarlyStopOnValidation, RestoreBestWeights, ResumableCheckpoint
from medmonai.handlers.segmentation import TensorBoardSegmentationOverlay
from medmonai.handlers.tensorboard import TensorBoardInputImages, TensorBoardLearningRate
from medmonai.handlers.time_budget import TimeBudget

__all__ = [
    "EarlyStopOnValidation",
    "RestoreBestWeights",
    "ResumableCheckpoint",
    "TensorBoardInputImages",
    "TensorBoardLearningRate",
    "TensorBoardSegmentationOverlay",
    "TimeBudget",
    "checkpoint",
    "segmentation",
    "tensorboard",
    "time_budget",
]
