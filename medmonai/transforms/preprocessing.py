"""The preprocessing chain: load → channels → orientation → spacing → intensity → denoise → size → types.

:func:`build_preprocessing` assembles MONAI dictionary transforms (all invertible where geometry changes, so
``monai.transforms.Invertd`` can map predictions back to the original image grid). Its settings can come from a
plan produced by :func:`medmonai.data.fingerprint.plan_from_fingerprint` (a dict, or the JSON file written by
:func:`medmonai.data.fingerprint.write_fingerprint`); explicit arguments override the plan.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    Orientationd,
    Resized,
    ResizeWithPadOrCropd,
    Spacingd,
)
from monai.utils import ensure_tuple

from medmonai.transforms.intensity import denoise_transform, normalization_transform
from medmonai.transforms.io import load_image_transforms
from medmonai.transforms.registration import registration_transform
from medmonai.utils import read_json

__all__ = [
    "Orientation3Dd",
    "PLAN_KEYS",
    "SIZE_MODES",
    "CheckGeometryd",
    "MatchChannelsd",
    "PlanarAffined",
    "load_plan",
    "build_preprocessing",
]

#: Keys of a plan that :func:`build_preprocessing` reads.
PLAN_KEYS: tuple[str, ...] = (
    "spatial_dims",
    "target_spacing",
    "orientation",
    "normalization",
    "denoise",
    "spatial_size",
    "size_mode",
    "channels",
    "registration",
)
SIZE_MODES: tuple[str | None, ...] = ("crop_pad", "resize", None)


class _Unset:
    def __repr__(self) -> str:
        return "<from plan or default>"


_UNSET: Any = _Unset()


class CheckGeometryd(MapTransform):
    """Check that masks lie on the same voxel grid as the reference image (same spatial shape and affine).

    A mask on another grid would be resampled independently and silently misaligned; this raises instead, naming
    both files. Missing mask keys are skipped.

    Args:
        keys: mask (or other image) keys to check.
        ref_key: the reference image key.
        atol: absolute tolerance on affine entries (mm).
    """

    def __init__(self, keys: KeysCollection, ref_key: str, atol: float = 1e-2) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.ref_key = ref_key
        self.atol = atol

    @staticmethod
    def _name(x: Any, key: Hashable) -> str:
        meta = getattr(x, "meta", {}) or {}
        return str(meta.get("filename_or_obj", key))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Raise ``ValueError`` if a mask's grid differs from the reference image's."""
        d = dict(data)
        ref = d[self.ref_key]
        sd = ref.ndim - 1
        ref_aff = to_affine_nd(sd, np.asarray(getattr(ref, "affine", np.eye(sd + 1)), dtype=float))
        for key in self.key_iterator(d):
            x = d[key]
            where = f"{self._name(x, key)} ('{key}') vs {self._name(ref, self.ref_key)} ('{self.ref_key}')"
            if tuple(x.shape[1:]) != tuple(ref.shape[1:]):
                raise ValueError(
                    f"{where}: spatial shapes differ: {tuple(x.shape[1:])} vs {tuple(ref.shape[1:])}; "
                    "the mask must be on the image's voxel grid"
                )
            aff = to_affine_nd(sd, np.asarray(getattr(x, "affine", np.eye(sd + 1)), dtype=float))
            if not np.allclose(aff, ref_aff, atol=self.atol, rtol=0):
                raise ValueError(
                    f"{where}: affines differ (max abs difference {np.abs(aff - ref_aff).max():.4g}); "
                    "the mask must be on the image's voxel grid"
                )
        return d


#: ITU-R 601 luma weights (PIL's ``convert("L")``), used to make non-PIL colour 2D images grey.
_LUMA = (0.299, 0.587, 0.114)


