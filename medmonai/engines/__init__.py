"""Engines: losses, deep features + classical classifiers, evaluation, inference, cross-validation results.

Evaluation chooses the threshold on validation data and uses the test split once; inference handles new data.
Segmentation inference/evaluation predict in the input's original geometry (NIfTI, DICOM SEG).

Training itself uses MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator`` wired by the bundle configs; ``gan`` is the
class-conditional GAN trainer (MONAI ``GanTrainer`` + DiffAugment) and the synthetic-data writer; ``synthetic_audit``
the audit of synthetic images against the real training images.
"""

from __future__ import annotations

from medmonai.engines import (
    classical,
    crossval,
    evaluation,
    feature_gan,
    features,
    gan,
    inference,
    losses,
    segmentation_inference,
    synthetic_audit,
)

__all__ = [
    "classical",
    "crossval",
    "evaluation",
    "feature_gan",
    "features",
    "gan",
    "inference",
    "losses",
    "segmentation_inference",
    "synthetic_audit",
]
