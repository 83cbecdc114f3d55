from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from scipy import ndimage

from medmonai.data.datalist import check_entries, load_datalist, load_datalist_file
from medmonai.data.phantoms import (
    PhantomCase,
    PhantomConfig,
    class_counts,
    dicom_datasets,
    generate_cases,
    generate_phantom_dataset,
    png_pixels,
    write_case_nifti,
)


def _cases(config: PhantomConfig) -> list[PhantomCase]:
    return list(generate_cases(config))


@pytest.fixture(scope="module")
def small3d() -> PhantomConfig:
    return PhantomConfig.small(3, class_ratio=(0.7, 0.3), test_fraction=0.34, images_per_subject=(1, 3))


@pytest.fixture(scope="module")
def dataset3d(tmp_path_factory, small3d):
    out = tmp_path_factory.mktemp("phantom3d")
    return out, generate_phantom_dataset(out, small3d, progress=False), _cases(small3d)


@pytest.fixture(scope="module")
def dataset2d(tmp_path_factory):
    cfg = PhantomConfig.small(2, images_per_subject=2)
    out = tmp_path_factory.mktemp("phantom2d")
    return out, generate_phantom_dataset(out, cfg, progress=False), _cases(cfg), cfg


# ---------------------------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"classes": ("a",)}, "classes"),
        ({"classes": ("a", "a")}, "classes"),
        ({"n_subjects": 1}, "n_subjects"),
        ({"images_per_subject": 0}, "images_per_subject"),
        ({"images_per_subject": (3, 1)}, "images_per_subject"),
        ({"class_ratio": (1.0,)}, "class_ratio"),
        ({"class_ratio": (1.0, -1.0)}, "class_ratio"),
        ({"difficulty": 1.5}, "difficulty"),
        ({"fov_mm": -1.0}, "fov_mm"),
        ({"inplane_spacing_mm": (2.0, 1.0)}, "inplane_spacing_mm"),
        ({"inplane_spacing_mm": (1.0, 20.0)}, "inplane_spacing_mm"),
        ({"orientations": ("LP",)}, "orientations"),
        ({"intensity_scales": ("PET",)}, "intensity_scales"),
        ({"noise_range": (-1.0, 0.1)}, "noise_range"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"seed": -3}, "seed"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PhantomConfig(**kwargs)


def test_config_defaults_depend_on_dims_and_dict_round_trip():
    c3, c2 = PhantomConfig(spatial_dims=3), PhantomConfig(spatial_dims=2)
    assert c3.fov_mm == 48.0 and c2.fov_mm == 64.0
    assert set(c3.orientations) == {"axial", "coronal", "sagittal"} and "LP" in c2.orientations
    for c in (c3, c2, PhantomConfig.small(3, class_ratio=(3, 1))):
        d = json.loads(json.dumps(c.to_dict()))
        assert PhantomConfig.from_dict(d) == c
        assert PhantomConfig.from_dict(d).fingerprint() == c.fingerprint()
    assert c3.fingerprint() != PhantomConfig(spatial_dims=3, seed=1).fingerprint()
    with pytest.raises(ValueError, match="unknown"):
        PhantomConfig.from_dict({"n_subject": 3})


def test_class_counts_match_ratio_with_every_class_present():
    assert class_counts(8, (0.75, 0.25), 2) == [6, 2]
    assert class_counts(10, None, 2) == [5, 5]
    assert class_counts(3, (0.98, 0.01, 0.01), 3) == [1, 1, 1]
    counts = class_counts(20, (0.9, 0.1), 2)
    assert sum(counts) == 20 and counts[1] >= 1 and counts == [18, 2]
    with pytest.raises(ValueError):
        class_counts(1, None, 2)


# ---------------------------------------------------------------------------------------------------------------
# in-memory generation
# ---------------------------------------------------------------------------------------------------------------


