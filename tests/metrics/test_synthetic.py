"""Synthetic-data audit: precision/recall, FID, and the memorisation check flagging copied training images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from medmonai.data.datalist import make_datalist, write_datalist
from medmonai.engines.synthetic_audit import audit_synthetic
from medmonai.metrics.synthetic import fid, knn_radii, memorization, precision_recall
from tests.transforms._helpers import write_png


def test_knn_radii_and_precision_recall():
    x = np.arange(6, dtype=float)[:, None]  # points 0..5 on a line
    np.testing.assert_allclose(knn_radii(x, k=1), np.ones(6))
    np.testing.assert_allclose(knn_radii(x, k=2), [2, 1, 1, 1, 1, 2])
    rng = np.random.default_rng(0)
    real = rng.normal(size=(50, 4))
    same = precision_recall(real, real, k=3)
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    far = precision_recall(real, real + 100.0, k=3)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    collapsed = precision_recall(real, np.repeat(real[:1], 20, axis=0) + rng.normal(scale=1e-3, size=(20, 4)), k=3)
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.2  # faithful but not diverse: mode collapse


def test_fid_zero_for_identical_sets_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8))
    assert abs(fid(a, a)) < 1e-6
    assert fid(a, a + 1.0) == pytest.approx(8.0, rel=0.01)  # |mean difference|^2 with equal covariances


def test_memorization_flags_copies_only():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(40, 16))
    synthetic = np.concatenate([rng.normal(size=(10, 16)), real[[3]], real[[7]] + 0.01])
    out = memorization({"feature": real}, {"feature": synthetic}, reference_percentile=1.0)
    assert np.flatnonzero(out["flagged"]).tolist() == [10, 11]
    assert out["nearest"]["feature"][10] == 3 and out["nearest"]["feature"][11] == 7
    # exact duplicates inside the real set do not make the threshold 0
    dup = memorization({"f": np.concatenate([real, real[:2]])}, {"f": synthetic}, 1.0)
    assert dup["spaces"]["f"]["reference"]["duplicate_pairs_in_real"] == 2 and dup["spaces"]["f"]["threshold"] > 0


def _image(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A smooth textured background with one bright ellipse at a random place: a crude lesion image."""
    img = gaussian_filter(rng.normal(size=(size, size)), 2.0) * 40 + 90
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(8, size - 8, 2)
    ry, rx = rng.uniform(3, 7, 2)
    img[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] += rng.uniform(60, 120)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_audit_flags_a_memorised_training_image(tmp_path):
    rng = np.random.default_rng(0)
    real = [_image(rng) for _ in range(30)]
    real_entries = [
        {"image": str(write_png(tmp_path / "real" / f"r{i:02d}.png", img)), "label": i % 2, "subject": f"s{i}"}
        for i, img in enumerate(real)
    ]
    real_dl = write_datalist(tmp_path / "real.json", make_datalist({"training": real_entries}, ["a", "b"]))
    synthetic = [_image(rng) for _ in range(8)]
    synthetic.append(real[4].copy())  # an exact copy of a training image
    noisy = real[11].astype(float) + rng.normal(scale=2.0, size=real[11].shape)  # a lightly noised copy
    synthetic.append(np.clip(noisy, 0, 255).astype(np.uint8))
    syn_entries = [
        {"image": str(write_png(tmp_path / "syn" / f"s{i:02d}.png", img)), "label": i % 2, "synthetic": True}
        for i, img in enumerate(synthetic)
    ]
    syn_dl = write_datalist(tmp_path / "syn.json", make_datalist({"training": syn_entries}, ["a", "b"]))

    report = audit_synthetic(real_dl, syn_dl, tmp_path / "audit", image_size=32, pixel_size=16, n_pairs=4)
    flagged = report["memorization"]["flagged"]
    assert sorted(r["index"] for r in flagged) == [8, 9]
    by_index = {r["index"]: r for r in flagged}
    assert by_index[8]["nearest_real_pixel"]["index"] == 4 and by_index[8]["distance_pixel"] < 1e-6
    assert by_index[9]["nearest_real_pixel"]["index"] == 11
    assert by_index[8]["flagged_pixel"] and by_index[8]["flagged_feature"]
    assert all(not r["flagged"] for r in report["per_sample"][:8])
    # one JSON report with everything, and the PNG of the closest pairs
    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    for key in ("fid", "fid_per_class", "precision", "recall", "memorization", "per_sample", "closest_pairs_png"):
        assert key in saved
    assert saved["features"]["dim"] == 1280 and saved["n_real"] == 30 and saved["n_synthetic"] == 10
    assert 0.0 <= saved["precision"] <= 1.0 and 0.0 <= saved["recall"] <= 1.0 and saved["fid"] > 0
    assert (tmp_path / "audit" / "closest_pairs.png").stat().st_size > 1000
