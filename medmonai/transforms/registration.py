"""Rigid / affine registration to a reference image (SimpleITK), as MONAI transforms.

An optional preprocessing step for data where several images of one subject should lie on one grid: longitudinal
scans (register every time point to the first, see :func:`add_subject_reference`) or several sequences of one
session (register T2/FLAIR to T1). :class:`RegisterToReference` (array) and :class:`RegisterToReferenced`
(dictionary) fit a rigid or affine transform from the reference to the moving image with SimpleITK's
``ImageRegistrationMethod`` and resample the moving image (linear) and its masks (nearest neighbour) on the
**reference grid**; the output is a ``MetaTensor`` with the reference affine.

Geometry: MONAI MetaTensors carry a RAS voxel-to-world affine (``meta["space"]``; LPS affines are accepted too),
SimpleITK images live in LPS; the affine is converted with :func:`monai.data.utils.orientation_ras_lps` and
spacing/direction/origin are taken from it, so the fitted transform is in millimetres in patient space.

Defaults (multi-modal safe): Mattes mutual information (50 bins, 25 % random samples with a fixed seed), centred
geometry initialiser, regular-step gradient descent with physical-shift scales, three resolution levels (shrink 4,
2, 1; smoothing 2, 1, 0 voxels; levels whose coarsest axis would have fewer than 16 voxels are dropped), one
thread (bit-reproducible). What was fitted is recorded in ``meta["registration"]`` (and in ``<key>_meta_dict``
when present): the transform parameters in ITK's convention (LPS), the 4x4 matrix in the image's world space
(reference point → moving point), the rotation angle, the metric before and after, the levels and the stop reason.
A registration that fails (SimpleITK error, NaN, or an optimiser that ends worse than it started) raises an error
naming the file; it never returns a silently misaligned image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import orientation_ras_lps, to_affine_nd
from monai.transforms import MapTransform, Transform
from monai.utils import ensure_tuple

from medmonai.transforms.io import LoadMedicalImaged

__all__ = [
    "INITIALIZERS",
    "METRICS",
    "TRANSFORM_TYPES",
    "RegisterToReference",
    "RegisterToReferenced",
    "add_subject_reference",
    "identity_record",
    "metatensor_to_sitk",
    "registration_transform",
]

TRANSFORM_TYPES: tuple[str, ...] = ("rigid", "affine")
METRICS: tuple[str, ...] = ("mattes", "correlation", "mean_squares")
INITIALIZERS: tuple[str | None, ...] = ("geometry", "moments", None)

#: datalist keys used (in this order) to sort a subject's images by :func:`add_subject_reference`
ORDER_KEYS: tuple[str, ...] = ("acquisition_time", "timepoint")


def _name(x: Any, fallback: Any = "<array>") -> str:
    meta = getattr(x, "meta", None) or {}
    name = meta.get("filename_or_obj")
    return str(name) if name else str(fallback)


def _spatial_affine(x: Any) -> np.ndarray:
    """The ``(sd+1)x(sd+1)`` RAS voxel-to-world affine of a channel-first image (identity for plain tensors).

    A 2D image whose in-plane block is singular (a coronal/sagittal 2D DICOM) gets ``diag(spacings)``, as
    :class:`medmonai.transforms.preprocessing.PlanarAffined` does.
    """
    sd = x.ndim - 1
    aff = getattr(x, "affine", None)
    if aff is None:
        return np.eye(sd + 1)
    a = np.asarray(aff.detach().cpu().numpy() if isinstance(aff, torch.Tensor) else aff, dtype=np.float64)
    meta = getattr(x, "meta", None) or {}
    if str(meta.get("space", "RAS")).upper() == "LPS":
        a = orientation_ras_lps(a)
    if sd == 2 and a.shape == (4, 4):
        full = np.linalg.norm(a[:3, :2], axis=0)
        if abs(np.linalg.det(a[:2, :2])) <= 1e-6 * float(np.prod(full)) or not np.allclose(
            np.linalg.norm(a[:2, :2], axis=0), full, rtol=1e-4
        ):
            out = np.eye(3)
            out[0, 0], out[1, 1] = full
            return out
    return to_affine_nd(sd, a)


def metatensor_to_sitk(x: torch.Tensor | np.ndarray, channel: int = 0, dtype: Any = np.float32) -> sitk.Image:
    """One channel of a channel-first MONAI image as a SimpleITK image with the same physical geometry (LPS).

    MONAI index ``(i, j, k)`` is ITK index ``(x, y, z)``; the RAS affine is converted to LPS and split into
    spacing (column norms), direction (normalised columns) and origin.

    Args:
        x: channel-first image, a ``MetaTensor`` (its affine is used) or a tensor/array (identity affine).
        channel: the channel to convert.
        dtype: numpy dtype of the voxel values (``None`` keeps the input's).

    Raises:
        ValueError: if the image is not 2D/3D or its affine is singular.
    """
    sd = x.ndim - 1
    if sd not in (2, 3):
        raise ValueError(f"{_name(x)}: registration needs a channel-first 2D or 3D image, got shape {tuple(x.shape)}")
    arr = x[channel].detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x[channel])
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8)
    a = orientation_ras_lps(_spatial_affine(x))
    lin = a[:sd, :sd]
    spacing = np.linalg.norm(lin, axis=0)
    if np.any(spacing <= 0) or abs(np.linalg.det(lin)) <= 1e-9 * float(np.prod(spacing)):
        raise ValueError(f"{_name(x)}: singular affine {a.tolist()}, cannot build its physical geometry")
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(tuple(range(sd))[::-1])))
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (lin / spacing).ravel()])
    img.SetOrigin([float(v) for v in a[:sd, sd]])
    return img


def _sitk_to_array(img: sitk.Image) -> np.ndarray:
    arr = sitk.GetArrayFromImage(img)
    return arr.transpose(tuple(range(arr.ndim))[::-1])


def _matrix_of(tfm: sitk.Transform, sd: int) -> np.ndarray:
    """Homogeneous matrix of a SimpleITK matrix-offset transform (LPS, fixed point → moving point)."""
    m = np.eye(sd + 1)
    m[:sd, :sd] = np.asarray(tfm.GetMatrix(), dtype=np.float64).reshape(sd, sd)
    centre = np.asarray(tfm.GetCenter(), dtype=np.float64)
    translation = np.asarray(tfm.GetTranslation(), dtype=np.float64)
    m[:sd, sd] = translation + centre - m[:sd, :sd] @ centre
    return m


def _rotation_deg(lin: np.ndarray) -> float:
    """Angle (degrees) of the rotation closest to ``lin`` (its polar factor)."""
    u, _, vt = np.linalg.svd(lin)
    r = u @ vt
    if lin.shape[0] == 2:
        return float(abs(math.degrees(math.atan2(r[1, 0], r[0, 0]))))
    return float(math.degrees(math.acos(float(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)))))


def identity_record(reference: str, transform_type: str, sd: int, reason: str) -> dict[str, Any]:
    """The ``meta["registration"]`` entry of an image left unchanged (it is the reference)."""
    return {
        "reference": reference,
        "transform_type": transform_type,
        "skipped": reason,
        "matrix": np.eye(sd + 1).tolist(),
        "rotation_deg": 0.0,
        "translation_mm": [0.0] * sd,
    }


class RegisterToReference(Transform):
    """Register a channel-first image to a reference image (rigid or affine) and resample it on the reference grid.

    The transform is fitted on channel ``channel`` of both images; all channels of the moving image are resampled.
    Use :meth:`fit` and :meth:`resample` with ``mode="nearest"`` to move a mask with a fitted transform. The step
    is not recorded as an invertible operation: the output's grid *is* the reference grid, so ``Invertd`` of later
    steps maps predictions back to the reference image, not to the moving image's original grid.

    Args:
        reference: default reference image (channel-first MetaTensor/tensor); can be given per call instead.
        transform_type: ``"rigid"`` (rotation + translation) or ``"affine"`` (also scaling and shear).
        metric: ``"mattes"`` (Mattes mutual information, default, works across modalities), ``"correlation"``
            (same modality, linear intensity relation) or ``"mean_squares"`` (same modality and intensity scale).
        histogram_bins: Mattes histogram bins.
        sampling_percentage: fraction (0, 1] of voxels sampled for the metric (random, seeded); 1.0 uses all.
        seed: sampling seed (fixed, so repeated runs give the same result).
        shrink_factors: per resolution level, coarse to fine; must end with 1 for a full-resolution last level.
        smoothing_sigmas: Gaussian smoothing per level, in voxels of the full-resolution grid.
        min_level_size: levels whose smallest shrunken axis would have fewer voxels are dropped (the last level is
            always kept).
        initializer: ``"geometry"`` (align the grid centres, default), ``"moments"`` (align the intensity centres
            of mass) or None (identity).
        iterations: maximum optimiser iterations per level.
        learning_rate: initial step of the regular-step gradient descent (in physical-shift-scaled units).
        min_step: the optimiser stops when its step falls below this.
        number_of_threads: SimpleITK threads; ``1`` (default) is bit-reproducible, None uses SimpleITK's default.
        padding_value: value outside the moving image's field of view; None: the moving image's minimum.
        channel: channel used to fit the transform.
        check_improvement: raise when the fitted transform has a worse metric than the initial one (a diverged
            optimiser), measured on the full-resolution images with the same samples.

    Raises:
        ValueError: for invalid settings (on construction), or images of different dimensionality (on call).
        RuntimeError: if the registration fails; the message names the moving and the reference file.
    """

    def __init__(
        self,
        reference: torch.Tensor | None = None,
        transform_type: str = "rigid",
        metric: str = "mattes",
        histogram_bins: int = 50,
        sampling_percentage: float = 0.25,
        seed: int = 0,
        shrink_factors: Sequence[int] = (4, 2, 1),
        smoothing_sigmas: Sequence[float] = (2.0, 1.0, 0.0),
        min_level_size: int = 16,
        initializer: str | None = "geometry",
        iterations: int = 200,
        learning_rate: float = 1.0,
        min_step: float = 1e-4,
        number_of_threads: int | None = 1,
        padding_value: float | None = None,
        channel: int = 0,
        check_improvement: bool = True,
    ) -> None:
        if transform_type not in TRANSFORM_TYPES:
            raise ValueError(f"unknown transform_type {transform_type!r}; valid: {list(TRANSFORM_TYPES)}")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid: {list(METRICS)}")
        if initializer not in INITIALIZERS:
            raise ValueError(f"unknown initializer {initializer!r}; valid: {list(INITIALIZERS)}")
        shrink = [int(s) for s in shrink_factors]
        sigmas = [float(s) for s in smoothing_sigmas]
        if not shrink or len(shrink) != len(sigmas) or any(s < 1 for s in shrink) or any(s < 0 for s in sigmas):
            raise ValueError(
                f"shrink_factors {shrink} and smoothing_sigmas {sigmas} must be non-empty, of equal length, "
                "with shrink factors >= 1 and sigmas >= 0"
            )
        if not 0.0 < float(sampling_percentage) <= 1.0:
            raise ValueError(f"sampling_percentage must be in (0, 1], got {sampling_percentage}")
        if number_of_threads is not None and int(number_of_threads) < 1:
            raise ValueError(f"number_of_threads must be >= 1 or None, got {number_of_threads}")
        self.reference = reference
        self.transform_type = transform_type
        self.metric = metric
        self.histogram_bins = int(histogram_bins)
        self.sampling_percentage = float(sampling_percentage)
        self.seed = int(seed)
        self.shrink_factors = shrink
        self.smoothing_sigmas = sigmas
        self.min_level_size = int(min_level_size)
        self.initializer = initializer
        self.iterations = int(iterations)
        self.learning_rate = float(learning_rate)
        self.min_step = float(min_step)
        self.number_of_threads = None if number_of_threads is None else int(number_of_threads)
        self.padding_value = padding_value
        self.channel = int(channel)
        self.check_improvement = check_improvement

    # --- fitting -----------------------------------------------------------------------------------------------
    def _levels(self, fixed: sitk.Image) -> tuple[list[int], list[float]]:
        smallest = min(fixed.GetSize())
        levels = [
            (s, g)
            for i, (s, g) in enumerate(zip(self.shrink_factors, self.smoothing_sigmas))
            if i == len(self.shrink_factors) - 1 or smallest // s >= self.min_level_size
        ]
        return [s for s, _ in levels], [g for _, g in levels]

    def _method(self) -> sitk.ImageRegistrationMethod:
        r = sitk.ImageRegistrationMethod()
        if self.metric == "mattes":
            r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=self.histogram_bins)
        elif self.metric == "correlation":
            r.SetMetricAsCorrelation()
        else:
            r.SetMetricAsMeanSquares()
        if self.sampling_percentage < 1.0:
            r.SetMetricSamplingStrategy(r.RANDOM)
            # SimpleITK reads seed 0 as "seed from the wall clock" (sitkWallClock): shift by one so that every seed,
            # 0 included, gives the same samples in every run
            r.SetMetricSamplingPercentage(self.sampling_percentage, self.seed + 1)
        else:
            r.SetMetricSamplingStrategy(r.NONE)
        r.SetInterpolator(sitk.sitkLinear)
        if self.number_of_threads is not None:
            r.SetNumberOfThreads(self.number_of_threads)
        return r

    def _initial(self, fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
        sd = fixed.GetDimension()
        if self.transform_type == "rigid":
            tfm: sitk.Transform = sitk.Euler2DTransform() if sd == 2 else sitk.Euler3DTransform()
        else:
            tfm = sitk.AffineTransform(sd)
        if self.initializer is None:
            centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in fixed.GetSize()])
            tfm.SetCenter(centre)
            return tfm
        how = (
            sitk.CenteredTransformInitializerFilter.GEOMETRY
            if self.initializer == "geometry"
            else sitk.CenteredTransformInitializerFilter.MOMENTS
        )
        return sitk.CenteredTransformInitializer(fixed, moving, tfm, how)

    def fit(self, img: torch.Tensor, reference: torch.Tensor | None = None) -> tuple[sitk.Transform, dict[str, Any]]:
        """Fit the transform (reference point → moving point); return it and the record for ``meta``.

        Raises:
            ValueError: if the images have different dimensionality, or no reference is given.
            RuntimeError: if SimpleITK fails, the result is not finite, or the metric got worse.
        """
        ref = self.reference if reference is None else reference
        mov_name = _name(img, "<moving image>")
        if ref is None:
            raise ValueError(f"{mov_name}: no reference image to register to")
        ref_name = _name(ref, "<reference image>")
        if img.ndim != ref.ndim:
            raise ValueError(
                f"{mov_name}: cannot register a {img.ndim - 1}D image (shape {tuple(img.shape)}) to the "
                f"{ref.ndim - 1}D reference {ref_name} (shape {tuple(ref.shape)}): different dimensionality"
            )
        sd = img.ndim - 1
        where = f"{mov_name}: registration ({self.transform_type}, {self.metric}) to {ref_name} failed"
        for name, x in ((mov_name, img), (ref_name, ref)):
            if self.channel >= int(x.shape[0]):
                raise ValueError(f"{where}: {name} has {x.shape[0]} channel(s), no channel {self.channel} to fit on")
        fixed = metatensor_to_sitk(ref, self.channel)
        moving = metatensor_to_sitk(img, self.channel)
        for what, name, im in (("moving image", mov_name, moving), ("reference", ref_name, fixed)):
            stats = sitk.StatisticsImageFilter()
            stats.Execute(im)
            lo, hi = stats.GetMinimum(), stats.GetMaximum()
            if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
                raise ValueError(
                    f"{where}: the {what} {name} is constant or not finite (min {lo}, max {hi}): nothing to align"
                )
        shrink, sigmas = self._levels(fixed)
        threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        if self.number_of_threads is not None:  # the pyramid filters inside the method use the global default
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(self.number_of_threads)
        try:
            initial = self._initial(fixed, moving)
            r = self._method()
            r.SetOptimizerAsRegularStepGradientDescent(
                learningRate=self.learning_rate,
                minStep=self.min_step,
                numberOfIterations=self.iterations,
                relaxationFactor=0.5,
                gradientMagnitudeTolerance=1e-8,
            )
            r.SetOptimizerScalesFromPhysicalShift()
            r.SetShrinkFactorsPerLevel(shrink)
            r.SetSmoothingSigmasPerLevel(sigmas)
            r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
            r.SetInitialTransform(initial, inPlace=False)
            result = r.Execute(fixed, moving)
            final = result.GetNthTransform(0) if isinstance(result, sitk.CompositeTransform) else result
            final = final.Downcast() if hasattr(final, "Downcast") else final
            evaluator = self._method()
            evaluator.SetInitialTransform(initial, inPlace=False)
            initial_value = float(evaluator.MetricEvaluate(fixed, moving))
            evaluator = self._method()
            evaluator.SetInitialTransform(final, inPlace=False)
            final_value = float(evaluator.MetricEvaluate(fixed, moving))
        except RuntimeError as e:
            msg = " ".join(str(e).split())
            if "ITK ERROR:" in msg:  # keep ITK's own sentence, drop the source path and object address
                msg = msg.split("ITK ERROR:", 1)[1].split("): ", 1)[-1]
            raise RuntimeError(f"{where}: SimpleITK: {msg[:400]}") from e
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        params = [float(v) for v in final.GetParameters()]
        if not all(math.isfinite(v) for v in params + [final_value]):
            raise RuntimeError(f"{where}: non-finite result (parameters {params}, metric {final_value})")
        if self.check_improvement and final_value > initial_value + 1e-3 * abs(initial_value) + 1e-9:
            raise RuntimeError(
                f"{where}: the optimiser ended worse than it started (metric {initial_value:.6g} -> "
                f"{final_value:.6g}; lower is better); check that the images overlap and show the same anatomy"
            )
        m_lps = _matrix_of(final, sd)
        flip = orientation_ras_lps(np.eye(sd + 1))
        m = flip @ m_lps @ flip
        record = {
            "reference": ref_name,
            "transform_type": self.transform_type,
            "transform": final.GetName(),
            "parameters_lps": params,
            "fixed_parameters_lps": [float(v) for v in final.GetFixedParameters()],
            "matrix": m.tolist(),
            "rotation_deg": _rotation_deg(m[:sd, :sd]),
            "translation_mm": [float(v) for v in m[:sd, sd]],
            "metric": self.metric,
            "initial_metric_value": initial_value,
            "metric_value": final_value,
            "iterations": int(r.GetOptimizerIteration()),
            "stop_condition": r.GetOptimizerStopConditionDescription(),
            "shrink_factors": shrink,
            "smoothing_sigmas": sigmas,
            "seed": self.seed,
        }
        return final, record

    # --- resampling --------------------------------------------------------------------------------------------
    def resample(
        self, img: torch.Tensor, reference: torch.Tensor, transform: sitk.Transform, mode: str = "linear"
    ) -> MetaTensor:
        """Resample every channel of ``img`` on the grid of ``reference`` with a fitted ``transform``.

        Args:
            img: channel-first moving image (or mask on the moving image's grid).
            reference: the reference image (its grid and affine are used).
            transform: from :meth:`fit`.
            mode: ``"linear"`` (images, float32 output) or ``"nearest"`` (masks, the dtype and label values kept).
        """
        if mode not in ("linear", "nearest"):
            raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}")
        if img.ndim != reference.ndim:
            raise ValueError(
                f"{_name(img)}: cannot resample a {img.ndim - 1}D image on the {reference.ndim - 1}D grid of "
                f"{_name(reference)}: different dimensionality"
            )
        fixed = metatensor_to_sitk(reference, 0)
        src = img if isinstance(img, torch.Tensor) else torch.as_tensor(img)
        in_dtype = src.dtype
        if mode == "nearest":
            dtype = np.uint8 if in_dtype == torch.bool else None
            pad = 0.0
        else:
            dtype = np.float32
            pad = float(src.min()) if self.padding_value is None else float(self.padding_value)
        chans = []
        for c in range(int(src.shape[0])):
            moving = metatensor_to_sitk(src, c, dtype=dtype)
            interp = sitk.sitkLinear if mode == "linear" else sitk.sitkNearestNeighbor
            out = sitk.Resample(moving, fixed, transform, interp, pad, moving.GetPixelID())
            chans.append(_sitk_to_array(out))
        arr = torch.as_tensor(np.stack(chans))
        if mode == "nearest":
            arr = arr.to(in_dtype)
        meta = dict(getattr(img, "meta", None) or {})
        ref_affine = getattr(reference, "affine", None)
        if ref_affine is None:
            ref_affine = torch.eye(4, dtype=torch.float64)
        meta["affine"] = ref_affine.clone() if isinstance(ref_affine, torch.Tensor) else torch.as_tensor(ref_affine)
        meta["spatial_shape"] = np.asarray(reference.shape[1:])
        ref_meta = getattr(reference, "meta", None) or {}
        if "space" in ref_meta:
            meta["space"] = ref_meta["space"]
        return MetaTensor(arr, meta=meta)

    def __call__(  # type: ignore[override]
        self, img: torch.Tensor, reference: torch.Tensor | None = None
    ) -> MetaTensor:
        """Register ``img`` to ``reference`` (or the default reference); the fitted record is in ``meta``."""
        ref = self.reference if reference is None else reference
        transform, record = self.fit(img, ref)
        out = self.resample(img, ref, transform, mode="linear")
        out.meta["registration"] = record
        return out


def _is_image(x: Any) -> bool:
    return isinstance(x, torch.Tensor | np.ndarray) and not isinstance(x, str)


class RegisterToReferenced(MapTransform):
    """Dictionary version of :class:`RegisterToReference`: images to a reference, masks moved along (nearest).

    Every key in ``keys`` is registered to the reference on its own; the masks in ``mask_keys`` lie on the grid of
    ``keys[0]`` (see :class:`~medmonai.transforms.preprocessing.CheckGeometryd`) and are resampled with the
    transform fitted for ``keys[0]``, with nearest-neighbour interpolation (the set of labels is unchanged). An
    image that *is* the reference (the same key, or the same file) is left unchanged with an identity record. The
    outputs lie on the reference grid, with its affine; use it right after loading (before orientation/spacing).

    Args:
        keys: image keys to register (channel-first, loaded).
        reference_key: key holding the reference: a loaded image, or a path (loaded with
            :class:`~medmonai.transforms.io.LoadMedicalImaged`), e.g. the ``reference`` entry added by
            :func:`add_subject_reference`, or another image key (``"t1"``) for multi-sequence data.
        reference: a fixed reference for every item (a path or a loaded image), used when ``reference_key`` is
            None or absent from an item.
        mask_keys: mask keys moved with the transform of ``keys[0]``; missing masks are skipped.
        allow_missing_keys: skip absent image keys.
        kwargs: settings of :class:`RegisterToReference` (``transform_type``, ``metric``, ``shrink_factors``, ...).

    Raises:
        ValueError: if an item has no reference, or images and reference differ in dimensionality.
        RuntimeError: if a registration fails (the message names both files).
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str | None = "reference",
        reference: str | os.PathLike | torch.Tensor | None = None,
        mask_keys: KeysCollection = (),
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys=allow_missing_keys)
        if reference_key is None and reference is None:
            raise ValueError("RegisterToReferenced needs a reference_key or a reference (path or image)")
        self.reference_key = reference_key
        self.reference = reference
        self.mask_keys = [k for k in ensure_tuple(mask_keys) if k is not None]
        self.registrar = RegisterToReference(**kwargs)
        self._loaded: dict[str, torch.Tensor] = {}

    def _load(self, path: Any, keep: bool = False) -> torch.Tensor:
        """Load a reference path (channel-first); ``keep``: cache it (the fixed reference is read once)."""
        cache_key = repr(path)
        if cache_key in self._loaded:
            return self._loaded[cache_key]
        loaded = LoadMedicalImaged(["ref"], ensure_channel_first=True)({"ref": path})["ref"]
        if keep:
            self._loaded[cache_key] = loaded
        return loaded

    def _reference(self, d: Mapping[Hashable, Any]) -> tuple[torch.Tensor, Any]:
        if self.reference_key is not None and self.reference_key in d:
            src, fixed = d[self.reference_key], False
        else:
            src, fixed = self.reference, True
        if src is None:
            first = next(iter(self.keys))
            raise ValueError(
                f"{_name(d.get(first), first)}: no reference for registration: the item has no "
                f"'{self.reference_key}' key and no fixed reference was given (see add_subject_reference)"
            )
        return (src if _is_image(src) else self._load(src, keep=fixed)), src

    @staticmethod
    def _same_file(a: Any, b: Any) -> bool:
        na, nb = _name(a, ""), _name(b, "")
        if not na or not nb:
            return False
        try:
            return os.path.realpath(na) == os.path.realpath(nb)
        except (OSError, ValueError):
            return na == nb

    @staticmethod
    def _set_meta(d: dict[Hashable, Any], key: Hashable, record: dict[str, Any]) -> None:
        x = d[key]
        if isinstance(x, MetaTensor):
            x.meta["registration"] = record
        meta_key = f"{key}_meta_dict"
        if isinstance(d.get(meta_key), dict):
            d[meta_key] = dict(d[meta_key])
            d[meta_key]["registration"] = record
            if isinstance(x, MetaTensor):
                d[meta_key]["affine"] = x.affine.clone()
                d[meta_key]["spatial_shape"] = np.asarray(x.shape[1:])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Register the image keys (and move the masks) of ``data`` to its reference."""
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        ref, src = self._reference(d)
        ref_name = _name(ref, src if isinstance(src, str | os.PathLike) else "<reference image>")
        if isinstance(ref, MetaTensor) and not ref.meta.get("filename_or_obj") and isinstance(src, str):
            ref.meta["filename_or_obj"] = src
        first = next(iter(self.keys))
        fitted: Any = None
        for key in keys:
            x = d[key]
            if x.ndim != ref.ndim:
                raise ValueError(
                    f"{_name(x, key)} ('{key}'): cannot register a {x.ndim - 1}D image to the {ref.ndim - 1}D "
                    f"reference {ref_name}: different dimensionality"
                )
            if (self.reference_key is not None and key == self.reference_key) or x is ref or self._same_file(x, ref):
                record = identity_record(ref_name, self.registrar.transform_type, x.ndim - 1, "is the reference")
                d[key] = x
                if key == first:
                    fitted = "identity"
            else:
                transform, record = self.registrar.fit(x, ref)
                d[key] = self.registrar.resample(x, ref, transform, mode="linear")
                if key == first:
                    fitted = transform
            self._set_meta(d, key, record)
        for mkey in self.mask_keys:
            if mkey not in d or fitted is None:
                continue
            if isinstance(fitted, str):
                continue  # the first image is the reference: its masks are on the reference grid already
            m = d[mkey]
            d[mkey] = self.registrar.resample(m, ref, fitted, mode="nearest")
            self._set_meta(d, mkey, dict(d[first].meta["registration"]) if isinstance(d[first], MetaTensor) else {})
        return d


def add_subject_reference(
    entries: Sequence[Mapping[str, Any]],
    image_key: str = "image",
    subject_key: str = "subject",
    reference_key: str = "reference",
    order_key: str | None = None,
) -> list[dict[str, Any]]:
    """Add to each datalist entry a ``reference`` key: the image of the first entry of the same subject.

    The first image of a subject is chosen by ``order_key`` when given, else by the first of
    :data:`ORDER_KEYS` (``acquisition_time``, ``timepoint``) present in **all** of that subject's entries, else by
    entry order; ties keep entry order. Values are compared as given (numbers, or ISO-8601 strings, which sort
    chronologically). The entries are copied, not modified.

    Args:
        entries: datalist entries (dicts with ``image_key`` and ``subject_key``).
        image_key: key of the image path.
        subject_key: key of the subject id.
        reference_key: key to add.
        order_key: key to sort each subject's entries by; it must then be present in all of them.

    Returns:
        New entries, in the input order, each with ``reference_key``.

    Raises:
        ValueError: if an entry lacks the subject or image key, or ``order_key`` in some entry, or the order values
            of one subject cannot be compared.
    """
    out = [dict(e) for e in entries]
    groups: dict[Any, list[int]] = {}
    for i, e in enumerate(out):
        for k in (subject_key, image_key):
            if e.get(k) in (None, ""):
                raise ValueError(f"datalist entry {i} ({e.get(image_key, e)}): no '{k}' to choose its reference by")
        groups.setdefault(e[subject_key], []).append(i)
    for subject, idx in groups.items():
        key = order_key
        if key is None:
            key = next((k for k in ORDER_KEYS if all(k in out[i] for i in idx)), None)
        elif any(key not in out[i] for i in idx):
            missing = next(i for i in idx if key not in out[i])
            raise ValueError(f"datalist entry {missing} ({out[missing][image_key]}): no '{key}' to order by")
        try:
            first = min(idx, key=lambda i: (out[i][key], i)) if key is not None else idx[0]
        except TypeError as e:
            raise ValueError(f"subject {subject!r}: the '{key}' values cannot be compared: {e}") from e
        for i in idx:
            out[i][reference_key] = out[first][image_key]
    return out


def registration_transform(
    keys: KeysCollection, mask_keys: KeysCollection, spec: str | Mapping[str, Any]
) -> RegisterToReferenced:
    """The :class:`RegisterToReferenced` step of :func:`~medmonai.transforms.preprocessing.build_preprocessing`.

    Args:
        keys: image keys.
        mask_keys: mask keys (moved with nearest neighbour).
        spec: ``"rigid"``/``"affine"`` (reference in each item's ``reference`` key), or a dict of
            :class:`RegisterToReferenced` arguments, e.g. ``{"transform_type": "affine", "reference_key": "t1"}``
            or ``{"reference": "atlas.nii.gz", "reference_key": None}``.

    Raises:
        ValueError: for an unknown transform type or setting.
    """
    if isinstance(spec, str):
        kwargs: dict[str, Any] = {"transform_type": spec}
    elif isinstance(spec, Mapping):
        kwargs = dict(spec)
    else:
        raise ValueError(f"registration must be 'rigid', 'affine' or a dict of settings, got {spec!r}")
    kwargs.setdefault("mask_keys", mask_keys)
    try:
        return RegisterToReferenced(keys, **kwargs)
    except TypeError as e:
        raise ValueError(f"invalid registration settings {dict(kwargs)}: {e}") from e