def test_same_seed_identical_different_seed_different():
    cfg = PhantomConfig.small(3)
    a, b = _cases(cfg), _cases(PhantomConfig.small(3))
    c = _cases(PhantomConfig.small(3, seed=1))
    assert [x.case_id for x in a] == [x.case_id for x in b]
    for x, y in zip(a, b):
        assert np.array_equal(x.stored, y.stored) and np.array_equal(x.mask, y.mask)
        assert np.array_equal(x.affine, y.affine) and x.label == y.label
        assert x.series_uid == y.series_uid and x.sop_instance_uids == y.sop_instance_uids
    assert all(x.shape != y.shape or not np.array_equal(x.stored, y.stored) for x, y in zip(a, c))
    assert [x.spacing for x in a] != [x.spacing for x in c]
    assert {x.series_uid for x in a}.isdisjoint({x.series_uid for x in c})


def test_class_ratio_and_every_class_present():
    cfg = PhantomConfig.small(2, n_subjects=8, class_ratio=(0.75, 0.25))
    cases = _cases(cfg)
    subject_label = {c.subject: c.label for c in cases}
    assert sorted(np.bincount(list(subject_label.values()))) == [2, 6]
    assert np.bincount(list(subject_label.values()))[0] == 6
    three = _cases(PhantomConfig.small(2, n_subjects=6, classes=("benign", "malignant", "cyst")))
    assert {c.label for c in three} == {0, 1, 2}
    assert {c.class_name for c in three} == {"benign", "malignant", "cyst"}


SUBJECT_LEVEL = (
    "label",
    "spacing",
    "orientation",
    "intensity",
    "rescale_slope",
    "rescale_intercept",
    "noise_sigma",
    "study_uid",
    "frame_of_reference_uid",
    "shape",
)


def test_images_per_subject_share_subject_properties():
    cfg = PhantomConfig.small(3, images_per_subject=(2, 3))
    by_subject: dict[str, list[PhantomCase]] = defaultdict(list)
    for c in _cases(cfg):
        by_subject[c.subject].append(c)
    assert len(by_subject) == cfg.n_subjects
    for subject, cases in by_subject.items():
        assert 2 <= len(cases) <= 3
        assert all(c.case_id.startswith(subject) for c in cases)
        first = cases[0]
        for c in cases[1:]:
            for attr in SUBJECT_LEVEL:
                assert getattr(c, attr) == getattr(first, attr), (subject, attr)
            assert c.series_uid != first.series_uid
            assert not np.array_equal(c.mask, first.mask)
    # subjects differ from each other
    assert len({cases[0].spacing for cases in by_subject.values()}) > 1
    assert len({cases[0].study_uid for cases in by_subject.values()}) == cfg.n_subjects


@pytest.mark.parametrize("dims", [2, 3])
def test_values_exact_geometry_and_dtypes(dims):
    cases = _cases(PhantomConfig.small(dims, n_subjects=9))
    assert {c.intensity for c in cases} == {"CT", "MR", "8bit"}
    for c in cases:
        assert c.image.dtype == np.float32 and c.mask.dtype == np.uint8
        assert np.array_equal(c.image, (c.stored.astype(np.float64) * c.rescale_slope + c.rescale_intercept))
        expected = {"CT": np.int16, "MR": np.uint16, "8bit": np.uint8}[c.intensity]
        assert c.stored.dtype == expected
        assert c.modality == {"CT": "CT", "MR": "MR", "8bit": "OT"}[c.intensity]
        if c.intensity == "CT":
            assert c.rescale_intercept == -1024.0 and c.rescale_slope in (1.0, 0.5)
        else:
            assert (c.rescale_slope, c.rescale_intercept) == (1.0, 0.0)
        assert c.image.ndim == dims and c.affine.shape == (4, 4)
        assert np.allclose(np.linalg.norm(c.affine[:3, :dims], axis=0), c.spacing)
        cfg_fov = 32.0 if dims == 3 else 48.0
        assert c.shape == tuple(round(cfg_fov / s) for s in c.spacing)
        # direction cosines are exactly axis aligned by default (one non-zero per column)
        assert all(np.count_nonzero(c.affine[:3, a]) == 1 for a in range(3))
        assert set(np.unique(c.mask)) <= {0, 1}


