"""Clinical classification metrics: bootstrap CIs, operating thresholds, reports and paired comparisons of runs.

``synthetic``: the statistics of the synthetic-image audit (FID, precision/recall, near-copies of training images;
the audit itself is :mod:`medmonai.engines.synthetic_audit`).
"""

from __future__ import annotations

from medmonai.metrics import bootstrap, clinical, compare, report, synthetic, threshold
from medmonai.metrics.bootstrap import bootstrap_ci
from medmonai.metrics.clinical import classification_metrics
from medmonai.metrics.compare import (
    compare_runs,
    delong_test,
    load_run_predictions,
    mcnemar_test,
    paired_bootstrap_auc,
    write_comparison,
)
from medmonai.metrics.report import write_classification_report
from medmonai.metrics.threshold import choose_threshold

__all__ = [
    "bootstrap",
    "bootstrap_ci",
    "choose_threshold",
    "classification_metrics",
    "clinical",
    "compare",
    "compare_runs",
    "delong_test",
    "load_run_predictions",
    "mcnemar_test",
    "paired_bootstrap_auc",
    "report",
    "synthetic",
    "threshold",
    "write_classification_report",
    "write_comparison",
]
