"""Cross-validation with GAN images: one GAN per fold, trained on that fold's training part only."""

from __future__ import annotations

import os

import pytest

from medmonai.apps.crossval import run_crossval
from medmonai.bundles import bundles_dir, parse_bundle
from medmonai.data.defaults import resolve_datalist
from medmonai.data.synthetic import SyntheticDataError
from medmonai.engines.crossval import fold_dir, fold_done
from medmonai.utils import read_json

pytestmark = pytest.mark.slow  # the whole module: a GAN and a training run per fold

BUNDLE = bundles_dir() / "classification"
FAST = {"max_epochs": 1, "spatial_size": [32, 32], "batch_size": 16}
# a tiny GAN: this checks the wiring and the no-leak rule, not image quality
GAN = {"max_epochs": 1, "epoch_length": 2, "g_channels": 4, "d_channels": 4, "latent_dim": 8, "batch_size": 4}


@pytest.fixture(scope="module")
def synthetic_cv(tmp_path_factory):
    root = tmp_path_factory.mktemp("cvgan")
    data = resolve_datalist("", str(root / "data"), 2, n_subjects=12, images_per_subject=[1, 2], test_fraction=0.25)
    report = run_crossval(
        BUNDLE, bundle_root=root, n_folds=2, overrides={"datalist": data, **FAST}, n_boot=20, export=False,
        synthetic_mode="fraction", synthetic_ratio=0.5, gan_overrides=GAN,
    )  # fmt: skip
    return root, data, report


def test_each_fold_gan_saw_only_that_folds_training_part(synthetic_cv):
    root, _, report = synthetic_cv
    cv_dir = root / "runs" / "cv"
    splits = read_json(cv_dir / "splits.json")
    assert report["n_folds"] == 2
    for k, fold in enumerate(splits["folds"]):
        assert fold_done(cv_dir, k)
        syn = read_json(fold_dir(cv_dir, k) / "gan" / "runs" / "synthetic" / "datalist.json")
        seen = set(syn["gan_training_cases"])
        # the fold datalist's training part (a subject-grouped hold-out of the GAN bundle is not applied: the fold
        # datalist carries its own validation split, the fold's validation part)
        assert seen == {os.path.realpath(c) for c in fold["train"]}
        assert not seen & {os.path.realpath(c) for c in fold["val"]}
    settings = read_json(cv_dir / "cv_settings.json")
    assert settings["synthetic"] == {"mode": "fraction", "ratio": 0.5, "gan": GAN}


def test_fold_training_gets_the_requested_synthetic_fraction(synthetic_cv):
    root, data, _ = synthetic_cv
    cv_dir = root / "runs" / "cv"
    syn = fold_dir(cv_dir, 0) / "gan" / "runs" / "synthetic" / "datalist.json"
    common = {"bundle_root": str(root), "datalist": data, "n_folds": 2, **FAST, "fold": 0}
    overrides = {**common, "synthetic_datalist": str(syn), "synthetic_mode": "fraction", "synthetic_ratio": 0.5}
    parser = parse_bundle(BUNDLE, ("train", "crossval"), overrides)
    entries = parser.get_parsed_content("train_entries")
    n_real = len(parser.get_parsed_content("split")["training"])
    synthetic = [e for e in entries if "synthetic" in os.path.basename(e["image"])]
    assert len(entries) == n_real + len(synthetic)
    assert len(synthetic) == round(0.5 * n_real)


def test_another_folds_gan_is_refused_as_a_leak(synthetic_cv):
    """Fold 0's GAN was trained on fold 1's validation part: using it for fold 1 must fail, naming the file."""
    root, data, _ = synthetic_cv
    cv_dir = root / "runs" / "cv"
    syn = fold_dir(cv_dir, 0) / "gan" / "runs" / "synthetic" / "datalist.json"
    common = {"bundle_root": str(root), "datalist": data, "n_folds": 2, **FAST, "fold": 1}
    parser = parse_bundle(
        BUNDLE, ("train", "crossval"), {**common, "synthetic_datalist": str(syn), "synthetic_mode": "fraction"}
    )
    with pytest.raises(Exception) as info:  # MONAI wraps it in a RuntimeError
        parser.get_parsed_content("train_entries")
    chain, err = [], info.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    causes = [e for e in chain if isinstance(e, SyntheticDataError)]
    assert causes, chain
    assert str(syn) in str(causes[0])
    assert "its generator was trained on" in str(causes[0]) and "validation/test case" in str(causes[0])


def test_synthetic_images_are_refused_on_the_deep_features_path(tmp_path):
    with pytest.raises(ValueError, match="network path"):
        run_crossval(BUNDLE, bundle_root=tmp_path, classifier="logreg_l2", synthetic_mode="balance")


def test_deep_features_with_a_feature_gan_per_fold(tmp_path):
    data = resolve_datalist("", str(tmp_path / "data"), 2, n_subjects=12, images_per_subject=[1, 2], test_fraction=0.25)
    report = run_crossval(
        BUNDLE, bundle_root=tmp_path, n_folds=2, classifier="logreg_l2", overrides={"datalist": data, **FAST},
        n_boot=20, feature_gan="fraction", feature_gan_ratio=1.0,
        feature_gan_options={"steps": 30, "hidden": 16, "latent_dim": 8},
    )  # fmt: skip
    assert report["n_folds"] == 2 and report["oof"]["n"] > 0
    settings = read_json(tmp_path / "runs" / "cv" / "cv_settings.json")
    assert settings["feature_gan"] == {
        "mode": "fraction",
        "ratio": 1.0,
        "options": {"steps": 30, "hidden": 16, "latent_dim": 8},
    }
    with pytest.raises(ValueError, match="deep-features path"):
        run_crossval(BUNDLE, bundle_root=tmp_path / "x", feature_gan="balance")
