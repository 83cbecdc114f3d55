"""Intensity normalization presets and denoising, as thin wrappers over MONAI dictionary transforms.

Every preset returns one MONAI ``MapTransform`` so that it can be used directly in a MONAI bundle config::

    - _target_: medmonai.transforms.intensity.intensity_preset
      keys: image
      preset: ct_window
      window: lung

Presets (parameters in brackets):

- ``ct_window`` [``window`` name from :data:`CT_WINDOWS` or ``level``/``width``; ``output_range`` (0, 1) or
  (-1, 1)]: clip to ``[level - width/2, level + width/2]`` and scale linearly to the output range
  (:class:`~monai.transforms.ScaleIntensityRanged`).
- ``ct_clip_zscore`` [``lower``, ``upper``, ``mean``, ``std``]: nnU-Net ``CTNormalization``: clip to the dataset's
  foreground 0.5/99.5 percentiles, then ``(x - mean) / std`` with the dataset's foreground mean/std. Both steps are
  linear-then-clip, so they are done by one :class:`~monai.transforms.ScaleIntensityRanged` mapping ``lower`` to
  ``(lower - mean) / std`` and ``upper`` to ``(upper - mean) / std`` with clipping.
- ``zscore`` [``nonzero``, ``channel_wise``, ``mask_key``]: per-image z-score
  (:class:`~monai.transforms.NormalizeIntensityd`); with ``mask_key``, mean/std come from the voxels where that
  mask is > 0 (:class:`MaskedNormalizeIntensityd`).
- ``percentile`` [``lower``, ``upper`` percentiles, ``output_range``, ``clip``, ``channel_wise``]: per-image
  percentile scaling (:class:`~monai.transforms.ScaleIntensityRangePercentilesd`).
- ``scale255`` []: 8-bit 0..255 to 0..1.
- ``none`` []: identity.

:func:`normalized_range` gives the range a preset maps the data to (used to derive the input mapping of pretrained
networks).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    GaussianSmoothd,
    Identityd,
    MapTransform,
    MedianSmoothd,
    NormalizeIntensityd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
)
from monai.utils import ensure_tuple

__all__ = [
    "CT_WINDOWS",
    "PRESETS",
    "ZSCORE_NOMINAL_RANGE",
    "ct_window_range",
    "intensity_preset",
    "normalization_transform",
    "normalized_range",
    "denoise_transform",
    "MaskedNormalizeIntensityd",
]

#: Named CT windows as (level, width) in HU.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "temporal_bone": (600.0, 2800.0),
    "head_soft_tissue": (60.0, 380.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "bone": (400.0, 1800.0),
    "spine_soft_tissue": (40.0, 250.0),
    "angio": (300.0, 600.0),
}

#: Valid preset names and the parameters each accepts.
PRESETS: dict[str, tuple[str, ...]] = {
    "ct_window": ("window", "level", "width", "output_range"),
    "ct_clip_zscore": ("lower", "upper", "mean", "std"),
    "zscore": ("nonzero", "channel_wise", "mask_key"),
    "percentile": ("lower", "upper", "output_range", "clip", "channel_wise"),
    "scale255": (),
    "none": (),
}


def ct_window_range(
    window: str | None = None, level: float | None = None, width: float | None = None
) -> tuple[float, float]:
    """Return the HU range ``(low, high)`` of a named window or of ``level``/``width``.

    Raises:
        ValueError: for an unknown window name (the message lists the valid ones) or a missing/invalid width.
    """
    if window is not None:
        name = str(window).lower().replace("-", "_").replace(" ", "_")
        if name not in CT_WINDOWS:
            raise ValueError(f"unknown CT window {window!r}; valid windows: {sorted(CT_WINDOWS)}")
        level, width = CT_WINDOWS[name]
    if level is None or width is None:
        raise ValueError("ct_window needs a 'window' name or both 'level' and 'width'")
    if float(width) <= 0:
        raise ValueError(f"CT window width must be > 0, got {width}")
    return float(level) - float(width) / 2.0, float(level) + float(width) / 2.0


def _output_range(value: Any) -> tuple[float, float]:
    lo, hi = (float(v) for v in ensure_tuple(value))
    if not hi > lo:
        raise ValueError(f"output_range must be (low, high) with high > low, got {value!r}")
    return lo, hi


class MaskedNormalizeIntensityd(MapTransform):
    """Z-score the image keys with mean/std computed over the voxels where ``mask_key`` is > 0.

    All voxels are normalized with those statistics (the background is not zeroed). When the mask is absent from
    the data dict or empty, the statistics of the non-zero voxels are used instead (MONAI ``nonzero=True``
    behaviour, applied to all voxels).

    Args:
        keys: image keys.
        mask_key: key of a mask with the same spatial shape as the images (one channel, broadcast over channels).
        channel_wise: separate statistics per channel.
        allow_missing_keys: do not fail when an image key is absent.
        eps: lower bound of the standard deviation.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str,
        channel_wise: bool = True,
        allow_missing_keys: bool = False,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.channel_wise = channel_wise
        self.eps = eps

    def _normalize(self, img: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        vals = img[sel] if sel.any() else img[img != 0]
        if vals.numel() == 0:
            vals = img.reshape(-1)
        vals = vals.double()
        mean, std = vals.mean(), vals.std(unbiased=False)
        return ((img.double() - mean) / torch.clamp(std, min=self.eps)).to(img.dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Normalize every image key of ``data``."""
        d = dict(data)
        mask = d.get(self.mask_key)
        for key in self.key_iterator(d):
            img = d[key]
            t = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
            if not t.is_floating_point():
                t = t.float()
            if mask is None:
                sel = t != 0
            else:
                m = torch.as_tensor(mask, device=t.device) > 0
                if m.shape[1:] != t.shape[1:]:
                    raise ValueError(
                        f"mask '{self.mask_key}' spatial shape {tuple(m.shape[1:])} differs from "
                        f"'{key}' spatial shape {tuple(t.shape[1:])}"
                    )
                sel = m.any(dim=0, keepdim=True).expand_as(t) if m.shape[0] != t.shape[0] else m
            out = t.clone()
            if self.channel_wise:
                for c in range(t.shape[0]):
                    out[c] = self._normalize(t[c], sel[c])
            else:
                out = self._normalize(t, sel)
            d[key] = out
        return d


def intensity_preset(
    keys: KeysCollection, preset: str = "none", allow_missing_keys: bool = False, **params: Any
) -> MapTransform:
    """Build the intensity normalization transform of a named preset (see the module docstring).

    Args:
        keys: image keys to normalize (not masks).
        preset: one of :data:`PRESETS`.
        allow_missing_keys: do not fail when a key is absent.
        params: the preset's parameters, e.g. ``window="lung"`` or ``lower=-1000, upper=400, mean=50, std=300``.

    Returns:
        One MONAI ``MapTransform``.

    Raises:
        ValueError: for an unknown preset, window or parameter (the message lists the valid names) or a missing
            required parameter.
    """
    name = str(preset).lower()
    if name not in PRESETS:
        raise ValueError(f"unknown intensity preset {preset!r}; valid presets: {sorted(PRESETS)}")
    unknown = sorted(set(params) - set(PRESETS[name]))
    if unknown:
        raise ValueError(f"preset {name!r} got unknown parameter(s) {unknown}; valid: {list(PRESETS[name])}")

    if name == "ct_window":
        lo, hi = ct_window_range(params.get("window"), params.get("level"), params.get("width"))
        b_min, b_max = _output_range(params.get("output_range", (0.0, 1.0)))
        return ScaleIntensityRanged(
            keys, a_min=lo, a_max=hi, b_min=b_min, b_max=b_max, clip=True, allow_missing_keys=allow_missing_keys
        )
    if name == "ct_clip_zscore":
        missing = [p for p in PRESETS[name] if params.get(p) is None]
        if missing:
            raise ValueError(f"preset 'ct_clip_zscore' needs {list(PRESETS[name])}; missing {missing}")
        lower, upper, mean, std = (float(params[p]) for p in PRESETS[name])
        if not upper > lower:
            raise ValueError(f"ct_clip_zscore: upper ({upper}) must be > lower ({lower})")
        std = max(std, 1e-8)
        return ScaleIntensityRanged(
            keys,
            a_min=lower,
            a_max=upper,
            b_min=(lower - mean) / std,
            b_max=(upper - mean) / std,
            clip=True,
            allow_missing_keys=allow_missing_keys,
        )
    if name == "zscore":
        channel_wise = bool(params.get("channel_wise", True))
        if params.get("mask_key"):
            return MaskedNormalizeIntensityd(
                keys, mask_key=params["mask_key"], channel_wise=channel_wise, allow_missing_keys=allow_missing_keys
            )
        return NormalizeIntensityd(
            keys,
            nonzero=bool(params.get("nonzero", False)),
            channel_wise=channel_wise,
            allow_missing_keys=allow_missing_keys,
        )
    if name == "percentile":
        b_min, b_max = _output_range(params.get("output_range", (0.0, 1.0)))
        lower, upper = float(params.get("lower", 0.5)), float(params.get("upper", 99.5))
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"percentile: need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
        return ScaleIntensityRangePercentilesd(
            keys,
            lower=lower,
            upper=upper,
            b_min=b_min,
            b_max=b_max,
            clip=bool(params.get("clip", True)),
            channel_wise=bool(params.get("channel_wise", True)),
            allow_missing_keys=allow_missing_keys,
        )
    if name == "scale255":
        return ScaleIntensityRanged(
            keys, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=False, allow_missing_keys=allow_missing_keys
        )
    return Identityd(keys, allow_missing_keys=allow_missing_keys)


def normalization_transform(
    keys: KeysCollection, normalization: str | Mapping[str, Any] | None, allow_missing_keys: bool = False
) -> MapTransform:
    """Build :func:`intensity_preset` from a spec: a preset name, ``{"preset": name, **params}``, or None (none).

    This is the form used by preprocessing plans (``plan["normalization"]``).
    """
    if normalization is None:
        return intensity_preset(keys, "none", allow_missing_keys=allow_missing_keys)
    if isinstance(normalization, str):
        return intensity_preset(keys, normalization, allow_missing_keys=allow_missing_keys)
    spec = dict(normalization)
    if "preset" not in spec:
        raise ValueError(f"normalization spec needs a 'preset' key, got {spec!r}; valid presets: {sorted(PRESETS)}")
    preset = spec.pop("preset")
    return intensity_preset(keys, preset, allow_missing_keys=allow_missing_keys, **spec)


#: Nominal range of per-image z-scored intensities used by :func:`normalized_range` (mean 0, +-2 std).
ZSCORE_NOMINAL_RANGE: tuple[float, float] = (-2.0, 2.0)


def normalized_range(normalization: str | Mapping[str, Any] | None) -> tuple[float, float] | None:
    """The intensity range a normalization spec maps the data to (what the network sees), or None if unknown.

    - ``scale255``: ``(0, 1)``; ``ct_window`` / ``percentile``: their ``output_range`` (default ``(0, 1)``);
    - ``ct_clip_zscore``: ``((lower - mean) / std, (upper - mean) / std)``, exactly the clipped range;
    - ``zscore``: nominal :data:`ZSCORE_NOMINAL_RANGE` ``(-2, 2)`` (mean 0, +-2 standard deviations);
    - ``none`` / None: None (the stored range is unknown here).

    Used to derive the input mapping of pretrained networks (``input_affine="auto"`` of
    :func:`medmonai.networks.factory.build_network`).

    Raises:
        ValueError: for an unknown preset or invalid parameters.
    """
    if normalization is None:
        return None
    spec: dict[str, Any] = {"preset": normalization} if isinstance(normalization, str) else dict(normalization)
    name = str(spec.get("preset", "none")).lower()
    if name not in PRESETS:
        raise ValueError(f"unknown intensity preset {name!r}; valid presets: {sorted(PRESETS)}")
    if name == "scale255":
        return (0.0, 1.0)
    if name in ("ct_window", "percentile"):
        return _output_range(spec.get("output_range", (0.0, 1.0)))
    if name == "ct_clip_zscore":
        missing = [p for p in PRESETS[name] if spec.get(p) is None]
        if missing:
            raise ValueError(f"preset 'ct_clip_zscore' needs {list(PRESETS[name])}; missing {missing}")
        lower, upper, mean, std = (float(spec[p]) for p in PRESETS[name])
        std = max(std, 1e-8)
        return ((lower - mean) / std, (upper - mean) / std)
    if name == "zscore":
        return ZSCORE_NOMINAL_RANGE
    return None


def denoise_transform(
    keys: KeysCollection,
    method: str = "gaussian",
    sigma: float | Sequence[float] = 1.0,
    radius: int = 1,
    allow_missing_keys: bool = False,
) -> MapTransform:
    """Edge-unaware denoising filter.

    Args:
        keys: image keys.
        method: ``"gaussian"`` (:class:`~monai.transforms.GaussianSmoothd`, ``sigma`` in voxels, scalar or per
            axis) or ``"median"`` (:class:`~monai.transforms.MedianSmoothd`, ``radius`` in voxels).
        sigma: Gaussian standard deviation (voxels).
        radius: median filter radius (voxels).
        allow_missing_keys: do not fail when a key is absent.

    Raises:
        ValueError: for an unknown method or a non-positive size.
    """
    m = str(method).lower()
    if m == "gaussian":
        if any(float(s) <= 0 for s in ensure_tuple(sigma)):
            raise ValueError(f"gaussian denoising needs sigma > 0, got {sigma!r}")
        return GaussianSmoothd(keys, sigma=sigma, allow_missing_keys=allow_missing_keys)
    if m == "median":
        if int(radius) < 1:
            raise ValueError(f"median denoising needs radius >= 1, got {radius!r}")
        return MedianSmoothd(keys, radius=int(radius), allow_missing_keys=allow_missing_keys)
    raise ValueError(f"unknown denoise method {method!r}; valid methods: ['gaussian', 'median']")
