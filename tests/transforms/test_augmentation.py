"""Augmentation presets: every level builds in 2D/3D, keeps shapes and dtypes, keeps masks aligned, is seedable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose
from monai.utils import set_determinism

from medmonai.transforms.augmentation import LEVELS, augmentation_preset, save_augmentation_preview

SIZES = {2: (28, 28), 3: (16, 16, 16)}


def _blob(dims: int) -> torch.Tensor:
    """An off-centre binary ellipse/ellipsoid (asymmetric, so that flips and rotations change it)."""
    size = SIZES[dims]
    grid = np.meshgrid(*[np.arange(s, dtype=float) for s in size], indexing="ij")
    centre = [0.4 * s for s in size]
    radii = [f * s for f, s in zip((0.3, 0.2, 0.25), size)]
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    return torch.as_tensor(r2 <= 1.0)[None]


def _sample(dims: int) -> dict:
    blob = _blob(dims)
    return {"image": MetaTensor(blob.float()), "mask": MetaTensor(blob.to(torch.uint8))}


def _apply(xforms: list, d: dict) -> dict:
    """Apply the transforms in turn (a new ``Compose`` would re-seed them from MONAI's global seed)."""
    for t in xforms:
        d = t(d)
    return d


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return float(2 * (a & b).sum() / (a.sum() + b.sum()).clamp_min(1))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("level", list(LEVELS))
def test_every_level_builds_and_keeps_shape_and_dtype(level, dims):
    xforms = augmentation_preset(level, dims, label_keys=("mask",), seed=0)
    for _ in range(3):
        out = _apply(xforms, _sample(dims))
        assert out["image"].shape == (1, *SIZES[dims]) and out["image"].dtype == torch.float32
        assert out["mask"].shape == (1, *SIZES[dims]) and out["mask"].dtype == torch.uint8
        assert set(torch.unique(out["mask"]).tolist()) <= {0, 1}
        assert torch.isfinite(out["image"]).all()


def test_none_is_identity_and_levels_grow():
    assert augmentation_preset("none", 2, label_keys=("mask",)) == []
    d = _sample(2)
    out = Compose(augmentation_preset("none", 2))(dict(d))
    assert torch.equal(out["image"], d["image"])
    n = [len(augmentation_preset(level, 2)) for level in ("light", "medium", "strong")]
    assert n[0] < n[1] < n[2]


@pytest.mark.parametrize("dims", [2, 3])
def test_masks_stay_aligned_with_images(dims):
    """Spatial transforms (forced on) move mask and image alike: mask == thresholded image up to edge voxels."""
    xforms = augmentation_preset(
        "strong", dims, label_keys=("mask",), intensity=False, seed=1, flip_prob=1.0, affine_prob=1.0, elastic_prob=1.0
    )
    original = _sample(dims)
    for _ in range(4):
        out = _apply(xforms, _sample(dims))
        assert _dice(out["mask"], original["mask"]) < 0.95  # it really moved
        assert _dice(out["mask"], out["image"] > 0.5) > 0.8
        # where nearest (mask) and linear (image) interpolation disagree, the image holds a partial-volume value
        # (the nearest source voxel has a large weight in the linear interpolation); a misalignment would show up
        # as disagreement at pure 0 / 1 image values
        disagree = out["mask"].bool() != (out["image"] > 0.5)
        values = out["image"][disagree]
        assert ((values > 0.05) & (values < 0.95)).all()


def test_full_strong_preset_keeps_mask_aligned_and_untouched_by_intensity():
    xforms = augmentation_preset("strong", 2, label_keys=("mask",), seed=2, affine_prob=1.0)
    for _ in range(4):
        out = _apply(xforms, _sample(2))
        assert set(torch.unique(out["mask"]).tolist()) <= {0, 1}
        inside = out["image"][out["mask"].bool()].mean()
        outside = out["image"][~out["mask"].bool()].mean()
        assert inside > outside + 0.3  # the lesion is still where the mask says


@pytest.mark.parametrize("dims", [2, 3])
def test_reproducible_with_a_seed(dims):
    def draws(seed):
        xforms = augmentation_preset("strong", dims, label_keys=("mask",), seed=seed)
        return [_apply(xforms, _sample(dims))["image"] for _ in range(3)]

    a, b, c = draws(5), draws(5), draws(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_reproducible_under_set_determinism_with_monai_loader():
    def run():
        set_determinism(seed=0)
        chain = Compose(augmentation_preset("strong", 2))
        ds = Dataset([_sample(2) for _ in range(4)], transform=chain)
        return torch.cat([b["image"] for b in DataLoader(ds, batch_size=2)])

    try:
        assert torch.equal(run(), run())
    finally:
        set_determinism(seed=None)


@pytest.mark.parametrize("dims", [2, 3])
def test_nnunet_level_is_the_former_segmentation_default(dims):
    """The merged segmentation preset: nnU-Net's ranges, zero padding, mirroring of every axis (issue 19 item 4)."""
    xforms = augmentation_preset("nnunet", dims, label_keys=("mask",))
    flips = [t for t in xforms if type(t).__name__ == "RandFlipd"]
    assert sorted(f.flipper.spatial_axis for f in flips) == list(range(dims)) and all(f.prob == 0.5 for f in flips)
    (affine,) = [t for t in xforms if type(t).__name__ == "RandAffined"]
    grid = affine.rand_affine.rand_affine_grid
    assert affine.prob == pytest.approx(0.2) and set(affine.padding_mode) == {"zeros"}
    assert np.allclose(grid.rotate_range, [np.radians(180.0 if dims == 2 else 30.0)] * (1 if dims == 2 else 3))
    assert [tuple(r) for r in grid.scale_range] == [(-0.3, 0.4)] * dims
    assert grid.shear_range is None or not any(grid.shear_range)
    names = {type(t).__name__: t for t in xforms}
    assert (
        names["RandGaussianNoised"].prob == pytest.approx(0.1)
        and names["RandGaussianNoised"].rand_gaussian_noise.std == 0.1
    )
    assert names["RandAdjustContrastd"].prob == pytest.approx(0.3)
    assert names["RandScaleIntensityd"].prob == pytest.approx(0.15)
    assert "RandShiftIntensityd" not in names and "Rand3DElasticd" not in names and "Rand2DElasticd" not in names


def test_anisotropic_axis_rotates_in_plane_only():
    (affine,) = [t for t in augmentation_preset("nnunet", 3, anisotropic_axis=2) if type(t).__name__ == "RandAffined"]
    assert np.allclose(affine.rand_affine.rand_affine_grid.rotate_range, [0.0, 0.0, np.radians(30.0)])
    out = _apply([affine], {**_sample(3), "mask": _sample(3)["mask"]})  # runs
    assert out["image"].shape == (1, *SIZES[3])


def test_overrides_and_errors():
    (flip, affine) = augmentation_preset("light", 3, rotate_deg=5.0, flip_axes=[2])
    assert flip.flipper.spatial_axis == 2
    assert np.allclose(affine.rand_affine.rand_affine_grid.rotate_range, [np.radians(5.0)] * 3)
    with pytest.raises(ValueError, match="unknown augmentation level"):
        augmentation_preset("extreme", 2)
    with pytest.raises(ValueError, match="unknown augmentation parameter"):
        augmentation_preset("light", 2, rotation=3)
    with pytest.raises(ValueError, match="spatial_dims"):
        augmentation_preset("light", 4)
    with pytest.raises(ValueError, match="padding_mode"):
        augmentation_preset("light", 2, padding_mode="reflect")
    with pytest.raises(ValueError, match="scale"):
        augmentation_preset("light", 2, scale=(0.4, -0.3))
    (_, affine) = augmentation_preset("light", 2, scale=[-0.1, 0.2])
    assert [tuple(r) for r in affine.rand_affine.rand_affine_grid.scale_range] == [(-0.1, 0.2)] * 2


def test_preview_png_from_a_tiny_datalist(tmp_path):
    from PIL import Image

    from medmonai.data.datalist import make_datalist, write_datalist
    from tests.transforms._helpers import write_png

    rng = np.random.default_rng(0)
    entries = []
    for i in range(3):
        pixels = (rng.random((30, 28)) * 60).astype(np.uint8)
        pixels[8:20, 6:14] += 150
        entries.append({"image": str(write_png(tmp_path / f"img{i}.png", pixels)), "label": i % 2})
    dl = write_datalist(tmp_path / "datalist.json", make_datalist({"training": entries}, classes=["a", "b"]))
    res = save_augmentation_preview(dl, tmp_path / "grid.png", preset="strong", n_images=2, n_draws=3)
    assert res["n_images"] == 2 and res["n_draws"] == 3
    with Image.open(tmp_path / "grid.png") as im:
        assert im.format == "PNG" and im.width > im.height  # 4 columns, 2 rows