class MatchChannelsd(MapTransform):
    """Give every image the planned number of channels (after ``EnsureChannelFirstd``), or raise naming the file.

    ``channels=3``: one grey channel is replicated to three (``LA``: the grey channel), four channels (RGBA) lose
    the alpha channel. ``channels=1``: 2D colour images become grey (ITU-R 601 luma, as PIL's ``"L"``; grey and
    alpha ``LA`` images keep their grey channel). Images that already have ``channels`` channels are unchanged;
    any other combination (e.g. a 3D volume with 4 modalities and ``channels=1``) raises ``ValueError``. 2D
    PNG/JPEG images are normally converted by the reader already (PIL ``"L"``/``"RGB"``); this handles the other
    readers (NIfTI, DICOM, NumPy).

    Args:
        keys: image keys (never masks).
        channels: 1 or 3.
        allow_missing_keys: do not fail when a key is absent.
    """

    def __init__(self, keys: KeysCollection, channels: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys=allow_missing_keys)
        if channels not in (1, 3):
            raise ValueError(f"MatchChannelsd: channels must be 1 or 3, got {channels!r}")
        self.channels = int(channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Convert the channel count of each image key to ``channels``."""
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            c, sd = int(x.shape[0]), x.ndim - 1
            if c == self.channels:
                continue
            if self.channels == 3 and c in (1, 2):
                y = x[:1].repeat(3, *([1] * sd))
            elif self.channels == 3 and c == 4:
                y = x[:3]
            elif self.channels == 1 and c == 2:
                y = x[:1]
            elif self.channels == 1 and c in (3, 4) and sd == 2:
                w = torch.as_tensor(_LUMA, dtype=x.dtype if x.is_floating_point() else torch.float32)
                y = (x[:3].float() * w.reshape(3, 1, 1)).sum(0, keepdim=True).to(x.dtype)
            else:
                name = (getattr(x, "meta", {}) or {}).get("filename_or_obj", key)
                raise ValueError(
                    f"{name} ('{key}'): image has {c} channel(s) ({sd}D), the plan/config expects {self.channels}; "
                    "set channels/in_channels to match the data"
                )
            if isinstance(x, MetaTensor) and not isinstance(y, MetaTensor):
                y = MetaTensor(y, meta=x.meta, applied_operations=x.applied_operations)
            d[key] = y
        return d


class PlanarAffined(MapTransform):
    """Give 2D images that lie in a non-axial plane a valid in-plane affine: ``diag(spacing_i, spacing_j)``.

    A 2D DICOM image (e.g. a coronal radiograph) has a 3D affine whose in-plane 2x2 block MONAI uses for 2D
    spatial transforms; for a coronal or sagittal plane that block is singular and ``Spacingd`` fails. The pixel
    spacings (lengths of the first two affine columns) are kept, the orientation is dropped (2D images are not
    re-oriented anyway); the stored affine stays in ``meta["original_affine"]``. Axial 2D images and 3D images
    are left unchanged. Missing keys are skipped.
    """

    def __init__(self, keys: KeysCollection) -> None:
        super().__init__(keys, allow_missing_keys=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Replace degenerate in-plane affines of 2D images."""
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            if not isinstance(x, MetaTensor) or x.ndim != 3:
                continue
            a = np.asarray(x.affine.cpu().numpy() if hasattr(x.affine, "cpu") else x.affine, dtype=np.float64)
            if a.shape != (4, 4):
                continue
            full = np.linalg.norm(a[:3, :2], axis=0)
            planar = np.linalg.norm(a[:2, :2], axis=0)
            if np.allclose(full, planar, rtol=1e-4) and abs(np.linalg.det(a[:2, :2])) > 1e-6 * float(np.prod(full)):
                continue
            new = np.eye(4)
            new[0, 0], new[1, 1] = full
            x.affine = torch.as_tensor(new, dtype=x.affine.dtype)
        return d


class Orientation3Dd(Orientationd):
    """``Orientationd`` applied to 3D volumes only; 2D images pass unchanged.

    Used when the dimensionality is unknown when the chain is built. Invertible like ``Orientationd`` for the images
    it changed.
    """

    def _is_3d(self, d: Mapping[Any, Any]) -> bool:
        key = next(iter(self.key_iterator(dict(d))), None)
        return key is not None and len(d[key].shape) - 1 == 3

    def __call__(self, data: Mapping[Any, Any], lazy: bool | None = None) -> dict[Any, Any]:
        """Reorient when the first present key holds a 3D (channel-first 4D) image."""
        if not self._is_3d(data):
            return dict(data)
        return super().__call__(data, lazy=lazy)

    def inverse(self, data: Mapping[Any, Any]) -> dict[Any, Any]:
        """Undo the reorientation when it was applied."""
        d = dict(data)
        key = next(iter(self.key_iterator(d)), None)
        ops = getattr(d[key], "applied_operations", []) if key is not None else []
        if ops and ops[-1].get("class") == "Orientation":
            return super().inverse(d)
        return d


def load_plan(plan: Mapping[str, Any] | str | os.PathLike | None) -> dict[str, Any]:
    """Return a plan dict from a dict, a fingerprint/plan JSON file, or None (empty plan).

    A fingerprint result (``{"fingerprint": ..., "plan": ...}``) yields its ``plan`` part.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is not valid JSON or is not a JSON object.
    """
    if plan is None:
        return {}
    if isinstance(plan, str | os.PathLike):
        path = Path(plan)
        plan = read_json(path, "plan file", ValueError, missing_error=FileNotFoundError)
        if not isinstance(plan, dict):
            raise ValueError(f"{path}: a plan must be a JSON object, got {type(plan).__name__}")
    plan = dict(plan)
    if isinstance(plan.get("plan"), Mapping):
        plan = dict(plan["plan"])
    return plan


def _pick(explicit: Any, plan: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Explicit argument > plan value > default. ``False`` explicitly disables a plan value.

    ``None`` means "not given" for arguments whose default is None; for ``orientation``/``size_mode`` (default
    ``_UNSET``) an explicit None disables the step.
    """
    if explicit is _UNSET or (explicit is None and key not in ("orientation", "size_mode")):
        value = plan.get(key, default)
    else:
        value = explicit
    return None if value is False else value


def build_preprocessing(
    keys: KeysCollection = ("image",),
    mask_key: str | None = None,
    plan: Mapping[str, Any] | str | os.PathLike | None = None,
    *,
    spatial_dims: int | None = None,
    target_spacing: Sequence[float] | float | None = None,
    orientation: str | None = _UNSET,
    normalization: str | Mapping[str, Any] | None = None,
    denoise: str | Mapping[str, Any] | None = None,
    spatial_size: Sequence[int] | int | None = None,
    size_mode: str | None = _UNSET,
    image_only: bool = True,
    channels: int | None = None,
    check_geometry: bool = True,
    mask_dtype: torch.dtype = torch.uint8,
    registration: str | Mapping[str, Any] | None = None,
) -> Compose:
    """Build the preprocessing ``Compose`` for images (and an optional segmentation mask).

    Chain: load (per-type reader, see :mod:`medmonai.transforms.io`) → ``EnsureChannelFirstd`` → channel count
    (:class:`MatchChannelsd`, when ``channels`` is set) → 2D in-plane
    affine fix (:class:`PlanarAffined`) → mask/image grid check (:class:`CheckGeometryd`) → optional registration
    to a reference (:class:`~medmonai.transforms.registration.RegisterToReferenced`) → ``Orientationd`` →
    ``Spacingd`` (bilinear for images, nearest for the mask) → intensity preset → optional denoising →
    ``ResizeWithPadOrCropd`` or ``Resized`` (nearest for the mask) → ``EnsureTyped`` (float32 images,
    ``mask_dtype`` mask).

    Every setting is taken from the explicit argument, else from ``plan``, else the default; ``False`` disables a
    plan value (e.g. ``target_spacing=False`` skips resampling although the plan has a spacing).

    Args:
        keys: image keys (required in every data dict).
        mask_key: segmentation mask key; optional in each data dict (a missing mask is skipped, not an error).
        plan: a plan dict, or a path to the JSON written by :func:`medmonai.data.fingerprint.write_fingerprint`.
        spatial_dims: 2 or 3; inferred from the plan, ``target_spacing`` or ``spatial_size`` when not given.
            Orientation is only applied to 3D data (and to 2D data when ``orientation`` has two letters, since
            re-orienting projection images such as radiographs is rarely meaningful).
        target_spacing: voxel spacing (mm) per axis, in the axis order after re-orientation; None/False: no
            resampling.
        orientation: axis codes (default: the plan's, else ``"RAS"``); None: keep the stored orientation.
        normalization: preset name or ``{"preset": name, **params}`` (see :mod:`medmonai.transforms.intensity`);
            default none.
        denoise: ``"gaussian"``/``"median"`` or ``{"method": ..., "sigma"/"radius": ...}``; default none.
        spatial_size: output spatial size; None/False: keep the size.
        size_mode: ``"crop_pad"`` (centre crop/pad, default) or ``"resize"`` (interpolate; anti-aliased trilinear or
            bilinear for images, nearest for the mask); None: no size change even if the plan has a size.
        image_only: ``False`` also stores ``<key>_meta_dict`` entries (``LoadImaged`` option).
        channels: ``1`` converts colour 2D images to grey, ``3`` converts grey (and grey+alpha/RGBA) images to RGB
            by replicating the grey channel and dropping alpha (:class:`MatchChannelsd`); None keeps the stored
            channels (plan key ``channels``, chosen from the data by
            :func:`~medmonai.data.fingerprint.plan_from_fingerprint` together with ``in_channels``).
        check_geometry: check that the mask lies on the image's voxel grid (raises otherwise).
        mask_dtype: dtype of the output mask.
        registration: None (default, off; the planner never turns it on): no registration. ``"rigid"`` /
            ``"affine"``: register the images to the image in each item's ``reference`` key (masks follow, nearest
            neighbour), on the reference grid; or a dict of
            :class:`~medmonai.transforms.registration.RegisterToReferenced` settings (``reference_key``,
            ``reference`` path, ``transform_type``, ``metric``, ...). See ``docs/preprocessing.md``, Registration.

    Returns:
        A ``monai.transforms.Compose``.

    Raises:
        ValueError: for inconsistent settings (e.g. spacing of the wrong length, unknown size mode or preset).
    """
    keys = [str(k) for k in ensure_tuple(keys)]
    if not keys:
        raise ValueError("build_preprocessing needs at least one image key")
    mask_keys = [mask_key] if mask_key else []
    all_keys = keys + mask_keys
    p = load_plan(plan)

    target_spacing = _pick(target_spacing, p, "target_spacing")
    spatial_size = _pick(spatial_size, p, "spatial_size", p.get("patch_size"))
    orientation = _pick(orientation, p, "orientation", "RAS")
    size_mode = _pick(size_mode, p, "size_mode", "crop_pad")
    normalization = _pick(normalization, p, "normalization")
    denoise = _pick(denoise, p, "denoise")
    spatial_dims = _pick(spatial_dims, p, "spatial_dims")
    channels = _pick(channels, p, "channels")
    if size_mode not in SIZE_MODES:
        raise ValueError(f"unknown size_mode {size_mode!r}; valid: {list(SIZE_MODES)}")

    lengths = {
        name: len(ensure_tuple(v))
        for name, v in (("target_spacing", target_spacing), ("spatial_size", spatial_size))
        if v is not None and len(ensure_tuple(v)) > 1
    }
    if spatial_dims is None and lengths:
        spatial_dims = next(iter(lengths.values()))
    if spatial_dims is not None:
        spatial_dims = int(spatial_dims)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        for name, n in lengths.items():
            if n != spatial_dims:
                raise ValueError(f"{name} has {n} values but spatial_dims is {spatial_dims}")

    if channels is not None and int(channels) not in (1, 3):
        raise ValueError(f"channels must be None (keep), 1 (grey) or 3 (RGB), got {channels!r}")
    xforms: list[Any] = list(load_image_transforms(keys, mask_keys, image_only=image_only, channels=channels))
    if channels is not None:
        xforms.append(MatchChannelsd(keys, int(channels)))
    if spatial_dims in (2, None):
        xforms.append(PlanarAffined(all_keys))
    if mask_keys and check_geometry:
        xforms.append(CheckGeometryd(mask_keys, ref_key=keys[0]))
    registration = _pick(registration, p, "registration")
    if registration:
        xforms.append(registration_transform(keys, mask_keys, registration))
    has_mask = bool(mask_keys)

    if orientation:
        orientation = str(orientation).upper()
        if spatial_dims == 3 or (spatial_dims == 2 and len(orientation) == 2):
            xforms.append(Orientationd(all_keys, axcodes=orientation, labels=None, allow_missing_keys=has_mask))
        elif spatial_dims is None and len(orientation) == 3:  # decided per image: 3D volumes only
            xforms.append(Orientation3Dd(all_keys, axcodes=orientation, labels=None, allow_missing_keys=has_mask))

    if target_spacing is not None:
        pixdim = [float(s) for s in ensure_tuple(target_spacing)]
        if any(s <= 0 for s in pixdim):
            raise ValueError(f"target_spacing must be positive, got {pixdim}")
        xforms.append(
            Spacingd(
                all_keys,
                pixdim=pixdim if len(pixdim) > 1 else pixdim[0],
                mode=["bilinear"] * len(keys) + ["nearest"] * len(mask_keys),
                allow_missing_keys=has_mask,
            )
        )

    xforms.append(normalization_transform(keys, normalization))

    if denoise:
        spec = {"method": denoise} if isinstance(denoise, str) else dict(denoise)
        xforms.append(denoise_transform(keys, **spec))

    if spatial_size is not None and size_mode is not None:
        size_list = [int(s) for s in ensure_tuple(spatial_size)]
        size: Any = size_list if len(size_list) > 1 else size_list[0]
        if size_mode == "crop_pad":
            xforms.append(ResizeWithPadOrCropd(all_keys, spatial_size=size, allow_missing_keys=has_mask))
        else:
            linear = "trilinear" if (spatial_dims or len(size_list)) == 3 else "bilinear"
            xforms.append(Resized(keys, spatial_size=size, mode=linear, anti_aliasing=True))
            if has_mask:
                xforms.append(Resized(mask_keys, spatial_size=size, mode="nearest", allow_missing_keys=True))

    xforms.append(EnsureTyped(keys, dtype=torch.float32))
    if has_mask:
        xforms.append(EnsureTyped(mask_keys, dtype=mask_dtype, allow_missing_keys=True))
    return Compose(xforms)
