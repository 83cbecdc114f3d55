"""Clinical classification metrics with bootstrap confidence intervals, operating thresholds and reports."""

from __future__ import annotations

from medmonai.metrics import bootstrap, clinical, report, threshold
from medmonai.metrics.bootstrap import bootstrap_ci
from medmonai.metrics.clinical import classification_metrics
from medmonai.metrics.report import write_classification_report
from medmonai.metrics.threshold import choose_threshold

__all__ = [
    "bootstrap",
    "bootstrap_ci",
    "choose_threshold",
    "classification_metrics",
    "clinical",
    "report",
    "threshold",
    "write_classification_report",
]
