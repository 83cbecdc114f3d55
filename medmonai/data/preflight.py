"""Pre-flight check: open and decode every datalist entry before any training starts.

:func:`check_entries <medmonai.data.datalist.check_entries>` only looks at paths and labels; the pre-flight check also
*reads* every image and mask with the readers training uses (:class:`medmonai.transforms.io.MedicalImageReader`: NIfTI
through nibabel, 2D images through PIL, DICOM series through :class:`medmonai.data.dicom.DicomSeriesReader`, which
validates the series first) and looks at the voxels. Problems found, each named with its file:

- missing or empty (0-byte) files, unreadable, truncated or corrupt files, files that are not images;
- DICOM: files without pixel data, several series in one folder, missing or duplicate slices, inconsistent
  orientation / spacing / size inside a series (the checks of :func:`medmonai.data.dicom.scan_dicom_folder`);
- images with more dimensions than the bundle's ``spatial_dims`` (a 4D NIfTI where 3D is expected) or fewer;
- NaN or infinite voxel values, constant images (every voxel the same value);
- a mask whose spatial shape differs from its image's, non-finite or non-integer mask values, mask values not named
  by the datalist's ``mask_labels``;
- labels outside the class list, a class with no training entry, an empty datalist;
- an output folder that cannot be created or written.

:func:`preflight_datalist` is what the training bundles run first (``datalist_file`` in their ``train.yaml``), with
``preflight: error`` (default: stop with a table of every problem) or ``skip`` (leave the bad entries out, write a
cleaned datalist and a report; problems that concern the data set as a whole still stop the run). Results are cached
per file by size and modification time, so a second run only looks at changed files. :func:`check_split_classes`
checks the training/validation parts of the split (or cross-validation fold) that training will use.

Command line: ``medmonai check DATALIST [--dims 2|3] [--report FILE]``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medmonai.data.content import array_sha1, shared_reader
from medmonai.data.datalist import (
    SPLIT_KEYS,
    DatalistError,
    Problem,
    check_entries,
    class_names,
    datalist_base_dir,
    format_problems,
    load_datalist,
    load_datalist_file,
    path_escape,
    write_datalist,
)
from medmonai.data.reader import PIL_SUFFIXES
from medmonai.data.splits import case_id
from medmonai.utils import PathLike, atomic_write_json, file_signature, read_json

__all__ = [
    "PreflightError",
    "PREFLIGHT_MODES",
    "REPORT_NAME",
    "check_output_dir",
    "check_image",
    "preflight_entries",
    "preflight_datalist",
    "check_split_classes",
]

logger = logging.getLogger(__name__)

PREFLIGHT_MODES: tuple[str, ...] = ("error", "skip", "off")
REPORT_NAME = "preflight_report.json"
CACHE_NAME = "preflight_cache.json"
CLEANED_NAME = "preflight_datalist.json"
_CACHE_VERSION = 2  # 2: info holds the affine and warnings


class PreflightError(DatalistError):
    """The pre-flight check found problems; the message holds a table naming every file and reason."""


# ---------------------------------------------------------------------------------------------- output folder


def check_output_dir(output_dir: PathLike) -> Problem | None:
    """Create ``output_dir`` if needed and check that a file can be written there; return the problem or None."""
    folder = Path(output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return Problem(-1, str(folder), f"output folder cannot be created ({e.strerror or e})", "output_dir")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".preflight.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return Problem(-1, str(folder), f"output folder is not writable ({e.strerror or e})", "output_dir")
    return None


# ------------------------------------------------------------------------------------------------ one image


def _names(value: Any) -> list[str]:
    if isinstance(value, str | os.PathLike):
        return [os.fspath(value)]
    return [os.fspath(v) for v in value]


def _shown(value: Any) -> str:
    names = _names(value)
    return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} more)"


def _reason(error: BaseException, names: Sequence[str]) -> str:
    """One-line reason from a reader's exception, without the leading file name (the table names the file)."""
    text = str(error).strip()
    for n in list(names) + [os.path.abspath(n) for n in names]:
        for prefix in (f"{n}: ", f"{n} (+{len(names) - 1} more): "):
            if text.startswith(prefix):
                text = text[len(prefix) :]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = "".join(
        f"{'' if i == 0 else ' ' if lines[i - 1].endswith(':') else '; '}{line}" for i, line in enumerate(lines)
    )
    if not isinstance(error, ValueError | OSError):  # EOFError, zlib.error...: the type says what happened
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text or type(error).__name__


