"""Classical linear classifiers on deep features, with the regularisation tuned by CV on the training data only.

:class:`ClassicalClassifier` is a thin wrapper around scikit-learn: a ``StandardScaler`` followed by one of

- ``"logreg_l2"``: ``LogisticRegression`` with an L2 penalty (lbfgs; multinomial for more than two classes);
- ``"logreg_l1"``: ``LogisticRegression`` with an L1 penalty (liblinear; one-vs-rest for more than two classes).
  The L1 penalty sets most coefficients to exactly zero, so the fit doubles as lasso feature selection:
  :attr:`ClassicalClassifier.selected_features_` / :attr:`ClassicalClassifier.n_selected_features_`;
- ``"linear_svm"``: ``LinearSVC``, with probabilities from Platt scaling (``CalibratedClassifierCV``, sigmoid,
  ``ensemble=False``) fitted on the out-of-fold decision values of the same inner folds.

The inverse regularisation strength ``C`` is chosen by ``GridSearchCV`` over a log grid with stratified k-fold
cross-validation *inside the data given to* :meth:`ClassicalClassifier.fit` (``StratifiedGroupKFold`` when
``groups`` are given, so a subject never sits on both sides of an inner split), scored by ROC AUC (one-vs-rest
macro for more than two classes), and the pipeline is then refitted on all of that data. Pass only the training
split to ``fit``: the evaluation data must never be seen while tuning.

Saving does not pickle: :meth:`ClassicalClassifier.save` writes the scaler statistics, coefficients, intercepts,
calibration parameters and the class labels as plain numeric/string arrays of an ``.npz`` plus a JSON description;
:meth:`ClassicalClassifier.load` reads it with ``allow_pickle=False``, so loading a file runs no code from it.
Predictions (before and after saving) are computed from these arrays with numpy, so a reloaded model gives
bit-identical probabilities.

BLAS is limited to one thread while fitting: on small problems multithreaded BLAS is slower, and much slower on a
busy machine. A few hundred samples x 1280 features fit in seconds on 2 CPU cores.
"""

from __future__ import annotations

import inspect
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from scipy.special import expit, softmax
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer_names, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from medmonai.utils import PathLike, atomic_write

__all__ = ["MODELS", "DEFAULT_CS", "ClassicalClassifier", "fit_classical"]

logger = logging.getLogger(__name__)

#: Classifier names accepted by :class:`ClassicalClassifier`.
MODELS: tuple[str, ...] = ("logreg_l2", "logreg_l1", "linear_svm")

#: Default grids of the inverse regularisation strength ``C`` (features are standardised first).
DEFAULT_CS: dict[str, tuple[float, ...]] = {
    "logreg_l2": tuple(float(c) for c in np.logspace(-4, 1, 8)),
    "logreg_l1": tuple(float(c) for c in np.logspace(-3, 1, 8)),
    "linear_svm": tuple(float(c) for c in np.logspace(-5, 0, 8)),
}

_FORMAT = "medmonai.classical"
_FORMAT_VERSION = 1
_LINKS = ("logistic", "softmax", "ovr_logistic", "platt")


def _logistic_regression(l1: bool, **kwargs: Any) -> Any:
    """``LogisticRegression`` with an L1 or L2 penalty, across scikit-learn versions.

    ``penalty`` is deprecated from scikit-learn 1.8 in favour of ``l1_ratio`` (which older versions ignore).
    """
    if inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated":
        return LogisticRegression(l1_ratio=1.0 if l1 else 0.0, **kwargs)
    return LogisticRegression(penalty="l1" if l1 else "l2", **kwargs)


