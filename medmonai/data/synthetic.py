"""Synthetic training samples (e.g. GAN images) added to a real training split, and the guards that keep them there.

A synthetic datalist (written by ``bundles/gan_augmentation/configs/generate.yaml``, see
:func:`medmonai.engines.gan.generate_synthetic`) holds ``training`` entries flagged ``synthetic: true`` and records the
cases its GAN was trained on (``gan_training_cases``). :func:`add_synthetic` adds some of them to a training split:

* ``mode="balance"``: every class is filled up to ``ratio`` x the largest real class count (``ratio=1`` balances the
  classes); classes already there get nothing.
* ``mode="fraction"``: ``ratio`` x the number of real training samples are added, split over the classes in the real
  class proportions.
* ``mode="none"``: nothing is added (the default of the bundles).

Guards, each a :class:`SyntheticDataError` naming the file: a synthetic sample may never be a validation or test sample
(``held_out`` entries flagged ``synthetic`` are refused), the generator must not have seen a held-out case (every
held-out case id is looked up in ``gan_training_cases``: a GAN trained on validation or test images would leak them into
training), the class lists must agree, and there must be enough synthetic samples for the request (generate more rather
than silently adding fewer).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medmonai.data.datalist import load_datalist, load_datalist_file
from medmonai.utils import PathLike

__all__ = [
    "SYNTHETIC_MODES",
    "SyntheticDataError",
    "is_synthetic",
    "case_key",
    "synthetic_counts",
    "load_synthetic",
    "add_synthetic",
]

logger = logging.getLogger(__name__)

SYNTHETIC_MODES: tuple[str, ...] = ("none", "balance", "fraction")


class SyntheticDataError(ValueError):
    """Synthetic data that would be used wrongly (in validation/test, leaked from held-out cases, too few...)."""


def is_synthetic(entry: Mapping[str, Any]) -> bool:
    """Whether a datalist entry is flagged ``synthetic: true``."""
    return bool(entry.get("synthetic", False))


def case_key(entry: Mapping[str, Any]) -> str:
    """Identity of a real case across datalists: the real path of its (first) image file."""
    image = entry["image"]
    if isinstance(image, list | tuple):
        image = image[0]
    return os.path.realpath(str(image))


def _label(entry: Mapping[str, Any], classes: Sequence[str], source: str) -> int:
    lab = entry.get("label")
    if isinstance(lab, str) and lab in classes:
        return list(classes).index(lab)
    if isinstance(lab, bool) or not isinstance(lab, int | np.integer) or not 0 <= int(lab) < len(classes):
        raise SyntheticDataError(f"{source}: label {lab!r} of {entry.get('image')} is not a class of {list(classes)}")
    return int(lab)


def synthetic_counts(real_counts: Sequence[int], mode: str, ratio: float) -> list[int]:
    """How many synthetic samples of each class :func:`add_synthetic` adds.

    Args:
        real_counts: real training samples per class.
        mode: ``"none"``, ``"balance"`` or ``"fraction"`` (see the module docstring).
        ratio: ``balance``: target count as a fraction of the largest class; ``fraction``: synthetic samples as a
            fraction of the real ones.

    Returns:
        One count per class.
    """
    if mode not in SYNTHETIC_MODES:
        raise ValueError(f"synthetic mode {mode!r} is not one of {SYNTHETIC_MODES}")
    counts = [int(c) for c in real_counts]
    if mode == "none":
        return [0] * len(counts)
    if not ratio >= 0 or not math.isfinite(ratio):
        raise ValueError(f"synthetic ratio must be a finite number >= 0, got {ratio}")
    if mode == "balance":
        target = math.ceil(float(ratio) * max(counts, default=0) - 1e-9)
        return [max(0, target - c) for c in counts]
    total = int(round(float(ratio) * sum(counts)))
    if total == 0 or sum(counts) == 0:
        return [0] * len(counts)
    share = np.asarray(counts, dtype=float) / sum(counts) * total
    out = np.floor(share).astype(int)
    for i in np.argsort(-(share - out), kind="stable")[: total - int(out.sum())]:
        out[i] += 1
    return [int(v) for v in out]


def load_synthetic(path: PathLike, classes: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ``training`` entries of a synthetic datalist (all flagged ``synthetic``) and its top-level fields.

    Raises:
        SyntheticDataError: the file is missing, its classes differ from ``classes``, or an entry is not flagged.
    """
    if not os.path.isfile(path):
        raise SyntheticDataError(
            f"{path}: synthetic datalist not found (write one with bundles/gan_augmentation/configs/generate.yaml)"
        )
    raw = load_datalist_file(path)
    theirs = [str(c) for c in raw.get("classes") or []]
    if theirs != [str(c) for c in classes]:
        raise SyntheticDataError(f"{path}: its classes {theirs} differ from the training data's {list(classes)}")
    entries = load_datalist(path, "training")
    plain = [e for e in entries if not is_synthetic(e)]
    if plain:
        raise SyntheticDataError(
            f"{path}: {len(plain)} entries are not flagged 'synthetic: true' (first: {plain[0].get('image')}); "
            "a synthetic datalist holds synthetic samples only"
        )
    meta = {k: v for k, v in raw.items() if k not in ("training", "validation", "test")}
    return entries, meta


