from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medmonai.networks.factory import auto_input_affine
from medmonai.transforms.intensity import normalized_range
from medmonai.transforms.preprocessing import MatchChannelsd, build_preprocessing, load_plan
from tests.transforms._helpers import error_chain as _chain
from tests.transforms._helpers import write_dicom_series, write_nifti, write_png

SHAPE = (40, 50, 12)
SPACING = (0.8, 0.6, 3.0)
BLOCK = (slice(10, 20), slice(20, 30), slice(4, 8))


@pytest.fixture
def lps_case(tmp_path):
    """An LPS-stored (i -> left, j -> posterior), anisotropic CT-like volume with a 100 HU block and its mask."""
    arr = np.full(SHAPE, -1000, np.int16)
    arr[BLOCK] = 100
    aff = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    aff[:3, 3] = (10.0, 20.0, -5.0)
    img = write_nifti(tmp_path / "ct.nii.gz", arr, aff)
    msk = write_nifti(tmp_path / "ct_seg.nii.gz", (arr == 100).astype(np.uint8), aff)
    return {"image": str(img), "mask": str(msk)}, arr, aff


def _expected_shape(shape, spacing, target):
    # MONAI Spacing keeps the centres of the corner voxels: n_out = round((n_in - 1) * s_in / s_out + 1)
    return tuple(int(np.round((n - 1) * s / t + 1)) for n, s, t in zip(shape, spacing, target))


def _world_to_voxel(affine, world):
    return np.linalg.solve(np.asarray(affine, dtype=float), np.append(world, 1.0))[:3]


def test_orientation_spacing_shape_and_values(lps_case):
    data, arr, aff = lps_case
    target = (1.0, 1.0, 2.4)
    out = build_preprocessing("image", "mask", spatial_dims=3, target_spacing=target)(data)
    img, msk = out["image"], out["mask"]
    out_aff = img.affine.numpy()
    assert nib.aff2axcodes(out_aff) == ("R", "A", "S")
    assert np.all(np.diag(out_aff)[:3] > 0) and np.allclose(out_aff[:3, :3], np.diag(np.diag(out_aff)[:3]))
    np.testing.assert_allclose(np.linalg.norm(out_aff[:3, :3], axis=0), target, atol=1e-6)
    assert tuple(img.shape[1:]) == _expected_shape(SHAPE, SPACING, target)
    assert img.dtype == torch.float32 and msk.dtype == torch.uint8
    # the voxel at the block centre (same world point) still holds 100 HU, the background -1000 HU
    centre_world = (aff @ np.array([14.5, 24.5, 5.5, 1.0]))[:3]
    v = np.round(_world_to_voxel(out_aff, centre_world)).astype(int)
    assert float(img[0, v[0], v[1], v[2]]) == pytest.approx(100.0, abs=1e-3)
    assert float(img[0, 0, 0, 0]) == pytest.approx(-1000.0, abs=1e-3)
    # the mask stays binary, follows the block and has about its physical volume
    assert set(np.unique(msk.numpy()).tolist()) == {0, 1}
    assert int(msk[0, v[0], v[1], v[2]]) == 1
    block_mm3 = 10 * 0.8 * 10 * 0.6 * 4 * 3.0
    assert int(msk.sum()) == pytest.approx(block_mm3 / np.prod(target), rel=0.3)
    assert np.allclose(img[0][msk[0] == 1].numpy().mean(), 100.0, atol=150.0)


def test_ct_window_after_resampling(lps_case):
    data, _, aff = lps_case
    out = build_preprocessing(
        "image", "mask", target_spacing=(1.0, 1.0, 2.4), normalization={"preset": "ct_window", "window": "subdural"}
    )(data)
    img = out["image"]
    v = np.round(_world_to_voxel(img.affine.numpy(), (aff @ np.array([14.5, 24.5, 5.5, 1.0]))[:3])).astype(int)
    lo = 75 - 215 / 2
    assert float(img[0, v[0], v[1], v[2]]) == pytest.approx((100 - lo) / 215, abs=1e-4)
    assert float(img.min()) == pytest.approx(0.0) and float(img.max()) <= 1.0


