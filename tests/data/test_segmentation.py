"""Segmentation datalist helpers: label names, image/label entries, the subject hold-out with the leakage guard."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medmonai.data.segmentation import mask_label_names, segmentation_entries, segmentation_split
from medmonai.data.splits import LeakageError


def _datalist(tmp_path, n=10, labels=False, test_copy=False, mask_labels=None):
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n):
        img = tmp_path / f"img{i}.nii.gz"
        nib.save(nib.Nifti1Image(rng.normal(size=(4, 4, 4)).astype(np.float32), np.eye(4)), img)
        e = {"image": img.name, "mask": img.name, "subject": f"s{i // 2}"}  # two images per subject
        if labels:
            e["label"] = int(i < 2)  # class 1: one subject only
        entries.append(e)
    dl = {"training": entries, "mask_labels": mask_labels or {"0": "background", "1": "a", "2": "b"}}
    if test_copy:
        dl["test"] = [{"image": entries[0]["image"], "mask": entries[0]["mask"], "subject": "other"}]
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(dl))
    return path


def test_mask_label_names(tmp_path):
    assert mask_label_names(_datalist(tmp_path, 2)) == ["background", "a", "b"]
    bad = _datalist(tmp_path, 2, mask_labels={"0": "background", "2": "b"})
    with pytest.raises(ValueError, match="0 .. C-1"):
        mask_label_names(bad)


def test_segmentation_entries_map_mask_to_label():
    out = segmentation_entries([{"image": "a.nii", "mask": "m.nii", "label": 1, "case_id": "a"}], keep=["case_id"])
    assert out == [{"image": "a.nii", "label": "m.nii", "case_id": "a"}]
    with pytest.raises(ValueError, match="b.nii: entry 0 has no segmentation"):
        segmentation_entries([{"image": "b.nii"}])
    assert segmentation_entries([{"image": "b.nii"}], require_mask=False) == [{"image": "b.nii"}]


def test_unlabelled_split_is_subject_grouped_and_seeded(tmp_path):
    path = _datalist(tmp_path, 10)
    split = segmentation_split(path, val_fraction=0.2, seed=0, leakage="off")
    tr = {e["subject"] for e in split["training"]}
    va = {e["subject"] for e in split["validation"]}
    assert tr and va and not tr & va and len(split["training"]) + len(split["validation"]) == 10
    assert segmentation_split(path, val_fraction=0.2, seed=0, leakage="off") == split


def test_labelled_split_falls_back_when_strata_are_too_small(tmp_path):
    # class 1 has one subject: a stratified 5-fold hold-out is impossible, the plain subject hold-out is used
    split = segmentation_split(_datalist(tmp_path, 12, labels=True), val_fraction=0.2, leakage="off")
    assert len(split["training"]) + len(split["validation"]) == 12


def test_identical_image_in_test_is_refused(tmp_path):
    with pytest.raises(LeakageError):
        segmentation_split(_datalist(tmp_path, 10, test_copy=True), hash_cache=tmp_path / "h.json")
