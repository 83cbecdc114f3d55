"""Clinical classification metrics from predicted probabilities (binary and multi-class).

Inputs everywhere in :mod:`medmonai.metrics`:

* ``y_true``: ``(N,)`` integer class indices (``0 .. C-1``; integral floats and booleans are accepted; an ``(N, C)``
  one-hot array is converted by argmax).
* ``y_prob``: ``(N,)`` probability of the *positive* class of a binary problem, or ``(N, C)`` class probabilities
  (softmax output; ``C == 2`` is a binary problem). Values must be finite and within ``[0, 1]`` — apply
  softmax/sigmoid to logits first. Rows need not sum to 1.

Prediction rule: binary problems predict the positive class when ``y_prob[:, positive_class] >= threshold``;
multi-class problems predict ``argmax`` (ties go to the lowest class index, as :func:`numpy.argmax`), or, given a
multi-class decision rule (a dict chosen on validation data by
:func:`medmonai.metrics.threshold.choose_decision_rule`), the argmax of the prior-corrected probabilities
(:func:`apply_decision_rule`, the one implementation every caller uses).

Rule for undefined values: a ratio whose denominator is zero is **undefined** and reported as ``None`` (``NaN`` in
the vectorised arrays), never as 0 or 1 — e.g. sensitivity without any positive case, PPV when nothing is predicted
positive, AUC when ``y_true`` holds a single class. A metric built from undefined parts is undefined too: balanced
accuracy and the macro averages (mean over classes) are ``None`` as soon as one class's value is undefined. Every
undefined value gets a sentence in the ``notes`` list of the result. Nothing raises on such degenerate data; only
malformed inputs (wrong shapes, labels out of range, non-probabilities) raise :class:`ValueError`.

The confusion matrix has rows = true class and columns = predicted class (scikit-learn's orientation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import confusion_matrix, roc_auc_score

__all__ = [
    "BINARY_SCALARS",
    "MULTICLASS_SCALARS",
    "PER_CLASS_SCALARS",
    "ORDINAL_SCALARS",
    "quadratic_weighted_kappa",
    "ClassificationInputs",
    "prepare_inputs",
    "resolve_threshold",
    "DECISION_RULE_METHODS",
    "prior_shift_factors",
    "validate_decision_rule",
    "apply_decision_rule",
    "decision_rule_from_report",
    "majority_class_rate",
    "predict_labels",
    "classification_metrics",
    "scalar_metrics",
    "metrics_from_confusion",
    "batch_scalar_metrics",
]

#: scalar metrics of a binary problem (the positive class's one-vs-rest view)
BINARY_SCALARS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "auc",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
)
#: scalar metrics of a multi-class problem (``auc`` is the one-vs-rest macro AUC); per-class values are named
#: ``"<metric>/<class name>"`` with ``<metric>`` in :data:`PER_CLASS_SCALARS`
MULTICLASS_SCALARS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "auc",
    "sensitivity_macro",
    "specificity_macro",
    "ppv_macro",
    "npv_macro",
    "f1_macro",
)
#: one-vs-rest metrics computed for every class of a multi-class problem
PER_CLASS_SCALARS: tuple[str, ...] = ("auc", "sensitivity", "specificity", "ppv", "npv", "f1")
#: scalar metrics added for an ordinal multi-class problem (classes ordered as listed, e.g. grades 0 < 1 < 2)
ORDINAL_SCALARS: tuple[str, ...] = ("kappa_quadratic",)


def quadratic_weighted_kappa(cm: np.ndarray) -> np.ndarray:
    """Cohen's kappa with quadratic weights from confusion matrices (rows = true, columns = predicted).

    ``1 - sum(W * O) / sum(W * E)`` with ``W[i, j] = (i - j)**2 / (C - 1)**2``, ``O`` the observed and ``E`` the
    chance-expected counts (outer product of the row and column totals over ``N``): 1 is perfect agreement, 0
    chance level; errors between distant grades weigh more. Equals scikit-learn's
    ``cohen_kappa_score(weights="quadratic")``.

    Args:
        cm: ``(C, C)`` or batched ``(B, C, C)`` counts, ``C >= 2``, classes in their ordinal order.

    Returns:
        Shape ``()`` or ``(B,)``; ``NaN`` where undefined (no disagreement expected by chance).
    """
    o = np.asarray(cm, dtype=np.float64)
    n_c = o.shape[-1]
    idx = np.arange(n_c, dtype=np.float64)
    w = (idx[:, None] - idx[None, :]) ** 2 / max(n_c - 1, 1) ** 2
    n = o.sum(axis=(-2, -1))
    expected = o.sum(axis=-1)[..., :, None] * o.sum(axis=-2)[..., None, :] / np.where(n > 0, n, 1.0)[..., None, None]
    den = np.sum(w * expected, axis=(-2, -1))
    num = np.sum(w * o, axis=(-2, -1))
    return np.where(den > 0, 1.0 - num / np.where(den > 0, den, 1.0), np.nan)


_PROB_TOL = 1e-6


@dataclass(frozen=True)
class ClassificationInputs:
    """Validated, normalised classification inputs.

    Attributes:
        y_true: ``(N,)`` int64 class indices.
        prob: ``(N, C)`` float64 class probabilities (a 1-D binary input is expanded to two columns).
        classes: the ``C`` class names.
        positive_class: index of the positive class (binary problems), ``None`` for multi-class problems.
    """

    y_true: np.ndarray
    prob: np.ndarray
    classes: list[str]
    positive_class: int | None

    @property
    def n_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.classes)

    @property
    def binary(self) -> bool:
        """Whether this is a binary (two-class) problem."""
        return self.n_classes == 2


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def prepare_inputs(
    y_true: Any,
    y_prob: Any,
    positive_class: int = 1,
    classes: Sequence[str] | None = None,
) -> ClassificationInputs:
    """Validate and normalise ``y_true`` / ``y_prob`` (see the module docstring for the accepted forms).

    Args:
        y_true: ``(N,)`` class indices or ``(N, C)`` one-hot labels (numpy, list or torch tensor).
        y_prob: ``(N,)`` positive-class probability (binary) or ``(N, C)`` probabilities.
        positive_class: index of the positive class of a binary problem (ignored for multi-class).
            With a 1-D ``y_prob``, ``y_prob`` is the probability of this class.
        classes: class names (``C`` of them); defaults to ``"0", "1", ...``.

    Returns:
        The validated :class:`ClassificationInputs`.

    Raises:
        ValueError: on empty or mismatched inputs, labels out of range, or values that are not probabilities.
    """
    prob = _to_numpy(y_prob)
    if prob.dtype == object or not np.issubdtype(prob.dtype, np.number):
        raise ValueError(f"y_prob must be numeric probabilities, got dtype {prob.dtype}")
    prob = prob.astype(np.float64)
    if prob.ndim == 2 and prob.shape[1] == 1:
        prob = prob[:, 0]
    one_column = prob.ndim == 1
    if prob.ndim not in (1, 2):
        raise ValueError(f"y_prob must have shape (N,) or (N, C), got {prob.shape}")
    n_classes = 2 if one_column else prob.shape[1]
    if n_classes < 2:
        raise ValueError(f"y_prob needs at least 2 classes, got shape {prob.shape}")
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(classes) != n_classes:
            raise ValueError(
                f"{len(classes)} class names {classes} given, but y_prob of shape {prob.shape} has {n_classes} classes"
            )
        if len(set(classes)) != len(classes):
            raise ValueError(f"class names must be unique, got {classes}")
    else:
        classes = [str(i) for i in range(n_classes)]
    n = prob.shape[0]
    if n == 0:
        raise ValueError("empty inputs: y_prob has no cases")
    if not np.all(np.isfinite(prob)):
        raise ValueError(f"y_prob holds {int(np.sum(~np.isfinite(prob)))} non-finite value(s) (NaN/inf)")
    lo, hi = float(prob.min()), float(prob.max())
    if lo < -_PROB_TOL or hi > 1 + _PROB_TOL:
        raise ValueError(
            f"y_prob must hold probabilities in [0, 1] (apply softmax/sigmoid to logits first); found range "
            f"[{lo:.4g}, {hi:.4g}]"
        )
    prob = np.clip(prob, 0.0, 1.0)

    pos: int | None = None
    if n_classes == 2:
        if (
            isinstance(positive_class, bool)
            or not isinstance(positive_class, int | np.integer)
            or positive_class not in (0, 1)
        ):
            raise ValueError(f"positive_class must be 0 or 1 for a binary problem, got {positive_class!r}")
        pos = int(positive_class)
        if one_column:
            full = np.empty((n, 2), dtype=np.float64)
            full[:, pos] = prob
            full[:, 1 - pos] = 1.0 - prob
            prob = full

    y = _to_numpy(y_true)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and y.shape[1] == n_classes:
        if not (np.isin(y, (0, 1)).all() and np.all(y.sum(axis=1) == 1)):
            raise ValueError(f"2-D y_true of shape {y.shape} is not one-hot (each row needs exactly one 1)")
        y = np.argmax(y, axis=1)
    if y.ndim != 1:
        raise ValueError(f"y_true must have shape (N,) (class indices) or (N, C) (one-hot), got {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"y_true has {y.shape[0]} cases but y_prob has {n}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    elif np.issubdtype(y.dtype, np.floating):
        if not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            raise ValueError("y_true must hold integer class indices; found non-integral values")
        y = y.astype(np.int64)
    elif not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y_true must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        raise ValueError(
            f"y_true holds label(s) {sorted(set(y[bad].tolist()))} outside 0..{n_classes - 1} "
            f"(y_prob has {n_classes} classes: {classes})"
        )
    return ClassificationInputs(y_true=y, prob=prob, classes=classes, positive_class=pos)


def resolve_threshold(
    threshold: float | Mapping[str, Any] | None, inputs: ClassificationInputs
) -> float | dict[str, Any] | None:
    """The decision rule to use: a binary threshold, a multi-class decision rule dict, or ``None`` (argmax).

    Args:
        threshold: binary problems: ``None`` (0.5), a number in ``[0, 1]``, or the dict returned by
            :func:`medmonai.metrics.threshold.choose_threshold` (its ``"threshold"`` is used). Multi-class
            problems: ``None`` (argmax) or a decision rule dict (:func:`validate_decision_rule`, e.g. from
            :func:`medmonai.metrics.threshold.choose_decision_rule`).
        inputs: the validated inputs.

    Raises:
        ValueError: for a threshold outside ``[0, 1]``, a threshold given for a multi-class problem, a threshold
            dict chosen for another positive class, or a decision rule that does not fit the classes.
    """
    if not inputs.binary and isinstance(threshold, Mapping) and threshold.get("threshold") is None:
        return validate_decision_rule(threshold, inputs.n_classes)  # raises on an unknown method
    if isinstance(threshold, Mapping):
        if "threshold" not in threshold:
            raise ValueError(f"threshold dict has no 'threshold' key: {dict(threshold)}")
        dict_pos = threshold.get("positive_class")
        if dict_pos is not None and inputs.binary and int(dict_pos) != inputs.positive_class:
            raise ValueError(
                f"threshold was chosen for positive_class={dict_pos}, but positive_class={inputs.positive_class}"
            )
        threshold = threshold["threshold"]
    if not inputs.binary:
        if threshold is not None:
            raise ValueError(
                f"a decision threshold only applies to binary problems; this one has {inputs.n_classes} classes "
                f"(predictions are the argmax) - pass threshold=None"
            )
        return None
    if threshold is None:
        return 0.5
    t = float(threshold)
    if not (0.0 <= t <= 1.0):
        raise ValueError(f"threshold must be within [0, 1], got {threshold!r}")
    return t


#: methods of a multi-class decision rule (:func:`apply_decision_rule`)
DECISION_RULE_METHODS: tuple[str, ...] = ("argmax", "prior_shift")


def prior_shift_factors(alpha: float, class_priors: Sequence[float], training_prior: Sequence[float]) -> np.ndarray:
    """Per-class factors of the prior-shift rule: ``pi_c ** alpha / pi_train_c``, normalised to sum to 1.

    A classifier trained on cases whose effective class distribution is ``training_prior`` (the class frequencies of
    the training data times the loss's class weights, or uniform with a class-balanced sampler) estimates posteriors
    for that distribution. Multiplying its probabilities by these factors (and renormalising) turns them into
    posteriors for the target prior ``pi ** alpha`` (renormalised): ``alpha = 1`` gives the posteriors of the real
    class frequencies ``class_priors`` (undoes the weighting: the rule of highest expected accuracy), ``alpha = 0``
    those of a uniform prior (every class equally likely: the rule of highest expected balanced accuracy).

    Args:
        alpha: exponent of the target prior, within ``[0, 1]``.
        class_priors: ``C`` real class frequencies (training labels).
        training_prior: ``C`` effective class distribution the model was trained on.

    Returns:
        ``(C,)`` positive factors summing to 1.

    Raises:
        ValueError: for an ``alpha`` outside ``[0, 1]``, or priors that are not ``C`` positive numbers.
    """
    a = float(alpha)
    if not (0.0 <= a <= 1.0):
        raise ValueError(f"prior-shift alpha must be within [0, 1], got {alpha!r}")
    pi = np.asarray(class_priors, dtype=np.float64)
    tr = np.asarray(training_prior, dtype=np.float64)
    if pi.ndim != 1 or pi.shape != tr.shape or pi.size < 2:
        raise ValueError(f"class priors {pi.tolist()} and training prior {tr.tolist()} must be two lists of C >= 2")
    if not (np.all(np.isfinite(pi)) and np.all(pi > 0) and np.all(np.isfinite(tr)) and np.all(tr > 0)):
        raise ValueError(f"priors must be positive: class priors {pi.tolist()}, training prior {tr.tolist()}")
    f = (pi / pi.sum()) ** a / (tr / tr.sum())
    return f / f.sum()


def validate_decision_rule(rule: Mapping[str, Any], n_classes: int) -> dict[str, Any]:
    """Check a multi-class decision rule dict and return it as a plain dict.

    Forms: ``{"method": "argmax"}``, or ``{"method": "prior_shift", "alpha", "class_priors", "training_prior", ...}``
    (other keys, e.g. the validation results of :func:`~medmonai.metrics.threshold.choose_decision_rule`, are kept).

    Raises:
        ValueError: for an unknown method or priors that do not fit ``n_classes``.
    """
    method = rule.get("method")
    if method not in DECISION_RULE_METHODS:
        raise ValueError(f"unknown decision rule method {method!r}; use one of {DECISION_RULE_METHODS}")
    out = dict(rule)
    if method == "prior_shift":
        for key in ("alpha", "class_priors", "training_prior"):
            if key not in rule:
                raise ValueError(f"prior_shift decision rule without {key!r}: {dict(rule)}")
        if len(rule["class_priors"]) != n_classes:
            raise ValueError(
                f"the decision rule is for {len(rule['class_priors'])} classes, but the probabilities have {n_classes}"
            )
        prior_shift_factors(rule["alpha"], rule["class_priors"], rule["training_prior"])  # validates
    return out


def apply_decision_rule(
    prob: Any, rule: float | Mapping[str, Any] | None = None, positive_class: int = 1
) -> np.ndarray:
    """Predicted class indices from ``(..., C)`` probabilities under a decision rule: THE rule of medmonai.

    Every place that turns class probabilities into labels (evaluation report, bootstrap, ``medmonai infer``, the
    bundles' inference, cross-validation) uses this function.

    Args:
        prob: ``(..., C)`` probabilities.
        rule: ``None``: argmax (ties to the lowest index); a number: binary threshold on ``positive_class``; a dict:
            a binary threshold dict (``{"threshold": t, "positive_class": k}``, as
            :func:`~medmonai.metrics.threshold.choose_threshold` returns), ``{"method": "argmax"}``, or a
            ``"prior_shift"`` rule: argmax of ``prob * prior_shift_factors(alpha, class_priors, training_prior)``.
        positive_class: positive class of a binary threshold given as a number.

    Returns:
        Integer class indices of shape ``prob.shape[:-1]``.

    Raises:
        ValueError: for a rule that does not fit the probabilities.
    """
    p = np.asarray(_to_numpy(prob), dtype=np.float64)
    if isinstance(rule, Mapping) and rule.get("method") in DECISION_RULE_METHODS:
        rule = validate_decision_rule(rule, p.shape[-1])
        if rule["method"] == "argmax":
            return np.argmax(p, axis=-1)
        f = prior_shift_factors(rule["alpha"], rule["class_priors"], rule["training_prior"])
        return np.argmax(p * f, axis=-1)  # renormalising the rows would not change the argmax
    if isinstance(rule, Mapping):
        if rule.get("threshold") is None:
            return np.argmax(p, axis=-1)
        positive_class = int(rule.get("positive_class", positive_class))
        rule = float(rule["threshold"])
    if rule is None:
        return np.argmax(p, axis=-1)
    if p.shape[-1] != 2:
        raise ValueError(f"a decision threshold only applies to 2 classes; the probabilities have {p.shape[-1]}")
    pos = int(positive_class)
    return np.where(p[..., pos] >= float(rule), pos, 1 - pos)


def decision_rule_from_report(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The decision rule recorded in an evaluation / cross-validation ``report.json`` (``None``: none recorded).

    Binary reports: ``{"threshold": t, "positive_class": k}`` (``None`` when the report has no threshold);
    multi-class reports: their ``decision_rule`` (reports written before it existed: ``None``, i.e. argmax).
    """
    rule = report.get("decision_rule")
    if isinstance(rule, Mapping) and rule.get("method") in DECISION_RULE_METHODS:
        return dict(rule)
    thr = report.get("threshold")
    value = thr.get("threshold") if isinstance(thr, Mapping) else thr
    if value is None:
        return None
    pos = report.get("positive_class")
    return {"threshold": float(value), "positive_class": 1 if pos is None else int(pos)}


def majority_class_rate(y_true: Any, n_classes: int | None = None) -> tuple[int, float]:
    """``(index, rate)`` of the commonest class of ``y_true``: the accuracy of always answering it."""
    y = np.asarray(_to_numpy(y_true)).astype(np.int64).ravel()
    if y.size == 0:
        raise ValueError("majority_class_rate of no labels")
    counts = np.bincount(y, minlength=n_classes or 0)
    k = int(np.argmax(counts))
    return k, float(counts[k]) / float(y.size)


def predict_labels(
    prob: np.ndarray, threshold: float | Mapping[str, Any] | None, positive_class: int | None
) -> np.ndarray:
    """Predicted class indices from ``(..., C)`` probabilities (see :func:`apply_decision_rule`).

    Binary (``threshold`` a number): ``positive_class`` where ``prob[..., positive_class] >= threshold``, else
    the other class. Multi-class: argmax over the last axis (``threshold`` ``None``), or the decision rule dict.
    """
    if threshold is None or isinstance(threshold, Mapping):
        return apply_decision_rule(prob, threshold)
    assert positive_class is not None
    return np.where(prob[..., positive_class] >= threshold, positive_class, 1 - positive_class)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    ok = den > 0
    return np.where(ok, num / np.where(ok, den, 1.0), np.nan)


def _one_vs_rest_counts(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class one-vs-rest counts from confusion matrices of shape ``(..., C, C)`` -> arrays ``(..., C)``."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    fn = cm.sum(axis=-1) - tp
    fp = cm.sum(axis=-2) - tp
    n = cm.sum(axis=(-2, -1))[..., None]
    tn = n - tp - fn - fp
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def metrics_from_confusion(
    cm: np.ndarray, classes: Sequence[str], positive_class: int | None, ordinal: bool = False
) -> dict[str, np.ndarray]:
    """All threshold-dependent scalar metrics (everything except AUC) from confusion matrices.

    Args:
        cm: ``(C, C)`` or batched ``(B, C, C)`` confusion counts (rows = true, columns = predicted).
        classes: the class names (for the per-class metric names of multi-class problems).
        positive_class: the positive class of a binary problem, ``None`` for multi-class.
        ordinal: multi-class classes in ordinal order: adds :data:`ORDINAL_SCALARS`.

    Returns:
        Metric name -> value array of shape ``()`` or ``(B,)``; ``NaN`` marks an undefined value.
        Names: :data:`BINARY_SCALARS` (binary) or :data:`MULTICLASS_SCALARS` plus ``"<metric>/<class>"``
        (multi-class), without the AUC entries.
    """
    cm = np.asarray(cm)
    c = _one_vs_rest_counts(cm)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    per = {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }
    n = cm.sum(axis=(-2, -1))
    out: dict[str, np.ndarray] = {
        "accuracy": _ratio(np.trace(cm, axis1=-2, axis2=-1), n),
        # mean recall over classes; NaN as soon as one class is absent (NaN propagates through the mean)
        "balanced_accuracy": np.mean(per["sensitivity"], axis=-1),
    }
    if positive_class is not None:
        for name, v in per.items():
            out[name] = v[..., positive_class]
    else:
        for name, v in per.items():
            out[f"{name}_macro"] = np.mean(v, axis=-1)
        for name, v in per.items():
            for k, cls in enumerate(classes):
                out[f"{name}/{cls}"] = v[..., k]
        if ordinal:
            out["kappa_quadratic"] = quadratic_weighted_kappa(cm)
    return out


def _rank_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC along the last axis (ties count 1/2); NaN where one of the two groups is empty."""
    ranks = rankdata(scores, axis=-1)  # average ranks for ties
    n1 = labels.sum(axis=-1).astype(np.float64)
    n0 = labels.shape[-1] - n1
    u = np.sum(ranks * labels, axis=-1) - n1 * (n1 + 1) / 2.0
    return _ratio(u, n1 * n0)


def batch_scalar_metrics(
    y_true: np.ndarray,
    prob: np.ndarray,
    threshold: float | Mapping[str, Any] | None,
    classes: Sequence[str],
    positive_class: int | None,
    with_auc: bool = True,
    ordinal: bool = False,
) -> dict[str, np.ndarray]:
    """Vectorised scalar metrics of ``B`` data sets at once (used by the bootstrap).

    Args:
        y_true: ``(B, N)`` class indices.
        prob: ``(B, N, C)`` probabilities.
        threshold: binary threshold; multi-class: ``None`` (argmax) or a decision rule dict.
        classes: class names.
        positive_class: binary positive class or ``None``.
        with_auc: also compute the (rank-based) AUC values.
        ordinal: multi-class classes in ordinal order (adds the quadratic weighted kappa).

    Returns:
        Metric name (as in :func:`scalar_metrics`) -> ``(B,)`` array, ``NaN`` where undefined.
    """
    n_b, n = y_true.shape
    n_c = len(classes)
    pred = predict_labels(prob, threshold, positive_class)
    flat = (np.arange(n_b)[:, None] * (n_c * n_c) + y_true * n_c + pred).ravel()
    cm = np.bincount(flat, minlength=n_b * n_c * n_c).reshape(n_b, n_c, n_c)
    out = metrics_from_confusion(cm, classes, positive_class, ordinal=ordinal)
    if with_auc:
        if positive_class is not None:
            out["auc"] = _rank_auc(y_true == positive_class, prob[..., positive_class])
        else:
            per = np.stack([_rank_auc(y_true == k, prob[..., k]) for k in range(n_c)], axis=-1)
            out["auc"] = np.mean(per, axis=-1)
            for k, cls in enumerate(classes):
                out[f"auc/{cls}"] = per[:, k]
    return out


def _opt(v: Any) -> float | None:
    v = float(v)
    return None if np.isnan(v) else v


def _auc_point(y: np.ndarray, scores: np.ndarray) -> float | None:
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, scores))


def classification_metrics(
    y_true: Any,
    y_prob: Any,
    threshold: float | Mapping[str, Any] | None = None,
    positive_class: int = 1,
    classes: Sequence[str] | None = None,
    ordinal: bool = False,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, AUC, sensitivity, specificity, PPV, NPV, F1 and the confusion matrix.

    Binary problems (``C == 2``): the positive class is predicted when ``p(positive) >= threshold``; sensitivity is
    the recall of the positive class, specificity the recall of the other; ``tp/fp/tn/fn`` are given too.
    Multi-class problems: argmax predictions; ``auc`` is the one-vs-rest macro AUC; sensitivity, specificity,
    PPV, NPV and F1 are computed one-vs-rest per class (``per_class``) and macro-averaged (``*_macro``);
    ``balanced_accuracy`` is the mean per-class recall (equal to ``sensitivity_macro``).

    Undefined values (zero denominators, AUC with one class) are ``None`` and explained in ``notes`` (see the
    module docstring for the rule).

    Args:
        y_true: ``(N,)`` class indices (or ``(N, C)`` one-hot).
        y_prob: ``(N,)`` positive-class probabilities (binary) or ``(N, C)`` class probabilities.
        threshold: binary decision threshold: ``None`` (= 0.5), a number in ``[0, 1]``, or the dict returned by
            :func:`medmonai.metrics.threshold.choose_threshold`. Multi-class problems: ``None`` (argmax) or a
            decision rule dict (:func:`medmonai.metrics.threshold.choose_decision_rule`).
        positive_class: index of the positive class of a binary problem.
        classes: class names (default ``"0", "1", ...``).
        ordinal: multi-class only: the classes are ordered as listed (grades); adds ``kappa_quadratic``
            (:func:`quadratic_weighted_kappa`) and records ``ordinal``.

    Returns:
        A JSON-serialisable dict with ``task`` (``"binary"``/``"multiclass"``), ``classes``, ``n``,
        ``n_per_class``, ``threshold``, ``prediction_rule``, the metrics (``None`` when undefined),
        ``confusion_matrix`` (list of lists, rows = true, columns = predicted), ``tp/fp/tn/fn`` (binary),
        ``positive_class``/``positive_class_name`` (binary), ``per_class`` (multi-class: name -> one-vs-rest
        metrics and counts) and ``notes``.
    """
    inp = prepare_inputs(y_true, y_prob, positive_class=positive_class, classes=classes)
    thr = resolve_threshold(threshold, inp)
    y, prob, names, pos = inp.y_true, inp.prob, inp.classes, inp.positive_class
    n_c = inp.n_classes
    pred = predict_labels(prob, thr, pos)
    cm = confusion_matrix(y, pred, labels=list(range(n_c)))
    derived = metrics_from_confusion(cm, names, pos, ordinal=ordinal and pos is None)
    counts = _one_vs_rest_counts(cm)
    n_per_class = np.bincount(y, minlength=n_c)
    notes: list[str] = []

    res: dict[str, Any] = {
        "task": "binary" if inp.binary else "multiclass",
        "classes": list(names),
        "n": int(y.size),
        "n_per_class": {name: int(k) for name, k in zip(names, n_per_class)},
    }
    if inp.binary:
        assert pos is not None
        pname, nname = names[pos], names[1 - pos]
        res.update(
            positive_class=pos,
            positive_class_name=pname,
            threshold=thr,
            prediction_rule=f"'{pname}' if p({pname}) >= threshold else '{nname}'",
        )
        auc = _auc_point(y == pos, prob[:, pos])
        res["accuracy"] = _opt(derived["accuracy"])
        res["balanced_accuracy"] = _opt(derived["balanced_accuracy"])
        res["auc"] = auc
        for name in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            res[name] = _opt(derived[name])
        for key in ("tp", "fp", "tn", "fn"):
            res[key] = int(counts[key][pos])
        if auc is None:
            notes.append(
                f"auc undefined: y_true holds only class '{names[int(y[0])]}' "
                f"(AUC needs at least one '{pname}' and one '{nname}' case)"
            )
        reasons = {
            "sensitivity": f"no '{pname}' (positive) case in y_true",
            "specificity": f"no '{nname}' (negative) case in y_true",
            "ppv": f"no case predicted '{pname}' (positive)",
            "npv": f"no case predicted '{nname}' (negative)",
            "f1": f"no '{pname}' case in y_true and none predicted",
            "balanced_accuracy": "y_true lacks one of the two classes",
        }
        for name, why in reasons.items():
            if res[name] is None:
                notes.append(f"{name} undefined: {why}")
    else:
        rule_text = "argmax of the class probabilities"
        if isinstance(thr, Mapping) and thr["method"] == "prior_shift":
            rule_text = (
                f"argmax of the prior-corrected class probabilities (prior shift, alpha {float(thr['alpha']):g}, "
                "chosen on validation data)"
            )
        res.update(positive_class=None, threshold=None, prediction_rule=rule_text)
        if isinstance(thr, Mapping):
            res["decision_rule"] = thr
        per_class: dict[str, dict[str, Any]] = {}
        aucs: list[float | None] = []
        for k, name in enumerate(names):
            auc_k = _auc_point(y == k, prob[:, k])
            aucs.append(auc_k)
            entry: dict[str, Any] = {"auc": auc_k}
            for m in ("sensitivity", "specificity", "ppv", "npv", "f1"):
                entry[m] = _opt(derived[f"{m}/{name}"])
            for key in ("tp", "fp", "tn", "fn"):
                entry[key] = int(counts[key][k])
            entry["n"] = int(n_per_class[k])
            per_class[name] = entry
            reasons = {
                "auc": f"y_true has {'no' if n_per_class[k] == 0 else 'only'} '{name}' case(s)",
                "sensitivity": f"no '{name}' case in y_true",
                "specificity": f"every case in y_true is '{name}'",
                "ppv": f"no case predicted '{name}'",
                "npv": f"every case is predicted '{name}'",
                "f1": f"no '{name}' case in y_true and none predicted",
            }
            for m, why in reasons.items():
                if entry[m] is None:
                    notes.append(f"{m} of class '{name}' undefined: {why}")
        macro_auc = None if any(a is None for a in aucs) else float(np.mean(aucs))
        res["accuracy"] = _opt(derived["accuracy"])
        res["balanced_accuracy"] = _opt(derived["balanced_accuracy"])
        res["auc"] = macro_auc
        for m in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            res[f"{m}_macro"] = _opt(derived[f"{m}_macro"])
        for key in ("balanced_accuracy", "auc", *(f"{m}_macro" for m in PER_CLASS_SCALARS[1:])):
            if res[key] is None:
                notes.append(f"{key} undefined: undefined for at least one class (see the per-class notes)")
        res["per_class"] = per_class
        if ordinal:
            res["ordinal"] = True
            res["kappa_quadratic"] = _opt(derived["kappa_quadratic"])
            if res["kappa_quadratic"] is None:
                notes.append("kappa_quadratic undefined: no disagreement is expected by chance (one class only)")
    res["confusion_matrix"] = cm.astype(int).tolist()
    res["notes"] = notes
    return res


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """Flatten a :func:`classification_metrics` result into ``name -> value`` for every scalar metric.

    Binary: the names of :data:`BINARY_SCALARS`. Multi-class: :data:`MULTICLASS_SCALARS` plus
    ``"<metric>/<class name>"`` for every metric of :data:`PER_CLASS_SCALARS` and every class.
    """
    if metrics["task"] == "binary":
        return {name: metrics[name] for name in BINARY_SCALARS}
    out = {name: metrics[name] for name in MULTICLASS_SCALARS}
    if metrics.get("ordinal"):
        out.update({name: metrics[name] for name in ORDINAL_SCALARS})
    for m in PER_CLASS_SCALARS:
        for cls, entry in metrics["per_class"].items():
            out[f"{m}/{cls}"] = entry[m]
    return out
