"""Per-class Dice / HD95 (MONAI metrics) against hand-computed values and an independent implementation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from medmonai.metrics.segmentation import (
    case_metrics,
    format_summary,
    segmentation_report,
    summarize_cases,
    write_segmentation_report,
)


def test_dice_and_hd95_of_two_points_in_millimetres():
    pred = np.zeros((8, 4, 4), int)
    ref = np.zeros_like(pred)
    pred[0, 0, 0] = 1
    ref[3, 0, 0] = 1
    m = case_metrics(pred, ref, 2, spacing=[2.0, 1.0, 1.0], class_names=["bg", "fg"])
    assert m["dice"]["fg"] == 0.0
    assert m["hd95"]["fg"] == pytest.approx(6.0)  # 3 voxels x 2 mm
    assert m["volume_pred"]["fg"] == m["volume_ref"]["fg"] == 2.0  # one 2 mm^3 voxel


def test_shifted_cube_by_hand():
    # reference: a 4x4x4 cube; prediction: the same cube one slice higher (1.5 mm slices)
    ref = np.zeros((10, 10, 10), int)
    pred = np.zeros_like(ref)
    ref[2:6, 2:6, 2:6] = 1
    pred[2:6, 2:6, 3:7] = 1
    m = case_metrics(pred, ref, 2, spacing=[1.0, 1.0, 1.5], class_names=["bg", "cube"])
    # overlap 4x4x3 = 48 voxels: Dice = 2 * 48 / (64 + 64)
    assert m["dice"]["cube"] == pytest.approx(0.75)
    # surface distances are 0 (shared side walls), 1 mm or 1.5 mm (the 16 voxels of the bottom / top face, 29 % of
    # the 56 surface voxels of each cube, lie one slice from the other cube): the 95th percentile is 1.5 mm
    assert m["hd95"]["cube"] == pytest.approx(1.5)


def _hd95_reference(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Independent HD95: surface voxels by erosion, all pairwise distances, max of both directed 95th percentiles."""

    def surface(x):
        return np.argwhere(x & ~ndimage.binary_erosion(x)) * np.asarray(spacing)

    sa, sb = surface(a), surface(b)
    d = cdist(sa, sb)
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


def test_multiclass_random_blobs_match_an_independent_implementation():
    rng = np.random.default_rng(3)
    spacing = [0.8, 1.2, 2.5]

    def blobs():
        x = ndimage.gaussian_filter(rng.normal(size=(24, 20, 12)), 2.0)
        return np.digitize(x, np.quantile(x, [0.7, 0.9]))  # 0, 1, 2

    pred, ref = blobs(), blobs()
    m = case_metrics(pred, ref, 3, spacing=spacing, class_names=["bg", "a", "b"])
    for c, name in ((1, "a"), (2, "b")):
        p, r = pred == c, ref == c
        assert m["dice"][name] == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()), rel=1e-6)
        assert m["hd95"][name] == pytest.approx(_hd95_reference(p, r, spacing), rel=1e-4)
    # channel-first one-hot / score inputs give the same values
    onehot = np.eye(3)[pred].transpose(3, 0, 1, 2)
    m2 = case_metrics(onehot, ref[None], 3, spacing=spacing, class_names=["bg", "a", "b"], spatial_dims=3)
    assert m2["dice"] == m["dice"]


def test_empty_structures_follow_the_documented_conventions():
    ref = np.zeros((6, 6), int)
    pred = np.zeros_like(ref)
    m = case_metrics(pred, ref, 2)
    assert m["dice"]["class_1"] is None and m["hd95"]["class_1"] is None  # both empty: undefined
    ref[1:3, 1:3] = 1
    m = case_metrics(pred, ref, 2)
    assert m["dice"]["class_1"] == 0.0 and m["hd95"]["class_1"] is None  # missed structure
    with pytest.raises(ValueError, match="shape"):
        case_metrics(pred[:5], ref, 2)
    with pytest.raises(ValueError, match="label values"):
        case_metrics(pred + 2, ref, 2)


def test_summary_mean_std_by_hand_and_report_files(tmp_path):
    cases = [
        {"case_id": "a", "dice": {"x": 0.5, "y": 1.0}, "hd95": {"x": 2.0, "y": None}},
        {"case_id": "b", "dice": {"x": 1.0, "y": None}, "hd95": {"x": 4.0, "y": None}},
    ]
    s = summarize_cases(cases)
    assert s["dice"]["x"]["mean"] == pytest.approx(0.75) and s["dice"]["x"]["std"] == pytest.approx(0.25)
    assert s["dice"]["y"]["n"] == 1 and s["dice"]["y"]["n_undefined"] == 1
    assert s["dice"]["mean"]["mean"] == pytest.approx((0.75 + 1.0) / 2)  # per-case means 0.75 and 1.0
    assert s["hd95"]["y"]["mean"] is None and s["hd95"]["y"]["n_undefined"] == 2
    report = segmentation_report(cases, ["bg", "x", "y"], extra={"network": "unet"})
    paths = write_segmentation_report(report, tmp_path / "eval")
    back = json.loads(paths["json"].read_text())
    assert back["summary"]["dice"]["x"]["mean"] == pytest.approx(0.75) and back["network"] == "unet"
    rows = list(csv.DictReader(open(paths["csv"])))
    assert [r["case_id"] for r in rows] == ["a", "b"]
    assert rows[0]["dice_x"] == "0.5" and rows[1]["dice_y"] == ""
    assert "0.7500 ± 0.2500" in format_summary(report)
