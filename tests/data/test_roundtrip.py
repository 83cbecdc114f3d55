"""Phantom -> files (DICOM series / NIfTI / PNG) -> our loaders -> the generator's ground truth.

Spacing, orientation (affine) and physical values (HU after RescaleSlope/Intercept) must come back exactly.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medmonai.data.datalist import load_datalist
from medmonai.data.phantoms import PhantomConfig, generate_cases, generate_phantom_dataset, png_pixels
from medmonai.transforms.io import LoadMedicalImaged
from medmonai.transforms.preprocessing import build_preprocessing

CFG3 = PhantomConfig.small(3, n_subjects=6, images_per_subject=1, seed=7, ct_rescale_slopes=(0.5,))
CFG2 = PhantomConfig.small(2, n_subjects=4, images_per_subject=1, seed=3)


@pytest.fixture(scope="module")
def phantom3d(tmp_path_factory):
    out = tmp_path_factory.mktemp("rt3d")
    generate_phantom_dataset(out, CFG3, formats=("nifti", "dicom"), progress=False)
    return out, {c.case_id: c for c in generate_cases(CFG3)}


@pytest.fixture(scope="module")
def phantom2d(tmp_path_factory):
    out = tmp_path_factory.mktemp("rt2d")
    generate_phantom_dataset(out, CFG2, formats=("png", "nifti", "dicom"), progress=False)
    return out, {c.case_id: c for c in generate_cases(CFG2)}


def _spacing(affine):
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def test_phantom_set_covers_orientations_and_scales(phantom3d):
    _, cases = phantom3d
    assert len({c.orientation for c in cases.values()}) >= 2
    assert {"CT", "MR"} <= {c.modality for c in cases.values()}
    assert any(c.rescale_slope == 0.5 and c.modality == "CT" for c in cases.values())


@pytest.mark.parametrize("fmt", ["dicom", "nifti"])
def test_3d_load_equals_ground_truth(phantom3d, fmt):
    out, cases = phantom3d
    load = LoadMedicalImaged(["image", "mask"])
    entries = load_datalist(out / f"datalist_{fmt}.json")
    assert len(entries) == len(cases)
    for e in entries:
        case = cases[e["case_id"]]
        d = load({"image": e["image"], "mask": e["mask"]})
        img, mask = d["image"], d["mask"]
        # geometry: voxel -> RAS world mapping and spacing as generated
        np.testing.assert_allclose(np.asarray(img.affine), case.affine, atol=1e-4)
        np.testing.assert_allclose(_spacing(img.affine), case.spacing, atol=1e-4)
        np.testing.assert_allclose(np.asarray(mask.affine), case.affine, atol=1e-4)
        # values: exactly stored * slope + intercept (HU for CT)
        np.testing.assert_array_equal(np.asarray(img), case.image)
        np.testing.assert_array_equal(np.asarray(mask).astype(np.uint8), case.mask)
        if case.modality == "CT":
            lesion = np.asarray(img)[case.mask > 0]
            assert -200 < np.median(lesion) < 300  # plausible HU, i.e. the rescale was applied


@pytest.mark.parametrize("fmt", ["dicom", "nifti"])
def test_3d_orientation_ras_matches_canonical_truth(phantom3d, fmt):
    out, cases = phantom3d
    pre = build_preprocessing(keys=("image",), mask_key="mask", spatial_dims=3, orientation="RAS", normalization=None)
    for e in load_datalist(out / f"datalist_{fmt}.json"):
        case = cases[e["case_id"]]
        d = pre({"image": e["image"], "mask": e["mask"]})
        canon = nib.as_closest_canonical(nib.Nifti1Image(case.image, case.affine))
        aff = np.asarray(d["image"].affine)
        np.testing.assert_allclose(aff, canon.affine, atol=1e-4)
        assert np.all(np.diag(aff)[:3] > 0) and np.allclose(aff[:3, :3], np.diag(np.diag(aff)[:3]), atol=1e-6)
        np.testing.assert_array_equal(np.asarray(d["image"])[0], np.asarray(canon.dataobj))
        canon_mask = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(case.mask, case.affine)).dataobj)
        np.testing.assert_array_equal(np.asarray(d["mask"])[0], canon_mask)


def test_3d_spacing_resample_keeps_world_geometry_and_hu(phantom3d):
    out, cases = phantom3d
    target = (1.0, 1.0, 1.0)
    pre = build_preprocessing(keys=("image",), mask_key="mask", spatial_dims=3, target_spacing=target)
    for e in load_datalist(out / "datalist_dicom.json"):
        case = cases[e["case_id"]]
        d = pre({"image": e["image"], "mask": e["mask"]})
        np.testing.assert_allclose(_spacing(d["image"].affine), target, atol=1e-5)
        # lesion volume in mm^3 is preserved by resampling (within partial-volume tolerance)
        vol_truth = case.mask.sum() * np.prod(case.spacing)
        vol_res = (np.asarray(d["mask"]) > 0).sum() * np.prod(target)
        assert abs(vol_res - vol_truth) / vol_truth < 0.2

        # the world position of the lesion centroid is unchanged
        def centroid(mask, affine):
            idx = np.argwhere(np.asarray(mask) > 0).mean(0)
            return (np.asarray(affine) @ np.r_[idx, 1.0])[:3]

        c_truth = centroid(case.mask, case.affine)
        c_res = centroid(np.asarray(d["mask"])[0], d["mask"].affine)
        assert np.linalg.norm(c_truth - c_res) < 1.5 * max(case.spacing)
        # physical values are not rescaled: the median lesion value stays close
        med_truth = np.median(case.image[case.mask > 0])
        med_res = np.median(np.asarray(d["image"])[0][np.asarray(d["mask"])[0] > 0])
        spread = np.percentile(case.image, 95) - np.percentile(case.image, 5)
        assert abs(med_res - med_truth) < 0.25 * spread


def test_2d_png_dicom_nifti_load_equals_ground_truth(phantom2d):
    out, cases = phantom2d
    load = LoadMedicalImaged(["image", "mask"])
    for e in load_datalist(out / "datalist_png.json"):
        case = cases[e["case_id"]]
        d = load({"image": e["image"], "mask": e["mask"]})
        np.testing.assert_array_equal(np.asarray(d["image"]), png_pixels(case))
        np.testing.assert_array_equal(np.asarray(d["mask"]).astype(np.uint8), case.mask)
    for fmt in ("dicom", "nifti"):
        for e in load_datalist(out / f"datalist_{fmt}.json"):
            case = cases[e["case_id"]]
            d = LoadMedicalImaged(["image"])({"image": e["image"]})
            np.testing.assert_array_equal(np.asarray(d["image"]), case.image)
            # in-plane geometry (the third column of a 2D affine is a convention)
            aff = np.asarray(d["image"].affine)
            np.testing.assert_allclose(aff[:3, :2], case.affine[:3, :2], atol=1e-4)
            np.testing.assert_allclose(aff[:3, 3], case.affine[:3, 3], atol=1e-4)
