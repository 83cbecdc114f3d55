"""Registration to a reference (medmonai.transforms.registration) on synthetic blob phantoms.

A moving image is made from the reference by a known world-space map S (moving(p) = reference(S p)), with SciPy
(independent of SimpleITK, so the RAS <-> LPS conversion is tested too). Registration returns T (reference point ->
moving point) with S T = identity. Tolerances: rotation within 1 degree, displacement of the image's corners and
centre within 0.5 mm (one voxel is 1 mm), normalised cross-correlation of the registered image with the reference
> 0.95.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from scipy import ndimage

from medmonai.transforms import build_preprocessing
from medmonai.transforms.registration import (
    RegisterToReference,
    RegisterToReferenced,
    add_subject_reference,
    metatensor_to_sitk,
)
from tests.transforms._helpers import write_nifti

ROT_TOL_DEG = 1.0


@pytest.fixture(autouse=True)
def _single_threaded_itk():
    """SimpleITK's global thread count pinned to 1 for these tests (restored after).

    The run-to-run differences once put down to the thread count (0.01-0.2 degrees, and rare 1.4-1.5 degree outliers
    of the 2D case) came from the metric samples: seed 0 reached SimpleITK, which reads it as "wall clock"
    (docs/preprocessing.md). With the seed fixed, results agree for 1 and 2 threads; the pin stays as a guard.
    """
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    yield
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


DISP_TOL_MM = 0.5
NCC_MIN = 0.95


def blobs(shape: tuple[int, ...]) -> np.ndarray:
    """A "body" (smooth ellipsoid, inside the field of view) holding four blobs of different sizes/intensities."""
    grid = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    img = np.zeros(shape)
    specs = [
        ((0.35, 0.4, 0.5), 4.0, 1.0),
        ((0.65, 0.55, 0.4), 3.0, 0.7),
        ((0.5, 0.7, 0.6), 2.5, 1.3),
        ((0.45, 0.3, 0.7), 2.0, 0.5),
    ]
    scale = min(shape) / 32.0
    for centre, sigma, amp in specs:
        d2 = sum((g - c * n) ** 2 for g, c, n in zip(grid, centre, shape))
        img += amp * np.exp(-d2 / (2 * (sigma * scale) ** 2))
    r = np.sqrt(sum(((g - (n - 1) / 2) / (0.36 * n)) ** 2 for g, n in zip(grid, shape)))
    body = 1 / (1 + np.exp((r - 1) * 12))
    return ((0.3 + img) * body).astype(np.float32)


def rotation(sd: int, deg: float, axis: int = 0) -> np.ndarray:
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    if sd == 2:
        return np.array([[c, -s], [s, c]])
    r = np.eye(3)
    i, j = [a for a in range(3) if a != axis]
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def grid_affine(sd: int) -> np.ndarray:
    """A non-trivial RAS affine: 1 mm voxels, flipped x/y in 3D (an LPS-stored volume), an offset origin."""
    a = np.eye(4)
    if sd == 3:
        a[:3, :3] = np.diag([-1.0, -1.0, 1.0])
        a[:3, 3] = [20.0, 10.0, -5.0]
    else:
        a[:2, 3] = [-20.0, 10.0]
    return a


def world_map(sd: int, shape: tuple[int, ...], linear: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Homogeneous S: ``linear`` about the image centre, then ``shift`` (mm)."""
    a = to_nd(grid_affine(sd), sd)
    centre = a[:sd, :sd] @ (np.array(shape) / 2 - 0.5) + a[:sd, sd]
    s = np.eye(sd + 1)
    s[:sd, :sd] = linear
    s[:sd, sd] = centre - linear @ centre + shift
    return s


def to_nd(a: np.ndarray, sd: int) -> np.ndarray:
    if sd == 3:
        return a
    out = np.eye(3)
    out[:2, :2], out[:2, 2] = a[:2, :2], a[:2, 3]
    return out


