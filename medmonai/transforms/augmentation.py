"""Classical data augmentation presets for 2D images and 3D volumes, as MONAI dictionary transforms.

:func:`augmentation_preset` returns a list of MONAI random dictionary transforms for a named strength level
(:data:`LEVELS`: ``none``, ``light``, ``medium``, ``strong``). Every parameter of every level is in the one table
below (:data:`LEVELS`); a single value can be overridden per call (``augmentation_preset("medium", 2,
rotate_deg=10)``).

=============  ======================  ======  ==================  ==========  =====================
level          mirroring               affine  rotation / shear /   elastic    intensity (p each)
                                       p       scaling (per axis)   p
=============  ======================  ======  ==================  ==========  =====================
``none``       --                      --      --                   --          --
``light``      axis 0, p 0.5           0.5     ±15° / 0 / ±10 %     --          --
``medium``     axis 0, p 0.5           0.6     ±20° / ±0.1 / ±15 %  0.1         contrast ±10 % (0.3),
                                                                                gamma 0.8-1.25 (0.3),
                                                                                brightness ±0.1 (0.3),
                                                                                noise σ 0.02 (0.15),
                                                                                blur σ 0.25-0.75 (0.1)
``strong``     every axis, p 0.5 each  0.8     ±30° / ±0.2 / ±25 %  0.3         contrast ±25 % (0.5),
                                                                                gamma 0.7-1.5 (0.5),
                                                                                brightness ±0.2 (0.5),
                                                                                noise σ 0.05 (0.3),
                                                                                blur σ 0.5-1.25 (0.2)
``nnunet``     every axis, p 0.5 each  0.2     ±30° (2D ±180°) /   --          contrast ±25 % (0.15),
                                               0 / -30 .. +40 %                 gamma 0.7-1.5 (0.3),
                                                                                noise σ 0.1 (0.1),
                                                                                blur σ 0.5-1 (0.2)
=============  ======================  ======  ==================  ==========  =====================

``nnunet`` is nnU-Net's default augmentation (the segmentation bundle's default): its affine pads with zeros instead
of replicating the border, and with ``anisotropic_axis`` (3D data whose spacing along one axis is much coarser) the
3D rotation turns about that axis only, in the plane of the two finer axes.

MONAI transforms used, in this order: ``RandFlipd`` (mirroring), ``RandAffined`` (rotation, shear, scaling in one
resampling), ``Rand2DElasticd`` / ``Rand3DElasticd`` (local warping), ``RandScaleIntensityd`` (contrast: multiply by
``1 + U(-c, c)``), ``RandAdjustContrastd`` (gamma), ``RandShiftIntensityd`` (brightness: add ``U(-b, b)``),
``RandGaussianSmoothd`` (blur), ``RandGaussianNoised`` (noise). ``light`` is the augmentation the classification
bundles used before the presets existed (flip of axis 0, rotation ±15°, scaling ±10 %, p = 0.5).

Units: angles in degrees, shear as the affine shear factor, scaling as a fraction (±0.1 = 0.9 .. 1.1, drawn per
axis), elastic displacements in pixels/voxels, blur σ in pixels/voxels. Brightness offsets and the noise σ are
absolute intensities, so they assume normalised images (scaled to [0, 1], or z-scored) as produced by the
preprocessing plans; contrast, gamma and the spatial transforms do not depend on the intensity scale.

Masks (``label_keys``) get exactly the same spatial transforms as the images (MONAI dictionary transforms draw one
set of random parameters per call for all their keys) with nearest-neighbour interpolation, no intensity transform,
and are cast back to ``label_dtype`` at the end (resampling makes them float32), so every sample of a batch has the
same mask dtype. Padding (outside the field of view after rotation/scaling) replicates the border (``nnunet``: zeros),
for images and masks alike.

Reproducibility: in a training chain, ``monai.utils.set_determinism(seed)`` makes the draws reproducible (MONAI's
``Compose`` seeds its random transforms from the global seed when it is built, and MONAI's ``DataLoader`` re-seeds
the dataset's transforms from torch's generator). ``seed`` seeds the returned transforms directly, for use without
a ``Compose``/``DataLoader`` around them (as in :func:`preview_grid`); note that wrapping them in a new ``Compose``
re-seeds them from the global seed.

:func:`save_augmentation_preview` renders a PNG grid (rows = images, columns = the original and augmented draws) of a
preset applied to the images of a datalist (``medmonai augment-preview``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from monai.config import KeysCollection
from monai.transforms import (
    CastToTyped,
    Compose,
    Rand2DElasticd,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    apply_transform,
)
from monai.utils import ensure_tuple

from medmonai.data.datalist import load_datalist
from medmonai.transforms.preprocessing import build_preprocessing
from medmonai.utils import PathLike, atomic_write

__all__ = ["AugmentationLevel", "LEVELS", "augmentation_preset", "preview_grid", "save_augmentation_preview"]


@dataclass(frozen=True)
class AugmentationLevel:
    """The parameters of one augmentation strength level (see the table in the module docstring).

    Attributes:
        flip_prob: probability of mirroring, per flipped axis.
        flip_axes: spatial axes to mirror; None: every axis.
        affine_prob: probability of the affine transform (rotation + shear + scaling, one resampling).
        rotate_deg: rotation range ±degrees (2D: in plane; 3D: about each axis).
        rotate_deg_2d: 2D rotation range ±degrees; None: ``rotate_deg``.
        shear: shear factor range ±value (each shear term).
        scale: scaling range, drawn per axis: ±fraction, or ``(low, high)`` fractions (``(-0.3, 0.4)``: 0.7 .. 1.4).
        padding_mode: ``RandAffined`` / elastic padding outside the field of view (``border`` or ``zeros``).
        elastic_prob: probability of elastic (local) warping.
        elastic_spacing_2d: 2D control-point spacing (pixels) of ``Rand2DElasticd``.
        elastic_magnitude_2d: 2D control-point displacement range (pixels).
        elastic_sigma_3d: 3D smoothing σ range (voxels) of the displacement field of ``Rand3DElasticd``.
        elastic_magnitude_3d: 3D displacement magnitude range (before smoothing, MONAI's convention).
        contrast_prob: probability of multiplying intensities by ``1 + U(-contrast, contrast)``.
        contrast: contrast range ±fraction.
        gamma_prob: probability of a gamma change.
        gamma: gamma range ``(low, high)``.
        brightness_prob: probability of adding ``U(-brightness, brightness)``.
        brightness: brightness offset range ± (normalised intensity units).
        noise_prob: probability of additive Gaussian noise.
        noise_std: maximum noise σ (σ drawn from ``U(0, noise_std)``; normalised intensity units).
        blur_prob: probability of Gaussian blur.
        blur_sigma: blur σ range ``(low, high)`` in pixels/voxels.
    """

    flip_prob: float = 0.0
    flip_axes: tuple[int, ...] | None = (0,)
    affine_prob: float = 0.0
    rotate_deg: float = 0.0
    rotate_deg_2d: float | None = None
    shear: float = 0.0
    scale: float | tuple[float, float] = 0.0
    padding_mode: str = "border"
    elastic_prob: float = 0.0
    elastic_spacing_2d: float = 16.0
    elastic_magnitude_2d: tuple[float, float] = (0.0, 1.0)
    elastic_sigma_3d: tuple[float, float] = (4.0, 6.0)
    elastic_magnitude_3d: tuple[float, float] = (20.0, 60.0)
    contrast_prob: float = 0.0
    contrast: float = 0.0
    gamma_prob: float = 0.0
    gamma: tuple[float, float] = (1.0, 1.0)
    brightness_prob: float = 0.0
    brightness: float = 0.0
    noise_prob: float = 0.0
    noise_std: float = 0.0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.0)


#: The strength levels: every parameter of every preset, in one place.
LEVELS: dict[str, AugmentationLevel] = {
    "none": AugmentationLevel(),
    "light": AugmentationLevel(flip_prob=0.5, affine_prob=0.5, rotate_deg=15.0, scale=0.1),
    "medium": AugmentationLevel(
        flip_prob=0.5,
        affine_prob=0.6,
        rotate_deg=20.0,
        shear=0.1,
        scale=0.15,
        elastic_prob=0.1,
        elastic_magnitude_2d=(0.0, 1.0),
        elastic_magnitude_3d=(20.0, 60.0),
        contrast_prob=0.3,
        contrast=0.1,
        gamma_prob=0.3,
        gamma=(0.8, 1.25),
        brightness_prob=0.3,
        brightness=0.1,
        noise_prob=0.15,
        noise_std=0.02,
        blur_prob=0.1,
        blur_sigma=(0.25, 0.75),
    ),
    "strong": AugmentationLevel(
        flip_prob=0.5,
        flip_axes=None,
        affine_prob=0.8,
        rotate_deg=30.0,
        shear=0.2,
        scale=0.25,
        elastic_prob=0.3,
        elastic_magnitude_2d=(0.5, 2.0),
        elastic_magnitude_3d=(40.0, 100.0),
        contrast_prob=0.5,
        contrast=0.25,
        gamma_prob=0.5,
        gamma=(0.7, 1.5),
        brightness_prob=0.5,
        brightness=0.2,
        noise_prob=0.3,
        noise_std=0.05,
        blur_prob=0.2,
        blur_sigma=(0.5, 1.25),
    ),
    # nnU-Net's default (the segmentation bundle's): rare but large affines, zero padding, mirroring of every axis
    "nnunet": AugmentationLevel(
        flip_prob=0.5,
        flip_axes=None,
        affine_prob=0.2,
        rotate_deg=30.0,
        rotate_deg_2d=180.0,
        scale=(-0.3, 0.4),
        padding_mode="zeros",
        contrast_prob=0.15,
        contrast=0.25,
        gamma_prob=0.3,
        gamma=(0.7, 1.5),
        noise_prob=0.1,
        noise_std=0.1,
        blur_prob=0.2,
        blur_sigma=(0.5, 1.0),
    ),
}


def _level(name: str | AugmentationLevel, overrides: Mapping[str, Any]) -> AugmentationLevel:
    if isinstance(name, AugmentationLevel):
        level = name
    else:
        key = str(name).lower()
        if key not in LEVELS:
            raise ValueError(f"unknown augmentation level {name!r}; choose from {list(LEVELS)}")
        level = LEVELS[key]
    fields = {f.name for f in dataclasses.fields(AugmentationLevel)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown augmentation parameter(s) {unknown}; valid: {sorted(fields)}")
    values = dict(overrides)
    if values.get("flip_axes") is not None:
        values["flip_axes"] = tuple(int(a) for a in ensure_tuple(values["flip_axes"]))
    if isinstance(values.get("scale"), Sequence):
        values["scale"] = tuple(float(v) for v in values["scale"])
    lv = dataclasses.replace(level, **values)
    if lv.padding_mode not in ("border", "zeros"):
        raise ValueError(f"padding_mode must be 'border' or 'zeros', got {lv.padding_mode!r}")
    if isinstance(lv.scale, tuple) and (len(lv.scale) != 2 or not -1.0 < lv.scale[0] <= lv.scale[1]):
        raise ValueError(f"scale must be a fraction or (low, high) with -1 < low <= high, got {lv.scale!r}")
    return lv


def augmentation_preset(
    name: str | AugmentationLevel = "medium",
    spatial_dims: int = 2,
    keys: KeysCollection = ("image",),
    label_keys: KeysCollection = (),
    *,
    spatial: bool = True,
    intensity: bool = True,
    label_dtype: torch.dtype | None = torch.uint8,
    anisotropic_axis: int | None = None,
    seed: int | None = None,
    **overrides: Any,
) -> list[Any]:
    """The random augmentation transforms of a named strength level, for 2D images or 3D volumes.

    From a bundle config::

        augment_level: medium
        augmentation: $medmonai.transforms.augmentation.augmentation_preset(@augment_level, @spatial_dims)

    Args:
        name: a level of :data:`LEVELS` (``none``, ``light``, ``medium``, ``strong``) or an
            :class:`AugmentationLevel`.
        spatial_dims: 2 or 3.
        keys: image keys (channel-first tensors, spatial and intensity transforms).
        label_keys: mask/label-map keys: the same spatial transforms with nearest interpolation, no intensity
            transforms. Missing in a data dict is not an error.
        spatial: include the spatial transforms (mirroring, affine, elastic).
        intensity: include the intensity transforms (contrast, gamma, brightness, blur, noise).
        label_dtype: dtype the masks are cast to at the end (resampling makes them float32); None: leave as is.
        anisotropic_axis: 3D only: the coarse axis of anisotropic data
            (:func:`medmonai.transforms.segmentation.anisotropic_axis` of a plan); rotations then turn about that axis
            only. None: about every axis.
        seed: seed every random transform (reproducible draws when applied directly; a new ``Compose`` around them
            re-seeds them from MONAI's global seed, see the module docstring).
        overrides: replace parameters of the level (fields of :class:`AugmentationLevel`), e.g. ``rotate_deg=10``.

    Returns:
        A list of MONAI dictionary transforms (empty for ``none``), to append to a preprocessing chain.

    Raises:
        ValueError: unknown level or parameter, or ``spatial_dims`` not 2/3.
    """
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    lv = _level(name, overrides)
    img = [str(k) for k in ensure_tuple(keys)]
    lab = [str(k) for k in ensure_tuple(label_keys)]
    if not img:
        raise ValueError("augmentation_preset needs at least one image key")
    both = img + lab
    modes = ["bilinear"] * len(img) + ["nearest"] * len(lab)
    missing = bool(lab)
    xforms: list[Any] = []
    if spatial:
        if lv.flip_prob > 0:
            axes = range(spatial_dims) if lv.flip_axes is None else lv.flip_axes
            for a in axes:
                if not 0 <= a < spatial_dims:
                    raise ValueError(f"flip axis {a} out of range for {spatial_dims}D")
                xforms.append(RandFlipd(both, prob=lv.flip_prob, spatial_axis=a, allow_missing_keys=missing))
        rot_deg = lv.rotate_deg if spatial_dims == 3 or lv.rotate_deg_2d is None else lv.rotate_deg_2d
        has_scale = any(ensure_tuple(lv.scale))
        if lv.affine_prob > 0 and (rot_deg or lv.shear or has_scale):
            n_shear = 2 if spatial_dims == 2 else 6
            rotate: list[float] | None = None
            if rot_deg:
                rotate = [math.radians(rot_deg)] * (1 if spatial_dims == 2 else 3)
                if spatial_dims == 3 and anisotropic_axis is not None:
                    rotate = [0.0, 0.0, 0.0]
                    rotate[int(anisotropic_axis)] = math.radians(rot_deg)
            scale: Any = None
            if has_scale:
                scale = [tuple(lv.scale) if isinstance(lv.scale, tuple) else lv.scale] * spatial_dims
            xforms.append(
                RandAffined(
                    both,
                    prob=lv.affine_prob,
                    rotate_range=rotate,
                    shear_range=[lv.shear] * n_shear if lv.shear else None,
                    scale_range=scale,
                    mode=modes,
                    padding_mode=lv.padding_mode,
                    allow_missing_keys=missing,
                )
            )
        if lv.elastic_prob > 0:
            if spatial_dims == 2:
                elastic: Any = Rand2DElasticd(
                    both,
                    spacing=lv.elastic_spacing_2d,
                    magnitude_range=tuple(lv.elastic_magnitude_2d),
                    prob=lv.elastic_prob,
                    mode=modes,
                    padding_mode=lv.padding_mode,
                    allow_missing_keys=missing,
                )
            else:
                elastic = Rand3DElasticd(
                    both,
                    sigma_range=tuple(lv.elastic_sigma_3d),
                    magnitude_range=tuple(lv.elastic_magnitude_3d),
                    prob=lv.elastic_prob,
                    mode=modes,
                    padding_mode=lv.padding_mode,
                    allow_missing_keys=missing,
                )
            xforms.append(elastic)
    if intensity:
        if lv.contrast_prob > 0 and lv.contrast > 0:
            xforms.append(RandScaleIntensityd(img, factors=lv.contrast, prob=lv.contrast_prob))
        if lv.gamma_prob > 0 and tuple(lv.gamma) != (1.0, 1.0):
            xforms.append(RandAdjustContrastd(img, prob=lv.gamma_prob, gamma=tuple(lv.gamma)))
        if lv.brightness_prob > 0 and lv.brightness > 0:
            xforms.append(RandShiftIntensityd(img, offsets=lv.brightness, prob=lv.brightness_prob))
        if lv.blur_prob > 0:
            s = tuple(float(v) for v in lv.blur_sigma)
            xforms.append(RandGaussianSmoothd(img, sigma_x=s, sigma_y=s, sigma_z=s, prob=lv.blur_prob))
        if lv.noise_prob > 0 and lv.noise_std > 0:
            xforms.append(RandGaussianNoised(img, prob=lv.noise_prob, mean=0.0, std=lv.noise_std))
    if xforms and lab and label_dtype is not None:
        xforms.append(CastToTyped(lab, dtype=label_dtype, allow_missing_keys=True))
    if seed is not None and xforms:
        Compose(xforms).set_random_state(seed=int(seed))
    return xforms


# ----------------------------------------------------------------------------------------------------------- preview
def _display(x: Any) -> np.ndarray:
    """A 2D array ``[row, col]`` for display: first channel, central axial slice of 3D, rows = second axis."""
    a = np.asarray(torch.as_tensor(x).detach().float().cpu())
    a = a[0] if a.ndim in (3, 4) else a
    if a.ndim == 3:
        a = a[..., a.shape[-1] // 2]
    return a.T


def preview_grid(
    samples: Sequence[Mapping[str, Any]],
    augmentation: Sequence[Any],
    n_draws: int = 4,
    image_key: str = "image",
) -> list[list[np.ndarray]]:
    """Apply an augmentation ``n_draws`` times to every preprocessed sample.

    Args:
        samples: preprocessed data dicts (channel-first tensors).
        augmentation: random dictionary transforms (e.g. :func:`augmentation_preset`).
        n_draws: augmented draws per sample.
        image_key: the image key.

    Returns:
        One row per sample: the original and ``n_draws`` augmented images as 2D display arrays.
    """
    rows = []
    for s in samples:
        row = [_display(s[image_key])]
        for _ in range(n_draws):
            d = dict(s)
            for t in augmentation:  # not a new Compose, which would re-seed the transforms
                d = apply_transform(t, d)
            row.append(_display(d[image_key]))
        rows.append(row)
    return rows


def save_augmentation_preview(
    datalist: PathLike,
    out: PathLike,
    preset: str = "medium",
    spatial_dims: int = 2,
    n_images: int = 8,
    n_draws: int = 4,
    key: str = "training",
    seed: int = 0,
    spatial_size: Sequence[int] | None = None,
    normalization: str | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Render a PNG grid of a preset applied to real images: rows = images, columns = original + augmented draws.

    Images are loaded with :func:`medmonai.transforms.preprocessing.build_preprocessing` (optional size, intensity
    normalisation; default: per-image 0.5-99.5 percentile scaling to [0, 1], the range the intensity parameters
    assume); 3D volumes show their central axial slice. Every panel is displayed with the original image's grey
    range, so intensity changes are visible.

    Args:
        datalist: a datalist JSON file.
        out: the PNG to write (atomically).
        preset: augmentation level of :func:`augmentation_preset`.
        spatial_dims: 2 or 3.
        n_images: images (the first of the split, in datalist order).
        n_draws: augmented draws per image.
        key: datalist split.
        seed: seed of the augmentation draws.
        spatial_size: optional output size of the preprocessing (centre crop/pad).
        normalization: normalisation spec (see :func:`medmonai.transforms.intensity.normalization_transform`).
        overrides: parameters of the level to replace (see :class:`AugmentationLevel`).

    Returns:
        ``{"out": path, "n_images": ..., "n_draws": ..., "preset": ..., "files": [image paths]}``.
    """
    if n_images < 1 or n_draws < 1:
        raise ValueError(f"n_images and n_draws must be >= 1, got {n_images} and {n_draws}")
    entries = load_datalist(datalist, key)[: int(n_images)]
    if normalization is None:
        normalization = {"preset": "percentile", "lower": 0.5, "upper": 99.5, "output_range": [0.0, 1.0]}
    pre = build_preprocessing(
        ["image"], spatial_dims=spatial_dims, normalization=normalization, spatial_size=spatial_size, channels=1
    )
    samples = [pre({"image": e["image"]}) for e in entries]
    aug = augmentation_preset(preset, spatial_dims, seed=seed, **overrides)
    rows = preview_grid(samples, aug, n_draws)
    n_cols = n_draws + 1
    fig = Figure(figsize=(1.6 * n_cols, 1.6 * len(rows) + 0.4), dpi=100, layout="constrained")
    for r, row in enumerate(rows):
        lo, hi = float(np.min(row[0])), float(np.max(row[0]))
        for c, img in enumerate(row):
            ax = fig.add_subplot(len(rows), n_cols, r * n_cols + c + 1)
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"draw {c}", fontsize=8)
    fig.suptitle(f"augmentation '{preset}' ({spatial_dims}D)", fontsize=9)
    path = atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))
    return {
        "out": str(path),
        "preset": preset,
        "n_images": len(rows),
        "n_draws": n_draws,
        "files": [str(e["image"]) for e in entries],
    }
