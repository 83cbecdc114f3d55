"""Engines: losses, deep features + classical classifiers, evaluation, inference, cross-validation results.

Evaluation chooses the threshold on validation data and uses the test split once; inference handles new data.

Training itself uses MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator`` wired by the bundle configs.
"""

from __future__ import annotations

from medmonai.engines import classical, crossval, evaluation, features, inference, losses

__all__ = ["classical", "crossval", "evaluation", "features", "inference", "losses"]
