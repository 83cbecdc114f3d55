"""Ignite handlers for the bundles: resumable checkpoints, early stopping, best-weight restore, TensorBoard extras."""

from __future__ import annotations

from medmonai.handlers import checkpoint, tensorboard
from medmonai.handlers.checkpoint import EarlyStopOnValidation, RestoreBestWeights, ResumableCheckpoint
from medmonai.handlers.tensorboard import TensorBoardInputImages, TensorBoardLearningRate

__all__ = [
    "EarlyStopOnValidation",
    "RestoreBestWeights",
    "ResumableCheckpoint",
    "TensorBoardInputImages",
    "TensorBoardLearningRate",
    "checkpoint",
    "tensorboard",
]