def warp(arr: np.ndarray, s: np.ndarray, order: int = 1) -> np.ndarray:
    """moving[idx] = arr(A^-1 S A idx) on the same grid (SciPy, independent of SimpleITK)."""
    sd = arr.ndim
    a = to_nd(grid_affine(sd), sd)
    m = np.linalg.inv(a) @ s @ a
    return ndimage.affine_transform(arr, m[:sd, :sd], m[:sd, sd], order=order, mode="constant", cval=0.0)


def meta_image(arr: np.ndarray, name: str) -> MetaTensor:
    return MetaTensor(
        torch.as_tensor(arr)[None], affine=torch.as_tensor(grid_affine(arr.ndim)), meta={"filename_or_obj": name}
    )


def corner_displacement(p: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest displacement (mm) by the homogeneous map ``p`` of the image's corners and centre."""
    sd = len(shape)
    a = to_nd(grid_affine(sd), sd)
    idx = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(sd, -1).T
    pts = np.vstack([idx, (np.array(shape) - 1) / 2.0])
    world = pts @ a[:sd, :sd].T + a[:sd, sd]
    moved = world @ p[:sd, :sd].T + p[:sd, sd]
    return float(np.linalg.norm(moved - world, axis=1).max())


def rotation_angle(lin: np.ndarray) -> float:
    u, _, vt = np.linalg.svd(lin)
    r = u @ vt
    if lin.shape[0] == 2:
        return abs(math.degrees(math.atan2(r[1, 0], r[0, 0])))
    return math.degrees(math.acos(np.clip((np.trace(r) - 1) / 2, -1, 1)))


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a).ravel(), np.asarray(b).ravel())[0, 1])


CASES = [(2, (64, 64)), (3, (32, 32, 32))]


@pytest.mark.parametrize("sd,shape", CASES)
def test_metatensor_to_sitk_geometry(sd, shape):
    x = meta_image(blobs(shape), "ref.nii.gz")
    img = metatensor_to_sitk(x)
    a = to_nd(grid_affine(sd), sd)
    flip = np.diag([-1.0, -1.0] + [1.0] * (sd - 1))  # RAS -> LPS: x and y change sign
    lps = flip @ a
    idx = [3, 5, 7][:sd]
    assert np.allclose(img.TransformIndexToPhysicalPoint(idx), lps[:sd, :sd] @ idx + lps[:sd, sd])
    assert img.GetSize() == shape
    assert img.GetPixel(idx) == pytest.approx(float(x[0][tuple(idx)]))


@pytest.mark.parametrize("sd,shape", CASES)
def test_rigid_recovers_known_rotation_and_translation(sd, shape):
    ref_np = blobs(shape)
    s = world_map(sd, shape, rotation(sd, 10.0), np.array([4.0, -3.0, 2.0][:sd]))
    mov_np = warp(ref_np, s)
    ref, mov = meta_image(ref_np, "/data/ref.nii.gz"), meta_image(mov_np, "/data/moving.nii.gz")

    out = RegisterToReference(ref, transform_type="rigid")(mov)

    rec = out.meta["registration"]
    t = np.array(rec["matrix"])
    residual = s @ t  # identity when T = S^-1
    assert rotation_angle(residual[:sd, :sd]) < ROT_TOL_DEG
    assert abs(rec["rotation_deg"] - 10.0) < ROT_TOL_DEG
    assert corner_displacement(residual, shape) < DISP_TOL_MM
    assert rec["metric_value"] < rec["initial_metric_value"]
    assert rec["reference"] == "/data/ref.nii.gz" and rec["transform_type"] == "rigid"
    assert len(rec["parameters_lps"]) == (3 if sd == 2 else 6)
    # output on the reference grid, with the reference affine, and matching the reference
    assert isinstance(out, MetaTensor) and out.shape == ref.shape and out.dtype == torch.float32
    assert torch.allclose(out.affine.double(), ref.affine.double())
    assert out.meta["filename_or_obj"] == "/data/moving.nii.gz"
    interior = tuple(slice(6, n - 6) for n in shape)  # away from the field-of-view edge
    assert ncc(mov_np[interior], ref_np[interior]) < 0.9
    assert ncc(out[0].numpy()[interior], ref_np[interior]) > NCC_MIN
    err_before = np.abs(mov_np - ref_np)[interior].mean()
    err_after = np.abs(out[0].numpy() - ref_np)[interior].mean()
    assert err_after < err_before / 5


