"""Datalist helpers for segmentation: label names, image/label entries and the training/validation split.

In a medmonai datalist the segmentation is the entry's ``mask`` (its ``label`` is a class index, used by the
classification bundles); the segmentation bundles train on ``{"image": ..., "label": <mask path>}`` dicts, the
MONAI convention. :func:`segmentation_entries` makes them, :func:`mask_label_names` reads the class names of the
mask values (``mask_labels``) and :func:`segmentation_split` holds out subjects for validation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from medmonai.data.datalist import load_datalist, load_datalist_file
from medmonai.data.splits import train_val_entries
from medmonai.utils import PathLike

__all__ = ["mask_label_names", "segmentation_entries", "segmentation_split"]

logger = logging.getLogger(__name__)


def mask_label_names(datalist_file: PathLike, default: Sequence[str] = ("background", "foreground")) -> list[str]:
    """Names of the mask values ``0 .. C-1`` from the datalist's ``mask_labels`` (``{"0": "background", ...}``).

    Args:
        datalist_file: the datalist JSON.
        default: names when the datalist has no ``mask_labels``.

    Returns:
        One name per class, index = mask value (index 0 is the background).

    Raises:
        ValueError: if ``mask_labels`` is not a mapping of the contiguous values ``0 .. C-1`` (C >= 2).
    """
    raw = load_datalist_file(datalist_file).get("mask_labels")
    if not raw:
        return list(default)
    if not isinstance(raw, Mapping):
        raise ValueError(f"{datalist_file}: 'mask_labels' must be a mapping of mask values to names, got {raw!r}")
    try:
        by_value = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError) as e:
        raise ValueError(f"{datalist_file}: 'mask_labels' keys must be integers, got {list(raw)}") from e
    if sorted(by_value) != list(range(len(by_value))) or len(by_value) < 2:
        raise ValueError(
            f"{datalist_file}: 'mask_labels' must name the values 0 .. C-1 (C >= 2, 0 = background), got {raw}"
        )
    return [by_value[i] for i in range(len(by_value))]


def segmentation_entries(
    entries: Iterable[Mapping[str, Any]],
    mask_key: str = "mask",
    keep: Sequence[str] = (),
    require_mask: bool = True,
) -> list[dict[str, Any]]:
    """``{"image", "label"}`` dicts (plus ``keep`` keys) from datalist entries whose ``mask_key`` is the segmentation.

    Args:
        entries: datalist entries (paths resolved).
        mask_key: key of the segmentation file in the entries.
        keep: further keys to copy when present (e.g. ``case_id``, ``subject``).
        require_mask: raise when an entry has no mask (training/evaluation); False keeps image-only entries.

    Returns:
        New dicts; the datalist's class ``label`` is not copied.

    Raises:
        ValueError: for an entry without a mask when ``require_mask``, naming the image.
    """
    out = []
    for i, e in enumerate(entries):
        if "image" not in e:
            raise ValueError(f"entry {i} has no 'image': {dict(e)!r}")
        d: dict[str, Any] = {"image": e["image"]}
        if e.get(mask_key) is not None:
            d["label"] = e[mask_key]
        elif require_mask:
            raise ValueError(f"{e['image']}: entry {i} has no segmentation ('{mask_key}')")
        d.update({k: e[k] for k in keep if k in e})
        out.append(d)
    return out


def _int_labels(entries: Sequence[Mapping[str, Any]], key: str) -> bool:
    return bool(entries) and all(isinstance(e.get(key), int) and not isinstance(e.get(key), bool) for e in entries)


def _enough_groups(entries: Sequence[Mapping[str, Any]], key: str, group_key: str | None, val_fraction: float) -> bool:
    """Whether every stratum has at least as many subjects as the hold-out has folds (else: no stratification)."""
    n_folds = max(2, int(round(1.0 / val_fraction))) if val_fraction > 0 else 2
    groups: dict[int, set[str]] = {}
    for i, e in enumerate(entries):
        subject = e.get(group_key) if group_key else None
        groups.setdefault(int(e[key]), set()).add(str(subject) if subject is not None else f"\0{i}")
    return all(len(g) >= n_folds for g in groups.values())


def segmentation_split(
    datalist_file: PathLike,
    val_fraction: float = 0.2,
    seed: int = 0,
    group_key: str | None = "subject",
    stratify_key: str = "label",
    leakage: str = "error",
    hash_cache: PathLike | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Training and validation entries of a segmentation datalist, subject-grouped, with the leakage guard.

    This is :func:`medmonai.data.splits.train_val_entries` with the stratification decided from the data: the
    datalist's own ``validation`` split is used when it has one; otherwise a ``val_fraction`` of the subjects of
    ``training`` is held out, stratified by ``stratify_key`` when every entry has an integer there (e.g. the phantoms'
    class label) and every stratum has enough subjects, else a plain subject-grouped hold-out (the MSD data sets have
    no class label). The ``test`` split is never touched, only checked against.

    Args:
        datalist_file: the datalist JSON.
        val_fraction: validation fraction of the hold-out.
        seed: hold-out seed.
        group_key: entry key of the subject id.
        stratify_key: entry key of an integer stratum.
        leakage: ``"error"`` (default): a subject or an identical image in two of training/validation/test raises
            :class:`medmonai.data.splits.LeakageError`; ``"off"``: no check; ``"drop"``: remove the conflicting
            entries (see :func:`~medmonai.data.splits.train_val_entries`).
        hash_cache: content hash cache file.

    Returns:
        ``{"training": [...], "validation": [...]}`` (datalist entries).
    """
    train = load_datalist(datalist_file, "training")
    stratified = _int_labels(train, stratify_key) and _enough_groups(train, stratify_key, group_key, val_fraction)
    split = train_val_entries(
        str(datalist_file),
        val_fraction=val_fraction,
        seed=seed,
        group_key=group_key,
        leakage=leakage,
        hash_cache=hash_cache,
        label_key=stratify_key if stratified else None,
    )
    logger.info(f"segmentation split: {len(split['training'])} training, {len(split['validation'])} validation entries")
    return split
