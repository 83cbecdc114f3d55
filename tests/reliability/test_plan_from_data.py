"""Issue 21, items 2, 5 and 6: the plan decides from the data, never silently against it.

- colour images keep their colour (``in_channels`` 3), grey data stays grey, alpha is dropped with a reason, and
  ImageNet transfer gets the right input mapping without a hand-set ``input_affine``;
- CT intensity statistics leave the padding outside the scan circle out (DICOM ``PixelPaddingValue``, or the
  out-of-field constant in DICOM without the tag and in NIfTI);
- a plan whose input size would centre-crop most of the field of view coarsens the spacing instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from pydicom.uid import generate_uid

from benchmarks.medmnist import DeepFeatures
from medmonai.data.datalist import make_datalist, write_datalist
from medmonai.data.fingerprint import compute_fingerprint, fingerprint_datalist, plan_from_fingerprint
from medmonai.transforms.preprocessing import build_preprocessing
from tests.data.dicom_factory import write_slice
from tests.reliability._bundle import make_phantoms, run_in_process
from tests.transforms._helpers import write_nifti, write_png

# ----------------------------------------------------------------------------------------------- colour (item 2)

# the two tints have the same grey value (ITU-R 601 luma, PIL "L"): the class is only in the colour
_TINT = {0: np.array([40.0, -20.38, 0.0]), 1: np.array([-40.0, 20.38, 0.0])}  # 0.299 * 40 = 0.587 * 20.38


def _rgb_image(label: int, rng: np.random.Generator, size: int = 24) -> np.ndarray:
    grey = rng.uniform(90, 160, size=(size, size, 1))
    return np.clip(np.round(grey + _TINT[label] * rng.uniform(0.8, 1.2)), 0, 255).astype(np.uint8)


def _rgb_datalist(folder: Path, n_train: int = 16, n_test: int = 4, grey_too: int = 0) -> Path:
    """Tiny RGB PNG set: class 0 red-tinted, class 1 green-tinted, equal grey value; ``grey_too`` grey images."""
    rng = np.random.default_rng(0)
    splits: dict[str, list[dict]] = {"training": [], "test": []}
    for split, n in (("training", n_train), ("test", n_test)):
        for i in range(n):
            label = i % 2
            px = _rgb_image(label, rng)
            if split == "training" and i < grey_too:
                px = px.mean(axis=2).astype(np.uint8)  # a grey image in the set
            path = write_png(folder / split / f"{split}_{i:03d}.png", px)
            splits[split].append({"image": str(path), "label": label, "subject": f"{split}_{i}"})
    return write_datalist(folder / "datalist.json", make_datalist(splits, classes=["red", "green"]))


def test_rgb_data_plans_three_channels_and_keeps_the_colour(tmp_path):
    datalist = _rgb_datalist(tmp_path)
    plan = fingerprint_datalist(datalist, progress=False)["plan"]
    assert plan["in_channels"] == 3 and plan["channels"] == 3, plan["reasons"]
    assert any("colour" in r and "in_channels 3" in r for r in plan["reasons"])
    # the preprocessed images still carry the class signal (red minus green channel), which grey would remove
    pre = build_preprocessing("image", plan=plan)
    entries = json.loads(datalist.read_text())["training"]
    diffs = {0: [], 1: []}
    for e in entries:
        x = pre({"image": str(tmp_path / e["image"])})["image"]
        assert x.shape[0] == 3
        diffs[e["label"]].append(float((x[0] - x[1]).mean()))
    assert min(diffs[0]) > max(diffs[1])


def test_mixed_grey_and_rgb_replicates_grey_to_three_channels(tmp_path):
    datalist = _rgb_datalist(tmp_path, grey_too=3)
    result = fingerprint_datalist(datalist, progress=False)
    plan = result["plan"]
    assert result["fingerprint"]["channels"] == {"1": 3, "3": 13}
    assert plan["in_channels"] == 3 and any("replicated to 3 channels" in r for r in plan["reasons"])
    grey = Path(datalist).parent / json.loads(Path(datalist).read_text())["training"][0]["image"]
    x = build_preprocessing("image", plan=plan)({"image": str(grey)})["image"]
    assert x.shape[0] == 3 and torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])


def test_grey_stored_as_rgb_is_planned_grey_and_alpha_is_reported(tmp_path):
    rng = np.random.default_rng(1)
    entries = []
    for i in range(4):
        g = rng.integers(0, 256, size=(16, 16), dtype=np.uint8)
        alpha = np.full_like(g, 255)
        alpha[:4] = 255 if i else 0  # one image partly transparent
        rgba = np.stack([g, g, g, alpha], axis=-1)
        entries.append({"image": str(write_png(tmp_path / f"g{i}.png", rgba)), "label": i % 2})
    plan = plan_from_fingerprint(compute_fingerprint(entries, progress=False))
    assert plan["in_channels"] == 1 and plan["channels"] == 1, plan["reasons"]
    assert any("R = G = B" in r for r in plan["reasons"])
    alpha = [r for r in plan["reasons"] if r.startswith("alpha")]
    assert alpha and "4 image(s)" in alpha[0] and "1 of them not fully constant" in alpha[0] and "dropped" in alpha[0]
    x = build_preprocessing("image", plan=plan)({"image": entries[1]["image"]})["image"]
    assert x.shape[0] == 1


def _first_conv_in_channels(state: dict[str, torch.Tensor]) -> int:
    return next(int(v.shape[1]) for k, v in state.items() if k.endswith("weight") and v.ndim == 4)


def test_the_bundle_trains_with_three_input_channels_on_rgb_data(tmp_path):
    datalist = _rgb_datalist(tmp_path / "data")
    run_in_process(tmp_path, str(datalist), max_epochs=1, patience=1)
    state = torch.load(tmp_path / "runs" / "checkpoints" / "model.pt", map_location="cpu", weights_only=True)
    assert _first_conv_in_channels(state) == 3
    fp = json.loads((tmp_path / "runs" / "fingerprint.json").read_text())
    assert fp["plan"]["in_channels"] == 3


def test_grey_phantoms_still_train_with_one_channel(tmp_path):
    datalist = make_phantoms(tmp_path / "data")
    plan = fingerprint_datalist(datalist, progress=False)["plan"]
    assert plan["in_channels"] == 1 and plan["channels"] is None
    assert plan["size_mode"] == "crop_pad" and not any("coarsened" in r for r in plan["reasons"])


def test_imagenet_transfer_input_mapping_follows_the_plan(tmp_path):
    datalist = _rgb_datalist(tmp_path / "data")
    cfg = Path(__file__).resolve().parents[2] / "bundles" / "classification" / "configs"
    parser = ConfigParser()
    parser.read_config(str(cfg / "train.yaml"))
    parser.read_meta(str(cfg / "metadata.json"))
    parser.update({"bundle_root": str(tmp_path), "datalist": str(datalist)})
    parser.update({"network_name": "efficientnet_lite0", "pretrained": "imagenet"})
    net = parser.get_parsed_content("network_def")
    # RGB 8-bit data: scale255 to [0, 1], mapped onto the weights' [-1, 1] without a hand-set input_affine
    assert net.in_channels == 3 and net.backbone._conv_stem.weight.shape[1] == 3
    assert (net.input_scale, net.input_shift) == pytest.approx((2.0, -1.0))
    # CT-like z-scored inputs: their exact clip range goes to [-1, 1]
    parser.update(
        {"normalization": {"preset": "ct_clip_zscore", "lower": -1000, "upper": 400, "mean": -300, "std": 350}}
    )
    net = parser.get_parsed_content("network_def", lazy=False)
    lo, hi = (-1000 + 300) / 350, (400 + 300) / 350
    assert lo * net.input_scale + net.input_shift == pytest.approx(-1.0)
    assert hi * net.input_scale + net.input_shift == pytest.approx(1.0)
    # an explicit mapping still wins, and networks without ImageNet weights get none
    parser.update({"input_affine": [1.0, 0.0]})
    assert parser.get_parsed_content("network_def", lazy=False).input_scale == 1.0
    parser.update({"input_affine": "auto", "network_name": "small_cnn", "pretrained": None})
    net = parser.get_parsed_content("network_def", lazy=False)
    assert (net.input_scale, net.input_shift) == (1.0, 0.0)


def test_medmnist_deep_features_follow_the_data_channels(tmp_path):
    datalist = _rgb_datalist(tmp_path / "data", n_train=4, n_test=2)
    raw = json.loads(datalist.read_text())
    raw["validation"] = raw["test"]
    datalist.write_text(json.dumps(raw))
    df = DeepFeatures(datalist, size=32, work=tmp_path / "work")
    assert df.in_channels == 3  # was a hard-coded 1 (colour made grey)
    assert df.features["training"].shape == (4, 1280)


# ---------------------------------------------------------------------------------------------- CT padding (item 5)

_SHAPE, _SPACING = (64, 64, 4), (0.8, 0.8, 2.5)


def _padded_ct(rng: np.random.Generator) -> np.ndarray:
    """HU volume [i, j, k]: air (-1000 +- 15) and a soft-tissue body inside a scan circle, -3024 outside it."""
    i, j = np.meshgrid(np.arange(_SHAPE[0]), np.arange(_SHAPE[1]), indexing="ij")
    r = np.hypot(i - 31.5, j - 31.5)
    vol = np.empty(_SHAPE, np.float64)
    for k in range(_SHAPE[2]):
        sl = rng.normal(-1000, 15, size=r.shape)
        body = ((i - 31.5) / 22) ** 2 + ((j - 31.5) / 16) ** 2 <= 1
        sl[body] = rng.normal(40, 30, size=int(body.sum()))
        sl[r > 30] = -3024
        vol[..., k] = sl
    return np.round(vol).astype(np.int16)


def _write_ct_dicom(folder: Path, hu: np.ndarray, padding_tag: bool) -> Path:

    intercept = -1024.0
    stored = (hu - intercept).astype(np.int16)  # -3024 HU is stored as -2000
    extra = {"PixelPaddingValue": int(-3024 - intercept)} if padding_tag else None
    series = generate_uid()
    for k in range(hu.shape[2]):
        write_slice(
            folder / f"s{k:03d}.dcm", np.ascontiguousarray(stored[:, :, k].T), series_uid=series,
            position=(0.0, 0.0, k * _SPACING[2]), pixel_spacing=(_SPACING[1], _SPACING[0]), slope=1.0,
            intercept=intercept, instance_number=k + 1, thickness=_SPACING[2], modality="CT", extra=extra,
        )  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def padded_ct_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("padded_ct")
    rng = np.random.default_rng(0)
    vols = [_padded_ct(rng) for _ in range(3)]
    aff = np.diag([*_SPACING, 1.0])
    return {
        "dicom with PixelPaddingValue": [
            {"image": str(_write_ct_dicom(root / f"tag{n}", v, True))} for n, v in enumerate(vols)
        ],
        "dicom without PixelPaddingValue": [
            {"image": str(_write_ct_dicom(root / f"notag{n}", v, False))} for n, v in enumerate(vols)
        ],
        "nifti": [
            {"image": str(write_nifti(root / f"ct{n}.nii.gz", v, aff)), "modality": "CT"} for n, v in enumerate(vols)
        ],
    }


@pytest.mark.parametrize("kind", ["dicom with PixelPaddingValue", "dicom without PixelPaddingValue", "nifti"])
def test_ct_statistics_exclude_the_padding(padded_ct_sets, kind):
    fp = compute_fingerprint(padded_ct_sets[kind], progress=False)
    plan = plan_from_fingerprint(fp)
    norm = plan["normalization"]
    assert norm["preset"] == "ct_clip_zscore"
    assert -1100 < norm["lower"] < -950, plan["reasons"]  # air, not the -3024 padding
    assert -1000 < norm["mean"] < 0 and norm["std"] < 700  # not dominated by the padding
    why = [r for r in plan["reasons"] if r.startswith("padding excluded")]
    assert why and "3 of 3 images" in why[0] and "-3024 HU" in why[0]
    source = "DICOM PixelPaddingValue" if kind == "dicom with PixelPaddingValue" else "out-of-field constant"
    assert source in why[0]
    rec = fp["images"][0]
    assert rec["intensity_all"]["min"] == -3024 and rec["intensity_in_field"]["min"] > -1200


def test_ct_without_padding_excludes_nothing(tmp_path):
    rng = np.random.default_rng(3)
    vol = _padded_ct(rng)
    vol[vol == -3024] = np.round(rng.normal(-1000, 15, size=int((vol == -3024).sum())))
    entries = [{"image": str(write_nifti(tmp_path / "ct.nii.gz", vol, np.diag([*_SPACING, 1.0]))), "modality": "CT"}]
    plan = plan_from_fingerprint(compute_fingerprint(entries, progress=False))
    assert not any(r.startswith("padding") for r in plan["reasons"])
    assert plan["normalization"]["lower"] < -1000  # the air noise below -1000 is real data and stays


# ----------------------------------------------------------------------------------------- field of view (item 6)


def _fake_ct_fp(shape, spacing, n=5):
    return {
        "spatial_dims": len(shape),
        "images": [{"shape": list(shape), "spacing": list(spacing)} for _ in range(n)],
        "modality_counts": {"CT": n},
        "channels": {"1": n},
        "nonzero_bbox_fraction": {"median": 1.0},
        "intensity": {"percentile_00_5": -1000.0, "percentile_99_5": 400.0, "mean": -300.0, "std": 400.0,
                      "source": "in-field voxels"},
    }  # fmt: skip


@pytest.mark.parametrize(("shape", "spacing"), [((512, 512, 300), (0.76, 0.76, 1.25)), ((512, 512), (0.76, 0.76))])
def test_a_large_ct_keeps_its_whole_field_of_view(shape, spacing):
    plan = plan_from_fingerprint(_fake_ct_fp(shape, spacing), max_patch_voxels=128**3 if len(shape) == 3 else 128**2)
    fov = np.asarray(shape) * np.asarray(spacing)
    kept = np.asarray(plan["spatial_size"]) * np.asarray(plan["target_spacing"])
    assert np.all(kept >= 0.97 * fov), (kept, fov, plan["reasons"])  # today: 128 * 0.76 = 97 of 389 mm
    assert np.prod(plan["spatial_size"]) <= (128**3 if len(shape) == 3 else 128**2)
    assert any("coarsened" in r and "centre-crop" in r for r in plan["reasons"])


def test_a_small_crop_is_still_a_crop():
    # 300 x 300 at 1 mm with a 256**2 budget: the crop keeps 85 % per axis (72 % of the area), no resampling
    plan = plan_from_fingerprint(_fake_ct_fp((300, 300), (1.0, 1.0)))
    assert plan["target_spacing"] == [1.0, 1.0] and plan["spatial_size"] == [256, 256]
    assert any("centre-cropped" in r for r in plan["reasons"])