@pytest.mark.parametrize("sd,shape", CASES)
@pytest.mark.parametrize("metric,scale_tol,disp_tol", [("mattes", 0.03, 1.0), ("correlation", 0.01, DISP_TOL_MM)])
def test_affine_recovers_scaling(sd, shape, metric, scale_tol, disp_tol):
    """Scaling 1.12/0.92/1.05 + 6 degrees + shift recovered: within 3 % and one voxel with Mattes MI (which is
    biased towards zooming in on these tiny smooth images), within 1 % and 0.5 mm with correlation."""
    ref_np = blobs(shape)
    linear = rotation(sd, 6.0) @ np.diag([1.12, 0.92, 1.05][:sd])
    s = world_map(sd, shape, linear, np.array([2.0, 1.5, -1.0][:sd]))
    mov_np = warp(ref_np, s)
    ref, mov = meta_image(ref_np, "ref.nii.gz"), meta_image(mov_np, "moving.nii.gz")

    out = RegisterToReference(ref, transform_type="affine", metric=metric)(mov)

    t = np.array(out.meta["registration"]["matrix"])
    residual = s @ t
    assert np.abs(residual[:sd, :sd] - np.eye(sd)).max() < scale_tol
    assert corner_displacement(residual, shape) < disp_tol
    interior = tuple(slice(6, n - 6) for n in shape)
    assert ncc(out[0].numpy()[interior], ref_np[interior]) > NCC_MIN
    # a rigid transform cannot absorb the scaling: the affine fit is better
    rigid = RegisterToReference(ref, transform_type="rigid", metric=metric)(mov)
    assert out.meta["registration"]["metric_value"] < rigid.meta["registration"]["metric_value"]


def test_deterministic_with_fixed_seed():
    shape = (32, 32, 32)
    ref_np = blobs(shape)
    mov_np = warp(ref_np, world_map(3, shape, rotation(3, 8.0, axis=2), np.array([3.0, 0.0, -2.0])))
    ref, mov = meta_image(ref_np, "ref.nii.gz"), meta_image(mov_np, "moving.nii.gz")
    a = RegisterToReference(ref, seed=3)(mov).meta["registration"]
    b = RegisterToReference(ref, seed=3)(mov).meta["registration"]
    assert a["parameters_lps"] == b["parameters_lps"] and a["metric_value"] == b["metric_value"]


def labels_of(ref_np: np.ndarray) -> np.ndarray:
    m = np.zeros(ref_np.shape, dtype=np.uint8)
    m[ref_np > 0.3] = 1
    m[ref_np > 0.8] = 2
    return m


@pytest.mark.parametrize("sd,shape", CASES)
def test_dict_variant_moves_mask_with_nearest_neighbour(sd, shape):
    ref_np = blobs(shape)
    s = world_map(sd, shape, rotation(sd, 10.0), np.array([4.0, -3.0, 2.0][:sd]))
    mov_np = warp(ref_np, s)
    ref_mask = labels_of(ref_np)
    mov_mask = warp(ref_mask, s, order=0).astype(np.uint8)
    data = {
        "image": meta_image(mov_np, "moving.nii.gz"),
        "mask": meta_image(mov_mask, "moving_seg.nii.gz"),
        "reference": meta_image(ref_np, "ref.nii.gz"),
    }

    out = RegisterToReferenced(["image"], reference_key="reference", mask_keys=["mask"])(data)

    mask = out["mask"]
    assert mask.dtype == torch.uint8 and mask.shape == (1, *shape)
    assert set(np.unique(mask.numpy())) <= {0, 1, 2}
    assert set(np.unique(mask.numpy())) == {0, 1, 2}
    fg_ref, fg_out = ref_mask > 0, mask[0].numpy() > 0
    dice = 2 * (fg_ref & fg_out).sum() / (fg_ref.sum() + fg_out.sum())
    assert dice > 0.9
    assert torch.allclose(mask.affine.double(), data["reference"].affine.double())
    assert mask.meta["registration"]["matrix"] == out["image"].meta["registration"]["matrix"]