def _spatial_shape(arr: np.ndarray, meta: Mapping[str, Any]) -> tuple[int, ...]:
    """The array's shape without its channel axis (``original_channel_dim`` of the reader's metadata)."""
    channel = meta.get("original_channel_dim", "no_channel")
    try:
        channel = int(channel)
    except (TypeError, ValueError):
        return tuple(int(s) for s in arr.shape)
    axis = channel % arr.ndim
    return tuple(int(s) for i, s in enumerate(arr.shape) if i != axis)


def _is_nifti(names: Sequence[str]) -> bool:
    return len(names) == 1 and names[0].lower().endswith((".nii", ".nii.gz"))


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _alpha_check(path: str) -> tuple[str | None, str | None]:
    """The alpha-channel rule for 2D images: ``(problem, warning)``.

    Loading keeps the colour channels and drops the alpha channel. A fully opaque alpha loses nothing: a warning.
    Transparent pixels are an error: their colour values (often black or undefined) would be learnt as image
    content; the images must be flattened onto their background (or saved without alpha) first.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            transparency = "transparency" in im.info
            if mode not in _ALPHA_MODES and not transparency:
                return None, None
            rgba = im.convert("LA" if mode in ("LA", "La", "L") else "RGBA")
            alpha = np.asarray(rgba.getchannel("A"))
    except Exception:  # noqa: BLE001 - the reader already decoded the file; a header quirk is no reason to fail
        return None, None
    what = f"mode {mode}" + (" with a transparent colour" if transparency and mode not in _ALPHA_MODES else "")
    n_transparent = int(np.count_nonzero(alpha < 255))
    if n_transparent:
        return (
            f"image has an alpha channel ({what}) with {n_transparent} of {alpha.size} pixels not fully opaque: "
            "loading drops the alpha, so the colour under transparent pixels would be learnt as image content; "
            "flatten the images onto their background or save them without alpha"
        ), None
    return None, f"image has an alpha channel ({what}), fully opaque: it is dropped when loading (nothing is lost)"


def _affine_difference(image_affine: Any, mask_affine: Any) -> str | None:
    """Why a mask's affine does not put its voxels where its image's are, or None (same grid, same place)."""
    a, b = np.asarray(image_affine, dtype=float), np.asarray(mask_affine, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 2:
        return None
    n = a.shape[0] - 1
    spacing = np.linalg.norm(a[:n, :n], axis=0)
    tol = 0.1 * float(spacing[spacing > 0].min()) if np.any(spacing > 0) else 1e-3
    if not np.allclose(a[:n, :n], b[:n, :n], rtol=1e-3, atol=1e-3 * float(spacing.max() or 1.0)):
        return (
            f"mask is not aligned with its image: its orientation or spacing differs (image voxel axes "
            f"{np.round(a[:n, :n], 4).tolist()}, mask {np.round(b[:n, :n], 4).tolist()}); resample the mask onto "
            "the image or fix its header"
        )
    shift = b[:n, n] - a[:n, n]
    if float(np.linalg.norm(shift)) > tol:
        return (
            f"mask is not aligned with its image: its origin is shifted by {float(np.linalg.norm(shift)):.4g} mm "
            f"({', '.join(f'{v:.4g}' for v in shift)}) on the same voxel grid; resample the mask onto the image "
            "or fix its header"
        )
    return None


def check_image(
    path: PathLike | Sequence[PathLike], spatial_dims: int | None = None, is_mask: bool = False
) -> tuple[list[str], dict[str, Any]]:
    """Open and decode one image (a file, a DICOM folder or a list of DICOM files) and check its voxels.

    Args:
        path: the image.
        spatial_dims: expected number of spatial dimensions (2 or 3), or None to accept any.
        is_mask: a segmentation mask: constant content is allowed, values must be integers.

    Returns:
        ``(reasons, info)``: the problems found (empty when the image is fine) and what was read: ``shape`` (the
        decoded array), ``spatial_shape`` (without the channel axis), ``sha1`` (of the decoded array) and, for masks,
        ``values`` (the distinct values, at most 64).
    """
    names = _names(path)
    info: dict[str, Any] = {}
    reader = shared_reader()
    try:
        arr, meta = reader.get_data(reader.read(names[0] if len(names) == 1 else names))
    except Exception as e:  # noqa: BLE001 - every reader error is a reason to report
        return [f"cannot read {'mask' if is_mask else 'image'}: {_reason(e, names)}"], info
    arr = np.asarray(arr)
    spatial = _spatial_shape(arr, meta)
    info.update(shape=[int(s) for s in arr.shape], spatial_shape=list(spatial), sha1=array_sha1(arr))
    affine = meta.get("affine")
    if affine is not None:
        info["affine"] = np.asarray(affine, dtype=float).tolist()
    reasons: list[str] = []
    if len(names) == 1 and names[0].lower().endswith(PIL_SUFFIXES):
        alpha_reason, alpha_warning = _alpha_check(names[0])
        if alpha_reason:
            reasons.append(alpha_reason)
        if alpha_warning:
            info["warnings"] = [alpha_warning]
    if spatial_dims is not None:
        # NIfTI: every axis is spatial or time; a 4th axis of length > 1 is a time series, not channels
        axes = arr.shape if _is_nifti(names) else spatial
        n_real = sum(1 for s in axes if s > 1)
        if n_real > spatial_dims:
            reasons.append(
                f"{n_real}D image (shape {tuple(int(s) for s in arr.shape)}) where {spatial_dims}D images are "
                "expected (spatial_dims); select one volume/slice or set spatial_dims"
            )
        elif len(spatial) < spatial_dims:
            reasons.append(f"{len(spatial)}D image (shape {tuple(spatial)}) where {spatial_dims}D images are expected")
    if arr.size == 0:
        reasons.append(f"image has no voxels (shape {tuple(arr.shape)})")
        return reasons, info
    if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        n_inf = int(np.count_nonzero(np.isinf(arr)))
        if n_nan or n_inf:
            counts = " and ".join(f"{n} {what}" for n, what in ((n_nan, "NaN"), (n_inf, "infinite")) if n)
            reasons.append(f"{counts} voxel value(s) out of {arr.size}")
            return reasons, info
    if is_mask:
        values = np.unique(arr)
        if values.size and not np.all(np.equal(np.mod(values, 1), 0)):
            reasons.append(f"mask has non-integer values (e.g. {float(values[np.mod(values, 1) != 0][0]):g})")
        info["values"] = [int(v) if float(v).is_integer() else float(v) for v in values[:64]]
    else:
        lo, hi = arr.min(), arr.max()
        if lo == hi:
            reasons.append(f"constant image (every voxel is {float(lo):g}): nothing to learn or normalise")
    return reasons, info


# ----------------------------------------------------------------------------------------------- the cache


def _stat_signature(value: Any) -> list[Any]:
    return file_signature(_names(value))


class _Cache:
    """Per-image check results keyed by path and settings, valid while the files' sizes and mtimes are unchanged."""

    def __init__(self, path: PathLike | None) -> None:
        self.path = Path(path) if path is not None else None
        self.data: dict[str, Any] = {}
        self.changed = False
        if self.path is not None and self.path.is_file():
            try:
                raw = read_json(self.path, "pre-flight cache")
                if isinstance(raw, dict) and raw.get("version") == _CACHE_VERSION:
                    self.data = dict(raw.get("results") or {})
            except ValueError as e:
                logger.warning(f"ignoring the unreadable pre-flight cache {self.path} ({e})")

    def check(self, value: Any, spatial_dims: int | None, is_mask: bool) -> tuple[list[str], dict[str, Any]]:
        key = json.dumps([[os.path.abspath(n) for n in _names(value)], spatial_dims, is_mask])
        try:
            sig = _stat_signature(value)
        except OSError as e:
            return [f"cannot read file ({e.strerror or e})"], {}
        hit = self.data.get(key)
        if isinstance(hit, dict) and hit.get("stat") == sig:
            return list(hit["reasons"]), dict(hit["info"])
        reasons, info = check_image(value, spatial_dims, is_mask)
        self.data[key] = {"stat": sig, "reasons": reasons, "info": info}
        self.changed = True
        return reasons, info

    def save(self) -> None:
        if self.path is not None and self.changed:
            try:
                atomic_write_json(self.path, {"version": _CACHE_VERSION, "results": self.data}, indent=0)
            except OSError as e:
                logger.warning(f"cannot write the pre-flight cache {self.path} ({e})")


