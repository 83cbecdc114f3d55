from __future__ import annotations

import numpy as np
import pytest
import torch

from medmonai.transforms.intensity import (
    CT_WINDOWS,
    MaskedNormalizeIntensityd,
    ct_window_range,
    denoise_transform,
    intensity_preset,
    normalization_transform,
)

HU = np.array([-2000.0, -1000.0, 0.0, 40.0, 80.0, 1000.0, 3000.0], dtype=np.float32)


def _apply(t, x, **extra):
    out = t({"image": torch.tensor(np.asarray(x, dtype=np.float32))[None], **extra})[
        "image"
    ]  # copy: MONAI works in place
    return np.asarray(out[0], dtype=np.float64)


def test_ct_windows_table():
    assert CT_WINDOWS["brain"] == (40, 80)
    assert CT_WINDOWS["lung"] == (-600, 1500)
    assert CT_WINDOWS["bone"] == (400, 1800)
    assert CT_WINDOWS["soft_tissue"] == CT_WINDOWS["abdomen"] == (40, 400)
    assert ct_window_range("brain") == (0.0, 80.0)
    assert ct_window_range(level=-600, width=1500) == (-1350.0, 150.0)


def test_ct_window_named_and_explicit():
    out = _apply(intensity_preset("image", "ct_window", window="brain"), HU)
    np.testing.assert_allclose(out, [0, 0, 0, 0.5, 1, 1, 1], atol=1e-6)
    out = _apply(intensity_preset("image", "ct_window", level=0, width=2000, output_range=(-1, 1)), HU)
    np.testing.assert_allclose(out, [-1, -1, 0, 0.04, 0.08, 1, 1], atol=1e-6)
    out = _apply(intensity_preset("image", "ct_window", window="Lung"), HU)  # case-insensitive
    np.testing.assert_allclose(out, np.clip((HU + 1350) / 1500, 0, 1), atol=1e-6)


def test_ct_clip_zscore_matches_nnunet_formula():
    lower, upper, mean, std = -900.0, 1200.0, 50.0, 300.0
    t = intensity_preset("image", "ct_clip_zscore", lower=lower, upper=upper, mean=mean, std=std)
    expected = (np.clip(HU, lower, upper) - mean) / std
    np.testing.assert_allclose(_apply(t, HU), expected, atol=1e-5)


def test_zscore_nonzero_and_all():
    x = np.array([0, 0, 1, 2, 3, 4], dtype=np.float32)
    out = _apply(intensity_preset("image", "zscore"), x)
    np.testing.assert_allclose(out, (x - x.mean()) / x.std(), atol=1e-5)
    out = _apply(intensity_preset("image", "zscore", nonzero=True), x)
    nz = x[2:]
    np.testing.assert_allclose(out[2:], (nz - nz.mean()) / nz.std(), atol=1e-5)
    assert np.all(out[:2] == 0)


def test_zscore_with_mask_key_uses_mask_statistics():
    x = np.array([10, 20, 1, 2, 3, 4], dtype=np.float32)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]], dtype=torch.uint8)
    t = intensity_preset("image", "zscore", mask_key="brain")
    assert isinstance(t, MaskedNormalizeIntensityd)
    out = _apply(t, x, brain=mask)
    fg = x[2:]
    np.testing.assert_allclose(out, (x - fg.mean()) / fg.std(), atol=1e-5)
    # without the mask in the data dict: statistics of the non-zero voxels
    out = _apply(t, x)
    np.testing.assert_allclose(out, (x - x.mean()) / x.std(), atol=1e-5)
    with pytest.raises(ValueError, match="spatial shape"):
        _apply(t, x, brain=torch.ones((1, 3)))


def test_percentile_scale255_none():
    x = np.linspace(-50, 250, 301).astype(np.float32)
    lo, hi = np.percentile(x, [1, 99])
    out = _apply(intensity_preset("image", "percentile", lower=1, upper=99), x)
    np.testing.assert_allclose(out, np.clip((x - lo) / (hi - lo), 0, 1), atol=1e-5)
    y = np.array([0, 51, 255], dtype=np.float32)
    np.testing.assert_allclose(_apply(intensity_preset("image", "scale255"), y), [0, 0.2, 1], atol=1e-6)
    np.testing.assert_allclose(_apply(intensity_preset("image", "none"), y), y)


def test_unknown_names_raise_listing_valid_ones():
    with pytest.raises(ValueError, match=r"unknown intensity preset 'foo'.*ct_window.*zscore"):
        intensity_preset("image", "foo")
    with pytest.raises(ValueError, match=r"unknown CT window 'kidney'.*brain.*lung"):
        intensity_preset("image", "ct_window", window="kidney")
    with pytest.raises(ValueError, match=r"unknown parameter.*'sigma'"):
        intensity_preset("image", "zscore", sigma=2)
    with pytest.raises(ValueError, match="missing"):
        intensity_preset("image", "ct_clip_zscore", lower=0, upper=1)
    with pytest.raises(ValueError, match="'preset'"):
        normalization_transform("image", {"window": "brain"})
    with pytest.raises(ValueError, match="gaussian.*median"):
        denoise_transform("image", method="bilateral")


def test_normalization_spec_forms():
    t = normalization_transform("image", {"preset": "ct_window", "window": "brain"})
    np.testing.assert_allclose(_apply(t, [40.0]), [0.5], atol=1e-6)
    np.testing.assert_allclose(_apply(normalization_transform("image", "scale255"), [255.0]), [1.0])
    np.testing.assert_allclose(_apply(normalization_transform("image", None), [7.0]), [7.0])


def test_usable_from_monai_bundle_config():
    from monai.bundle import ConfigParser

    cfg = {
        "t": {
            "_target_": "medmonai.transforms.intensity.intensity_preset",
            "keys": "image",
            "preset": "ct_window",
            "window": "brain",
        }
    }
    t = ConfigParser(cfg).get_parsed_content("t")
    np.testing.assert_allclose(_apply(t, [0.0, 40.0, 80.0]), [0, 0.5, 1], atol=1e-6)


def test_denoise_gaussian_and_median():
    rng = np.random.default_rng(0)
    img = np.full((1, 32, 32), 100.0, dtype=np.float32) + rng.normal(0, 10, (1, 32, 32)).astype(np.float32)
    out = denoise_transform("image", "gaussian", sigma=1.5)({"image": torch.as_tensor(img)})["image"]
    inner = (slice(None), slice(4, -4), slice(4, -4))
    assert float(out[inner].std()) < 0.4 * float(img[inner].std())
    assert abs(float(out[inner].mean()) - 100.0) < 2.0
    spike = np.zeros((1, 9, 9), dtype=np.float32)
    spike[0, 4, 4] = 1000.0
    out = denoise_transform("image", "median", radius=1)({"image": torch.as_tensor(spike)})["image"]
    assert float(out.max()) == 0.0  # an isolated outlier is removed by a 3x3 median