def test_mask_marks_a_brighter_lesion():
    for c in _cases(PhantomConfig.small(2, n_subjects=8)):
        assert 10 < c.mask.sum() < c.mask.size / 3
        inside = c.image[c.mask == 1].mean()
        outside = c.image[c.mask == 0]
        assert inside > outside.mean() + 0.5 * outside.std(), c.case_id


def test_cyst_centre_is_dark_with_bright_rim():
    classes = ("benign", "malignant", "cyst")
    cfg = PhantomConfig.small(2, classes=classes, difficulty=0.0, noise_range=(0.02, 0.05), intensity_scales=("CT",))
    checked = 0
    for c in _cases(cfg):
        core = ndimage.binary_erosion(c.mask, iterations=2)
        if c.label != 2 or not core.any():
            continue
        rim = c.mask.astype(bool) & ~ndimage.binary_erosion(c.mask, iterations=1)
        background = ~ndimage.binary_dilation(c.mask, iterations=3)
        assert c.image[core].mean() < c.image[background].mean() < c.image[rim].mean(), c.case_id
        checked += 1
    assert checked >= 1


def _fill_ratio(mask: np.ndarray, spacing) -> float:
    """Lesion area/volume divided by that of the circle/sphere through its farthest point (1 = round)."""
    pts = np.argwhere(mask) * np.asarray(spacing)
    r = np.linalg.norm(pts - pts.mean(0), axis=1).max() + 0.5 * min(spacing)
    size = len(pts) * np.prod(spacing)
    return size / (np.pi * r**2 if mask.ndim == 2 else 4 / 3 * np.pi * r**3)


def test_classes_differ_in_shape():
    cfg = PhantomConfig(spatial_dims=2, n_subjects=12, images_per_subject=2, difficulty=0.0)
    fill = defaultdict(list)
    sev = defaultdict(list)
    for c in _cases(cfg):
        fill[c.label].append(_fill_ratio(c.mask, c.spacing))
        sev[c.label].append(c.lesion["severity"])
    assert np.mean(fill[1]) < np.mean(fill[0]) - 0.1  # malignant masks are less compact
    assert np.mean(sev[1]) > np.mean(sev[0])


def test_difficulty_makes_classes_overlap():
    def gap(d: float) -> float:
        cases = _cases(PhantomConfig.small(2, n_subjects=20, images_per_subject=1, difficulty=d))
        s = {k: [c.lesion["severity"] for c in cases if c.label == k] for k in (0, 1)}
        return np.mean(s[1]) - np.mean(s[0])

    assert gap(0.0) > 0.6 and gap(1.0) < gap(0.5) < gap(0.0)


def test_oblique_orientation():
    cases = _cases(PhantomConfig.small(3, oblique_max_deg=10.0))
    assert any(c.oblique_deg != 0 for c in cases)
    for c in cases:
        rot = c.affine[:3, :3] / np.asarray(c.spacing)
        assert np.allclose(rot.T @ rot, np.eye(3), atol=1e-9)
        assert abs(c.oblique_deg) <= 10.0


# ---------------------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------------------


def test_nifti_round_trip(tmp_path):
    for c in _cases(PhantomConfig.small(3, n_subjects=4, images_per_subject=1))[:4]:
        img_path, seg_path = write_case_nifti(c, tmp_path)
        assert img_path.name == f"{c.case_id}.nii.gz" and seg_path.name == f"{c.case_id}_seg.nii.gz"
        img, seg = nib.load(img_path), nib.load(seg_path)
        assert np.array_equal(img.affine, c.affine) and np.array_equal(seg.affine, c.affine)
        assert img.get_data_dtype() == c.stored.dtype
        assert np.array_equal(np.asanyarray(img.dataobj), c.image)
        assert np.array_equal(img.get_fdata(), c.image)
        assert np.array_equal(np.asanyarray(img.dataobj.get_unscaled()), c.stored)
        assert np.array_equal(np.asanyarray(seg.dataobj), c.mask) and seg.get_data_dtype() == np.uint8


def _read_series(folder: Path) -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(f) for f in folder.glob("*.dcm")]
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(datasets, key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, dtype=float))))