# -------------------------------------------------------------------------------------------- entry lists


def _mask_values(mask_labels: Any) -> set[int] | None:
    if not isinstance(mask_labels, Mapping):
        return None
    try:
        return {int(k) for k in mask_labels}
    except (TypeError, ValueError):
        return None


def preflight_entries(
    entries: Sequence[dict[str, Any]],
    classes: Sequence[str] | None = None,
    spatial_dims: int | None = None,
    mask_labels: Mapping[str, Any] | None = None,
    require_all_classes: bool = True,
    decode: bool = True,
    cache_file: PathLike | None = None,
    source: str = "",
    split: str = "",
    hashes: dict[int, str] | None = None,
    require_labels: bool | None = None,
    known_problems: Sequence[Problem] = (),
    warnings: list[Problem] | None = None,
    dims_found: dict[int, int] | None = None,
) -> list[Problem]:
    """Check datalist entries: paths and labels, then every image and mask opened, decoded and compared.

    Paths, labels and duplicates are checked by :func:`~medmonai.data.datalist.check_entries`, images and masks by
    :func:`check_image`; a mask must have its image's shape and affine (the same voxels in the same place).

    Args:
        entries: resolved entries (absolute paths, see :func:`~medmonai.data.datalist.load_datalist`).
        classes: the class names, or None to skip label checks.
        spatial_dims: expected spatial dimensions of the images (2 or 3), or None.
        mask_labels: the datalist's ``mask_labels`` (mask value -> name): mask values must be among its keys.
        require_all_classes: report classes without entries.
        decode: open and decode the images (False: paths and labels only).
        cache_file: JSON cache of per-image results (by size and mtime), or None.
        source: the datalist's name, for messages.
        split: the split's name (shown in the ``key`` column as ``split:key``).
        hashes: filled with entry index -> SHA-1 of the decoded image (for the provenance's data fingerprint).
        require_labels: see :func:`~medmonai.data.datalist.check_entries`.
        known_problems: problems found by the caller (e.g. paths leaving the datalist's folder): reported, and
            their entries are not opened.
        warnings: filled with what deserves a note but is no error (a fully opaque alpha channel).
        dims_found: filled with entry index -> spatial dimensions of the decoded image.

    Returns:
        The problems; ``index`` is the entry's position in ``entries`` (-1 for the list as a whole).
    """
    prefix = f"{split}:" if split else ""
    problems = [Problem(p.index, p.file, p.reason, p.key) for p in known_problems]
    problems += check_entries(
        entries, classes, check_files=True, require_all_classes=require_all_classes, source=source,
        require_labels=require_labels,
    )  # fmt: skip
    for p in problems:
        p.key = prefix + (p.key or "entry")
    if not decode or not entries:
        return problems
    # entries whose path (or whole entry) is bad are not opened
    bad_files = {(p.index, p.key) for p in problems if p.index >= 0 and not p.key.endswith("label")}
    bad_entries = {i for i, k in bad_files if k in (f"{prefix}entry",)}
    allowed = _mask_values(mask_labels)
    cache = _Cache(cache_file)
    try:
        for i, e in enumerate(entries):
            if i in bad_entries or not isinstance(e, Mapping):
                continue
            image, mask = e.get("image"), e.get("mask")
            img_info: dict[str, Any] = {}
            if image is not None and (i, f"{prefix}image") not in bad_files:
                reasons, img_info = cache.check(image, spatial_dims, False)
                problems += [Problem(i, _shown(image), r, f"{prefix}image") for r in reasons]
                if warnings is not None:
                    warnings += [Problem(i, _shown(image), w, f"{prefix}image") for w in img_info.get("warnings", [])]
                if hashes is not None and not reasons and "sha1" in img_info:
                    hashes[i] = img_info["sha1"]
                if dims_found is not None and not reasons and img_info.get("spatial_shape"):
                    dims_found[i] = len(img_info["spatial_shape"])
            if mask is None or (i, f"{prefix}mask") in bad_files:
                continue
            reasons, mask_info = cache.check(mask, spatial_dims, True)
            problems += [Problem(i, _shown(mask), r, f"{prefix}mask") for r in reasons]
            if reasons or not mask_info:
                continue
            if img_info.get("spatial_shape") and mask_info["spatial_shape"] != img_info["spatial_shape"]:
                problems.append(
                    Problem(
                        i,
                        _shown(mask),
                        f"mask shape {tuple(mask_info['spatial_shape'])} differs from the image's "
                        f"{tuple(img_info['spatial_shape'])} ({_shown(image)})",
                        f"{prefix}mask",
                    )
                )
            elif img_info.get("affine") is not None and mask_info.get("affine") is not None:
                misaligned = _affine_difference(img_info["affine"], mask_info["affine"])
                if misaligned:
                    problems.append(Problem(i, _shown(mask), f"{misaligned} ({_shown(image)})", f"{prefix}mask"))
            unknown = sorted(set(mask_info.get("values", [])) - allowed) if allowed is not None else []
            if unknown:
                problems.append(
                    Problem(
                        i,
                        _shown(mask),
                        f"mask values {unknown} are not in mask_labels {sorted(allowed)}",
                        f"{prefix}mask",
                    )
                )
    finally:
        cache.save()
    return problems


