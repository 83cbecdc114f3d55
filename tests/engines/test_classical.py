from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medmonai.engines.classical import MODELS, ClassicalClassifier, _logistic_regression, fit_classical

FAST_CS = (1e-3, 1e-2, 1e-1, 1.0)


def separable(n: int, d: int = 30, informative: int = 3, seed: int = 0, noise_only: bool = False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, 2, n)
    if not noise_only:
        X[:, :informative] += 1.5 * (2 * y[:, None] - 1)
    return X, y


def multiclass(n: int, d: int = 20, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, d))
    X[np.arange(n), y] += 3.0  # class c is signalled by feature c
    return X, y


class RecordingSplitter:
    """Stratified k-fold that remembers what it was asked to split."""

    def __init__(self, n_splits: int = 3, grouped: bool = False) -> None:
        kind = StratifiedGroupKFold if grouped else StratifiedKFold
        self.inner = kind(n_splits, shuffle=True, random_state=0)
        self.calls: list[tuple[np.ndarray, np.ndarray, object]] = []

    def split(self, X, y, groups=None):
        self.calls.append((np.array(X), np.array(y), groups))
        return self.inner.split(X, y, groups)

    def get_n_splits(self, X=None, y=None, groups=None):
        return self.inner.get_n_splits()


@pytest.mark.parametrize("model", MODELS)
def test_separable_vs_noise_on_held_out_data(model):
    X, y = separable(500)
    clf = fit_classical(X[:150], y[:150], model=model, Cs=FAST_CS)
    proba = clf.predict_proba(X[150:])
    assert proba.shape == (350, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert roc_auc_score(y[150:], proba[:, 1]) > 0.95
    assert clf.cv_score_ > 0.9
    assert (clf.predict(X[150:]) == y[150:]).mean() > 0.85

    Xn, yn = separable(500, noise_only=True, seed=1)
    noise = fit_classical(Xn[:150], yn[:150], model=model, Cs=FAST_CS)
    assert abs(roc_auc_score(yn[150:], noise.predict_proba(Xn[150:])[:, 1]) - 0.5) < 0.12
    assert noise.cv_score_ < 0.7


def test_l1_selects_sparse_subset_with_informative_features():
    X, y = separable(200, d=100, informative=4, seed=3)
    clf = fit_classical(X, y, model="logreg_l1", Cs=(0.02, 0.05, 0.1))
    sel = set(clf.selected_features_.tolist())
    assert {0, 1, 2, 3} <= sel
    assert clf.n_selected_features_ == len(sel) < 30
    assert np.count_nonzero(clf.coef_) == clf.n_selected_features_
    l2 = fit_classical(X, y, model="logreg_l2", Cs=(0.01, 0.1))
    assert l2.n_selected_features_ == 100


def test_C_is_tuned_on_training_rows_only():
    X, y = separable(300, seed=4)
    train = np.arange(0, 300, 2)
    splitter = RecordingSplitter(3)
    clf = ClassicalClassifier("logreg_l2", Cs=FAST_CS, cv=splitter).fit(X[train], y[train])
    assert len(splitter.calls) == 1
    seen_X, seen_y, _ = splitter.calls[0]
    np.testing.assert_array_equal(seen_X, X[train])  # the splitter saw the training rows, nothing else
    np.testing.assert_array_equal(seen_y, y[train])
    assert len(clf.cv_splits_) == 3
    assert all(te.max() < len(train) for _, te in clf.cv_splits_)

    # same choice as a plain GridSearchCV over a scaler + logistic regression on the training rows
    ref = GridSearchCV(
        make_pipeline(StandardScaler(), _logistic_regression(False, max_iter=5000)),
        {"logisticregression__C": list(FAST_CS)},
        scoring="roc_auc",
        cv=clf.cv_splits_,
    ).fit(X[train], y[train])
    assert clf.best_params_["C"] == pytest.approx(ref.best_params_["logisticregression__C"])
    assert clf.cv_score_ == pytest.approx(ref.best_score_)
    assert clf.cv_results_["C"] == list(FAST_CS)
    # refit on all training rows: same probabilities as the reference's refitted pipeline
    np.testing.assert_allclose(clf.predict_proba(X[1::2]), ref.predict_proba(X[1::2]), atol=1e-8)


@pytest.mark.parametrize("model", ["logreg_l2", "linear_svm"])
def test_groups_keep_subjects_together(model):
    X, y = separable(120, seed=5)
    groups = np.repeat([f"subj{i}" for i in range(30)], 4)
    y = np.repeat(np.arange(30) % 2, 4)  # one label per subject
    X[:, :3] += 1.5 * (2 * y[:, None] - 1)
    clf = fit_classical(X, y, groups=groups, model=model, cv=4, Cs=FAST_CS)
    assert len(clf.cv_splits_) == 4
    covered = np.concatenate([te for _, te in clf.cv_splits_])
    assert sorted(covered.tolist()) == list(range(120))
    for tr, te in clf.cv_splits_:
        assert not set(groups[tr]) & set(groups[te])

    splitter = RecordingSplitter(3, grouped=True)
    ClassicalClassifier(model, Cs=FAST_CS, cv=splitter).fit(X, y, groups=groups)
    np.testing.assert_array_equal(splitter.calls[0][2], groups)
    # a user splitter that ignores the groups is caught rather than silently leaking subjects
    with pytest.raises(ValueError, match="subject on both sides"), pytest.warns(UserWarning, match="ignored"):
        ClassicalClassifier(model, Cs=FAST_CS, cv=RecordingSplitter(3)).fit(X, y, groups=groups)

    # fewer subjects than folds in a class: the number of folds is reduced, subjects still kept together
    few = fit_classical(X[:24], y[:24], groups=groups[:24], model=model, cv=5, Cs=FAST_CS)
    assert len(few.cv_splits_) == 3
    with pytest.raises(ValueError, match="2 subjects per class"):
        fit_classical(X[:8], y[:8], groups=groups[:8], Cs=FAST_CS)


@pytest.mark.parametrize("model", MODELS)
def test_multiclass_and_equivalence_with_sklearn(model):
    from sklearn.base import clone
    from sklearn.calibration import CalibratedClassifierCV

    X, y = multiclass(450)
    labels = np.array(["benign", "malignant", "normal"])[y]
    clf = fit_classical(X[:150], labels[:150], model=model, Cs=FAST_CS)
    assert clf.classes_.tolist() == ["benign", "malignant", "normal"]
    proba = clf.predict_proba(X[150:])
    assert proba.shape == (300, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert roc_auc_score(y[150:], proba, multi_class="ovr") > 0.95
    assert (clf.predict(X[150:]) == labels[150:]).mean() > 0.8

    # our numpy prediction path reproduces the scikit-learn estimator refitted with the chosen C
    c = clf.best_params_["C"]
    if model == "logreg_l2":
        ref = make_pipeline(StandardScaler(), _logistic_regression(False, C=c, max_iter=5000)).fit(X[:150], y[:150])
    elif model == "logreg_l1":
        from sklearn.multiclass import OneVsRestClassifier

        est = _logistic_regression(True, C=c, solver="liblinear", max_iter=5000, random_state=0)
        ref = make_pipeline(StandardScaler(), OneVsRestClassifier(est)).fit(X[:150], y[:150])
    else:
        from sklearn.svm import LinearSVC

        svm = make_pipeline(StandardScaler(), LinearSVC(C=c, max_iter=5000, random_state=0))
        ref = CalibratedClassifierCV(clone(svm), method="sigmoid", cv=clf.cv_splits_, ensemble=False)
        ref.fit(X[:150], y[:150])
    np.testing.assert_allclose(proba, ref.predict_proba(X[150:]), atol=1e-6)


def test_binary_svm_probabilities_match_sklearn_calibration():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import LinearSVC

    X, y = separable(200, seed=6)
    clf = fit_classical(X[:120], y[:120], model="linear_svm", Cs=FAST_CS)
    svm = make_pipeline(StandardScaler(), LinearSVC(C=clf.best_params_["C"], max_iter=5000, random_state=0))
    ref = CalibratedClassifierCV(svm, method="sigmoid", cv=clf.cv_splits_, ensemble=False).fit(X[:120], y[:120])
    np.testing.assert_allclose(clf.predict_proba(X[120:]), ref.predict_proba(X[120:]), atol=1e-6)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_save_load_round_trip(tmp_path, model, n_classes):
    X, y = separable(120, seed=7) if n_classes == 2 else multiclass(150, seed=7)
    clf = fit_classical(X, y, model=model, Cs=FAST_CS)
    path = clf.save(tmp_path / "clf.npz")
    loaded = ClassicalClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    assert loaded.model == model
    assert loaded.best_params_ == clf.best_params_
    assert loaded.cv_score_ == clf.cv_score_
    assert loaded.n_selected_features_ == clf.n_selected_features_
    with np.load(path, allow_pickle=False) as z:  # plain arrays only
        assert all(z[k].dtype != object for k in z.files)


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_refuses_pickles(tmp_path):
    X, y = separable(80, seed=8)
    clf = fit_classical(X, y, Cs=FAST_CS)
    plain = tmp_path / "clf.pkl"
    plain.write_bytes(pickle.dumps(clf))
    with pytest.raises(ValueError, match="clf.pkl.*refused"):
        ClassicalClassifier.load(plain)

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.npz"
    with open(evil, "wb") as f:  # an .npz whose array needs unpickling (running code) to load
        np.savez(f, meta=np.array([_Exploit(str(marker))], dtype=object))
    with pytest.raises(ValueError, match="evil.npz"):
        ClassicalClassifier.load(evil)
    assert not marker.exists()

    other = tmp_path / "other.npz"
    with open(other, "wb") as f:
        np.savez(f, meta=np.str_('{"format": "something else"}'))
    with pytest.raises(ValueError, match="not a medmonai.classical"):
        ClassicalClassifier.load(other)
    with pytest.raises(FileNotFoundError):
        ClassicalClassifier.load(tmp_path / "missing.npz")


def test_bad_inputs():
    X, y = separable(60, seed=9)
    with pytest.raises(ValueError, match="unknown classical model"):
        ClassicalClassifier("random_forest")
    with pytest.raises(ValueError, match="positive"):
        ClassicalClassifier(Cs=[0.1, -1])
    with pytest.raises(ValueError, match="two classes"):
        fit_classical(X, np.zeros(60, int))
    with pytest.raises(ValueError, match="2 samples per class"):
        fit_classical(X, np.r_[np.zeros(59, int), 1])
    Xn = X.copy()
    Xn[3, 4] = np.nan
    with pytest.raises(ValueError, match="row 3, column 4"):
        fit_classical(Xn, y)
    with pytest.raises(RuntimeError, match="not fitted"):
        ClassicalClassifier().predict_proba(X)
    clf = fit_classical(X, y, Cs=FAST_CS)
    with pytest.raises(ValueError, match="expected 30 features"):
        clf.predict_proba(X[:, :10])
    with pytest.raises(RuntimeError, match="unfitted"):
        ClassicalClassifier().save("x.npz")
