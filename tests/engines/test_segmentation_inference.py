"""Predicted masks come back in the input's geometry: NIfTI (same affine/shape) and DICOM SEG (right references)."""

from __future__ import annotations

import csv
import json

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
import torch

from medmonai.engines.segmentation_inference import (
    evaluate_mask_files,
    evaluate_segmentation,
    predict_segmentation_to_files,
)
from medmonai.transforms.segmentation import build_segmentation_preprocessing
from tests._seg_dicom import frames_by_source

PLAN = {"spatial_dims": 3, "target_spacing": [1.0, 1.0, 1.0], "orientation": "RAS", "normalization": "zscore"}


class Threshold(torch.nn.Module):
    """A 'network' whose class 1 is the bright voxels (z-scored intensity > 0.5): a known, exact segmenter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-(x - 0.5) * 20, (x - 0.5) * 20], dim=1)


def _oblique_ball(tmp_path):
    """An oblique, anisotropic NIfTI (zero border, so the foreground crop is exercised) with a bright ball."""
    shape = (30, 26, 12)
    q, _ = np.linalg.qr(np.array([[0.9, -0.3, 0.1], [0.3, 0.95, 0.0], [-0.1, 0.05, 0.99]]))
    q = q * np.sign(np.diag(q))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag([0.9, 1.1, 3.0])
    affine[:3, 3] = [-10.0, 5.0, 20.0]
    world = np.indices(shape).reshape(3, -1).T @ affine[:3, :3].T + affine[:3, 3]
    centre = affine[:3, :3] @ np.array([15, 13, 6]) + affine[:3, 3]
    ball = (np.linalg.norm(world - centre, axis=1) < 7).reshape(shape)
    rng = np.random.default_rng(0)
    img = (ball * 100 + rng.normal(0, 5, shape) + 50).astype(np.float32)
    img[:4] = 0  # air: cropped away before resampling
    nib.save(nib.Nifti1Image(img, affine), tmp_path / "oblique.nii.gz")
    nib.save(nib.Nifti1Image(ball.astype(np.uint8), affine), tmp_path / "oblique_ref.nii.gz")
    return tmp_path / "oblique.nii.gz", tmp_path / "oblique_ref.nii.gz", ball


def test_nifti_prediction_has_exactly_the_input_affine_and_shape(tmp_path):
    image, _, ball = _oblique_ball(tmp_path)
    pre = build_segmentation_preprocessing(PLAN)
    res = predict_segmentation_to_files(Threshold(), pre, image, tmp_path / "out", ["bg", "ball"], [16, 16, 16])
    assert res["n_cases"] == 1
    out = tmp_path / "out" / "oblique_seg.nii.gz"
    src, seg = nib.load(image), nib.load(out)
    assert seg.shape == src.shape
    assert np.array_equal(seg.affine, src.affine)  # bit for bit, through the header
    assert seg.header["sform_code"] == src.header["sform_code"] and seg.get_data_dtype() == np.uint8
    mask = np.asarray(seg.dataobj)
    assert 2 * (mask & ball).sum() / (mask.sum() + ball.sum()) > 0.85  # 3 mm slices resampled to 1 mm and back
    assert not mask[:4].any()  # the cropped air comes back as background


def test_evaluation_metrics_match_the_written_prediction(tmp_path):
    image, ref, ball = _oblique_ball(tmp_path)
    pre = build_segmentation_preprocessing(PLAN)
    entries = [{"image": str(image), "mask": str(ref), "case_id": "ball"}]
    report = evaluate_segmentation(
        Threshold(), pre, entries, tmp_path / "eval", ["bg", "ball"], [16, 16, 16], save_predictions=True
    )
    mask = np.asarray(nib.load(tmp_path / "eval" / "predictions" / "ball_seg.nii.gz").dataobj).astype(bool)
    dice = 2 * (mask & ball).sum() / (mask.sum() + ball.sum())
    assert report["cases"][0]["dice"]["ball"] == pytest.approx(dice, rel=1e-6)
    assert report["summary"]["dice"]["ball"]["mean"] == pytest.approx(dice, rel=1e-6)
    assert report["summary"]["dice"]["ball"]["std"] == 0.0
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["n_cases"] == 1
    # a reference mask on another grid is refused, naming the file
    off = tmp_path / "off_grid.nii.gz"
    nib.save(nib.Nifti1Image(ball[:, :, :-1].astype(np.uint8), np.eye(4)), off)
    with pytest.raises(ValueError, match="off_grid"):
        evaluate_segmentation(Threshold(), pre, [{"image": str(image), "mask": str(off)}], tmp_path / "e2", ["bg", "b"],
                              [16, 16, 16])  # fmt: skip


def test_dicom_series_prediction_writes_nifti_and_a_matching_seg(dicom_case, tmp_path):
    case, series_dir = dicom_case
    pre = build_segmentation_preprocessing({**PLAN, "target_spacing": [1.5, 1.5, 1.5]})
    res = predict_segmentation_to_files(
        Threshold(), pre, series_dir.parent, tmp_path / "out", ["background", "lesion"], [16, 16, 16]
    )
    (rec,) = res["predictions"]
    assert rec["case_id"] == case.series_uid and rec["SeriesInstanceUID"] == case.series_uid
    nii = nib.load(rec["nifti"])
    assert nii.shape == case.shape
    np.testing.assert_allclose(nii.affine, case.affine, atol=1e-4)
    mask = np.asarray(nii.dataobj)
    assert mask.any()
    seg = hd.seg.segread(rec["dicom_seg"])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == case.series_uid
    _, frames = frames_by_source(rec["dicom_seg"])
    k_of = {uid: k for k, uid in enumerate(case.sop_instance_uids)}
    assert {k_of[sop] for sop, _ in frames} == {k for k in range(case.shape[2]) if mask[:, :, k].any()}
    for (sop, _), (pixels, ipp) in frames.items():
        k = k_of[sop]
        np.testing.assert_allclose(ipp, case.image_position_patient(k), atol=1e-3)
        np.testing.assert_array_equal(pixels, mask[:, :, k].T)


def test_evaluation_marks_out_of_distribution_cases_per_case(tmp_path):
    """With allow_out_of_distribution, each case's report record and per_case.csv row carry the mark and reasons."""
    from medmonai.data.domain import OutOfDistributionError, training_domain_record

    image, ref, _ = _oblique_ball(tmp_path)
    pre = build_segmentation_preprocessing(PLAN)
    record = training_domain_record([{"image": str(image)}], pre, spatial_dims=3)
    src = nib.load(image)
    other = tmp_path / "other_scale.nii.gz"  # the same image in another intensity scale: z-scored, it looks the same
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj) * 40.0 + 3000.0, src.affine), other)
    entries = [
        {"image": str(image), "mask": str(ref), "case_id": "same"},
        {"image": str(other), "mask": str(ref), "case_id": "other"},
    ]
    args = (Threshold(), pre, entries)
    with pytest.raises(OutOfDistributionError, match="other"):
        evaluate_segmentation(*args, tmp_path / "e1", ["bg", "ball"], [16, 16, 16], training_domain=record)
    assert not (tmp_path / "e1").exists()
    report = evaluate_segmentation(
        *args, tmp_path / "e2", ["bg", "ball"], [16, 16, 16], training_domain=record, allow_out_of_distribution=True
    )
    assert [c["out_of_distribution"] for c in report["cases"]] == [False, True]
    assert report["cases"][0]["out_of_distribution_reasons"] == []
    assert any("raw intensities" in r for r in report["cases"][1]["out_of_distribution_reasons"])
    rows = {r["case_id"]: r for r in csv.DictReader(open(tmp_path / "e2" / "per_case.csv"))}
    assert rows["same"]["out_of_distribution"] == "false" and rows["same"]["out_of_distribution_reasons"] == ""
    assert (
        rows["other"]["out_of_distribution"] == "true"
        and "raw intensities" in rows["other"]["out_of_distribution_reasons"]
    )
    assert float(rows["other"]["dice_ball"]) > 0.8  # still evaluated
    # without a record nothing is checked: the column is empty, not "false"
    unchecked = evaluate_segmentation(*args, tmp_path / "e3", ["bg", "ball"], [16, 16, 16])
    assert unchecked["cases"][1]["out_of_distribution"] is None
    assert {r["out_of_distribution"] for r in csv.DictReader(open(tmp_path / "e3" / "per_case.csv"))} == {""}