def test_dicom_series_headers_and_pixels(dataset3d, small3d):
    out, paths, cases = dataset3d
    class_words = [name.lower() for name in small3d.classes]
    studies: dict[str, set[str]] = defaultdict(set)
    series_uids, sop_uids = set(), set()
    for c in cases:
        folder = out / "dicom" / c.subject / c.case_id
        files = sorted(folder.glob("*.dcm"))
        assert len(files) == c.shape[2]
        assert {f.stem for f in files} == set(c.sop_instance_uids)  # names are UIDs, not slice numbers
        slices = _read_series(folder)
        for k, ds in enumerate(slices):
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert np.allclose(np.asarray(ds.ImagePositionPatient, float), (c.affine_lps @ [0, 0, k, 1])[:3])
            assert np.allclose(np.asarray(ds.ImageOrientationPatient, float), c.image_orientation_patient)
            assert np.allclose(np.asarray(ds.PixelSpacing, float), [c.spacing[1], c.spacing[0]])
            assert float(ds.SliceThickness) == pytest.approx(c.spacing[2])
            assert float(ds.SpacingBetweenSlices) == pytest.approx(c.spacing[2])
            assert float(ds.RescaleSlope) == c.rescale_slope and float(ds.RescaleIntercept) == c.rescale_intercept
            assert (ds.Rows, ds.Columns) == (c.shape[1], c.shape[0])
            assert ds.Modality == c.modality and ds.PatientID == c.subject
            assert str(ds.PatientName) == f"Phantom^{c.subject}"
            assert ds.InstanceNumber == k + 1 and ds.SamplesPerPixel == 1
            assert ds.PhotometricInterpretation == "MONOCHROME2"
            if c.modality == "CT":
                assert ds.RescaleType == "HU" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
            assert np.array_equal(ds.pixel_array.T, c.stored[:, :, k])
            assert ds.pixel_array.dtype == c.stored.dtype
            physical = ds.pixel_array.T.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            assert np.array_equal(physical, c.image[:, :, k])
            # the diagnosis must not leak into any header
            for elem in ds.iterall():
                if elem.tag != 0x7FE00010:
                    text = str(elem.value).lower()
                    assert not any(word in text for word in class_words), elem
            assert ds.SeriesInstanceUID == c.series_uid and ds.StudyInstanceUID == c.study_uid
            assert ds.FrameOfReferenceUID == c.frame_of_reference_uid
            sop_uids.add(ds.SOPInstanceUID)
        series_uids.add(c.series_uid)
        studies[c.subject].add(c.study_uid)
        seg = nib.load(out / "dicom_masks" / c.subject / f"{c.case_id}_seg.nii.gz")
        assert np.array_equal(np.asanyarray(seg.dataobj), c.mask) and np.array_equal(seg.affine, c.affine)
    assert len(series_uids) == len(cases)
    assert len(sop_uids) == sum(c.shape[2] for c in cases)
    assert all(len(s) == 1 for s in studies.values())  # one study per subject
    assert len({next(iter(s)) for s in studies.values()}) == len(studies)


def test_dicom_in_memory_datasets_match_files(dataset3d):
    out, _, cases = dataset3d
    c = cases[0]
    mem = dicom_datasets(c)
    assert [d.SOPInstanceUID for d in mem] == list(c.sop_instance_uids)
    on_disk = _read_series(out / "dicom" / c.subject / c.case_id)
    assert [d.SOPInstanceUID for d in on_disk] == list(c.sop_instance_uids)


def test_dicom_2d_single_file(dataset2d):
    out, _, cases, _ = dataset2d
    for c in cases:
        ds = pydicom.dcmread(out / "dicom" / c.subject / f"{c.case_id}.dcm")
        assert np.array_equal(ds.pixel_array.T, c.stored)
        assert np.allclose(np.asarray(ds.ImagePositionPatient, float), c.affine_lps[:3, 3])
        assert np.allclose(np.asarray(ds.ImageOrientationPatient, float), c.image_orientation_patient)
        assert "NumberOfFrames" not in ds