def test_permuted_axes_are_reoriented_exactly(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 1000, size=(4, 5, 6)).astype(np.int16)
    aff = np.zeros((4, 4))
    aff[2, 0] = 2.0  # i -> superior, 2 mm
    aff[0, 1] = 0.5  # j -> right, 0.5 mm
    aff[1, 2] = -1.0  # k -> posterior, 1 mm
    aff[3, 3] = 1.0
    path = write_nifti(tmp_path / "perm.nii.gz", arr, aff)
    img = build_preprocessing("image")({"image": str(path)})["image"]
    expected = arr.transpose(1, 2, 0)[:, ::-1, :]
    assert np.array_equal(img[0].numpy(), expected)
    np.testing.assert_allclose(np.diag(img.affine.numpy())[:3], (0.5, 1.0, 2.0))


def test_plan_dict_json_and_overrides(lps_case, tmp_path):
    data, _, _ = lps_case
    plan = {
        "spatial_dims": 3,
        "target_spacing": [1.0, 1.0, 2.4],
        "orientation": "RAS",
        "spatial_size": [32, 32, 16],
        "size_mode": "crop_pad",
        "normalization": {"preset": "ct_window", "window": "brain"},
        "reasons": ["..."],
    }
    out = build_preprocessing("image", "mask", plan=plan)(data)
    assert tuple(out["image"].shape) == (1, 32, 32, 16) and tuple(out["mask"].shape) == (1, 32, 32, 16)
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    path = tmp_path / "fp.json"
    path.write_text(json.dumps({"fingerprint": {}, "plan": plan}))
    assert load_plan(path) == plan
    out = build_preprocessing("image", "mask", plan=path, spatial_size=(24, 24, 8), normalization="none")(data)
    assert tuple(out["image"].shape) == (1, 24, 24, 8)
    assert float(out["image"].min()) == pytest.approx(-1000.0)
    out = build_preprocessing("image", plan=path, target_spacing=False, size_mode=None)(data)
    assert tuple(out["image"].shape) == (1, *SHAPE)


def test_resize_mode_keeps_mask_binary_and_missing_mask_is_fine(lps_case):
    data, _, _ = lps_case
    t = build_preprocessing(
        "image", "mask", target_spacing=(1.0, 1.0, 2.4), spatial_size=(20, 20, 10), size_mode="resize"
    )
    out = t(data)
    assert tuple(out["image"].shape) == (1, 20, 20, 10) and tuple(out["mask"].shape) == (1, 20, 20, 10)
    assert set(np.unique(out["mask"].numpy()).tolist()) == {0, 1}
    only_image = t({"image": data["image"]})
    assert "mask" not in only_image and tuple(only_image["image"].shape) == (1, 20, 20, 10)


def test_mask_on_another_grid_raises(lps_case, tmp_path):
    data, arr, aff = lps_case
    shifted = aff.copy()
    shifted[:3, 3] += 5.0
    bad = write_nifti(tmp_path / "shifted_seg.nii.gz", (arr == 100).astype(np.uint8), shifted)
    with pytest.raises(RuntimeError) as e:
        build_preprocessing("image", "mask")({"image": data["image"], "mask": str(bad)})
    assert "shifted_seg.nii.gz" in _chain(e.value) and "affines differ" in _chain(e.value)


def test_invertd_maps_mask_back_to_the_stored_grid(lps_case):
    from monai.transforms import Invertd

    data, arr, _ = lps_case
    t = build_preprocessing("image", "mask", target_spacing=(1.0, 1.0, 2.4), spatial_size=(32, 48, 16))
    out = t(data)
    out["pred"] = out["mask"].float()
    inv = Invertd("pred", transform=t, orig_keys="mask", nearest_interp=True)(out)["pred"]
    assert tuple(inv.shape[1:]) == SHAPE
    agree = (inv[0].numpy() > 0.5) == (arr == 100)
    assert agree.mean() > 0.99


