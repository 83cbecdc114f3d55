"""Dataset fingerprint (the statistics that nnU-Net's "fingerprint → plan" rules read).

:func:`compute_fingerprint` loads every image once (no resampling) and records its geometry (shape and spacing in
RAS axis order, whatever the storage orientation), modality and intensity statistics, plus dataset-level
aggregates. :func:`plan_from_fingerprint` turns that into a preprocessing plan (target spacing, input size,
normalization, orientation) with a human-readable reason for every choice; the plan is directly consumable by
:func:`medmonai.transforms.preprocessing.build_preprocessing`. :func:`fingerprint_datalist` does both for a datalist
split and :func:`write_fingerprint` stores the result as JSON.

The plan rules live in :mod:`medmonai.data.planning` (one named rule function per decision, composed by
:class:`~medmonai.data.planning.Planner`); :func:`plan_from_fingerprint` and the planning constants are re-exported
here. The fingerprint's own rules: the statistics for CT normalization are pooled over the mask foreground; without
masks over the in-field voxels: the DICOM ``PixelPaddingValue`` (/``PixelPaddingRangeLimit``) or, without it, the
out-of-field constant (the image minimum, below -1000 HU, filling a border-connected region of at least 1 % of the
image) are excluded (:func:`padding_mask`); a 2D image with three channels that differ is colour, and the last
channel of a 2- or 4-channel 2D image is alpha (left out of the statistics).

Differences to nnU-Net: shapes/spacings are those of the stored images (nnU-Net uses shapes after cropping to the
non-zero region); multi-channel images are pooled over channels (alpha excluded); 2D images keep their storage axis
order.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.data.utils import to_affine_nd
from monai.transforms import Compose
from scipy import ndimage
from tqdm.auto import tqdm

from medmonai.data.datalist import class_names, load_datalist, load_datalist_file
from medmonai.data.planning import (
    ANISOTROPY_THRESHOLD,
    DEFAULT_DIVISOR,
    DEFAULT_MAX_VOXELS,
    MIN_KEPT_FRACTION,
    Planner,
    plan_from_fingerprint,
)
from medmonai.data.reader import load_image_transforms
from medmonai.utils import PathLike, atomic_write_json

__all__ = [
    "FingerprintError",
    "ANISOTROPY_THRESHOLD",
    "FINGERPRINT_VERSION",
    "MIN_KEPT_FRACTION",
    "DEFAULT_DIVISOR",
    "DEFAULT_MAX_VOXELS",
    "compute_fingerprint",
    "image_fingerprint",
    "plan_from_fingerprint",
    "Planner",
    "fingerprint_datalist",
    "write_fingerprint",
    "normalize_modality",
    "ensure_plan",
    "padding_mask",
    "require_grey",
]

#: Version of the fingerprint record layout (2: channels/colour/alpha, padding, ``in_channels`` in the plan).
FINGERPRINT_VERSION = 2
#: Out-of-field padding heuristic: the constant must lie below this value (HU; air is -1000) ...
PADDING_MAX_VALUE = -1000.0
#: ... and its border-connected region must cover at least this fraction of the image.
PADDING_MIN_FRACTION = 0.01
#: A 2D image with three channels is colour when the mean channel spread exceeds this fraction of its range
#: (0.004 ~ one grey level of 255: JPEG chroma noise on a grey image stays below it).
COLOUR_MIN_SPREAD = 0.004
_PERCENTILES = (0.5, 50.0, 99.5)
_MODALITY_ALIASES = {"MRI": "MR", "8BIT": "8bit", "OT8": "8bit", "CTA": "CT"}


class FingerprintError(RuntimeError):
    """Fingerprinting failed; the message names the file and the reason."""


def normalize_modality(value: Any) -> str | None:
    """Normalize a modality name (``"mri"`` → ``"MR"``; a ``{"0": "MRI"}`` channel mapping → its first value)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        vals = [v for _, v in sorted(value.items(), key=lambda kv: str(kv[0]))]
        value = vals[0] if vals else None
        if value is None:
            return None
    s = str(value).strip()
    if not s:
        return None
    up = s.upper()
    return _MODALITY_ALIASES.get(up, up)