def test_png_files(dataset2d):
    out, _, cases, _ = dataset2d
    for c in cases:
        img = Image.open(out / "png" / f"{c.case_id}.png")
        seg = Image.open(out / "png" / f"{c.case_id}_seg.png")
        assert img.size == (c.shape[0], c.shape[1]) and img.mode == "L"  # width = i, height = j
        assert np.array_equal(np.asarray(img).T, png_pixels(c))
        assert np.array_equal(np.asarray(seg).T, c.mask)
        if c.intensity == "8bit":
            assert np.array_equal(np.asarray(img).T, c.stored)
    with pytest.raises(ValueError, match="2D"):
        png_pixels(_cases(PhantomConfig.small(3, n_subjects=2, images_per_subject=1))[0])


@pytest.mark.parametrize("which", ["3d", "2d"])
def test_datalists_are_valid(which, dataset3d, dataset2d):
    if which == "3d":
        out, paths, cases = dataset3d
        formats, dims = ("nifti", "dicom"), 3
    else:
        out, paths, cases, _ = dataset2d
        formats, dims = ("png", "nifti", "dicom"), 2
    assert set(paths) == {*formats, "datalist", "truth", "root"}
    first = load_datalist_file(paths[formats[0]])
    assert load_datalist_file(paths["datalist"]) == first
    for fmt in formats:
        raw = load_datalist_file(paths[fmt])
        assert raw["tensorImageSize"] == f"{dims}D"
        assert raw["mask_labels"] == {"0": "background", "1": "lesion"}
        assert raw["classes"] == ["benign", "malignant"]
        entries = load_datalist(paths[fmt], "all")
        assert check_entries(entries, raw["classes"]) == []
        assert len(entries) == len(cases)
        truth = {c.case_id: c for c in cases}
        for e in entries:
            c = truth[e["case_id"]]
            assert e["label"] == c.label and e["subject"] == c.subject
            # PNG is an 8-bit rendering: its modality is "8bit", the original one is kept as source_modality
            assert e["modality"] == ("8bit" if fmt == "png" else c.modality)
            assert e["split"] == c.split
            if fmt == "dicom" and dims == 3:
                assert Path(e["image"]).is_dir()
            if fmt == "png":
                assert e["spacing"] == list(c.spacing) and e["source_modality"] == c.modality
    truth_json = json.loads(paths["truth"].read_text())
    assert [t["case_id"] for t in truth_json["cases"]] == [c.case_id for c in cases]
    assert PhantomConfig.from_dict(truth_json["config"]).fingerprint() == truth_json["config_fingerprint"]


def test_test_split_is_subject_level_and_stratified(dataset3d):
    _, paths, cases = dataset3d
    test = load_datalist(paths["datalist"], "test")
    train = load_datalist(paths["datalist"], "training")
    assert test and train
    assert {e["subject"] for e in test}.isdisjoint({e["subject"] for e in train})
    assert {e["label"] for e in test} == {e["label"] for e in train} == {0, 1}


def test_rerun_gives_identical_files(tmp_path):
    cfg = PhantomConfig.small(2, n_subjects=3, images_per_subject=1)
    generate_phantom_dataset(tmp_path, cfg, progress=False)
    first = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    generate_phantom_dataset(tmp_path, cfg, progress=False)
    second = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert first.keys() == second.keys() and first == second
    assert any(p.suffix == ".dcm" for p in first) and any(p.suffix == ".png" for p in first)


def test_rerun_with_other_config_leaves_no_stale_slices(tmp_path):
    generate_phantom_dataset(tmp_path, PhantomConfig.small(3, n_subjects=2, images_per_subject=1), progress=False)
    cfg = PhantomConfig.small(3, n_subjects=2, images_per_subject=1, seed=5)
    generate_phantom_dataset(tmp_path, cfg, progress=False)
    for c in _cases(cfg):
        names = {f.stem for f in (tmp_path / "dicom" / c.subject / c.case_id).glob("*.dcm")}
        assert names == set(c.sop_instance_uids)


def test_bad_formats(tmp_path):
    with pytest.raises(ValueError, match="png"):
        generate_phantom_dataset(tmp_path, PhantomConfig.small(3), formats=("png",), progress=False)
    with pytest.raises(ValueError, match="unknown"):
        generate_phantom_dataset(tmp_path, PhantomConfig.small(2), formats=("jpeg",), progress=False)
