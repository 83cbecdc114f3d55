"""Segmentation preprocessing (crop, label handling, invertibility), class-balanced patches, augmentation levels."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import CropForegroundd, Invertd, Orientationd

from medmonai.transforms.augmentation import LEVELS
from medmonai.transforms.segmentation import (
    anisotropic_axis,
    build_segmentation_preprocessing,
    segmentation_train_transforms,
)


@pytest.fixture()
def case(tmp_path):
    """A LAS-oriented volume with an air border (zeros) and a 2-class label."""
    affine = np.diag([-1.0, 1.0, 2.0, 1.0])
    img = np.zeros((20, 18, 10), np.float32)
    img[3:17, 2:16, 1:9] = np.random.default_rng(0).normal(100, 10, (14, 14, 8))
    lab = np.zeros(img.shape, np.uint8)
    lab[5:9, 5:9, 3:6] = 1
    lab[10:14, 8:12, 3:6] = 2
    nib.save(nib.Nifti1Image(img, affine), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(lab, affine), tmp_path / "lab.nii.gz")
    return {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lab.nii.gz")}, lab


def test_preprocessing_crops_before_reorienting_and_keeps_an_integer_label(case):
    data, lab = case
    plan = {"spatial_dims": 3, "target_spacing": [1.0, 1.0, 2.0], "orientation": "RAS", "normalization": "zscore"}
    pre = build_segmentation_preprocessing(plan)
    names = [type(t).__name__ for t in pre.transforms]
    assert names.index("CropForegroundd") < names.index("Orientationd") < names.index("Spacingd")
    out = pre(dict(data))
    assert out["image"].shape[1:] == (14, 14, 8) == out["label"].shape[1:]  # cropped to the non-zero box
    assert out["label"].dtype == torch.uint8 and set(out["label"].unique().tolist()) == {0, 1, 2}
    assert abs(float(out["image"].mean())) < 1e-4  # z-scored
    # the geometric steps invert exactly back onto the stored grid (spacing unchanged here)
    out["pred"] = out["label"].clone()
    back = Invertd("pred", pre, orig_keys="image", nearest_interp=True)(out)["pred"]
    assert back.shape[1:] == lab.shape and np.array_equal(back[0].numpy().astype(np.uint8), lab)
    assert not any(
        isinstance(t, CropForegroundd) for t in build_segmentation_preprocessing(plan, crop_foreground=False).transforms
    )
    assert any(isinstance(t, Orientationd) for t in pre.transforms)


def test_patches_are_centred_on_the_requested_classes(case):
    data, _ = case
    pre = build_segmentation_preprocessing({"spatial_dims": 3, "orientation": "RAS"})
    train = segmentation_train_transforms(pre, [8, 8, 4], 3, num_samples=6, ratios=[0, 0, 1], augmentation="none")
    patches = train(dict(data))
    assert len(patches) == 6
    for p in patches:
        assert p["image"].shape == (1, 8, 8, 4) and (p["label"] == 2).any()
    small = segmentation_train_transforms(pre, [32, 32, 16], 3, num_samples=1, augmentation="none")(dict(data))
    assert small[0]["image"].shape == (1, 32, 32, 16)  # padded up to the patch


@pytest.mark.parametrize("level", list(LEVELS))
def test_augmentation_levels_keep_labels_integer(case, level):
    data, _ = case
    pre = build_segmentation_preprocessing({"spatial_dims": 3, "orientation": "RAS"})
    xf = segmentation_train_transforms(pre, [8, 8, 4], 3, num_samples=2, augmentation=level)
    xf.set_random_state(seed=0)
    for p in xf(dict(data)):
        assert p["label"].dtype == torch.uint8 and p["image"].shape == (1, 8, 8, 4)
        assert set(torch.unique(p["label"]).tolist()) <= {0, 1, 2}
    with pytest.raises(ValueError, match="unknown augmentation level"):
        segmentation_train_transforms(pre, [8, 8, 4], 3, augmentation="heavy")


def test_anisotropic_axis():
    assert anisotropic_axis({"anisotropic": True, "target_spacing": [0.8, 0.8, 4.0]}) == 2
    assert anisotropic_axis({"anisotropic": False, "target_spacing": [0.8, 0.8, 4.0]}) is None