def test_dict_variant_leaves_the_reference_unchanged():
    shape = (32, 32, 32)
    ref = meta_image(blobs(shape), "/data/sub-1/t0.nii.gz")
    data = {"image": ref.clone(), "reference": ref}
    data["image"].meta["filename_or_obj"] = "/data/sub-1/t0.nii.gz"
    out = RegisterToReferenced(["image"])(data)
    assert torch.equal(out["image"].as_tensor(), ref.as_tensor())
    assert out["image"].meta["registration"]["skipped"] == "is the reference"


def test_multi_sequence_and_fixed_reference_path(tmp_path):
    shape = (32, 32, 32)
    ref_np = blobs(shape)
    s = world_map(3, shape, rotation(3, 10.0, axis=2), np.array([-3.0, 4.0, 1.0]))
    t1, t2 = meta_image(ref_np, "t1.nii.gz"), meta_image(1.5 - warp(ref_np, s), "t2.nii.gz")  # inverted contrast
    out = RegisterToReferenced(["t1", "t2"], reference_key="t1")({"t1": t1, "t2": t2})
    assert out["t1"].meta["registration"]["skipped"] == "is the reference"
    residual = s @ np.array(out["t2"].meta["registration"]["matrix"])
    assert rotation_angle(residual[:3, :3]) < ROT_TOL_DEG and corner_displacement(residual, shape) < DISP_TOL_MM

    atlas = write_nifti(tmp_path / "atlas.nii.gz", ref_np, grid_affine(3))
    step = RegisterToReferenced(["image"], reference_key=None, reference=str(atlas))
    out = step({"image": meta_image(warp(ref_np, s), "moving.nii.gz")})
    assert out["image"].meta["registration"]["reference"] == str(atlas)
    residual = s @ np.array(out["image"].meta["registration"]["matrix"])
    assert corner_displacement(residual, shape) < DISP_TOL_MM


def test_records_collate_into_a_batch():
    shape = (32, 32, 32)
    ref_np = blobs(shape)
    items = []
    for deg in (5.0, 9.0):
        mov = meta_image(warp(ref_np, world_map(3, shape, rotation(3, deg), np.zeros(3))), f"m{deg}.nii.gz")
        items.append(RegisterToReferenced(["image"])({"image": mov, "reference": meta_image(ref_np, "r.nii.gz")}))
    batch = list_data_collate(items)
    assert batch["image"].shape == (2, 1, *shape)


def test_through_build_preprocessing(tmp_path):
    shape = (32, 32, 32)
    ref_np = blobs(shape)
    s = world_map(3, shape, rotation(3, 10.0, axis=1), np.array([4.0, 2.0, -3.0]))
    a = grid_affine(3)
    ref_path = write_nifti(tmp_path / "sub-1_t0.nii.gz", ref_np, a)
    mov_path = write_nifti(tmp_path / "sub-1_t1.nii.gz", warp(ref_np, s), a)
    mask_path = write_nifti(tmp_path / "sub-1_t1_seg.nii.gz", warp(labels_of(ref_np), s, order=0), a)
    entries = add_subject_reference(
        [
            {"image": str(mov_path), "mask": str(mask_path), "subject": "sub-1", "timepoint": 1},
            {"image": str(ref_path), "subject": "sub-1", "timepoint": 0},
        ]
    )
    assert [e["reference"] for e in entries] == [str(ref_path)] * 2

    chain = build_preprocessing(("image",), mask_key="mask", orientation=None, registration="rigid")
    out = chain(entries[0])
    rec = out["image"].meta["registration"]
    assert rotation_angle((s @ np.array(rec["matrix"]))[:3, :3]) < ROT_TOL_DEG
    assert corner_displacement(s @ np.array(rec["matrix"]), shape) < DISP_TOL_MM
    assert np.allclose(out["image"].affine.numpy(), a)
    assert out["mask"].dtype == torch.uint8 and set(np.unique(out["mask"].numpy())) <= {0, 1, 2}
    interior = (slice(6, 26),) * 3
    assert ncc(out["image"][0].numpy()[interior], ref_np[interior]) > NCC_MIN
    # the reference itself passes unchanged; registration is off by default
    same = chain(entries[1])
    assert same["image"].meta["registration"]["skipped"] == "is the reference"
    default = build_preprocessing(("image",), mask_key="mask", orientation=None)
    assert not any("Register" in type(t).__name__ for t in default.transforms)
    assert any("Register" in type(t).__name__ for t in chain.transforms)


