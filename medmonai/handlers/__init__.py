"""Ignite handlers for the bundles: resumable checkpoints, early stopping, best-weight restore, TensorBoard extras.

Checkpoints are written atomically and resume exactly (docs/reliability.md); every run records its provenance.
TensorBoard extras: input images, learning rates, segmentation overlays; plus a training time budget and the
helpers of distributed (torchrun) training, and MLflow tracking (``mlflow``, docs/tracking.md; MLflow itself is
optional: ``pip install 'medmonai[mlflow]'``).
"""

from __future__ import annotations

from medmonai.handlers import checkpoint, distributed, mlflow, provenance, segmentation, tensorboard, time_budget
from medmonai.handlers.checkpoint import EarlyStopOnValidation, RestoreBestWeights, ResumableCheckpoint
from medmonai.handlers.distributed import AverageGradients, BroadcastTerminate
from medmonai.handlers.mlflow import MLflowTrainingHandler
from medmonai.handlers.provenance import ProvenanceHandler
from medmonai.handlers.segmentation import TensorBoardSegmentationOverlay
from medmonai.handlers.tensorboard import TensorBoardInputImages, TensorBoardLearningRate
from medmonai.handlers.time_budget import TimeBudget

__all__ = [
    "AverageGradients",
    "BroadcastTerminate",
    "EarlyStopOnValidation",
    "MLflowTrainingHandler",
    "RestoreBestWeights",
    "ProvenanceHandler",
    "ResumableCheckpoint",
    "TensorBoardInputImages",
    "TensorBoardLearningRate",
    "TensorBoardSegmentationOverlay",
    "TimeBudget",
    "checkpoint",
    "distributed",
    "mlflow",
    "provenance",
    "segmentation",
    "tensorboard",
    "time_budget",
]