# ---------------------------------------------------------------------------------------------- datalists


def _dims_of(raw: Mapping[str, Any]) -> int | None:
    size = str(raw.get("tensorImageSize", "")).strip().upper()
    return {"2D": 2, "3D": 3}.get(size)


def _data_sha1(records: Sequence[tuple[str, str, Any, str]]) -> str:
    """One SHA-1 over (split, case id, label, image SHA-1) of every checked entry: the data's fingerprint."""
    h = hashlib.sha1()
    for rec in sorted(records, key=lambda r: (r[0], r[1])):
        h.update(json.dumps(list(rec), default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def preflight_datalist(
    datalist: PathLike,
    output_dir: PathLike | None = None,
    on_error: str = "error",
    spatial_dims: int | None = None,
    keys: Sequence[str] = SPLIT_KEYS,
    decode: bool = True,
    report: PathLike | None = None,
    leakage: str = "error",
) -> str:
    """Check a datalist before training and return the datalist to train on.

    Every split in ``keys`` that the datalist has is checked with :func:`preflight_entries` (the class list must be
    complete in ``training``); ``output_dir`` must be writable. A report, ``output_dir/preflight_report.json``, lists
    what was checked and every problem, and holds ``data_sha1``, a fingerprint of the checked data (case ids, labels
    and the SHA-1 of every decoded image).

    Args:
        datalist: the datalist JSON file.
        output_dir: the run's output folder (checked, and where the report, the cache and a cleaned datalist go), or
            None (no report, no cache).
        on_error: ``"error"``: raise :class:`PreflightError` listing every problem; ``"skip"``: leave out the entries
            with problems, write the others to ``output_dir/preflight_datalist.json`` and return that path (problems
            of the data set as a whole, e.g. a class left without training entries, an empty datalist or an
            unwritable output folder, still raise); ``"off"``: no check, return ``datalist``.
        spatial_dims: expected spatial dimensions (default: the datalist's ``tensorImageSize``, if any).
        keys: the splits to check.
        decode: open and decode every image (False: paths and labels only).
        report: the report's path (default ``output_dir/preflight_report.json``).
        leakage: the same image in two splits (the same file, or identical decoded voxels, whatever the subjects):
            ``"error"`` (default): a problem of the earlier split's entry (training before validation before test);
            ``"drop"`` / ``"off"``: a warning only, for a run whose leakage guard
            (:func:`medmonai.data.splits.check_leakage`) is set to drop such entries or to ignore them.

    Returns:
        The path of the datalist to use: ``datalist`` itself when nothing was skipped.

    Raises:
        PreflightError: see ``on_error``.
        DatalistError: if the datalist file itself is missing or not a datalist.
    """
    if on_error not in PREFLIGHT_MODES:
        raise ValueError(f"preflight must be one of {PREFLIGHT_MODES}, got {on_error!r}")
    if leakage not in ("error", "drop", "off"):
        raise ValueError(f"leakage must be one of ('error', 'drop', 'off'), got {leakage!r}")
    datalist = os.fspath(datalist)
    if on_error == "off":
        return datalist
    if on_error == "skip" and output_dir is None:
        raise ValueError("preflight 'skip' needs an output_dir for the cleaned datalist and the report")
    raw = load_datalist_file(datalist)
    classes = class_names(raw)
    dims = spatial_dims if spatial_dims is not None else _dims_of(raw)
    global_problems: list[Problem] = []
    out = Path(output_dir) if output_dir is not None else None
    report_path = Path(report) if report is not None else (out / REPORT_NAME if out is not None else None)
    if out is not None:
        issue = check_output_dir(out)
        if issue is not None:
            global_problems.append(issue)
            out = report_path = None  # nothing can be written there
    splits = [k for k in keys if isinstance(raw.get(k), list)]
    if not splits:
        raise PreflightError(f"{datalist}: no split among {list(keys)} in the datalist")
    per_split = {k: load_datalist(datalist, k, validate=False) for k in splits}
    base = datalist_base_dir(raw, datalist)
    entry_problems: dict[str, list[Problem]] = {}
    hashes: dict[str, dict[int, str]] = {}
    warnings: list[Problem] = []
    dims_found: dict[str, dict[int, int]] = {}
    for k in splits:
        hashes[k], dims_found[k] = {}, {}
        escapes = [
            Problem(i, str(e.get(pk)), reason, pk)
            for i, e in enumerate(raw[k])
            if isinstance(e, dict)
            for pk in ("image", "mask")
            for reason in [path_escape(e.get(pk), base)]
            if reason
        ]
        probs = preflight_entries(
            per_split[k], classes=classes, spatial_dims=dims, mask_labels=raw.get("mask_labels"),
            require_all_classes=(k == "training"), decode=decode, cache_file=out / CACHE_NAME if out else None,
            source=datalist, split=k, hashes=hashes[k], require_labels=True if k != "test" else None,
            known_problems=escapes, warnings=warnings, dims_found=dims_found[k],
        )  # fmt: skip
        entry_problems[k] = probs
    for p in _cross_split_duplicates(per_split, hashes):
        if leakage == "error":
            entry_problems[p.key.split(":")[0]].append(p)
        else:
            p.reason += f" (leakage: {leakage}, left to the leakage guard)"
            warnings.append(p)
    for k in splits:
        probs = entry_problems[k]
        entry_problems[k] = sorted((p for p in probs if p.index >= 0), key=lambda p: p.index)
        global_problems += [p for p in probs if p.index < 0]
    found = {d for per in dims_found.values() for d in per.values()}
    if dims is None and len(found) > 1:
        examples = {d: next(_shown(per_split[k][i]["image"]) for k in splits for i, v in dims_found[k].items()
                            if v == d) for d in sorted(found)}  # fmt: skip
        global_problems.append(
            Problem(
                -1, datalist,
                "mixed 2D and 3D images (" + ", ".join(f"{d}D: e.g. {f}" for d, f in examples.items())
                + "); one datalist must hold one kind (set tensorImageSize or --dims to say which is expected)",
                "spatial_dims",
            )
        )  # fmt: skip
    inferred = dims if dims is not None else (next(iter(found)) if len(found) == 1 else None)
    for w in warnings:
        logger.warning(f"{datalist}: entry {w.index} [{w.key}]: {w.file}: {w.reason}")
    bad = {k: {p.index for p in entry_problems[k]} for k in splits}
    entry_list = [p for k in splits for p in entry_problems[k]]
    result = datalist
    skipped: list[dict[str, Any]] = []
    if on_error == "skip" and entry_list and not global_problems:
        kept = {k: [e for i, e in enumerate(per_split[k]) if i not in bad[k]] for k in splits}
        for k in splits:
            for i in sorted(bad[k]):
                reasons = [p.reason for p in entry_problems[k] if p.index == i]
                skipped.append({"split": k, "index": i, "image": per_split[k][i].get("image"), "problems": reasons})
        # what the remaining entries still need: a non-empty training split with every class
        after = check_entries(kept.get("training", []), classes, check_files=False, source=datalist)
        global_problems += [Problem(-1, p.file, f"after skipping the bad entries, {p.reason}", p.key) for p in after]
        if not global_problems and out is not None:
            cleaned = {k: v for k, v in raw.items() if k not in splits and k != "base_dir"}
            cleaned.update(kept)
            cleaned["preflight"] = {"source": datalist, "skipped": len(skipped)}
            result = os.fspath(write_datalist(out / CLEANED_NAME, cleaned))
    elif on_error == "skip" and out is not None and (out / CLEANED_NAME).is_file():
        (out / CLEANED_NAME).unlink()  # from an earlier run with other data: never train on a stale copy
    shown = _unique(global_problems + entry_list)
    records = [
        (k, case_id(e) if "image" in e else str(i), e.get("label"), hashes[k].get(i, ""))
        for k in splits
        for i, e in enumerate(per_split[k])
        if not (skipped and i in bad[k])
    ]
    summary = {
        "datalist": datalist,
        "mode": on_error,
        "spatial_dims": inferred,
        "spatial_dims_source": "given" if spatial_dims is not None else "tensorImageSize" if dims else "images",
        "decoded": decode,
        "checked": {k: len(per_split[k]) for k in splits},
        "n_problems": len(shown),
        "problems": [p.to_dict() for p in shown],
        "skipped": skipped,
        "warnings": [w.to_dict() for w in warnings],
        "datalist_used": result,
        "data_sha1": _data_sha1(records),
    }
    if report_path is not None:
        atomic_write_json(report_path, summary)
    where = f"; report: {report_path}" if report_path is not None else ""
    if global_problems or (entry_list and on_error == "error"):
        listed = _unique(global_problems) if on_error == "skip" else shown
        hint = "" if on_error == "skip" else " (or set preflight: skip to leave the bad entries out)"
        raise PreflightError(
            f"{datalist}: pre-flight check failed with {len(listed)} problem(s), nothing was trained; fix the data"
            f"{hint}{where}:\n{format_problems(listed)}"
        )
    if skipped:
        logger.warning(
            f"{datalist}: pre-flight check left out {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'}, "
            f"training on {result}{where}:\n{format_problems(entry_list)}"
        )
    return result


def _cross_split_duplicates(
    per_split: Mapping[str, Sequence[Mapping[str, Any]]],
    hashes: Mapping[str, Mapping[int, str]],
) -> list[Problem]:
    """Entries that hold the same image as an entry of another split, whatever their subjects say.

    The same image: the same file (resolved path, symbolic links followed) or the same decoded voxels (SHA-1).

    Reported on the entry of the earlier split (training before validation before test), which ``preflight: skip``
    then leaves out, never the test entry.
    """
    order = [k for k in SPLIT_KEYS if k in per_split]
    first: dict[Any, tuple[str, int]] = {}
    out: list[Problem] = []
    flagged: set[tuple[str, int]] = set()
    for k in order:
        for i, e in enumerate(per_split[k]):
            value = e.get("image")
            if not isinstance(value, str | list | tuple) or not value:
                continue
            idents = [("path", _realpath(value))]
            if i in hashes.get(k, {}):
                idents.append(("content", hashes[k][i]))
            for kind, ident in idents:
                if (kind, ident) not in first:
                    first[(kind, ident)] = (k, i)
                    continue
                k0, i0 = first[(kind, ident)]
                if k0 == k or (k0, i0) in flagged:
                    continue  # duplicates inside one split are check_entries' (path) or allowed (content)
                flagged.add((k0, i0))
                other = per_split[k][i]
                what = "the same file" if kind == "path" else "the same image content (identical voxels)"
                s0, s1 = per_split[k0][i0].get("subject"), other.get("subject")
                under = f" under another subject ({s0!r} / {s1!r})" if s0 != s1 else ""
                out.append(
                    Problem(
                        i0,
                        _shown(per_split[k0][i0]["image"]),
                        f"{what} as {k} entry {i} ({_shown(value)}){under}: an image in two splits is data leakage",
                        f"{k0}:image",
                    )
                )
    return out


def _realpath(value: Any) -> Any:
    if isinstance(value, str):
        return os.path.realpath(value)
    return tuple(os.path.realpath(v) for v in value if isinstance(v, str))


def _unique(problems: Sequence[Problem]) -> list[Problem]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for p in problems:
        key = (p.index, p.file, p.reason, p.key)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


# ------------------------------------------------------------------------------------------------- splits


def check_split_classes(
    split: Mapping[str, Sequence[Mapping[str, Any]]],
    classes: Sequence[str] | None,
    source: str = "",
    group_key: str = "subject",
    label_key: str = "label",
) -> Mapping[str, Sequence[Mapping[str, Any]]]:
    """Check that every class is in the training part of a split (or fold) and in its validation part.

    A class missing from ``training`` cannot be learnt; one missing from ``validation`` makes the validation AUC
    (the early-stopping and model-selection metric) undefined. A validation part holding a single subject
    (leave-one-out / leave-one-subject-out folds) cannot hold every class: there a missing class is only logged.

    Args:
        split: ``{"training": [...], "validation": [...]}`` (e.g. from
            :func:`medmonai.data.splits.train_val_entries` or :func:`~medmonai.data.splits.cv_fold_entries`).
        classes: the class names (None: nothing to check).
        source: what the split comes from (datalist, fold), for the message.
        group_key: the subject key (to recognise single-subject validation parts).
        label_key: the label key.

    Returns:
        ``split`` unchanged (so that a config can chain it).

    Raises:
        PreflightError: naming the part, the class and the first files of the part.
    """
    if not classes:
        return split
    problems: list[str] = []
    for part in ("training", "validation"):
        entries = list(split.get(part) or [])
        if part == "validation" and not entries:
            continue
        present = {int(e[label_key]) for e in entries if label_key in e and e[label_key] is not None}
        missing = [f"{c} ('{name}')" for c, name in enumerate(classes) if c not in present]
        if not missing:
            continue
        subjects = {e.get(group_key, id(e)) for e in entries}
        files = ", ".join(_shown(e["image"]) for e in entries[:3]) + (" ..." if len(entries) > 3 else "")
        msg = (
            f"class {', '.join(missing)} has no entries in the {part} part ({len(entries)} entries from "
            f"{len(subjects)} subject(s): {files or 'none'})"
        )
        if part == "validation" and len(subjects) <= 1:
            logger.warning(f"{source}: {msg}; expected for a single-subject validation part")
            continue
        problems.append(msg)
    if problems:
        hint = (
            "every class needs training entries and, for the validation AUC, validation entries: add data, use "
            "fewer folds / another val_fraction or seed, or give the datalist its own validation split"
        )
        raise PreflightError(f"{source or 'split'}: " + "; ".join(problems) + f". {hint}")
    return split