def test_png_2d_path(tmp_path):
    rows, cols = 20, 30
    pix = (np.arange(rows * cols).reshape(rows, cols) % 251).astype(np.uint8)
    path = write_png(tmp_path / "x.png", pix)
    t = build_preprocessing("image", spatial_dims=2, normalization="scale255", spatial_size=(32, 32))
    img = t({"image": str(path)})["image"]
    assert tuple(img.shape) == (1, 32, 32)
    # no re-orientation for 2D: arr[i, j] = pixel[row j, col i]; centre padding of (32-30)/2 and (32-20)/2
    np.testing.assert_allclose(img[0, 1:31, 6:26].numpy(), pix.T / 255.0, atol=1e-6)
    rgb = np.stack([pix, pix, pix], axis=-1)
    prgb = write_png(tmp_path / "rgb.png", rgb)
    grey = build_preprocessing("image", spatial_dims=2, channels=1, normalization="scale255")({"image": str(prgb)})
    assert tuple(grey["image"].shape) == (1, cols, rows)


def test_dicom_series_path(tmp_path):
    vol = np.zeros((16, 12, 5), np.int16) + 24  # stored 24 -> -1000 HU
    vol[4:8, 3:6, 1:4] = 1124  # 100 HU
    write_dicom_series(tmp_path / "ct", vol, spacing=(0.7, 0.8, 2.5), intercept=-1024.0)
    out = build_preprocessing("image", target_spacing=False)({"image": str(tmp_path / "ct")})["image"]
    # DICOM i/j run to patient left/posterior (LPS); RAS flips both in-plane axes
    np.testing.assert_allclose(out[0].numpy(), (vol.astype(np.float32) - 1024.0)[::-1, ::-1, :])
    assert nib.aff2axcodes(out.affine.numpy()) == ("R", "A", "S")
    np.testing.assert_allclose(np.diag(out.affine.numpy())[:3], (0.7, 0.8, 2.5), atol=1e-4)
    assert out.meta["Modality"] == "CT"
    win = build_preprocessing(
        "image", target_spacing=(1.4, 1.6, 2.5), normalization={"preset": "ct_window", "window": "brain"}
    )
    w = win({"image": str(tmp_path / "ct")})["image"]
    assert tuple(w.shape[1:]) == _expected_shape((16, 12, 5), (0.7, 0.8, 2.5), (1.4, 1.6, 2.5))
    assert float(w.max()) == pytest.approx(1.0) and float(w.min()) == pytest.approx(0.0)


def test_coronal_2d_dicom_gets_a_planar_affine(tmp_path):
    pix = (np.arange(20 * 30).reshape(20, 30, 1) % 200).astype(np.int16)  # [i, j, one slice]
    write_dicom_series(
        tmp_path / "cr", pix, spacing=(0.3, 0.2, 1.0), intercept=0.0, modality="DX", iop=(1, 0, 0, 0, 0, -1)
    )
    # a coronal plane: the in-plane 2x2 block of the 3D affine is singular, MONAI's Spacingd alone would fail
    out = build_preprocessing("image", spatial_dims=2, target_spacing=(0.6, 0.4))({"image": str(tmp_path / "cr")})
    img = out["image"]
    assert tuple(img.shape) == (1, *_expected_shape((20, 30), (0.3, 0.2), (0.6, 0.4)))
    np.testing.assert_allclose(np.diag(img.affine.numpy())[:2], (0.6, 0.4))
    same = build_preprocessing("image", spatial_dims=2)({"image": str(tmp_path / "cr")})["image"]
    np.testing.assert_allclose(same[0].numpy(), pix[:, :, 0])  # kept as stored, not re-oriented


def test_inconsistent_settings_raise():
    with pytest.raises(ValueError, match="target_spacing has 2 values but spatial_dims is 3"):
        build_preprocessing("image", spatial_dims=3, target_spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="size_mode"):
        build_preprocessing("image", spatial_size=(8, 8, 8), size_mode="stretch")
    with pytest.raises(FileNotFoundError):
        build_preprocessing("image", plan="/nonexistent/plan.json")


