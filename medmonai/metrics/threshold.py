"""Choose the binary operating threshold on validation data (Youden, target sensitivity, or fixed).

The threshold is chosen once, on the validation split, and then applied unchanged to the test split (and kept
fixed by :func:`medmonai.metrics.bootstrap.bootstrap_ci`). The decision rule is always
``positive if p(positive_class) >= threshold``.

Candidate thresholds are the distinct validation scores (the thresholds of :func:`sklearn.metrics.roc_curve`
without its leading ``inf``), so the returned threshold is an observed probability, always finite and within
``[0, 1]``, and applying it to the validation data reproduces the reported sensitivity and specificity exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medmonai.metrics.clinical import classification_metrics, prepare_inputs

__all__ = ["THRESHOLD_METHODS", "choose_threshold"]

THRESHOLD_METHODS: tuple[str, ...] = ("youden", "sensitivity", "fixed")


def choose_threshold(
    y_true_val: Any,
    y_prob_val: Any,
    method: str = "youden",
    target_sensitivity: float = 0.9,
    fixed: float = 0.5,
    positive_class: int = 1,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Pick the decision threshold of a binary classifier on validation data.

    Selection methods:

    * ``"youden"``: maximise Youden's J = sensitivity + specificity - 1 over the candidate thresholds.
      Ties (several thresholds with the same maximal J, compared exactly in integer counts) are broken towards the
      **lowest** threshold, i.e. the highest sensitivity: in screening a missed positive usually costs more than a
      false alarm. The trivial "nothing positive" point (``roc_curve``'s ``inf``) is never returned.
    * ``"sensitivity"`` (alias ``"target_sensitivity"``): the **highest** threshold whose validation
      sensitivity is ``>= target_sensitivity`` (hence the best specificity reaching the target).
    * ``"fixed"``: ``fixed`` as given (sensitivity/specificity on the validation data are still reported).

    Args:
        y_true_val: ``(N,)`` validation class indices.
        y_prob_val: ``(N,)`` positive-class probabilities or ``(N, 2)`` class probabilities.
        method: ``"youden"``, ``"sensitivity"`` or ``"fixed"``.
        target_sensitivity: target for ``method="sensitivity"``, in ``(0, 1]``.
        fixed: threshold for ``method="fixed"``, in ``[0, 1]``.
        positive_class: index of the positive class.
        classes: class names (only used to validate/label the inputs).

    Returns:
        ``{"method", "threshold", "sensitivity", "specificity", "youden_index", "target_sensitivity" (sensitivity
        method only), "positive_class", "n_val", "n_val_positive", "n_val_negative", "rule"}``; the three rates are
        those reached on the validation data (``None`` when undefined, only possible with ``"fixed"``).

    Raises:
        ValueError: for a multi-class problem, an unknown method, a target/threshold out of range, or (Youden and
            target sensitivity) validation data without both classes.
    """
    from sklearn.metrics import roc_curve

    method = {"target_sensitivity": "sensitivity"}.get(method, method)
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold method {method!r}; use one of {THRESHOLD_METHODS}")
    inp = prepare_inputs(y_true_val, y_prob_val, positive_class=positive_class, classes=classes)
    if not inp.binary:
        raise ValueError(
            f"threshold selection is for binary problems; y_prob_val has {inp.n_classes} classes "
            f"(multi-class predictions are the argmax)"
        )
    pos = inp.positive_class
    assert pos is not None
    labels = inp.y_true == pos
    scores = inp.prob[:, pos]
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    info: dict[str, Any] = {"method": method}

    if method == "fixed":
        if not (0.0 <= float(fixed) <= 1.0):
            raise ValueError(f"fixed threshold must be within [0, 1], got {fixed!r}")
        thr = float(fixed)
    else:
        if n_pos == 0 or n_neg == 0:
            raise ValueError(
                f"cannot choose a '{method}' threshold: the validation data hold {n_pos} positive "
                f"('{inp.classes[pos]}') and {n_neg} negative case(s); both classes are needed"
            )
        fpr, tpr, cand = roc_curve(labels, scores, drop_intermediate=False)
        # drop the leading inf ("nothing positive"); exact integer counts for tie-safe comparisons
        fpr, tpr, cand = fpr[1:], tpr[1:], cand[1:]
        tp = np.rint(tpr * n_pos).astype(np.int64)
        fp = np.rint(fpr * n_neg).astype(np.int64)
        if method == "youden":
            j_scaled = tp * n_neg - fp * n_pos  # = J * n_pos * n_neg, exact
            best = np.flatnonzero(j_scaled == j_scaled.max())
            i = int(best[-1])  # candidates are in decreasing order: last = lowest threshold = highest sensitivity
        else:
            t = float(target_sensitivity)
            if not (0.0 < t <= 1.0):
                raise ValueError(f"target_sensitivity must be within (0, 1], got {target_sensitivity!r}")
            info["target_sensitivity"] = t
            i = int(np.flatnonzero(tp >= t * n_pos - 1e-9)[0])  # first = highest threshold reaching the target
        thr = float(np.clip(cand[i], 0.0, 1.0))

    m = classification_metrics(inp.y_true, inp.prob, threshold=thr, positive_class=pos, classes=inp.classes)
    sens, spec = m["sensitivity"], m["specificity"]
    info.update(
        threshold=thr,
        sensitivity=sens,
        specificity=spec,
        youden_index=None if sens is None or spec is None else sens + spec - 1.0,
        positive_class=pos,
        n_val=int(inp.y_true.size),
        n_val_positive=n_pos,
        n_val_negative=n_neg,
        rule=f"positive ('{inp.classes[pos]}') if p >= threshold",
    )
    return info
