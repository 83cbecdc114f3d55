from __future__ import annotations

import json

import numpy as np
import pytest

from medmonai.data.datalist import make_datalist, write_datalist
from medmonai.data.fingerprint import (
    FingerprintError,
    compute_fingerprint,
    fingerprint_datalist,
    normalize_modality,
    padding_mask,
    plan_from_fingerprint,
    require_grey,
    write_fingerprint,
)
from medmonai.transforms.preprocessing import build_preprocessing
from medmonai.utils import shared_data_dir
from tests.transforms._helpers import write_dicom_series, write_nifti, write_png


def _affine(spacing, storage="RAS", origin=(0.0, 0.0, 0.0)):
    """Affine of a volume stored in ``storage`` order: "RAS", "LPS" (i, j flipped) or "SRA" (i->S, j->R, k->A)."""
    sx, sy, sz = spacing
    aff = np.eye(4)
    if storage == "RAS":
        aff[:3, :3] = np.diag([sx, sy, sz])
    elif storage == "LPS":
        aff[:3, :3] = np.diag([-sx, -sy, sz])
    elif storage == "SRA":
        aff[:3, :3] = 0
        aff[2, 0], aff[0, 1], aff[1, 2] = sz, sx, sy
    aff[:3, 3] = origin
    return aff


def _store(arr_ras, storage):
    """The array as stored for ``_affine(..., storage)`` given the volume in RAS axis order."""
    if storage == "LPS":
        return arr_ras[::-1, ::-1, :]
    if storage == "SRA":
        return arr_ras.transpose(2, 0, 1)
    return arr_ras


def _write(tmp_path, name, arr_ras, spacing, storage="RAS", mask_ras=None):
    entry = {
        "image": str(write_nifti(tmp_path / f"{name}.nii.gz", _store(arr_ras, storage), _affine(spacing, storage)))
    }
    if mask_ras is not None:
        entry["mask"] = str(
            write_nifti(tmp_path / f"{name}_seg.nii.gz", _store(mask_ras, storage), _affine(spacing, storage))
        )
    return entry