def test_unknown_dims_reorients_3d_but_leaves_2d_alone(tmp_path):
    import nibabel as nib

    from medmonai.transforms.preprocessing import build_preprocessing as bp

    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    arr2 = np.arange(12, dtype=np.float32).reshape(3, 4)
    nib.save(nib.Nifti1Image(arr2, lps), tmp_path / "flat.nii.gz")
    arr3 = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(arr3, lps), tmp_path / "vol.nii.gz")
    pre = bp(keys=("image",), normalization=None, orientation="RAS")  # spatial_dims unknown
    out2 = pre({"image": str(tmp_path / "flat.nii.gz")})["image"]
    np.testing.assert_array_equal(np.asarray(out2)[0], arr2)  # 2D: unchanged
    out3 = pre({"image": str(tmp_path / "vol.nii.gz")})["image"]
    np.testing.assert_array_equal(np.asarray(out3)[0], arr3[::-1, ::-1, :])  # 3D: LPS -> RAS
    assert np.all(np.diag(np.asarray(out3.affine))[:3] > 0)


def test_channels_3_replicates_grey_and_drops_alpha(tmp_path):
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, size=(10, 12), dtype=np.uint8)
    rgb = np.stack([g, 255 - g, g // 2], axis=-1)
    pre = build_preprocessing("image", spatial_dims=2, channels=3, normalization="scale255")
    grey = pre({"image": str(write_png(tmp_path / "g.png", g))})["image"]
    assert tuple(grey.shape) == (3, 12, 10) and torch.equal(grey[0], grey[2])
    np.testing.assert_allclose(grey[1].numpy(), g.T / 255.0, atol=1e-6)
    colour = pre({"image": str(write_png(tmp_path / "c.png", rgb))})["image"]
    np.testing.assert_allclose(colour.numpy(), rgb.transpose(2, 1, 0) / 255.0, atol=1e-6)  # kept as stored
    rgba = np.concatenate([rgb, np.full((10, 12, 1), 7, np.uint8)], axis=-1)
    no_alpha = pre({"image": str(write_png(tmp_path / "a.png", rgba))})["image"]
    torch.testing.assert_close(no_alpha, colour)
    # a grey NIfTI (not read by PIL) is replicated by MatchChannelsd
    nii = write_nifti(tmp_path / "g.nii.gz", g.T.astype(np.float32), np.eye(4))
    x = build_preprocessing("image", spatial_dims=2, channels=3)({"image": str(nii)})["image"]
    assert x.shape[0] == 3 and torch.equal(x[0], x[1])
    with pytest.raises(ValueError, match="channels"):
        build_preprocessing("image", channels=2)


def test_match_channels_rules():
    grey1 = MatchChannelsd("image", 1)
    rgb = torch.tensor([[[255.0]], [[0.0]], [[0.0]]])
    np.testing.assert_allclose(grey1({"image": rgb})["image"].numpy(), [[[0.299 * 255]]], rtol=1e-6)
    la = torch.stack([torch.full((2, 2), 9.0), torch.zeros(2, 2)])
    assert torch.equal(grey1({"image": la})["image"], la[:1])
    assert torch.equal(MatchChannelsd("image", 3)({"image": la})["image"], la[:1].repeat(3, 1, 1))
    with pytest.raises(ValueError, match="4 channel"):  # a 4-modality volume is not made grey
        grey1({"image": torch.zeros(4, 2, 2, 2)})


def test_normalized_range_and_the_imagenet_input_mapping():
    assert normalized_range("scale255") == (0.0, 1.0)
    assert normalized_range({"preset": "ct_window", "window": "lung", "output_range": [-1, 1]}) == (-1.0, 1.0)
    ct = {"preset": "ct_clip_zscore", "lower": -1000, "upper": 400, "mean": -300, "std": 350}
    assert normalized_range(ct) == pytest.approx((-2.0, 2.0))
    assert normalized_range({"preset": "zscore"}) == (-2.0, 2.0) and normalized_range(None) is None
    (scale, shift), why = auto_input_affine("imagenet", (0.0, 1.0))
    assert (scale, shift) == pytest.approx((2.0, -1.0)) and "[-1, 1]" in why
    assert auto_input_affine("imagenet", None)[0] == pytest.approx((2.0, -1.0))  # assumed [0, 1], and said so
    assert "assumed" in auto_input_affine("imagenet", None)[1]
    assert auto_input_affine(None, (0.0, 1.0))[0] is None
    with pytest.raises(ValueError, match="unknown intensity preset"):
        normalized_range("bogus")