def test_add_subject_reference_order_rules():
    entries = [
        {"image": "a2.nii.gz", "subject": "a", "acquisition_time": "2021-06-01"},
        {"image": "b1.nii.gz", "subject": "b"},
        {"image": "a1.nii.gz", "subject": "a", "acquisition_time": "2020-01-15"},
        {"image": "b2.nii.gz", "subject": "b"},
    ]
    out = add_subject_reference(entries)
    assert [e["reference"] for e in out] == ["a1.nii.gz", "b1.nii.gz", "a1.nii.gz", "b1.nii.gz"]
    assert "reference" not in entries[0]  # copies
    by_entry = add_subject_reference([{k: v for k, v in e.items() if k != "acquisition_time"} for e in entries])
    assert by_entry[0]["reference"] == "a2.nii.gz"
    with pytest.raises(ValueError, match="no 'subject'"):
        add_subject_reference([{"image": "x.nii.gz"}])
    with pytest.raises(ValueError, match="b1.nii.gz.*no 'acquisition_time'"):
        add_subject_reference(entries, order_key="acquisition_time")


def test_error_different_dimensionality_names_files():
    ref = meta_image(blobs((32, 32, 32)), "/data/ref3d.nii.gz")
    mov = meta_image(blobs((64, 64)), "/data/slice2d.png")
    with pytest.raises(ValueError, match=r"/data/slice2d\.png.*2D.*3D.*/data/ref3d\.nii\.gz.*dimensionality"):
        RegisterToReference(ref)(mov)
    with pytest.raises(ValueError, match=r"slice2d\.png.*dimensionality"):
        RegisterToReferenced(["image"])({"image": mov, "reference": ref})


def test_error_when_registration_fails_names_files():
    ref = meta_image(blobs((32, 32, 32)), "/data/ref.nii.gz")
    far = meta_image(blobs((32, 32, 32)), "/data/far.nii.gz")
    far.affine[:3, 3] += 1000.0  # no overlap and no centring
    with pytest.raises(
        RuntimeError, match=r"/data/far\.nii\.gz: registration .* to /data/ref\.nii\.gz failed.*overlap"
    ):
        RegisterToReference(ref, initializer=None)(far)
    const = meta_image(np.zeros((32, 32, 32), np.float32), "/data/empty.nii.gz")
    with pytest.raises(ValueError, match=r"/data/empty\.nii\.gz.*constant"):
        RegisterToReference(ref)(const)


def test_error_missing_reference_and_bad_settings(tmp_path):
    mov = meta_image(blobs((32, 32, 32)), "/data/moving.nii.gz")
    with pytest.raises(ValueError, match=r"/data/moving\.nii\.gz.*no reference"):
        RegisterToReferenced(["image"])({"image": mov})
    with pytest.raises(FileNotFoundError, match="missing_ref"):
        RegisterToReferenced(["image"])({"image": mov, "reference": str(tmp_path / "missing_ref.nii.gz")})
    with pytest.raises(ValueError, match="transform_type"):
        RegisterToReference(transform_type="bspline")
    with pytest.raises(ValueError, match="metric"):
        RegisterToReference(metric="ncc")
    with pytest.raises(ValueError, match="registration"):
        build_preprocessing(("image",), registration={"transform_typ": "rigid"})