def test_mask_files_scored_like_the_evaluation(tmp_path):
    """evaluate_mask_files (another tool's masks) gives the evaluation's Dice/HD95 for the same predicted masks."""
    image, ref, _ = _oblique_ball(tmp_path)
    pre = build_segmentation_preprocessing(PLAN)
    direct = evaluate_segmentation(
        Threshold(), pre, [{"image": str(image), "mask": str(ref)}], tmp_path / "eval", ["bg", "ball"], [16, 16, 16],
        save_predictions=True,
    )  # fmt: skip
    pred = tmp_path / "eval" / "predictions" / "oblique_seg.nii.gz"
    files = evaluate_mask_files(
        [{"case_id": "oblique", "pred": str(pred), "ref": str(ref)}], ["bg", "ball"], tmp_path / "f"
    )
    assert files["cases"][0]["dice"]["ball"] == pytest.approx(direct["cases"][0]["dice"]["ball"], abs=1e-6)
    assert files["cases"][0]["hd95"]["ball"] == pytest.approx(direct["cases"][0]["hd95"]["ball"], abs=1e-4)
    assert (tmp_path / "f" / "report.json").is_file() and (tmp_path / "f" / "per_case.csv").is_file()
    # the reference against itself: Dice 1, HD95 0; HD95 is in mm of the reference's (anisotropic) spacing
    same = evaluate_mask_files([{"case_id": "r", "pred": str(ref), "ref": str(ref)}], ["bg", "ball"])
    assert same["cases"][0]["dice"]["ball"] == 1.0 and same["cases"][0]["hd95"]["ball"] == 0.0


def test_mask_files_off_grid_or_out_of_range_are_refused(tmp_path):
    _, ref, ball = _oblique_ball(tmp_path)
    aff = nib.load(ref).affine
    nib.save(nib.Nifti1Image(ball[:-1].astype(np.uint8), aff), tmp_path / "short.nii.gz")
    nib.save(nib.Nifti1Image(ball.astype(np.uint8), np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "moved.nii.gz")
    nib.save(nib.Nifti1Image(ball.astype(np.uint8) * 3, aff), tmp_path / "three.nii.gz")
    for name, match in (("short", "mask shape"), ("moved", "mask affine"), ("three", "label values")):
        with pytest.raises(ValueError, match=match) as err:
            evaluate_mask_files([{"pred": str(tmp_path / f"{name}.nii.gz"), "ref": str(ref)}], ["bg", "ball"])
        assert f"{name}.nii.gz" in str(err.value)
    with pytest.raises(ValueError, match="both 'pred' and 'ref'"):
        evaluate_mask_files([{"pred": str(ref)}], ["bg", "ball"])
    with pytest.raises(ValueError, match="no cases"):
        evaluate_mask_files([], ["bg", "ball"])
