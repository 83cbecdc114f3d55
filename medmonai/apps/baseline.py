"""A deliberately simple, honest baseline classifier used to show that a data set is not trivial.

Images (already preprocessed to a common grid) are down-sampled to a small fixed grid, flattened, standardised and
classified with an L2 logistic regression with fixed hyper-parameters (nothing is tuned on the evaluation folds).
Evaluation is subject-grouped, stratified k-fold cross-validation, so no subject is on both sides of a split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["downsample_features", "grouped_cv_baseline"]


def downsample_features(image: np.ndarray, grid: int = 16) -> np.ndarray:
    """Channel-first image (C, *spatial) -> flattened vector on a ``grid``-sized isotropic grid (area averaging)."""
    t = torch.as_tensor(np.asarray(image), dtype=torch.float32)[None]
    spatial = t.ndim - 2
    t = F.interpolate(t, size=(grid,) * spatial, mode="area")
    return t.flatten().numpy()


def grouped_cv_baseline(
    features: np.ndarray,
    labels: Sequence[int],
    groups: Sequence[str],
    n_splits: int = 5,
    seed: int = 0,
    C: float = 0.05,
) -> dict[str, Any]:
    """Subject-grouped stratified k-fold CV of a standardised L2 logistic regression.

    Args:
        features: (n_samples, n_features) array.
        labels: integer class per sample.
        groups: subject id per sample (a subject never appears in both training and evaluation folds).
        n_splits: number of folds (reduced automatically when a class has fewer subjects).
        seed: shuffling seed of the splitter.
        C: inverse L2 regularisation strength (fixed, not tuned).

    Returns:
        Per-fold and mean ± std accuracy, balanced accuracy and AUC (one-vs-rest macro for > 2 classes).
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=int)
    g = np.asarray(groups)
    n_classes = int(y.max()) + 1
    subj_per_class = [len(set(g[y == c])) for c in range(n_classes)]
    k = max(2, min(n_splits, min(subj_per_class)))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds: list[dict[str, float]] = []
    for tr, te in cv.split(x, y, g):
        assert not set(g[tr]) & set(g[te]), "subject leakage between folds"
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        model.fit(x[tr], y[tr])
        prob = model.predict_proba(x[te])
        pred = prob.argmax(1)
        fold = {
            "accuracy": float(accuracy_score(y[te], pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y[te], pred)),
            "n_test": int(len(te)),
        }
        if len(set(y[te])) == n_classes:
            fold["auc"] = float(
                roc_auc_score(y[te], prob[:, 1]) if n_classes == 2 else roc_auc_score(y[te], prob, multi_class="ovr")
            )
        folds.append(fold)
    summary: dict[str, Any] = {"n_splits": k, "n_samples": int(len(y)), "n_subjects": int(len(set(g))), "folds": folds}
    for m in ("accuracy", "balanced_accuracy", "auc"):
        vals = [f[m] for f in folds if m in f]
        if vals:
            summary[m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    return summary
