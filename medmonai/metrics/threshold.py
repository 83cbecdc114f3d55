"""Choose the decision rule on validation data: binary thresholds and the multi-class prior correction.

Binary problems: the threshold is chosen once, on the validation split (Youden, target sensitivity, or fixed), and
then applied unchanged to the test split (and kept fixed by :func:`medmonai.metrics.bootstrap.bootstrap_ci`). The
decision rule is always ``positive if p(positive_class) >= threshold``.

Candidate thresholds are the distinct validation scores (the thresholds of :func:`sklearn.metrics.roc_curve`
without its leading ``inf``), so the returned threshold is an observed probability, always finite and within
``[0, 1]``, and applying it to the validation data reproduces the reported sensitivity and specificity exactly.

Three or more classes: :func:`choose_decision_rule` picks, on the validation split, between the plain argmax and
prior-corrected argmax rules that undo (partly or fully) the class weighting of training; the rule is recorded in the
report and applied unchanged to the test split and to inference (:func:`medmonai.metrics.clinical.apply_decision_rule`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from medmonai.metrics.clinical import (
    apply_decision_rule,
    classification_metrics,
    majority_class_rate,
    metrics_from_confusion,
    prepare_inputs,
    prior_shift_factors,
)

__all__ = [
    "THRESHOLD_METHODS",
    "DECISION_OBJECTIVES",
    "DEFAULT_ALPHAS",
    "choose_threshold",
    "choose_decision_rule",
]

THRESHOLD_METHODS: tuple[str, ...] = ("youden", "sensitivity", "fixed")
#: validation objectives of :func:`choose_decision_rule` (the first is the default)
DECISION_OBJECTIVES: tuple[str, ...] = ("balanced_accuracy_above_majority", "balanced_accuracy", "accuracy")
#: exponents of the target prior tried by :func:`choose_decision_rule` (0: uniform prior, 1: real class frequencies)
DEFAULT_ALPHAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


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


def _recalls(y: np.ndarray, pred: np.ndarray, n_classes: int) -> tuple[float, np.ndarray]:
    """(accuracy, per-class recall) of predictions; a class without cases has recall NaN."""
    cm = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    m = metrics_from_confusion(cm, [str(k) for k in range(n_classes)], None)
    recall = np.asarray([m[f"sensitivity/{k}"] for k in range(n_classes)], dtype=np.float64)
    return float(m["accuracy"]), recall


def choose_decision_rule(
    y_true_val: Any,
    y_prob_val: Any,
    class_priors: Sequence[float],
    training_prior: Sequence[float],
    objective: str = "balanced_accuracy_above_majority",
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    classes: Sequence[str] | None = None,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Pick the decision rule of a classifier with three or more classes on validation data.

    Candidates: the plain argmax, and the prior-shift rules ``argmax(p * prior_shift_factors(alpha, class_priors,
    training_prior))`` for every ``alpha`` in ``alphas`` (see :func:`medmonai.metrics.clinical.prior_shift_factors`:
    ``alpha = 1`` undoes class weighting / balanced sampling and answers by the real class frequencies, the rule of
    highest expected accuracy; ``alpha = 0`` answers as if every class were equally common, the rule of highest
    expected balanced accuracy). For a model trained with balanced class weights the plain argmax is ``alpha = 0``;
    for an unweighted model it is ``alpha = 1``. A candidate identical to an earlier one is dropped.

    Every candidate is scored from its per-class recalls on the validation cases: the balanced accuracy (mean
    recall: every class counts equally) and the **expected accuracy** ``sum_c class_priors[c] * recall_c``, the
    accuracy at the real class frequencies (equal to the plain validation accuracy when the validation split has
    those frequencies, and not thrown off when its class mix differs from them by chance). The **majority-class
    rate** is ``max(class_priors)``, the accuracy of always answering the commonest class. Objectives (ties go to
    the earlier candidate: argmax first, then increasing ``alpha``):

    * ``"balanced_accuracy_above_majority"`` (default): the highest balanced accuracy among the candidates whose
      expected accuracy reaches the majority-class rate, ties broken by expected accuracy; when none reaches it, the
      highest expected accuracy (the result says so). This guards against both failures of a fixed rule: a weighted
      argmax less often right than the trivial rule, and an unweighted argmax that never predicts the rare classes.
    * ``"balanced_accuracy"``: the highest balanced accuracy, ties broken by expected accuracy.
    * ``"accuracy"``: the highest expected accuracy, ties broken by balanced accuracy.

    When the validation data lack a class (its recall is undefined), the plain validation accuracy decides (noted).

    Args:
        y_true_val: ``(N,)`` validation class indices.
        y_prob_val: ``(N, C)`` validation class probabilities, ``C >= 3``.
        class_priors: the ``C`` real class frequencies (of the training labels).
        training_prior: the ``C`` effective class distribution of training (frequencies x loss class weights, or
            uniform with a class-balanced sampler): :func:`medmonai.engines.losses.training_class_prior`.
        objective: one of :data:`DECISION_OBJECTIVES`.
        alphas: target-prior exponents to try, each within ``[0, 1]``.
        classes: class names.
        source: how the priors were obtained (recorded, e.g. class weights and sampler settings).

    Returns:
        The rule (for :func:`~medmonai.metrics.clinical.apply_decision_rule`): ``method`` (``"argmax"`` or
        ``"prior_shift"``), ``alpha``, ``class_priors``, ``training_prior``, ``factors`` (the multipliers of the
        probabilities), ``objective``, ``objective_used``, ``chosen_on``, ``n_val``, ``majority_rate``,
        ``validation_majority_rate`` (of the validation labels), ``validation`` (accuracy, expected accuracy and
        balanced accuracy of the chosen rule), ``candidates`` (every candidate's values), ``notes`` and ``source``.

    Raises:
        ValueError: for a binary problem (use :func:`choose_threshold`), an unknown objective, or priors that do not
            fit the classes.
    """
    if objective not in DECISION_OBJECTIVES:
        raise ValueError(f"unknown decision objective {objective!r}; use one of {DECISION_OBJECTIVES}")
    inp = prepare_inputs(y_true_val, y_prob_val, classes=classes)
    if inp.binary:
        raise ValueError("choose_decision_rule is for three or more classes; binary problems use choose_threshold")
    c = inp.n_classes
    pi = [float(v) for v in np.asarray(class_priors, dtype=np.float64) / np.sum(class_priors)]
    tr = [float(v) for v in np.asarray(training_prior, dtype=np.float64) / np.sum(training_prior)]
    if len(pi) != c or len(tr) != c:
        raise ValueError(f"{len(pi)} class priors / {len(tr)} training priors given for {c} classes {inp.classes}")
    notes: list[str] = []
    candidates: list[dict[str, Any]] = [{"method": "argmax", "alpha": None}]
    seen = [np.full(c, 1.0 / c)]
    for a in alphas:
        f = prior_shift_factors(a, pi, tr)
        if any(np.allclose(f, g, rtol=1e-9, atol=1e-12) for g in seen):
            continue  # the same decisions as an earlier candidate
        seen.append(f)
        candidates.append({"method": "prior_shift", "alpha": float(a)})
    pi_arr = np.asarray(pi)
    for cand in candidates:
        rule = {**cand, "class_priors": pi, "training_prior": tr} if cand["method"] == "prior_shift" else cand
        acc, recall = _recalls(inp.y_true, apply_decision_rule(inp.prob, rule), c)
        defined = bool(np.all(np.isfinite(recall)))
        cand["accuracy"] = acc
        cand["expected_accuracy"] = float(np.sum(pi_arr * recall)) if defined else None
        cand["balanced_accuracy"] = float(np.mean(recall)) if defined else None
    majority = float(max(pi))
    used = objective
    if any(cand["balanced_accuracy"] is None for cand in candidates):
        used = "validation_accuracy"
        notes.append(
            "a class has no validation case (its recall is undefined): the rule was chosen by the plain validation "
            "accuracy"
        )

    pool = candidates
    if used == "balanced_accuracy_above_majority":
        pool = [cand for cand in candidates if cand["expected_accuracy"] >= majority - 1e-12]
        if not pool:
            pool, used = candidates, "accuracy"
            notes.append(
                f"no candidate reaches the majority-class rate {majority:.3f} (expected accuracy on validation): the "
                "rule of highest expected accuracy was chosen"
            )

    def key(cand: dict[str, Any]) -> tuple[float, float]:
        if used == "validation_accuracy":
            return (cand["accuracy"], 0.0)
        acc, bal = cand["expected_accuracy"], cand["balanced_accuracy"]
        return (acc, bal) if used == "accuracy" else (bal, acc)

    best = pool[0]
    for cand in pool[1:]:
        if key(cand) > key(best):  # strictly better: ties keep the earlier candidate
            best = cand
    for cand in candidates:
        cand["selected"] = cand is best
    factors = prior_shift_factors(best["alpha"], pi, tr) if best["method"] == "prior_shift" else np.full(c, 1.0 / c)
    return {
        "method": best["method"],
        "alpha": best["alpha"],
        "class_priors": pi,
        "training_prior": tr,
        "factors": [float(v) for v in factors],
        "objective": objective,
        "objective_used": used,
        "chosen_on": "validation",
        "n_val": int(inp.y_true.size),
        "majority_rate": majority,
        "validation_majority_rate": majority_class_rate(inp.y_true, c)[1],
        "validation": {
            "accuracy": best["accuracy"],
            "expected_accuracy": best["expected_accuracy"],
            "balanced_accuracy": best["balanced_accuracy"],
        },
        "candidates": candidates,
        "classes": inp.classes,
        "notes": notes,
        "source": dict(source or {}),
        "rule": "argmax of p(class) x factors[class]",
    }