def _ct_volume(shape, rng, fg_value=40, lesion=True):
    arr = np.full(shape, -1000, np.int16)
    sl = tuple(slice(n // 4, n - n // 4) for n in shape)
    arr[sl] = rng.integers(fg_value - 30, fg_value + 30, size=arr[sl].shape)
    mask = np.zeros(shape, np.uint8)
    if lesion:
        mask[sl] = 1
    return arr, mask


def test_spacing_and_shape_in_ras_order_whatever_the_storage(tmp_path):
    rng = np.random.default_rng(0)
    arr, mask = _ct_volume((20, 30, 10), rng)
    spacing = (0.7, 0.9, 2.5)
    entries = [_write(tmp_path, s, arr, spacing, s, mask) for s in ("RAS", "LPS", "SRA")]
    fp = compute_fingerprint(entries, progress=False)
    for rec in fp["images"]:
        np.testing.assert_allclose(rec["spacing"], spacing)
        assert rec["shape"] == [20, 30, 10]
    assert [r["axcodes"] for r in fp["images"]] == ["RAS", "LPS", "SRA"]
    assert fp["images"][2]["storage_shape"] == [10, 20, 30]
    np.testing.assert_allclose(fp["images"][2]["storage_spacing"], (2.5, 0.7, 0.9))
    # identical content -> identical intensity statistics
    stats = [r["intensity_foreground"]["mean"] for r in fp["images"]]
    assert stats[0] == pytest.approx(stats[1]) == pytest.approx(stats[2])
    np.testing.assert_allclose(fp["spacing"]["median"], spacing)


def test_median_spacing_and_shapes(tmp_path):
    rng = np.random.default_rng(1)
    xs = [0.5, 0.6, 0.7, 0.8, 1.0]
    zs = [1.0, 1.5, 2.0, 2.5, 3.0]
    entries = []
    for i, (x, z) in enumerate(zip(xs, zs)):
        arr, mask = _ct_volume((12 + 2 * i, 16, 8), rng)
        entries.append(_write(tmp_path, f"c{i}", arr, (x, 0.9, z), "LPS" if i % 2 else "RAS", mask))
    fp = compute_fingerprint(entries, progress=False)
    plan = plan_from_fingerprint(fp)
    np.testing.assert_allclose(plan["target_spacing"], (0.7, 0.9, 2.0))
    assert fp["shape"]["median"] == [16.0, 16.0, 8.0]
    assert fp["spacing"]["min"][0] == pytest.approx(0.5) and fp["spacing"]["max"][2] == pytest.approx(3.0)
    assert plan["anisotropic"] is False
    assert any("median spacing" in r for r in plan["reasons"])


def test_anisotropy_rule_uses_10th_percentile(tmp_path):
    rng = np.random.default_rng(2)
    zs = [4.0, 5.0, 5.0, 5.0, 6.0]
    thin = [_write(tmp_path, f"a{i}", _ct_volume((32, 32, 6), rng)[0], (0.5, 0.5, z)) for i, z in enumerate(zs)]
    plan = plan_from_fingerprint(compute_fingerprint(thin, progress=False))
    assert plan["anisotropic"] is True
    np.testing.assert_allclose(plan["target_spacing"], (0.5, 0.5, np.percentile(zs, 10)))  # 4.4, not the median 5
    assert any("10th percentile" in r for r in plan["reasons"])
    # same spacings but enough slices along the coarse axis: the median is kept
    thick = [_write(tmp_path, f"b{i}", _ct_volume((32, 32, 16), rng)[0], (0.5, 0.5, z)) for i, z in enumerate(zs)]
    plan = plan_from_fingerprint(compute_fingerprint(thick, progress=False))
    assert plan["anisotropic"] is False
    np.testing.assert_allclose(plan["target_spacing"], (0.5, 0.5, 5.0))


def _fake_fp(shapes, spacings, modalities=None, dims=3):
    return {
        "spatial_dims": dims,
        "images": [{"shape": list(s), "spacing": list(p)} for s, p in zip(shapes, spacings)],
        "modality_counts": modalities or {"MR": len(shapes)},
        "channels": {"1": len(shapes)},
        "nonzero_bbox_fraction": {"median": 1.0},
    }


def test_patch_size_divisible_and_within_budget():
    fp = _fake_fp([(36, 50, 35), (34, 52, 36), (38, 48, 40)], [(1.0, 1.0, 1.0)] * 3)
    plan = plan_from_fingerprint(fp)
    assert plan["spatial_size"] == [40, 56, 40]  # nnU-Net's hippocampus input size
    assert all(s % 8 == 0 for s in plan["spatial_size"])
    big = _fake_fp([(300, 280, 200)] * 3, [(1.0, 1.0, 1.0)] * 3)
    for budget, div in ((128**3, 8), (64**3, 16), (20000, 8)):
        plan = plan_from_fingerprint(big, max_patch_voxels=budget, divisor=div)
        size = plan["spatial_size"]
        assert all(s % div == 0 and s >= div for s in size)
        assert np.prod(size) <= budget
        # cropping would keep < 50 % of the field of view: the spacing is coarsened instead (issue 21, item 6)
        assert any("budget" in r and ("shrunk" in r or "coarsened" in r) for r in plan["reasons"])
    # the median shape is taken after resampling to the target spacing
    fp2 = _fake_fp([(50, 50, 20)] * 2 + [(100, 100, 40)], [(1.0, 1.0, 2.0)] * 2 + [(0.5, 0.5, 1.0)])
    plan = plan_from_fingerprint(fp2, divisor=8)
    assert plan["target_spacing"] == [1.0, 1.0, 2.0] and plan["spatial_size"] == [56, 56, 24]
    plan2d = plan_from_fingerprint(_fake_fp([(28, 28)] * 3, [(1.0, 1.0)] * 3, {"8bit": 3}, dims=2))
    assert plan2d["spatial_size"] == [32, 32] and plan2d["orientation"] is None
    with pytest.raises(ValueError, match="power of two"):
        plan_from_fingerprint(fp, divisor=12)
    with pytest.raises(ValueError, match="3D"):
        plan_from_fingerprint(fp, spatial_dims=2)


def test_ct_normalization_uses_pooled_foreground_statistics(tmp_path):
    rng = np.random.default_rng(3)
    entries, fg = [], []
    for i in range(3):
        arr, mask = _ct_volume((16, 16, 8), rng, fg_value=40 + 100 * i)
        entries.append(_write(tmp_path, f"ct{i}", arr, (1.0, 1.0, 2.0), mask_ras=mask))
        fg.append(arr[mask > 0].astype(np.float64))
    fp = compute_fingerprint(entries, progress=False, samples_per_image=10**6)  # all foreground voxels
    assert fp["modality_counts"] == {"CT": 3} and fp["modality_sources"] == {"heuristic": 3}
    pooled = np.concatenate(fg)
    plan = plan_from_fingerprint(fp)
    norm = plan["normalization"]
    assert norm["preset"] == "ct_clip_zscore"
    assert norm["lower"] == pytest.approx(np.percentile(pooled, 0.5), abs=1e-3)
    assert norm["upper"] == pytest.approx(np.percentile(pooled, 99.5), abs=1e-3)
    assert norm["mean"] == pytest.approx(pooled.mean(), abs=1e-3)
    assert norm["std"] == pytest.approx(pooled.std(), abs=1e-3)
    assert any("CT" in r and "percentiles" in r for r in plan["reasons"])
    rec = fp["images"][0]["intensity_foreground"]
    assert rec["mean"] == pytest.approx(fg[0].mean()) and rec["n_voxels"] == fg[0].size
    assert fp["images"][0]["intensity_all"]["min"] == -1000.0
    assert fp["mask_labels"] == {
        "0": {"images": 3, "voxels": 3 * (16 * 16 * 8 - 8 * 8 * 4)},
        "1": {"images": 3, "voxels": 3 * 8 * 8 * 4},
    }


def test_mr_8bit_and_mixed_normalization(tmp_path):
    rng = np.random.default_rng(4)
    mr_small = []
    for i in range(3):  # float MR with a zero background around a small object
        arr = np.zeros((24, 24, 12), np.float32)
        arr[8:14, 8:14, 4:8] = rng.uniform(100, 900, size=(6, 6, 4)).astype(np.float32)
        mr_small.append(_write(tmp_path, f"mr{i}", arr, (1.0, 1.0, 1.0)))
    plan = plan_from_fingerprint(compute_fingerprint(mr_small, progress=False))
    assert plan["normalization"] == {"preset": "zscore", "nonzero": True, "channel_wise": True}
    mr_full = [
        _write(tmp_path, f"mf{i}", rng.uniform(1, 500, (10, 10, 10)).astype(np.float32), (1, 1, 1)) for i in range(2)
    ]
    plan = plan_from_fingerprint(compute_fingerprint(mr_full, progress=False))
    assert plan["normalization"] == {"preset": "zscore", "nonzero": False, "channel_wise": True}

    pngs = [
        {"image": str(write_png(tmp_path / f"x{i}.png", rng.integers(0, 256, (20, 24)).astype(np.uint8)))}
        for i in range(3)
    ]
    fp = compute_fingerprint(pngs, progress=False)
    assert fp["modality_counts"] == {"8bit": 3} and fp["spatial_dims"] == 2
    plan = plan_from_fingerprint(fp)
    assert plan["normalization"] == {"preset": "scale255"} and plan["orientation"] is None
    assert plan["spatial_size"] == [32, 32] and plan["target_spacing"] == [1.0, 1.0]
    img = build_preprocessing("image", plan=plan)(pngs[0])["image"]
    assert tuple(img.shape) == (1, 32, 32) and 0.0 <= float(img.min()) and float(img.max()) <= 1.0

    ct, mask = _ct_volume((10, 10, 10), rng)
    mixed = mr_full + [_write(tmp_path, "ctm", ct, (1, 1, 1))]
    plan = plan_from_fingerprint(compute_fingerprint(mixed, progress=False))
    assert plan["normalization"]["preset"] == "zscore"
    assert any("mixed modalities" in r for r in plan["reasons"])


def test_modality_priority_reader_entry_datalist(tmp_path):
    rng = np.random.default_rng(5)
    floaty = rng.uniform(-900, 900, (8, 8, 8)).astype(np.float32)  # heuristic would say MR
    e = _write(tmp_path, "f", floaty, (1, 1, 1))
    fp = compute_fingerprint([{**e, "modality": "ct"}], progress=False)
    assert fp["images"][0]["modality"] == "CT" and fp["images"][0]["modality_source"] == "entry"
    fp = compute_fingerprint([e], progress=False, default_modality="CT")
    assert fp["images"][0]["modality_source"] == "datalist"
    vol = np.full((6, 5, 3), 24, np.int16)  # -1000 after the intercept: the heuristic would say CT
    write_dicom_series(tmp_path / "dcm", vol, intercept=-1024.0, modality="MR")
    fp = compute_fingerprint([{"image": str(tmp_path / "dcm"), "modality": "CT"}], progress=False)
    assert fp["images"][0]["modality"] == "MR" and fp["images"][0]["modality_source"] == "reader"
    np.testing.assert_allclose(fp["images"][0]["spacing"], (0.7, 0.8, 2.5), atol=1e-4)
    assert normalize_modality({"0": "MRI"}) == "MR" and normalize_modality("") is None


def test_2d_coronal_dicom_spacing(tmp_path):
    pix = np.zeros((20, 30, 1), np.int16) + 500
    write_dicom_series(
        tmp_path / "cr", pix, spacing=(0.3, 0.2, 1.0), intercept=0.0, modality="DX", iop=(1, 0, 0, 0, 0, -1)
    )
    rec = compute_fingerprint([{"image": str(tmp_path / "cr")}], progress=False)["images"][0]
    assert rec["spatial_dims"] == 2 and rec["shape"] == [20, 30]
    np.testing.assert_allclose(rec["spacing"], (0.3, 0.2), atol=1e-5)
    # i runs along the row direction (+x LPS: to the patient's left), j along the column direction (-z: inferior)
    assert rec["axcodes"] == "LI" and rec["modality"] == "DX"


def test_class_counts_subjects_and_determinism(tmp_path):
    rng = np.random.default_rng(6)
    entries = []
    for i in range(4):
        arr, mask = _ct_volume((10, 10, 6), rng)
        e = _write(tmp_path, f"s{i}", arr, (1, 1, 1), mask_ras=mask)
        entries.append({**e, "label": [0, 1, 0, 0][i], "subject": f"sub-{i // 2}"})
    fp = compute_fingerprint(entries, classes=["benign", "malignant", "other"], progress=False, samples_per_image=50)
    assert fp["class_counts"] == {"benign": 3, "malignant": 1, "other": 0}
    assert fp["n_images"] == 4 and fp["n_subjects"] == 2
    assert fp["images_per_subject"] == {"min": 2, "median": 2.0, "max": 2}
    again = compute_fingerprint(entries, progress=False, samples_per_image=50)
    assert again["intensity"] == fp["intensity"]
    other = compute_fingerprint(entries, progress=False, samples_per_image=50, seed=1)
    assert other["intensity"]["mean"] != fp["intensity"]["mean"]
    assert fp["intensity"]["source"] == "foreground" and fp["intensity"]["n_voxels"] == 4 * 50


def test_plan_feeds_build_preprocessing(tmp_path):
    rng = np.random.default_rng(7)
    entries = []
    for i, (sp, storage) in enumerate([((0.8, 0.8, 2.0), "LPS"), ((1.0, 1.0, 2.5), "SRA"), ((0.9, 0.9, 2.0), "RAS")]):
        arr, mask = _ct_volume((30 + 4 * i, 28, 10), rng)
        entries.append(_write(tmp_path, f"p{i}", arr, sp, storage, mask))
    fp = compute_fingerprint(entries, progress=False)
    plan = plan_from_fingerprint(fp)
    t = build_preprocessing("image", "mask", plan=plan)
    for e in entries:
        out = t(e)
        assert list(out["image"].shape[1:]) == plan["spatial_size"]
        assert list(out["mask"].shape[1:]) == plan["spatial_size"]
        np.testing.assert_allclose(np.linalg.norm(out["image"].affine[:3, :3].numpy(), axis=0), plan["target_spacing"])
        # CT normalization: the clipped range maps to [(lower-mean)/std, (upper-mean)/std]
        n = plan["normalization"]
        assert float(out["image"].max()) <= (n["upper"] - n["mean"]) / n["std"] + 1e-4


def _labelled_volumes(folder, n, seed, prefix):
    """``n`` random 12x12x8 NIfTI volumes at (1, 1, 1.5) mm with alternating labels, one subject each."""
    rng = np.random.default_rng(seed)
    ents = []
    for i in range(n):
        arr = rng.uniform(10, 500, (12, 12, 8)).astype(np.float32)
        ents.append({**_write(folder, f"{prefix}{i}", arr, (1.0, 1.0, 1.5)), "label": i % 2, "subject": f"s{i}"})
    return ents


def test_fingerprint_datalist_all_splits_and_json_roundtrip(tmp_path):
    ents = _labelled_volumes(tmp_path / "data", 4, 8, "m")
    dl = make_datalist(
        {"training": ents[:2], "validation": ents[2:3], "test": ents[3:]}, classes=["a", "b"], modality="MRI"
    )
    path = write_datalist(tmp_path / "data" / "datalist.json", dl)
    res = fingerprint_datalist(path, key="all", progress=False)
    assert res["key"] == "all" and res["datalist"] == str(path)
    assert res["fingerprint"]["n_images"] == 4
    fp = res["fingerprint"]
    assert fp["modality_counts"] == {"MR": 4} and fp["modality_sources"] == {"datalist": 4}
    assert res["fingerprint"]["class_counts"] == {"a": 2, "b": 2}
    assert fingerprint_datalist(path, progress=False)["fingerprint"]["n_images"] == 2
    out = write_fingerprint(tmp_path / "fp" / "fingerprint.json", res)
    loaded = json.loads(out.read_text())
    assert loaded["plan"]["spatial_size"] == res["plan"]["spatial_size"]
    img = build_preprocessing("image", plan=out)({"image": ents[0]["image"]})["image"]
    assert list(img.shape[1:]) == res["plan"]["spatial_size"]
    assert abs(float(img[img != 0].mean())) < 0.5  # z-scored


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    good = _write(tmp_path, "ok", np.ones((4, 4, 4), np.float32), (1, 1, 1))
    with pytest.raises(FingerprintError, match=r"corrupt\.nii\.gz"):
        compute_fingerprint([good, {"image": str(bad)}], progress=False)
    with pytest.raises(FingerprintError, match="empty"):
        compute_fingerprint([], progress=False)
    png = {"image": str(write_png(tmp_path / "flat.png", np.zeros((4, 4), np.uint8)))}
    with pytest.raises(FingerprintError, match="mixed 2D and 3D"):
        compute_fingerprint([good, png], progress=False)
    nan = np.ones((4, 4, 4), np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(FingerprintError, match=r"nan\.nii\.gz.*non-finite"):
        compute_fingerprint([_write(tmp_path, "nan", nan, (1, 1, 1))], progress=False)


@pytest.mark.shared_data
def test_msd_hippocampus_subset():
    root = shared_data_dir() / "msd_hippocampus"
    if not (root / "imagesTr").is_dir():
        pytest.skip(f"MSD Hippocampus not found at {root} (set MEDMONAI_SHARED_DATA to the shared data folder)")
    images = sorted((root / "imagesTr").glob("*.nii.gz"))[:20]
    entries = [{"image": str(p), "mask": str(root / "labelsTr" / p.name)} for p in images]
    fp = compute_fingerprint(entries, progress=False, samples_per_image=2000)
    assert fp["n_images"] == 20 and fp["spatial_dims"] == 3
    np.testing.assert_allclose(fp["spacing"]["median"], (1.0, 1.0, 1.0), atol=0.05)
    assert set(fp["modality_counts"]) == {"MR"}  # float and uint8 3D MR both classified as MR
    assert set(fp["mask_labels"]) == {"0", "1", "2"}
    plan = plan_from_fingerprint(fp)
    assert plan["normalization"]["preset"] == "zscore"
    assert all(s % 8 == 0 for s in plan["spatial_size"]) and np.prod(plan["spatial_size"]) <= 128**3
    assert all(30 <= s <= 64 for s in plan["spatial_size"])
    out = build_preprocessing("image", "mask", plan=plan)(entries[0])
    assert list(out["image"].shape[1:]) == plan["spatial_size"]
    assert set(np.unique(out["mask"].numpy()).tolist()) <= {0, 1, 2}


def _circle_padded(value=-3024.0, n=40):
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    img = np.where(np.hypot(i - n / 2, j - n / 2) > n / 2 - 2, value, -900.0 + (i % 7))
    return img[None].astype(np.float32)


def test_padding_mask_rules():
    img = _circle_padded()
    pad, info = padding_mask(img, {}, "CT")
    assert info["source"] == "out-of-field constant" and info["value"] == -3024.0
    assert pad.sum() == int((img[0] == -3024).sum()) and 0.1 < info["fraction"] < 0.5
    assert padding_mask(img, {}, "MR") == (None, None)  # the constant rule is for CT only
    assert padding_mask(_circle_padded(-1000.0), {}, "CT") == (None, None)  # air itself is not padding
    # an interior pocket at the minimum is not border-connected: not padding
    pocket = np.full((1, 40, 40), -500.0, np.float32)
    pocket[0, 10:30, 10:30] = -2000.0
    assert padding_mask(pocket, {}, "CT") == (None, None)
    # DICOM PixelPaddingValue (any modality), with a range limit: every value between the two
    vol = np.stack([_circle_padded(-2000.0)[0], _circle_padded(-2500.0)[0]], axis=-1)[None]
    meta = {"PixelPaddingValue": -2000.0, "PixelPaddingRangeLimit": -2600.0}
    pad, info = padding_mask(vol, meta, "MR")
    assert info["source"] == "DICOM PixelPaddingValue" and info["range_limit"] == -2600.0
    assert pad.sum() == int((vol[0] <= -2000).sum())
    nan = {"PixelPaddingValue": float("nan"), "PixelPaddingRangeLimit": float("nan")}
    assert padding_mask(img, nan, "CT")[1]["source"] == "out-of-field constant"  # NaN = not given
    assert padding_mask(np.concatenate([img, img]), {}, "CT") == (None, None)  # multi-channel: none


def test_colour_and_alpha_records_and_the_channel_plan(tmp_path):
    rng = np.random.default_rng(0)
    g = rng.integers(0, 200, size=(12, 12), dtype=np.uint8)
    colour = np.stack([g, g + 40, g], axis=-1)
    jpeg_like = np.stack([g, np.clip(g.astype(int) + rng.integers(-1, 2, g.shape), 0, 255), g], -1).astype(np.uint8)
    la = np.stack([g, np.full_like(g, 255)], axis=-1)
    entries = [
        {"image": str(write_png(tmp_path / n, px))}
        for n, px in (("c.png", colour), ("j.png", jpeg_like), ("la.png", la), ("g.png", g))
    ]
    fp = compute_fingerprint(entries, progress=False)
    recs = {r["file"].rsplit("/", 1)[-1]: r for r in fp["images"]}
    assert recs["c.png"]["colour"] and not recs["j.png"]["colour"] and not recs["g.png"]["colour"]
    assert recs["la.png"]["alpha"] == {"min": 255.0, "max": 255.0, "constant": True}
    assert recs["la.png"]["intensity_all"]["max"] < 255  # alpha left out of the statistics
    assert fp["colour_images"] == 1 and fp["alpha_images"] == {"n": 1, "varying": 0}
    plan = plan_from_fingerprint(fp)
    assert plan["in_channels"] == 3 and plan["channels"] == 3
    with pytest.raises(ValueError, match="3 channels"):
        require_grey(plan, "the GAN bundle")
    grey = plan_from_fingerprint(compute_fingerprint(entries[1:], progress=False))
    assert grey["in_channels"] == 1 and grey["channels"] == 1 and require_grey(grey, "x") == 1
    # 3D multi-channel data keep their channel count; older fingerprints without colour records still plan
    fp3 = _fake_fp([(20, 20, 20)] * 2, [(1.0, 1.0, 1.0)] * 2) | {"channels": {"4": 2}}
    assert plan_from_fingerprint(fp3)["in_channels"] == 4 and plan_from_fingerprint(fp3)["channels"] is None
    old = _fake_fp([(20, 20)] * 2, [(1.0, 1.0)] * 2, dims=2) | {"channels": {"3": 2}}
    assert plan_from_fingerprint(old)["in_channels"] == 3


def test_ensure_plan_passes_the_task_and_refuses_a_run_folder_of_the_other_dimensionality(tmp_path):
    from medmonai.data.fingerprint import ensure_plan

    ents = _labelled_volumes(tmp_path / "data", 3, 3, "v")
    path = write_datalist(tmp_path / "data" / "datalist.json", make_datalist({"training": ents}, classes=["a", "b"]))
    out = tmp_path / "runs" / "fingerprint.json"
    plan = ensure_plan(path, out, progress=False, task="classification", spatial_dims=3)
    assert plan["task"] == "classification" and json.loads(out.read_text())["plan"]["task"] == "classification"
    assert ensure_plan(path, out, progress=False, spatial_dims=3)["spatial_size"] == plan["spatial_size"]  # cached
    # one bundle serves 2D and 3D: a 3D run folder asked for a 2D plan is an error naming the file, not re-planned
    before = out.read_text()
    with pytest.raises(ValueError, match=r"fingerprint.json: this run folder holds a 3D plan but spatial_dims=2"):
        ensure_plan(path, out, progress=False, spatial_dims=2)
    assert out.read_text() == before
