"""Data splits that never put one subject on both sides.

Only the hold-out split used by the training bundles lives here for now; k-fold / leave-one-out / leave-one-subject-out
schemes and the leakage guard are the subject of the validation work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["holdout_split", "train_val_entries"]


def holdout_split(
    entries: Sequence[dict[str, Any]],
    val_fraction: float = 0.2,
    seed: int = 0,
    group_key: str | None = "subject",
    label_key: str = "label",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split entries into training and validation parts, stratified by label and grouped by subject.

    Built on scikit-learn's ``StratifiedGroupKFold``: the validation part is the first of ``round(1 / val_fraction)``
    folds, so no ``group_key`` value appears in both parts and class proportions are kept as far as the groups allow.

    Args:
        entries: datalist entries.
        val_fraction: fraction of entries (approximately, by groups) for validation, in (0, 0.5].
        seed: shuffling seed.
        group_key: entry key holding the subject id; None (or a missing key) treats every entry as its own subject.
        label_key: entry key holding the integer class label.

    Returns:
        (training entries, validation entries), in their original order.

    Raises:
        ValueError: if the fraction is out of range or there are too few subjects for a split.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0.0 < val_fraction <= 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5], got {val_fraction}")
    n = len(entries)
    labels = np.asarray([int(e[label_key]) for e in entries])
    groups = np.asarray([str(e.get(group_key, i)) if group_key else str(i) for i, e in enumerate(entries)])
    n_splits = max(2, int(round(1.0 / val_fraction)))
    if len(set(groups)) < n_splits:
        raise ValueError(f"cannot hold out {val_fraction:.0%} of {len(set(groups))} subjects ({n} entries)")
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(cv.split(np.zeros(n), labels, groups))
    return [entries[i] for i in sorted(train_idx)], [entries[i] for i in sorted(val_idx)]


def train_val_entries(
    datalist: str,
    val_fraction: float = 0.2,
    seed: int = 0,
    group_key: str | None = "subject",
) -> dict[str, list[dict[str, Any]]]:
    """Training and validation entries of a datalist file.

    Uses the datalist's own ``validation`` split when it has one; otherwise holds out a stratified, subject-grouped
    part of ``training`` (see :func:`holdout_split`). The ``test`` split is never touched here.

    Returns:
        ``{"training": [...], "validation": [...]}``.
    """
    from medmonai.data.datalist import load_datalist, load_datalist_file

    raw = load_datalist_file(datalist)
    train = load_datalist(datalist, "training")
    if isinstance(raw.get("validation"), list) and raw["validation"]:
        return {"training": train, "validation": load_datalist(datalist, "validation")}
    tr, va = holdout_split(train, val_fraction=val_fraction, seed=seed, group_key=group_key)
    return {"training": tr, "validation": va}
