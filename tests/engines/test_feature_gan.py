"""Feature-level GAN: it learns class-conditional feature distributions; the classifier uses them for training only."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medmonai.engines.feature_gan import FeatureGAN, fit_classical_with_feature_gan

SMALL = {"latent_dim": 8, "hidden": 32, "n_layers": 2, "batch_size": 32}


def _gaussians(n0=120, n1=12, dim=6, seed=0):
    """Two classes that differ in the mean of feature 0 (-2 vs +2)."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(0, 1, (n0, dim))
    x0[:, 0] -= 2
    x1 = rng.normal(0, 1, (n1, dim))
    x1[:, 0] += 2
    return np.concatenate([x0, x1]).astype(np.float32), np.array([0] * n0 + [1] * n1)


@pytest.mark.slow
def test_generated_features_follow_their_class():
    x, y = _gaussians()
    gan = FeatureGAN(steps=400, seed=0, **SMALL).fit(x, y)
    xs, ys = gan.sample([300, 300], seed=1)
    assert xs.shape == (600, x.shape[1]) and np.bincount(ys).tolist() == [300, 300]
    m0, m1 = xs[ys == 0, 0].mean(), xs[ys == 1, 0].mean()
    assert m0 < -1.0 and m1 > 1.0  # each class is generated around its own mean (real: -2 and +2)
    assert np.isfinite(gan.losses_["d"]).all() and len(gan.losses_["g"]) == 400


def test_sampling_is_seeded_and_survives_save_and_load(tmp_path):
    x, y = _gaussians()
    gan = FeatureGAN(steps=50, seed=0, **SMALL).fit(x, y)
    a, _ = gan.sample([3, 4], seed=5)
    b, _ = gan.sample([3, 4], seed=5)
    np.testing.assert_array_equal(a, b)
    gan.save(tmp_path / "g.pt")
    c, yc = FeatureGAN.load(tmp_path / "g.pt").sample([3, 4], seed=5)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)
    assert yc.tolist() == [0] * 3 + [1] * 4


def test_classifier_keeps_the_real_c_and_adds_exactly_the_gap():
    x, y = _gaussians()
    groups = np.arange(len(y))
    clf = fit_classical_with_feature_gan(
        x, y, groups=groups, mode="balance", ratio=1.0, cv=3, seed=0, gan=FeatureGAN(steps=100, **SMALL)
    )
    info = clf.feature_gan_
    assert info["synthetic_per_class"] == [0, 108]
    assert clf.best_params_["C"] == info["C_real"]
    # inner folds evaluate on real samples only; synthetic ones (indices >= len(x)) are only ever trained on
    for tr, te in clf.cv_splits_:
        assert te.max() < len(x) and tr.max() >= len(x)
    xt, yt = _gaussians(50, 50, seed=1)
    assert roc_auc_score(yt, clf.predict_proba(xt)[:, 1]) > 0.95  # the real signal (separation 4 sd) survives


def test_balanced_data_needs_no_gan_and_svm_is_refused():
    x, y = _gaussians(20, 20)
    clf = fit_classical_with_feature_gan(x, y, mode="balance", cv=3)
    assert clf.feature_gan_["synthetic_per_class"] == [0, 0]
    with pytest.raises(ValueError, match="logreg"):
        fit_classical_with_feature_gan(x, y, model="linear_svm")
    with pytest.raises(ValueError, match="every class"):
        FeatureGAN(steps=1).fit(x[:20], np.array([0] * 10 + [2] * 10))