def add_synthetic(
    train_entries: Sequence[dict[str, Any]],
    synthetic_datalist: PathLike | None,
    classes: Sequence[str],
    mode: str = "none",
    ratio: float = 1.0,
    seed: int = 0,
    held_out: Sequence[Mapping[str, Any]] = (),
    keys: Sequence[str] | None = ("image", "label"),
    check_provenance: bool = True,
) -> list[dict[str, Any]]:
    """Real training entries plus synthetic ones drawn (seeded, without replacement) from a synthetic datalist.

    Args:
        train_entries: the real training entries (never changed; the result is a new list: real first).
        synthetic_datalist: the synthetic datalist file; unused (may be empty) when ``mode="none"``.
        classes: class names of the real data.
        mode: ``"none"``, ``"balance"`` or ``"fraction"``.
        ratio: see :func:`synthetic_counts`.
        seed: seed of the draw.
        held_out: the validation and test entries: none may be synthetic, and (``check_provenance``) none may be a
            case the GAN was trained on.
        keys: entry keys kept on the added entries (None: all).
        check_provenance: require the synthetic datalist's ``gan_training_cases`` record and check it against
            ``held_out``. Only turn off for synthetic data from elsewhere whose training cases you have checked.

    Returns:
        The training entries to use.

    Raises:
        SyntheticDataError: see the module docstring.
    """
    if mode not in SYNTHETIC_MODES:
        raise ValueError(f"synthetic_mode {mode!r} is not one of {SYNTHETIC_MODES}")
    flagged = [e for e in list(held_out) if is_synthetic(e)]
    if flagged:
        raise SyntheticDataError(
            f"{len(flagged)} validation/test entries are synthetic (first: {flagged[0].get('image')}); synthetic "
            "samples may only be added to training (keep them out of the main datalist: use synthetic_datalist)"
        )
    real = list(train_entries)
    if mode == "none":
        return real
    if not synthetic_datalist:
        raise SyntheticDataError(f"synthetic_mode {mode!r} needs a synthetic_datalist (none given)")
    source = str(synthetic_datalist)
    pool, meta = load_synthetic(source, classes)
    if check_provenance:
        seen = meta.get("gan_training_cases")
        if not isinstance(seen, list):
            raise SyntheticDataError(
                f"{source}: no record of the cases its generator was trained on (gan_training_cases), so a leak of "
                "validation/test images cannot be ruled out; regenerate it with bundles/gan_augmentation "
                "(generate.yaml records them) or set check_provenance false if you have checked it yourself"
            )
        seen_set = set(seen)
        leaked = [e for e in held_out if case_key(e) in seen_set]
        if leaked:
            raise SyntheticDataError(
                f"{source}: its generator was trained on {len(leaked)} validation/test case(s) (first: "
                f"{leaked[0].get('image')}); train the GAN on this training split only"
            )
    real_counts = [0] * len(classes)
    for e in real:
        real_counts[_label(e, classes, "training split")] += 1
    want = synthetic_counts(real_counts, mode, ratio)
    by_class: list[list[dict[str, Any]]] = [[] for _ in classes]
    for e in pool:
        by_class[_label(e, classes, source)].append(e)
    short = {str(classes[c]): (want[c], len(by_class[c])) for c in range(len(classes)) if want[c] > len(by_class[c])}
    if short:
        detail = ", ".join(f"{name}: {w} wanted, {a} available" for name, (w, a) in short.items())
        raise SyntheticDataError(f"{source}: too few synthetic samples for synthetic_mode {mode!r} ({detail})")
    rng = np.random.default_rng(seed)
    added: list[dict[str, Any]] = []
    for c, n in enumerate(want):
        if n:
            pick = np.sort(rng.choice(len(by_class[c]), size=n, replace=False))
            added += [by_class[c][i] for i in pick]
    if keys is not None:
        added = [{k: e[k] for k in keys if k in e} for e in added]
    logger.info(
        "synthetic data (%s, ratio %s): real per class %s + synthetic %s from %s",
        mode,
        ratio,
        dict(zip(classes, real_counts)),
        dict(zip(classes, want)),
        source,
    )
    return real + added