def _stats(v: np.ndarray) -> dict[str, float] | None:
    if v.size == 0:
        return None
    v = v.astype(np.float64, copy=False)
    p = np.percentile(v, _PERCENTILES)
    return {
        "min": float(v.min()),
        "max": float(v.max()),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "percentile_00_5": float(p[0]),
        "median": float(p[1]),
        "percentile_99_5": float(p[2]),
        "n_voxels": int(v.size),
    }


def _sample(v: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if v.size <= n:
        return v.astype(np.float32, copy=True)
    return v[rng.choice(v.size, size=n, replace=False)].astype(np.float32)


def _name(value: Any) -> str:
    if isinstance(value, list | tuple):
        return f"{value[0]} (+{len(value) - 1} files)" if len(value) > 1 else str(value[0]) if value else "<empty>"
    return str(value)


def _ras_geometry(affine: np.ndarray, spatial_shape: Sequence[int]) -> dict[str, Any]:
    """Spacing and shape in RAS axis order (axis 0 = left-right...), plus the storage axis codes.

    2D images keep their storage axis order (a projection image has no RAS axis order; its plane may be coronal
    or sagittal): their spacing is the length of the first two columns of the full (3D) affine.
    """
    sd = len(spatial_shape)
    labels = (("L", "R"), ("P", "A"), ("I", "S"))
    aff = np.asarray(affine, dtype=np.float64)
    if sd == 2:
        a3 = aff if aff.shape == (4, 4) else np.asarray(to_affine_nd(3, aff), dtype=np.float64)
        cols = a3[:3, :2]
        spacing = np.linalg.norm(cols, axis=0)
        axcodes = "".join(labels[int(np.argmax(np.abs(c)))][int(c[np.argmax(np.abs(c))] > 0)] for c in cols.T)
        shape = [int(s) for s in spatial_shape]
        return {
            "shape": shape,
            "spacing": [float(s) for s in spacing],
            "storage_shape": shape,
            "storage_spacing": [float(s) for s in spacing],
            "axcodes": axcodes,
        }
    aff = np.asarray(to_affine_nd(sd, aff), dtype=np.float64)
    spacing = np.linalg.norm(aff[:sd, :sd], axis=0)
    ornt = nib.orientations.io_orientation(aff)
    if np.isnan(ornt).any():
        raise ValueError(f"degenerate affine (cannot determine the axis orientation):\n{aff}")
    perm = ornt[:, 0].astype(int)
    spacing_ras = np.empty(sd)
    shape_ras = np.empty(sd, dtype=int)
    spacing_ras[perm] = spacing
    shape_ras[perm] = np.asarray(spatial_shape, dtype=int)
    axcodes = "".join(nib.orientations.ornt2axcodes(ornt, labels=labels[:sd]))
    return {
        "shape": [int(s) for s in shape_ras],
        "spacing": [float(s) for s in spacing_ras],
        "storage_shape": [int(s) for s in spatial_shape],
        "storage_spacing": [float(s) for s in spacing],
        "axcodes": axcodes,
    }


def _nonzero_bbox_fraction(arr: np.ndarray) -> float:
    nz = np.any(arr != 0, axis=0)
    if not nz.any():
        return 0.0
    size = 1
    for ax in range(nz.ndim):
        other = tuple(a for a in range(nz.ndim) if a != ax)
        idx = np.flatnonzero(nz.any(axis=other))
        size *= int(idx[-1] - idx[0] + 1)
    return float(size / nz.size)


def _heuristic_modality(arr: np.ndarray, integer_valued: bool, spatial_dims: int) -> str:
    vmin, vmax = float(arr.min()), float(arr.max())
    if integer_valued and vmin <= -500:
        return "CT"
    if integer_valued and vmin >= 0 and vmax <= 255 and spatial_dims == 2:
        return "8bit"
    return "MR"


def _border_connected(eq: np.ndarray) -> np.ndarray:
    """Voxels of the boolean 2D plane ``eq`` connected to its border (within ``eq``)."""
    lab, n = ndimage.label(eq)
    if n == 0:
        return np.zeros_like(eq)
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    keep = np.unique(border[border > 0])
    return np.isin(lab, keep)


def padding_mask(
    arr: np.ndarray, meta: Mapping[str, Any] | None = None, modality: str | None = None
) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """Find the padding (out-of-field) voxels of a one-channel image ``(1, *spatial)``.

    1. The DICOM ``PixelPaddingValue`` (physical units, in ``meta``; with ``PixelPaddingRangeLimit`` every value
       between the two) when the reader gives it;
    2. else, for CT only, the out-of-field constant: the image minimum, when it is below :data:`PADDING_MAX_VALUE`
       (-1000 HU, air) and the voxels at exactly that value connected to the border of their slice (2D: of the
       image) cover at least :data:`PADDING_MIN_FRACTION` of the image (e.g. -3024 or -2048 outside the scan
       circle).

    Args:
        arr: channel-first image; images with more than one channel have no padding.
        meta: the image's metadata (``PixelPaddingValue``, ``PixelPaddingRangeLimit``).
        modality: normalized modality (the constant rule applies to ``"CT"`` only).

    Returns:
        ``(mask, info)``: the spatial boolean padding mask and ``{"source", "value", "range_limit", "n_voxels",
        "fraction"}``, or ``(None, None)`` when no padding is found.
    """
    if arr.shape[0] != 1:
        return None, None
    v = arr[0]
    meta = meta or {}

    def _finite(x: Any) -> float | None:
        try:
            f = float(np.asarray(x).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            return None
        return f if math.isfinite(f) else None

    pv, lim = _finite(meta.get("PixelPaddingValue")), _finite(meta.get("PixelPaddingRangeLimit"))
    info: dict[str, Any]
    if pv is not None:
        if lim is not None:
            lo, hi = sorted((pv, lim))
            pad = (v >= np.asarray(lo, v.dtype)) & (v <= np.asarray(hi, v.dtype))
        else:
            pad = v == np.asarray(pv, v.dtype)
        info = {"source": "DICOM PixelPaddingValue", "value": pv, "range_limit": lim}
    elif modality == "CT":
        c = v.min()
        if not float(c) < PADDING_MAX_VALUE:
            return None, None
        eq = v == c
        if eq.mean() < PADDING_MIN_FRACTION:
            return None, None
        if v.ndim == 2:
            pad = _border_connected(eq)
        else:  # slice by slice along the last (storage) axis: the scan circle lies in the acquisition plane
            pad = np.stack([_border_connected(eq[..., k]) for k in range(eq.shape[-1])], axis=-1)
        if pad.mean() < PADDING_MIN_FRACTION:
            return None, None
        info = {"source": "out-of-field constant", "value": float(c), "range_limit": None}
    else:
        return None, None
    info["n_voxels"] = int(pad.sum())
    info["fraction"] = round(float(pad.mean()), 6)
    return pad, info


def image_fingerprint(
    image: Any,
    mask: Any | None = None,
    entry: Mapping[str, Any] | None = None,
    default_modality: str | None = None,
    samples_per_image: int = 10000,
    rng: np.random.Generator | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Fingerprint one loaded, channel-first image (a MONAI ``MetaTensor``).

    Args:
        image: the image, shape ``(C, *spatial)``, with ``affine`` and ``meta``.
        mask: optional segmentation mask on the same grid.
        entry: the datalist entry (for ``modality``).
        default_modality: modality to use when neither the reader nor the entry gives one.
        samples_per_image: number of voxels sampled for the pooled statistics.
        rng: random generator for the sampling.

    The record holds the geometry, modality, channel count (2D: ``colour`` when three channels differ, ``alpha``
    for a grey+alpha or RGBA image; alpha is left out of the statistics), intensity statistics over all voxels
    (``intensity_all``), over the in-field voxels when padding was found (``padding``, ``intensity_in_field``, see
    :func:`padding_mask`) and over the mask foreground.

    Returns:
        ``(record, foreground_samples, all_samples)``; ``foreground_samples`` is empty without a mask;
        ``all_samples`` leave the padding out.

    Raises:
        ValueError: for non-finite values or a mask on another grid.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    entry = entry or {}
    arr = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image)
    if arr.ndim not in (3, 4):
        raise ValueError(f"expected a channel-first 2D or 3D image, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"image has {int((~np.isfinite(arr)).sum())} non-finite (NaN/inf) voxel(s)")
    if arr.shape[0] == 0:
        raise ValueError(f"image has no channel (shape {arr.shape})")
    sd = arr.ndim - 1
    affine = np.asarray(getattr(image, "affine", np.eye(4)), dtype=np.float64)
    n_ch = int(arr.shape[0])
    rec: dict[str, Any] = {"spatial_dims": sd, "channels": n_ch}
    # 2D colour semantics: 2 channels = grey + alpha, 4 = RGBA; alpha is kept out of the statistics
    values = arr
    rec["alpha"] = None
    if sd == 2 and n_ch in (2, 4):
        a = arr[-1]
        rec["alpha"] = {"min": float(a.min()), "max": float(a.max()), "constant": bool(a.min() == a.max())}
        values = arr[:-1]
    rec["colour"] = False
    if sd == 2 and values.shape[0] == 3:
        spread = float((values.max(axis=0) - values.min(axis=0)).mean())
        value_range = float(values.max() - values.min())
        rec["colour_spread"] = round(spread, 6)
        rec["colour"] = bool(spread > COLOUR_MIN_SPREAD * max(value_range, 1e-12))
    rec.update(_ras_geometry(affine, arr.shape[1:]))
    integer_valued = bool(np.array_equal(arr, np.round(arr)))
    rec["integer_valued"] = integer_valued

    meta = getattr(image, "meta", None) or {}
    modality, source = normalize_modality(meta.get("Modality")), "reader"
    if modality is None:
        modality, source = normalize_modality(entry.get("modality")), "entry"
    if modality is None:
        modality, source = normalize_modality(default_modality), "datalist"
    if modality is None:
        modality, source = _heuristic_modality(arr, integer_valued, sd), "heuristic"
    rec["modality"] = modality
    rec["modality_source"] = source

    flat = values.reshape(-1)
    rec["intensity_all"] = _stats(flat)
    rec["nonzero_bbox_fraction"] = _nonzero_bbox_fraction(values)
    pad, rec["padding"] = padding_mask(values, meta, modality)
    rec["intensity_in_field"] = None
    if pad is not None and pad.any():
        in_field = values[:, ~pad].reshape(-1)
        rec["intensity_in_field"] = _stats(in_field)
        all_samples = _sample(in_field, samples_per_image, rng)
    else:
        all_samples = _sample(flat, samples_per_image, rng)
    fg_samples = np.empty(0, dtype=np.float32)
    rec["intensity_foreground"] = None
    rec["mask_labels"] = None
    if mask is not None:
        m = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask)
        if tuple(m.shape[1:]) != tuple(arr.shape[1:]):
            raise ValueError(f"mask spatial shape {tuple(m.shape[1:])} differs from image {tuple(arr.shape[1:])}")
        labels, counts = np.unique(np.round(m).astype(np.int64), return_counts=True)
        rec["mask_labels"] = {str(int(lab)): int(c) for lab, c in zip(labels, counts)}
        fg = np.broadcast_to(np.any(m > 0, axis=0, keepdims=True), values.shape)
        fg_vals = values[fg]
        rec["intensity_foreground"] = _stats(fg_vals)
        fg_samples = _sample(fg_vals, samples_per_image, rng)
    return rec, fg_samples, all_samples


def _axis_stats(values: np.ndarray) -> dict[str, list[float]]:
    def r(a: np.ndarray) -> list[float]:
        return [round(float(v), 6) for v in a]

    return {
        "median": r(np.median(values, axis=0)),
        "min": r(values.min(axis=0)),
        "max": r(values.max(axis=0)),
        "percentile_10": r(np.percentile(values, 10, axis=0)),
    }


def compute_fingerprint(
    entries: Sequence[Mapping[str, Any]],
    image_key: str = "image",
    mask_key: str | None = "mask",
    classes: Sequence[str] | None = None,
    progress: bool = True,
    samples_per_image: int = 10000,
    seed: int = 0,
    default_modality: str | None = None,
) -> dict[str, Any]:
    """Compute the dataset fingerprint of datalist entries (paths already resolved).

    Args:
        entries: datalist entries (``image``, optional ``mask``, ``label``, ``subject``, ``modality``).
        image_key: key of the image path.
        mask_key: key of the segmentation mask path (entries without it have no foreground statistics).
        classes: class names indexed by the entries' integer ``label``.
        progress: show a tqdm progress bar.
        samples_per_image: foreground (or all-voxel) samples per image for the pooled statistics; sampling is
            deterministic given ``seed`` and the entry order.
        seed: sampling seed.
        default_modality: dataset-level modality (e.g. the datalist's ``modality``), used for images whose reader
            and entry give none.

    Returns:
        The fingerprint dict: ``images`` (one record per entry) and the aggregates ``n_images``, ``n_subjects``,
        ``images_per_subject``, ``spatial_dims``, ``channels`` (stored channel counts), ``colour_images``,
        ``alpha_images``, ``padding`` (images with padding excluded from the statistics), ``median_spacing``,
        ``median_shape``,
        ``spacing``/``shape`` (``median``, ``min``, ``max``, ``percentile_10`` per RAS axis), ``anisotropy_ratio``,
        ``modality_counts``, ``modality_sources``, ``intensity`` (pooled), ``class_counts``, ``mask_labels``.

    Raises:
        FingerprintError: if an image cannot be loaded or fingerprinted (the message names the file), if the list
            is empty, or if 2D and 3D images are mixed.
    """
    if len(entries) == 0:
        raise FingerprintError("cannot fingerprint an empty list of entries")
    loaders = Compose(load_image_transforms(image_key, [mask_key] if mask_key else [], image_only=True))

    records: list[dict[str, Any]] = []
    fg_pool: list[np.ndarray] = []
    all_pool: list[np.ndarray] = []
    for i, entry in enumerate(tqdm(entries, desc="fingerprint", disable=not progress, unit="img")):
        if image_key not in entry:
            raise FingerprintError(f"entry {i}: no '{image_key}' key: {dict(entry)!r}")
        name = _name(entry[image_key])
        data = {image_key: entry[image_key]}
        if mask_key and entry.get(mask_key) is not None:
            data[mask_key] = entry[mask_key]
        try:
            loaded = loaders(data)
            rng = np.random.default_rng([int(seed), i])
            rec, fg, al = image_fingerprint(
                loaded[image_key], loaded.get(mask_key) if mask_key else None, entry, default_modality,
                samples_per_image, rng,
            )  # fmt: skip
        except Exception as e:
            cause = e.__cause__ if isinstance(e, RuntimeError) and e.__cause__ is not None else e
            raise FingerprintError(f"{name}: cannot fingerprint entry {i}: {type(cause).__name__}: {cause}") from e
        rec = {"file": name, "subject": str(entry.get("subject", name)), **rec}
        if mask_key and entry.get(mask_key) is not None:
            rec["mask_file"] = _name(entry[mask_key])
        if "label" in entry:
            rec["label"] = entry["label"]
        records.append(rec)
        fg_pool.append(fg)
        all_pool.append(al)

    dims = Counter(r["spatial_dims"] for r in records)
    if len(dims) > 1:
        examples = {d: next(r["file"] for r in records if r["spatial_dims"] == d) for d in dims}
        raise FingerprintError(f"mixed 2D and 3D images ({dict(dims)}), e.g. {examples}")
    sd = next(iter(dims))
    spacings = np.array([r["spacing"] for r in records], dtype=np.float64)
    shapes = np.array([r["shape"] for r in records], dtype=np.float64)

    subjects = Counter(r["subject"] for r in records)
    per_subject = np.array(list(subjects.values()))
    class_counts: dict[str, int] = {}
    for e in entries:
        if "label" in e and e["label"] is not None:
            lab = e["label"]
            if classes is not None and isinstance(lab, int | np.integer) and 0 <= int(lab) < len(classes):
                lab = classes[int(lab)]
            class_counts[str(lab)] = class_counts.get(str(lab), 0) + 1
    if classes is not None:
        class_counts = {str(c): class_counts.get(str(c), 0) for c in classes} | class_counts

    mask_labels: dict[str, dict[str, int]] = {}
    for r in records:
        for lab, n in (r["mask_labels"] or {}).items():
            d = mask_labels.setdefault(lab, {"images": 0, "voxels": 0})
            d["images"] += 1
            d["voxels"] += n

    with_mask = sum(r["intensity_foreground"] is not None for r in records)
    padded = [r for r in records if r.get("padding")]
    all_src = "in-field voxels" if padded else "all voxels"
    if with_mask == len(records):
        pooled_src, pool = "foreground", np.concatenate(fg_pool)
    else:
        pooled_src, pool = all_src, np.concatenate(all_pool)
    if pool.size == 0:  # masks present but all empty
        pooled_src, pool = all_src, np.concatenate(all_pool)
    pooled = _stats(pool) or {}
    pooled["source"] = pooled_src
    pooled["n_images_with_mask"] = with_mask
    padding_summary: dict[str, Any] = {"n_images": len(padded)}
    if padded:
        padding_summary["sources"] = dict(Counter(r["padding"]["source"] for r in padded))
        padding_summary["values"] = {
            f"{v:g}": n for v, n in sorted(Counter(float(r["padding"]["value"]) for r in padded).items())
        }
        padding_summary["median_fraction"] = float(np.median([r["padding"]["fraction"] for r in padded]))
    alpha = [r for r in records if r.get("alpha")]

    median_spacing = np.median(spacings, axis=0)
    aniso = np.max(spacings, axis=1) / np.min(spacings, axis=1)
    return {
        "version": FINGERPRINT_VERSION,
        "n_images": len(records),
        "n_subjects": len(subjects),
        "images_per_subject": {
            "min": int(per_subject.min()),
            "median": float(np.median(per_subject)),
            "max": int(per_subject.max()),
        },
        "spatial_dims": int(sd),
        "channels": {str(k): v for k, v in sorted(Counter(r["channels"] for r in records).items())},
        "colour_images": sum(bool(r.get("colour")) for r in records),
        "alpha_images": {"n": len(alpha), "varying": sum(not r["alpha"]["constant"] for r in alpha)},
        "padding": padding_summary,
        "median_spacing": [round(float(v), 6) for v in median_spacing],
        "median_shape": [float(v) for v in np.median(shapes, axis=0)],
        "spacing": _axis_stats(spacings),
        "shape": _axis_stats(shapes),
        "anisotropy_ratio": {
            "median_spacing": float(median_spacing.max() / median_spacing.min()),
            "max_image": float(aniso.max()),
        },
        "modality_counts": dict(Counter(r["modality"] for r in records)),
        "modality_sources": dict(Counter(r["modality_source"] for r in records)),
        "integer_valued": sum(r["integer_valued"] for r in records),
        "nonzero_bbox_fraction": {
            "median": float(np.median([r["nonzero_bbox_fraction"] for r in records])),
            "min": float(min(r["nonzero_bbox_fraction"] for r in records)),
        },
        "intensity": pooled,
        "class_counts": class_counts,
        "mask_labels": dict(sorted(mask_labels.items(), key=lambda kv: int(kv[0]))),
        "samples_per_image": int(samples_per_image),
        "seed": int(seed),
        "images": records,
    }


def require_grey(plan: Mapping[str, Any], what: str) -> int:
    """Return ``1`` (the ``channels`` setting) for a consumer that only handles grey images, or refuse colour data.

    Args:
        plan: a plan from :func:`plan_from_fingerprint` (or :func:`ensure_plan`).
        what: the consumer, named in the error (e.g. ``"the GAN bundle"``).

    Raises:
        ValueError: if the plan's ``in_channels`` is not 1 (colour data would be silently made grey); set
            ``channels: 1`` explicitly to convert them on purpose.
    """
    n = int(plan.get("in_channels", 1) or 1)
    if n != 1:
        raise ValueError(
            f"{what} works on grey (one-channel) images, but the data have {n} channels (plan: "
            f"{next((r for r in plan.get('reasons', []) if r.startswith('channels')), 'in_channels ' + str(n))}); "
            "set channels: 1 explicitly to convert them to grey on purpose"
        )
    return 1


def fingerprint_datalist(
    datalist_path: PathLike,
    key: str = "training",
    image_key: str = "image",
    mask_key: str | None = "mask",
    progress: bool = True,
    samples_per_image: int = 10000,
    seed: int = 0,
    spatial_dims: int | None = None,
    max_patch_voxels: int | None = None,
    divisor: int | None = None,
    task: str | None = None,
) -> dict[str, Any]:
    """Fingerprint one split of a datalist (``"all"`` for every split) and plan its preprocessing.

    ``task`` (``"classification"``, ``"segmentation"`` or ``None``) selects task-specific planning rules (see
    :func:`~medmonai.data.planning.plan_from_fingerprint`).

    The datalist's ``classes`` name the labels and its top-level ``modality`` (a string, or an MSD-style
    ``{"0": "MRI"}`` mapping) is used for images whose reader and entry give no modality.

    Returns:
        ``{"fingerprint": ..., "plan": ..., "datalist": str(datalist_path), "key": key}``.
    """
    raw = load_datalist_file(datalist_path)
    entries = load_datalist(datalist_path, key=key)
    fp = compute_fingerprint(
        entries,
        image_key=image_key,
        mask_key=mask_key,
        classes=class_names(raw),
        progress=progress,
        samples_per_image=samples_per_image,
        seed=seed,
        default_modality=normalize_modality(raw.get("modality")),
    )
    plan = plan_from_fingerprint(
        fp, spatial_dims=spatial_dims, max_patch_voxels=max_patch_voxels, divisor=divisor, task=task
    )
    return {"fingerprint": fp, "plan": plan, "datalist": os.fspath(datalist_path), "key": key}


def write_fingerprint(path: PathLike, result: Mapping[str, Any]) -> Path:
    """Write a fingerprint result (or a bare plan) atomically as JSON; returns the path."""
    return atomic_write_json(path, dict(result))


def ensure_plan(
    datalist_path: PathLike,
    out: PathLike | None = None,
    key: str = "training",
    progress: bool = True,
    task: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The preprocessing plan of a datalist, computed once and cached as a fingerprint JSON.

    Meant for bundle configs (``plan: "$medmonai.data.fingerprint.ensure_plan(@datalist, @output_dir + '/fp.json')"``):
    the first run fingerprints the ``key`` split (never ``test``) and writes ``out``; later runs read it back, as long
    as it was made from the same datalist file and split. A cached plan is used as it was made, also one written by
    an older version (a trained model keeps the plan it was trained with; a plan without ``in_channels`` means one
    channel): delete the file to plan again. ``task`` selects task-specific planning rules
    (:func:`~medmonai.data.planning.plan_from_fingerprint`; the classification bundle passes ``"classification"``).
    ``overrides`` replace plan values (e.g. ``spatial_size``).

    Raises:
        ValueError: when ``out`` holds a plan of another ``spatial_dims`` than the one requested (a run folder of
            the other dimensionality), naming the file.

    Returns:
        The plan dict (consumable by :func:`medmonai.transforms.preprocessing.build_preprocessing`).
    """
    datalist_path = Path(datalist_path)
    out = Path(out) if out is not None else datalist_path.with_name("fingerprint.json")
    result = None
    if out.is_file():
        try:
            cached = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            cached = None
        dims = overrides.get("spatial_dims")
        planned = (cached or {}).get("plan", {}).get("spatial_dims") if isinstance(cached, dict) else None
        if dims is not None and planned is not None and int(dims) != int(planned):
            # one bundle serves 2D and 3D: a run folder planned in the other dimensionality is not re-planned over
            raise ValueError(
                f"{out}: this run folder holds a {int(planned)}D plan but spatial_dims={dims} was requested; pass "
                f"spatial_dims={int(planned)} (the setting it was trained with) or use another bundle_root"
            )
        if isinstance(cached, dict) and cached.get("datalist") == os.fspath(datalist_path) and cached.get("key") == key:
            result = cached
    if result is None:
        result = fingerprint_datalist(datalist_path, key=key, progress=progress, task=task)
        write_fingerprint(out, result)
    plan = dict(result["plan"])
    plan.update({k: v for k, v in overrides.items() if v is not None})
    return plan
