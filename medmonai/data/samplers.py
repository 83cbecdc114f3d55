"""Class-imbalance helpers: class weights for the loss and a class-balanced sampler."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["class_counts", "class_weights", "class_balanced_sampler"]


def class_counts(entries: Sequence[dict[str, Any]], num_classes: int, label_key: str = "label") -> np.ndarray:
    """Number of entries per class (length ``num_classes``)."""
    labels = np.asarray([int(e[label_key]) for e in entries], dtype=int)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got values {sorted(set(labels.tolist()))}")
    return np.bincount(labels, minlength=num_classes)


def class_weights(
    entries: Sequence[dict[str, Any]] | None = None,
    num_classes: int = 2,
    mode: str | Sequence[float] | None = "balanced",
    label_key: str = "label",
) -> torch.Tensor | None:
    """Per-class loss weights.

    Args:
        entries: training entries (needed for ``"balanced"``).
        num_classes: number of classes.
        mode: ``"balanced"`` (``n / (num_classes * count_c)``, scikit-learn's rule), an explicit list of weights, or
            None / ``"none"`` for no weighting.
        label_key: entry key of the label.

    Returns:
        A float tensor of length ``num_classes``, or None.
    """
    if mode is None or (isinstance(mode, str) and mode.lower() == "none"):
        return None
    if isinstance(mode, str):
        if mode != "balanced":
            raise ValueError(f"class weight mode must be 'balanced', 'none' or a list, got {mode!r}")
        if entries is None:
            raise ValueError("class_weights('balanced') needs the training entries")
        counts = class_counts(entries, num_classes, label_key)
        if (counts == 0).any():
            raise ValueError(f"class(es) {np.flatnonzero(counts == 0).tolist()} have no training entries")
        w = counts.sum() / (num_classes * counts.astype(np.float64))
    else:
        w = np.asarray(list(mode), dtype=np.float64)
        if w.shape != (num_classes,):
            raise ValueError(f"expected {num_classes} class weights, got {list(mode)}")
    return torch.as_tensor(w, dtype=torch.float32)


def class_balanced_sampler(
    entries: Sequence[dict[str, Any]],
    num_classes: int,
    num_samples: int | None = None,
    seed: int = 0,
    label_key: str = "label",
) -> torch.utils.data.WeightedRandomSampler:
    """A sampler drawing every class equally often (with replacement), for imbalanced training sets.

    Args:
        entries: training entries, in the dataset's order.
        num_classes: number of classes.
        num_samples: samples per epoch (default: the number of entries).
        seed: seed of the sampler's generator (reproducible epochs).
        label_key: entry key of the label.

    Returns:
        A ``torch.utils.data.WeightedRandomSampler`` (use it with ``shuffle=False`` in the DataLoader).
    """
    counts = class_counts(entries, num_classes, label_key)
    labels = np.asarray([int(e[label_key]) for e in entries], dtype=int)
    per_sample = 1.0 / counts[labels].astype(np.float64)
    gen = torch.Generator().manual_seed(int(seed))
    return torch.utils.data.WeightedRandomSampler(
        torch.as_tensor(per_sample, dtype=torch.double),
        num_samples=int(num_samples or len(entries)),
        replacement=True,
        generator=gen,
    )
