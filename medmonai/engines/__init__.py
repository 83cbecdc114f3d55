"""Engines: losses, evaluation (threshold on validation, test once, report) and inference on new data.

Training itself uses MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator`` wired by the bundle configs.
"""

from __future__ import annotations

from medmonai.engines import evaluation, inference, losses

__all__ = ["evaluation", "inference", "losses"]