def _ovr_auc_from_decision(estimator: Any, X: np.ndarray, y: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC computed on decision values (for multi-class models without probabilities)."""
    d = np.asarray(estimator.decision_function(X))
    classes = np.asarray(estimator.classes_)
    return float(np.mean([roc_auc_score(y == c, d[:, k]) for k, c in enumerate(classes)]))


class ClassicalClassifier:
    """Standardise, then a linear classifier whose ``C`` is tuned by (group-aware) CV on the training data.

    All constructor arguments are plain values, so the class can be built from a MONAI bundle config
    (``_target_: medmonai.engines.classical.ClassicalClassifier``).

    Args:
        model: one of :data:`MODELS`.
        Cs: grid of inverse regularisation strengths; default :data:`DEFAULT_CS` of the model.
        cv: number of inner folds (reduced when the smallest class has fewer samples/subjects), or a scikit-learn
            splitter object (its ``split(X, y, groups)`` is called with the training data only; for
            ``linear_svm`` its test folds must partition the data).
        scoring: scikit-learn scoring name for the tuning; default ``"roc_auc"`` (binary) or ``"roc_auc_ovr"``
            (multi-class; computed from decision values for ``linear_svm``).
        seed: seed of the inner-fold shuffling (and of liblinear).
        class_weight: ``None`` or ``"balanced"`` (reweights classes inversely to their frequency).
        max_iter: iteration limit of the solvers.
        tol: solver tolerance.
        n_jobs: parallel jobs of the grid search (None: one process, the fastest for small problems).

    Attributes (after :meth:`fit`):
        classes_: the class labels, in the column order of :meth:`predict_proba`.
        best_params_: ``{"C": chosen value}``.
        cv_score_: mean inner-CV score at the chosen ``C``.
        cv_results_: ``{"C": [...], "mean_score": [...], "std_score": [...]}`` over the grid.
        cv_splits_: the inner ``(train_indices, test_indices)`` splits (indices into the data given to ``fit``).
        selected_features_: indices of features with a non-zero coefficient for at least one class.
        n_selected_features_: their number (the lasso selection of ``logreg_l1``; all features for L2/SVM).
        n_features_in_: number of input features.
    """

    def __init__(
        self,
        model: str = "logreg_l2",
        Cs: Sequence[float] | None = None,
        cv: int | Any = 5,
        scoring: str | None = None,
        seed: int = 0,
        class_weight: str | None = None,
        max_iter: int = 5000,
        tol: float = 1e-4,
        n_jobs: int | None = None,
    ) -> None:
        if model not in MODELS:
            raise ValueError(f"unknown classical model {model!r}; valid: {list(MODELS)}")
        cs = DEFAULT_CS[model] if Cs is None else tuple(float(c) for c in np.atleast_1d(np.asarray(Cs, dtype=float)))
        if not cs or any(not np.isfinite(c) or c <= 0 for c in cs):
            raise ValueError(f"Cs must be a non-empty list of positive numbers, got {Cs!r}")
        if isinstance(cv, bool) or (isinstance(cv, int | np.integer) and int(cv) < 2):
            raise ValueError(f"cv must be >= 2 folds or a splitter object, got {cv!r}")
        if not isinstance(cv, int | np.integer) and not hasattr(cv, "split"):
            raise ValueError(f"cv must be a number of folds or an object with a split() method, got {cv!r}")
        if class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be None or 'balanced', got {class_weight!r}")
        self.model = model
        self.Cs = cs
        self.cv = int(cv) if isinstance(cv, int | np.integer) else cv
        self.scoring = scoring
        self.seed = int(seed)
        self.class_weight = class_weight
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.n_jobs = n_jobs
        self._fitted = False

    # ------------------------------------------------------------------------------------------------ set-up
    def _estimator(self, n_classes: int) -> tuple[Any, str]:
        """The final pipeline step and the name of its ``C`` parameter inside the pipeline."""
        if self.model == "logreg_l2":
            est = _logistic_regression(
                False, solver="lbfgs", max_iter=self.max_iter, tol=self.tol, class_weight=self.class_weight
            )
            return est, "clf__C"
        if self.model == "logreg_l1":
            est = _logistic_regression(
                True,
                solver="liblinear",
                max_iter=self.max_iter,
                tol=self.tol,
                class_weight=self.class_weight,
                random_state=self.seed,
            )
            if n_classes > 2:  # liblinear is binary only: one L1 model per class
                return OneVsRestClassifier(est), "clf__estimator__C"
            return est, "clf__C"
        est = LinearSVC(
            C=1.0, max_iter=self.max_iter, tol=self.tol, class_weight=self.class_weight, random_state=self.seed
        )
        return est, "clf__C"

    def _scoring(self, n_classes: int) -> Any:
        if self.scoring is not None:
            return self.scoring
        if n_classes == 2:
            return "roc_auc"
        return _ovr_auc_from_decision if self.model == "linear_svm" else "roc_auc_ovr"

    def _splits(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
        if not isinstance(self.cv, int):
            return [(np.asarray(tr), np.asarray(te)) for tr, te in self.cv.split(X, y, groups)]
        counts = np.bincount(y)
        if groups is None:
            per_class = counts
            what = "samples"
        else:
            per_class = np.array([len(set(groups[y == c].tolist())) for c in range(len(counts))])
            what = "subjects"
        k = int(min(self.cv, per_class.min()))
        if k < 2:
            raise ValueError(
                f"inner cross-validation needs at least 2 {what} per class; {what} per class: {per_class.tolist()}"
            )
        if k < self.cv:
            logger.info("inner CV reduced from %d to %d folds (smallest class has %d %s)", self.cv, k, k, what)
        if groups is None:
            splitter: Any = StratifiedKFold(n_splits=k, shuffle=True, random_state=self.seed)
        else:
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=self.seed)
        return [(tr, te) for tr, te in splitter.split(X, y, groups)]

    # ------------------------------------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Sequence[Any], groups: Sequence[Any] | None = None) -> ClassicalClassifier:
        """Tune ``C`` by inner cross-validation on ``(X, y)``, then refit on all of it.

        Args:
            X: ``(n_samples, n_features)`` training features (the training split only).
            y: class label per sample (at least two classes).
            groups: subject id per sample; inner folds then keep each subject on one side.

        Returns:
            self.

        Raises:
            ValueError: for mismatched lengths, non-finite features, fewer than two classes, too few samples or
                subjects per class for two folds, or an inner CV whose every score is undefined.
        """
        X = self._check_X(X, fitted=False)
        y_arr = np.asarray(y)
        if y_arr.ndim != 1 or len(y_arr) != len(X):
            raise ValueError(f"y must be 1-D with one label per row of X ({len(X)}), got shape {y_arr.shape}")
        classes, y_idx = np.unique(y_arr, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"need at least two classes to fit a classifier, got {classes.tolist()}")
        g = None
        if groups is not None:
            g = np.asarray(groups)
            if g.shape != (len(X),):
                raise ValueError(f"groups must have one entry per row of X ({len(X)}), got shape {g.shape}")
        n_classes = len(classes)
        splits = self._splits(X, y_idx, g)
        for tr, te in splits:
            if g is not None and set(g[tr].tolist()) & set(g[te].tolist()):
                raise ValueError("the inner CV splitter put a subject on both sides of a split")
        est, param = self._estimator(n_classes)
        pipe = Pipeline([("scaler", StandardScaler()), ("clf", est)])
        search = GridSearchCV(
            pipe,
            {param: list(self.Cs)},
            scoring=self._scoring(n_classes),
            cv=splits,
            refit=self.model != "linear_svm",
            n_jobs=self.n_jobs,
            error_score=np.nan,
        )
        with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            search.fit(X, y_idx)
            scores = np.asarray(search.cv_results_["mean_test_score"], dtype=float)
            if not np.isfinite(scores).any():
                raise ValueError(
                    "every inner-CV score is undefined (a test fold without every class?); "
                    "use fewer folds or more samples per class"
                )
            best_c = float(search.best_params_[param])
            if self.model == "linear_svm":
                final = self._fit_platt(pipe, param, best_c, splits, X, y_idx)
            else:
                final = self._linear_params(search.best_estimator_, n_classes)
        self._report_warnings(caught)

        self.classes_ = classes
        self.n_features_in_ = int(X.shape[1])
        self.best_params_ = {"C": best_c}
        self.cv_score_ = float(search.best_score_)
        self.cv_results_ = {
            "C": [float(c) for c in self.Cs],
            "mean_score": [float(s) for s in scores],
            "std_score": [float(s) for s in search.cv_results_["std_test_score"]],
        }
        self.cv_splits_ = splits
        self._params = final
        self._fitted = True
        logger.info(
            "%s: C=%.4g chosen by %d-fold inner CV (score %.4f); %d of %d features selected",
            self.model,
            best_c,
            len(splits),
            self.cv_score_,
            self.n_selected_features_,
            self.n_features_in_,
        )
        return self

    @staticmethod
    def _report_warnings(caught: list[warnings.WarningMessage]) -> None:
        conv = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
        if conv:
            logger.warning(
                "%d solver fits did not fully converge during the C search (usually at the largest C values); "
                "raise max_iter if the chosen C is among them",
                len(conv),
            )
        for w in caught:
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    @staticmethod
    def _linear_params(pipe: Any, n_classes: int) -> dict[str, np.ndarray | str]:
        scaler, clf = pipe.named_steps["scaler"], pipe.named_steps["clf"]
        if hasattr(clf, "estimators_"):  # OneVsRestClassifier
            coef = np.vstack([e.coef_ for e in clf.estimators_])
            intercept = np.concatenate([np.ravel(e.intercept_) for e in clf.estimators_])
            link = "ovr_logistic"
        else:
            coef = np.atleast_2d(clf.coef_)
            intercept = np.ravel(clf.intercept_)
            link = "logistic" if n_classes == 2 else "softmax"
        return {
            "mean": np.asarray(scaler.mean_, dtype=np.float64),
            "scale": np.asarray(scaler.scale_, dtype=np.float64),
            "coef": np.asarray(coef, dtype=np.float64),
            "intercept": np.asarray(intercept, dtype=np.float64),
            "link": link,
        }

    def _fit_platt(
        self, pipe: Any, param: str, c: float, splits: list[Any], X: np.ndarray, y: np.ndarray
    ) -> dict[str, np.ndarray | str]:
        """Platt-scale a LinearSVC on its out-of-fold decision values, then refit it on all data."""
        svm = clone(pipe).set_params(**{param: c})
        cal = CalibratedClassifierCV(svm, method="sigmoid", cv=splits, ensemble=False).fit(X, y)
        fitted = cal.calibrated_classifiers_[0]
        params = self._linear_params(fitted.estimator, len(cal.classes_))
        params["a"] = np.array([float(k.a_) for k in fitted.calibrators], dtype=np.float64)
        params["b"] = np.array([float(k.b_) for k in fitted.calibrators], dtype=np.float64)
        params["link"] = "platt"
        return params

    # ------------------------------------------------------------------------------------------------ predicting
    def _check_X(self, X: Any, fitted: bool = True) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"features must be a 2-D (n_samples, n_features) array, got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError("features are empty (0 samples)")
        if not np.isfinite(X).all():
            bad = np.argwhere(~np.isfinite(X))
            raise ValueError(
                f"features contain {len(bad)} NaN/inf values (first at row {bad[0][0]}, column {bad[0][1]})"
            )
        if fitted:
            if not self._fitted:
                raise RuntimeError("this ClassicalClassifier is not fitted yet: call fit() or load()")
            if X.shape[1] != self.n_features_in_:
                raise ValueError(f"expected {self.n_features_in_} features, got {X.shape[1]}")
        return X

    def decision_function(self, X: Any) -> np.ndarray:
        """Linear scores of standardised features: ``(n,)`` for two classes (positive class), else ``(n, K)``."""
        X = self._check_X(X)
        p = self._params
        d = ((X - p["mean"]) / p["scale"]) @ p["coef"].T + p["intercept"]
        return d[:, 0] if d.shape[1] == 1 else d

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n_samples, n_classes)``, columns in the order of :attr:`classes_`."""
        d = self.decision_function(X)
        link = self._params["link"]
        if link == "softmax":
            return softmax(d, axis=1)
        if link == "logistic":
            p1 = expit(d)
            return np.column_stack([1.0 - p1, p1])
        if link == "ovr_logistic":
            p = expit(d)
            return p / p.sum(axis=1, keepdims=True)
        # platt: sigmoid per class on the SVM decision values, as sklearn's CalibratedClassifierCV
        a, b = self._params["a"], self._params["b"]
        if d.ndim == 1:
            p1 = expit(-(a[0] * d + b[0]))
            proba = np.column_stack([1.0 - p1, p1])
        else:
            proba = expit(-(a * d + b))
            den = proba.sum(axis=1, keepdims=True)
            proba = np.divide(proba, den, out=np.full_like(proba, 1.0 / proba.shape[1]), where=den != 0)
        proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
        return proba

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class label per sample."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    @property
    def selected_features_(self) -> np.ndarray:
        """Indices of features with a non-zero coefficient (for any class)."""
        if not self._fitted:
            raise RuntimeError("this ClassicalClassifier is not fitted yet")
        return np.flatnonzero(np.any(self._params["coef"] != 0, axis=0))

    @property
    def n_selected_features_(self) -> int:
        """Number of features with a non-zero coefficient (the lasso selection of ``logreg_l1``)."""
        return int(len(self.selected_features_))

    @property
    def coef_(self) -> np.ndarray:
        """Coefficients on standardised features, ``(1 or K, n_features)``."""
        if not self._fitted:
            raise RuntimeError("this ClassicalClassifier is not fitted yet")
        return self._params["coef"]

    # ------------------------------------------------------------------------------------------------ persistence
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (a splitter object given as ``cv`` is reported by its ``repr``)."""
        return {
            "model": self.model,
            "Cs": list(self.Cs),
            "cv": self.cv if isinstance(self.cv, int) else repr(self.cv),
            "scoring": self.scoring if self.scoring is None or isinstance(self.scoring, str) else repr(self.scoring),
            "seed": self.seed,
            "class_weight": self.class_weight,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "n_jobs": self.n_jobs,
        }

    def save(self, path: PathLike) -> Path:
        """Write the fitted model as an ``.npz`` of numeric/string arrays and a JSON description (no pickle).

        Stored: scaler mean/scale, coefficients, intercepts, Platt parameters (``linear_svm``), class labels, the
        chosen ``C``, the inner-CV results and the constructor arguments. The write is atomic.

        Returns:
            The path written.

        Raises:
            RuntimeError: if the model is not fitted.
            ValueError: if the class labels are neither numbers nor strings.
        """
        if not self._fitted:
            raise RuntimeError("cannot save an unfitted ClassicalClassifier")
        classes = np.asarray(self.classes_)
        if classes.dtype.kind not in "biuUf":
            classes = np.asarray([str(c) for c in classes.tolist()])
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "link": self._params["link"],
            "params": self.get_params(),
            "best_params": self.best_params_,
            "cv_score": self.cv_score_,
            "cv_results": self.cv_results_,
            "n_features_in": self.n_features_in_,
            "n_selected_features": self.n_selected_features_,
            "sklearn_version": sklearn.__version__,
        }
        arrays = {k: v for k, v in self._params.items() if isinstance(v, np.ndarray)}

        def _write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, classes=classes, meta=np.str_(json.dumps(meta)), **arrays)

        return atomic_write(path, _write)

    @classmethod
    def load(cls, path: PathLike) -> ClassicalClassifier:
        """Load a model written by :meth:`save`; pickled or other files are refused (nothing is executed).

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the file is not a medmonai classical-model ``.npz`` (e.g. a pickle) or is inconsistent.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: classifier file does not exist")
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"PK\x03\x04":
            raise ValueError(
                f"{path}: not a medmonai classifier .npz (pickles and other formats are refused, since loading them "
                "could run arbitrary code)"
            )
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: np.asarray(z[k]) for k in z.files}
        except ValueError as e:
            raise ValueError(f"{path}: refused: {e} (object arrays need pickle, which is not allowed)") from e
        except Exception as e:
            raise ValueError(f"{path}: unreadable classifier file ({e})") from e
        try:
            meta = json.loads(str(data["meta"]))
        except (KeyError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: missing or invalid 'meta' description ({e})") from e
        if meta.get("format") != _FORMAT or meta.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"{path}: not a {_FORMAT} v{_FORMAT_VERSION} file (format {meta.get('format')!r}, "
                f"version {meta.get('version')!r})"
            )
        link = meta.get("link")
        needed = ["classes", "mean", "scale", "coef", "intercept"] + (["a", "b"] if link == "platt" else [])
        missing = [k for k in needed if k not in data]
        if link not in _LINKS or missing:
            raise ValueError(f"{path}: inconsistent classifier file (link {link!r}, missing arrays {missing})")
        p = dict(meta.get("params", {}))
        if not isinstance(p.get("cv"), int):
            p["cv"] = 5
        if not (p.get("scoring") is None or p.get("scoring") in _SCORER_NAMES):
            p["scoring"] = None
        obj = cls(**{k: p[k] for k in inspect.signature(cls).parameters if k in p})
        params: dict[str, Any] = {k: data[k].astype(np.float64) for k in needed if k != "classes"}
        params["link"] = link
        d = int(meta["n_features_in"])
        coef = params["coef"]
        n_out = 1 if link in ("logistic",) or (link == "platt" and len(data["classes"]) == 2) else len(data["classes"])
        if (
            coef.ndim != 2
            or coef.shape != (n_out, d)
            or params["mean"].shape != (d,)
            or params["scale"].shape != (d,)
            or params["intercept"].shape != (n_out,)
        ):
            raise ValueError(f"{path}: array shapes do not match {d} features and {len(data['classes'])} classes")
        obj.classes_ = data["classes"]
        obj.n_features_in_ = d
        obj.best_params_ = dict(meta["best_params"])
        obj.cv_score_ = float(meta["cv_score"])
        obj.cv_results_ = dict(meta["cv_results"])
        obj.cv_splits_ = []
        obj._params = params
        obj._fitted = True
        return obj

    def __repr__(self) -> str:
        state = f", C={self.best_params_['C']:.4g}, cv_score={self.cv_score_:.4f}" if self._fitted else ""
        return f"ClassicalClassifier(model={self.model!r}{state})"


_SCORER_NAMES = frozenset(get_scorer_names())


def fit_classical(
    features: Any,
    labels: Sequence[Any],
    groups: Sequence[Any] | None = None,
    model: str = "logreg_l2",
    cv: int | Any = 5,
    Cs: Sequence[float] | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> ClassicalClassifier:
    """Build and fit a :class:`ClassicalClassifier` on training features (``C`` tuned by inner CV).

    Args:
        features: ``(n_samples, n_features)`` training features, e.g. from
            :func:`medmonai.engines.features.extract_features`.
        labels: class label per sample.
        groups: subject id per sample (inner folds keep subjects together).
        model: one of :data:`MODELS`.
        cv: inner folds, or a splitter object.
        Cs: grid of ``C`` values; default :data:`DEFAULT_CS` of the model.
        seed: inner-fold shuffling seed.
        **kwargs: other :class:`ClassicalClassifier` arguments (``class_weight``, ``max_iter``, ``scoring``, ...).

    Returns:
        The fitted classifier.
    """
    return ClassicalClassifier(model=model, Cs=Cs, cv=cv, seed=seed, **kwargs).fit(features, labels, groups=groups)
