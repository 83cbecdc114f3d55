"""Data splits that never put one subject (or one image) on both sides, and the guard that checks it.

* :func:`holdout_split` / :func:`train_val_entries`: the training/validation hold-out used by the bundles.
* :func:`make_folds`: cross-validation folds (``SCHEMES``): stratified (group) k-fold, repeated k-fold,
  leave-one-out, leave-one-subject-out, k-fold over any grouping key (e.g. ``site``) and the hold-out.
* :func:`ensure_splits`: the folds persisted in a ``splits.json`` (like nnU-Net's ``splits_final.json``), reused
  while the data and the settings stay the same, refused when they changed.
* :func:`check_leakage`: raises :class:`LeakageError` when a subject or an identical image (same decoded voxels, see
  :func:`image_hash`) appears in two splits.
* :func:`cv_fold_entries`: the training/validation entries of one cross-validation fold of a datalist, with the
  leakage guard against its ``test`` split.

Groups: the group of an entry is ``entry[group_key]`` (a missing key, a ``None`` value or ``group_key=None`` make the
entry its own group). When content hashes are given, entries with identical images are merged into one group too
(union-find), so a split never separates two copies of the same image.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold, StratifiedKFold

from medmonai.data.content import image_hash
from medmonai.data.datalist import load_datalist, load_datalist_file
from medmonai.utils import PathLike, atomic_write_json, file_signature, read_json

__all__ = [
    "SCHEMES",
    "LEAKAGE_MODES",
    "SplitsError",
    "LeakageError",
    "case_id",
    "image_hash",
    "content_hashes",
    "make_folds",
    "ensure_splits",
    "check_leakage",
    "cv_fold_entries",
    "holdout_split",
    "train_val_entries",
]

logger = logging.getLogger(__name__)

SCHEMES: tuple[str, ...] = ("holdout", "kfold", "repeated_kfold", "loo", "loso", "groupkfold")
LEAKAGE_MODES: tuple[str, ...] = ("error", "drop", "off")
_STRATIFIED = ("kfold", "repeated_kfold", "groupkfold")
# the settings that determine the folds of each scheme (the others are stored but not compared on reuse)
_RELEVANT: dict[str, tuple[str, ...]] = {
    "holdout": ("group_key", "label_key", "val_fraction", "seed"),
    "kfold": ("n_folds", "group_key", "label_key", "seed"),
    "repeated_kfold": ("n_folds", "n_repeats", "group_key", "label_key", "seed"),
    "groupkfold": ("n_folds", "group_key", "label_key", "seed"),
    "loo": (),
    "loso": ("group_key",),
}
_MAX_LISTED = 10
_OWN_GROUP = "\0entry"  # prefix of the group name of entries without a group value (sorts like the old str(index))
_HASH_CACHE_VERSION = 1


class SplitsError(ValueError):
    """A splits file is invalid or stale, or the requested split is impossible; the message says what and why."""


class LeakageError(ValueError):
    """A subject or an identical image appears in two splits; the message lists them."""


# ---------------------------------------------------------------------------------------------------- identities


def case_id(entry: Mapping[str, Any]) -> str:
    """Stable identifier of a datalist entry: its ``id`` when present, else ``str(entry["image"])``."""
    if entry.get("id") is not None:
        return str(entry["id"])
    return str(entry["image"])


def _names(image: Any) -> list[str]:
    if isinstance(image, str | os.PathLike):
        return [os.path.abspath(os.fspath(image))]
    return [os.path.abspath(os.fspath(p)) for p in image]


def _stat_signature(value: Any) -> list[Any]:
    return file_signature(_names(value))


def content_hashes(entries: Sequence[Mapping[str, Any]], cache_file: PathLike | None = None) -> list[str]:
    """Content hash (:func:`image_hash`) of every entry's ``image``.

    Args:
        entries: datalist entries (resolved paths).
        cache_file: optional JSON cache of hashes keyed by path, reused while a file's size and modification time
            are unchanged; written atomically when new hashes were computed. An unreadable cache is ignored.

    Returns:
        One hash per entry, in order.
    """
    cache: dict[str, Any] = {}
    if cache_file is not None and Path(cache_file).is_file():
        try:
            data = read_json(cache_file, "hash cache")
            if isinstance(data, dict) and data.get("version") == _HASH_CACHE_VERSION:
                cache = dict(data.get("hashes") or {})
        except ValueError as e:
            logger.warning("ignoring the unreadable hash cache %s (%s)", cache_file, e)
    out: list[str] = []
    done: dict[str, str] = {}
    changed = False
    for e in entries:
        names = _names(e["image"])
        key = "\n".join(names)
        if key in done:
            out.append(done[key])
            continue
        sig = _stat_signature(e["image"])
        hit = cache.get(key)
        if isinstance(hit, dict) and hit.get("stat") == sig and isinstance(hit.get("sha1"), str):
            h = hit["sha1"]
        else:
            h = image_hash(e["image"])
            cache[key] = {"stat": sig, "sha1": h}
            changed = True
        done[key] = h
        out.append(h)
    if cache_file is not None and changed:
        atomic_write_json(cache_file, {"version": _HASH_CACHE_VERSION, "hashes": cache}, indent=0)
    return out


# ---------------------------------------------------------------------------------------------------- groups


def _group_names(
    entries: Sequence[Mapping[str, Any]],
    group_key: str | None,
    hashes: Sequence[str] | None = None,
    require_key: bool = False,
) -> list[str]:
    """Group name of every entry: its ``group_key`` value, merged (union-find) across identical content hashes."""
    if hashes is not None and len(hashes) != len(entries):
        raise SplitsError(f"got {len(hashes)} content hashes for {len(entries)} entries")
    base: list[str] = []
    missing: list[int] = []
    for i, e in enumerate(entries):
        value = e.get(group_key) if group_key else None
        if value is None:
            missing.append(i)
            base.append(f"{_OWN_GROUP}{i}")
        else:
            base.append(str(value))
    if require_key and missing:
        shown = ", ".join(str(entries[i].get("image")) for i in missing[:3])
        raise SplitsError(
            f"scheme 'groupkfold' groups by '{group_key}', but {len(missing)} of {len(entries)} entries have no "
            f"'{group_key}' (e.g. {shown}); add it to every entry or pick another group_key"
        )
    if hashes is None:
        return base
    parent = list(range(len(entries)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)  # the root is the component's first entry

    first_of: dict[tuple[str, str], int] = {}
    for i in range(len(entries)):
        for key in (("g", base[i]), ("h", str(hashes[i]))):
            j = first_of.setdefault(key, i)
            if j != i:
                union(i, j)
    return [base[find(i)] for i in range(len(entries))]


def _show_group(name: str, entries: Sequence[Mapping[str, Any]]) -> str:
    if name.startswith(_OWN_GROUP):
        i = int(name[len(_OWN_GROUP) :])
        return f"entry {i} ({_short(entries[i].get('image'))})"
    return name


def _short(image: Any) -> str:
    """A short name of an image: its last two path components (the first file of a list)."""
    if isinstance(image, list | tuple):
        return _short(image[0]) + (f" (+{len(image) - 1} files)" if len(image) > 1 else "") if image else "[]"
    parts = Path(str(image)).parts
    return "/".join(parts[-2:]) if parts else str(image)


def _labels(entries: Sequence[Mapping[str, Any]], label_key: str | None) -> np.ndarray:
    if label_key is None:  # no stratification (e.g. segmentation data without a case-level class)
        return np.zeros(len(entries), dtype=np.int64)
    out = []
    for i, e in enumerate(entries):
        if label_key not in e:
            raise SplitsError(f"entry {i} ({_short(e.get('image'))}) has no '{label_key}' to stratify on")
        try:
            out.append(int(e[label_key]))
        except (TypeError, ValueError) as err:
            raise SplitsError(
                f"entry {i} ({_short(e.get('image'))}): '{label_key}' must be an integer class, got {e[label_key]!r}"
            ) from err
    return np.asarray(out, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------- folds


def _holdout_indices(
    labels: np.ndarray, groups: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    if not 0.0 < val_fraction <= 0.5:
        raise SplitsError(f"val_fraction must be in (0, 0.5], got {val_fraction}")
    n = len(labels)
    n_groups = len(set(groups))
    n_splits = max(2, int(round(1.0 / val_fraction)))
    if n_groups < n_splits:
        raise SplitsError(f"cannot hold out {val_fraction:.0%} of {n_groups} subjects ({n} entries)")
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(cv.split(np.zeros(n), labels, np.asarray(groups)))
    return sorted(int(i) for i in train_idx), sorted(int(i) for i in val_idx)


def _check_classes(labels: np.ndarray, groups: Sequence[str], n_folds: int, group_key: str | None) -> None:
    per_class: dict[int, set[str]] = defaultdict(set)
    n_entries: dict[int, int] = defaultdict(int)
    for lab, g in zip(labels.tolist(), groups, strict=True):
        per_class[lab].add(g)
        n_entries[lab] += 1
    what = f"'{group_key}' groups" if group_key else "groups"
    short = {c: len(s) for c, s in per_class.items() if len(s) < n_folds}
    if short:
        detail = "; ".join(f"class {c} has {k} {what} ({n_entries[c]} entries)" for c, k in sorted(short.items()))
        raise SplitsError(
            f"stratified {n_folds}-fold splits need at least {n_folds} {what} per class: {detail}; "
            f"use fewer folds (n_folds <= {min(len(s) for s in per_class.values())}) or scheme 'loso'/'holdout'"
        )


def make_folds(
    entries: Sequence[Mapping[str, Any]],
    scheme: str = "kfold",
    n_folds: int = 5,
    n_repeats: int = 1,
    seed: int = 0,
    group_key: str | None = "subject",
    label_key: str | None = "label",
    val_fraction: float = 0.2,
    hashes: Sequence[str] | None = None,
) -> list[dict[str, list[int]]]:
    """Cross-validation folds of ``entries`` that never split a group (subject, or identical images).

    Schemes (see ``SCHEMES``):

    * ``kfold``: scikit-learn ``StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)`` on the groups
      (``StratifiedKFold`` when every group has one entry);
    * ``repeated_kfold``: ``n_repeats`` k-folds with seeds ``seed, seed + 1, ...`` (``n_folds * n_repeats`` folds);
    * ``groupkfold``: like ``kfold`` but grouping by ``group_key`` is mandatory (e.g. ``"site"``): every entry must
      have it;
    * ``loo``: leave-one-out over entries; refused when a group has several entries (use ``loso``);
    * ``loso``: leave-one-group-out (one fold per subject);
    * ``holdout``: one fold, as :func:`holdout_split` (``val_fraction``).

    Args:
        entries: datalist entries.
        scheme: one of ``SCHEMES``.
        n_folds: number of folds (k-fold schemes), 2 .. number of groups.
        n_repeats: repetitions (``repeated_kfold``).
        seed: shuffling seed; the folds are a deterministic function of the entries and the settings.
        group_key: entry key of the subject (or other grouping) id; None: every entry is its own group.
        label_key: entry key of the integer class label (stratified schemes and ``holdout``); None: no
            stratification (one class for every entry).
        val_fraction: validation fraction of ``holdout``.
        hashes: optional content hash per entry (:func:`content_hashes`); identical images join one group.

    Returns:
        One ``{"train": [...], "val": [...]}`` per fold, sorted indices into ``entries``.

    Raises:
        SplitsError: for an unknown scheme, impossible settings (too few groups, a class in fewer groups than folds,
            ``loo`` with multi-entry subjects, ``groupkfold`` entries without ``group_key``).
    """
    if scheme not in SCHEMES:
        raise SplitsError(f"unknown split scheme {scheme!r}; choose from {SCHEMES}")
    n = len(entries)
    if n < 2:
        raise SplitsError(f"cannot split {n} entr{'y' if n == 1 else 'ies'}")
    if scheme == "groupkfold" and not group_key:
        raise SplitsError("scheme 'groupkfold' needs a group_key (e.g. 'subject' or 'site')")
    groups = _group_names(entries, group_key, hashes, require_key=scheme == "groupkfold")
    n_groups = len(set(groups))
    x = np.zeros(n)

    def fold(train: Any, val: Any) -> dict[str, list[int]]:
        return {"train": sorted(int(i) for i in train), "val": sorted(int(i) for i in val)}

    if scheme == "holdout":
        tr, va = _holdout_indices(_labels(entries, label_key), groups, val_fraction, seed)
        return [{"train": tr, "val": va}]
    if scheme == "loo":
        sizes: dict[str, int] = defaultdict(int)
        for g in groups:
            sizes[g] += 1
        multi = [g for g, k in sizes.items() if k > 1]
        if multi:
            shown = ", ".join(f"{_show_group(g, entries)} ({sizes[g]})" for g in multi[:_MAX_LISTED])
            more = f" and {len(multi) - _MAX_LISTED} more" if len(multi) > _MAX_LISTED else ""
            raise SplitsError(
                f"scheme 'loo' (leave one entry out) would put entries of one group on both sides: {len(multi)} "
                f"group(s) (same '{group_key}' or identical images) have several entries: {shown}{more}; "
                f"use scheme 'loso' (leave one subject out)"
            )
        return [fold(np.setdiff1d(np.arange(n), [i]), [i]) for i in range(n)]
    if scheme == "loso":
        if n_groups < 2:
            raise SplitsError(f"scheme 'loso' needs at least 2 groups, got {n_groups}")
        return [fold(tr, va) for tr, va in LeaveOneGroupOut().split(x, groups=np.asarray(groups))]

    # stratified k-fold schemes
    if isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise SplitsError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if n_folds > n_groups:
        raise SplitsError(f"n_folds={n_folds} is more than the {n_groups} groups ('{group_key}') of {n} entries")
    repeats = 1
    if scheme == "repeated_kfold":
        if isinstance(n_repeats, bool) or not isinstance(n_repeats, int | np.integer) or n_repeats < 1:
            raise SplitsError(f"n_repeats must be an integer >= 1, got {n_repeats!r}")
        repeats = int(n_repeats)
    labels = _labels(entries, label_key)
    _check_classes(labels, groups, n_folds, group_key)
    singletons = n_groups == n
    folds: list[dict[str, list[int]]] = []
    for r in range(repeats):
        if singletons:
            cv: Any = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=seed + r)
            splits = cv.split(x, labels)
        else:
            cv = StratifiedGroupKFold(n_splits=int(n_folds), shuffle=True, random_state=seed + r)
            splits = cv.split(x, labels, np.asarray(groups))
        folds.extend(fold(tr, va) for tr, va in splits)
    return folds


# ---------------------------------------------------------------------------------------------------- splits.json


def _unique_ids(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    ids = [case_id(e) for e in entries]
    if len(set(ids)) != len(ids):
        dup = sorted(i for i, k in Counter(ids).items() if k > 1)
        raise SplitsError(
            f"{len(dup)} case id(s) occur more than once ({', '.join(dup[:5])}); give the entries a unique 'id' "
            f"or remove the repeated images from the datalist"
        )
    return ids


def _listed(items: Sequence[str], k: int = 5) -> str:
    more = f" (+{len(items) - k} more)" if len(items) > k else ""
    return ", ".join(str(i) for i in items[:k]) + more


def _validate_stored(
    path: Path,
    data: Any,
    settings: dict[str, Any],
    ids: list[str],
    entries: Sequence[Mapping[str, Any]],
    groups: list[str],
) -> None:
    advice = f"delete {path} to recompute the splits, or use another output folder"
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("case_ids"), list)
        or not isinstance(data.get("folds"), list)
    ):
        raise SplitsError(f"{path}: not a splits file (needs 'case_ids' and 'folds' lists); {advice}")
    if data.get("scheme") != settings["scheme"]:
        raise SplitsError(
            f"{path}: stale splits file: scheme is {data.get('scheme')!r}, requested {settings['scheme']!r}; {advice}"
        )
    diffs = [
        f"{k}: file has {data.get(k)!r}, requested {settings[k]!r}"
        for k in _RELEVANT[settings["scheme"]]
        if data.get(k) != settings[k]
    ]
    if diffs:
        raise SplitsError(f"{path}: stale splits file, its settings differ ({'; '.join(diffs)}); {advice}")
    stored = [str(i) for i in data["case_ids"]]
    if set(stored) != set(ids) or len(stored) != len(ids):
        missing = [i for i in ids if i not in set(stored)]
        extra = [i for i in stored if i not in set(ids)]
        parts = [f"the data has {len(ids)} cases, the file {len(stored)}"]
        if missing:
            parts.append(f"{len(missing)} not in the file: {_listed(missing)}")
        if extra:
            parts.append(f"{len(extra)} no longer in the data: {_listed(extra)}")
        what = "; ".join(parts)
        raise SplitsError(f"{path}: stale splits file, its case ids differ from the data ({what}); {advice}")
    group_of = dict(zip(ids, groups, strict=True))
    all_ids = set(ids)
    for k, f in enumerate(data["folds"]):
        if not isinstance(f, dict) or not isinstance(f.get("train"), list) or not isinstance(f.get("val"), list):
            raise SplitsError(f"{path}: fold {k} is not a {{'train': [...], 'val': [...]}} object; {advice}")
        tr, va = {str(i) for i in f["train"]}, {str(i) for i in f["val"]}
        if tr & va or tr | va != all_ids or len(tr) + len(va) != len(ids):
            raise SplitsError(
                f"{path}: fold {k} does not divide the case ids into disjoint train and val parts; {advice}"
            )
        split_groups = {group_of[i] for i in tr} & {group_of[i] for i in va}
        if split_groups:
            shown = _listed(sorted(_show_group(g, entries) for g in split_groups))
            raise SplitsError(
                f"{path}: fold {k} puts one group (same '{settings['group_key']}' or identical images) on both "
                f"sides: {shown}; the data changed since the file was written; {advice}"
            )


def ensure_splits(
    path: PathLike,
    entries: Sequence[Mapping[str, Any]],
    scheme: str = "kfold",
    n_folds: int = 5,
    n_repeats: int = 1,
    seed: int = 0,
    group_key: str | None = "subject",
    label_key: str | None = "label",
    val_fraction: float = 0.2,
    hashes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Load the folds stored in ``path``, or compute them (:func:`make_folds`) and write the file atomically.

    The file (like nnU-Net's ``splits_final.json``)::

        {"scheme": "kfold", "n_folds": 5, "n_repeats": 1, "seed": 0, "group_key": "subject", "label_key": "label",
         "val_fraction": 0.2, "case_ids": [...every entry's case_id, in order],
         "folds": [{"train": [case ids], "val": [case ids]}, ...]}

    ``n_folds`` is stored as the number of folds per repeat actually made (the number of entries/groups for
    ``loo``/``loso``, 1 for ``holdout``) and ``n_repeats`` as 1 except for ``repeated_kfold``. An existing file is
    reused, not recomputed, when its scheme and the settings that determine that scheme's folds match and its
    case ids are exactly those of ``entries`` (in any order).

    Args:
        path: the splits JSON file.
        entries: the entries to split (case ids must be unique, see :func:`case_id`).
        scheme: one of ``SCHEMES`` (see :func:`make_folds`).
        n_folds: number of folds of the k-fold schemes.
        n_repeats: repetitions of ``repeated_kfold``.
        seed: shuffling seed.
        group_key: entry key of the subject/grouping id.
        label_key: entry key of the class label.
        val_fraction: validation fraction of ``holdout``.
        hashes: optional content hash per entry; identical images join one group.

    Returns:
        The splits dict (as stored).

    Raises:
        SplitsError: if the existing file is malformed or stale (other settings or case ids, or a fold that splits
            a group of the current data); the message names the file and what differs.
    """
    path = Path(path)
    if scheme not in SCHEMES:
        raise SplitsError(f"unknown split scheme {scheme!r}; choose from {SCHEMES}")
    ids = _unique_ids(entries)
    settings: dict[str, Any] = {
        "scheme": scheme,
        "n_folds": n_folds,
        "n_repeats": n_repeats if scheme == "repeated_kfold" else 1,
        "seed": seed,
        "group_key": group_key,
        "label_key": label_key,
        "val_fraction": val_fraction,
    }
    if path.exists():
        data = read_json(path, "splits file", SplitsError)
        _validate_stored(path, data, settings, ids, entries, _group_names(entries, group_key, hashes))
        return data
    folds = make_folds(entries, scheme, n_folds, n_repeats, seed, group_key, label_key, val_fraction, hashes)
    if scheme in ("loo", "loso", "holdout"):
        settings["n_folds"] = len(folds)
    data = {
        **settings,
        "case_ids": ids,
        "folds": [{"train": [ids[i] for i in f["train"]], "val": [ids[i] for i in f["val"]]} for f in folds],
    }
    atomic_write_json(path, data)
    return data


# ---------------------------------------------------------------------------------------------------- leakage


def _subject(e: Mapping[str, Any], group_key: str | None) -> str | None:
    if not group_key or e.get(group_key) is None:
        return None
    return str(e[group_key])


def _leaks(
    a: Sequence[Mapping[str, Any]],
    b: Sequence[Mapping[str, Any]],
    group_key: str | None,
    ha: Sequence[str] | None,
    hb: Sequence[str] | None,
) -> tuple[list[str], list[tuple[int, int]]]:
    """Subjects in both ``a`` and ``b``, and (index in a, index in b) pairs of identical images."""
    sa = {s for e in a if (s := _subject(e, group_key)) is not None}
    sb = {s for e in b if (s := _subject(e, group_key)) is not None}
    subjects = sorted(sa & sb)
    pairs: list[tuple[int, int]] = []
    if ha is not None and hb is not None:
        first: dict[str, int] = {}
        for i, h in enumerate(ha):
            first.setdefault(h, i)
        pairs = [(first[h], j) for j, h in enumerate(hb) if h in first]
    return subjects, pairs


def _leakage_message(
    parts: Mapping[str, Sequence[Mapping[str, Any]]],
    group_key: str | None,
    hashes: Mapping[str, Sequence[str]] | None,
) -> str | None:
    names = list(parts)
    for name in names:
        if hashes is not None and name in hashes and len(hashes[name]) != len(parts[name]):
            raise ValueError(f"got {len(hashes[name])} hashes for the {len(parts[name])} entries of '{name}'")
    lines = []
    for x, na in enumerate(names):
        for nb in names[x + 1 :]:
            ha = hashes.get(na) if hashes is not None else None
            hb = hashes.get(nb) if hashes is not None else None
            subjects, pairs = _leaks(parts[na], parts[nb], group_key, ha, hb)
            if subjects:
                more = f" and {len(subjects) - _MAX_LISTED} more" if len(subjects) > _MAX_LISTED else ""
                lines.append(
                    f"  '{na}' and '{nb}' share {len(subjects)} subject(s) ('{group_key}'): "
                    f"{', '.join(subjects[:_MAX_LISTED])}{more}"
                )
            if pairs:
                shown = [
                    f"{_short(parts[na][i].get('image'))} = {_short(parts[nb][j].get('image'))}"
                    for i, j in pairs[:_MAX_LISTED]
                ]
                more = f" and {len(pairs) - _MAX_LISTED} more" if len(pairs) > _MAX_LISTED else ""
                lines.append(
                    f"  '{na}' and '{nb}' share {len(pairs)} identical image(s) ({na} = {nb}): {', '.join(shown)}{more}"
                )
    if not lines:
        return None
    return "data leakage between splits:\n" + "\n".join(lines)


def check_leakage(
    parts: Mapping[str, Sequence[Mapping[str, Any]]],
    group_key: str | None = "subject",
    hashes: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Raise :class:`LeakageError` when a subject or an identical image is in two of ``parts``.

    Args:
        parts: split name to entries, e.g. ``{"training": [...], "validation": [...], "test": [...]}``.
        group_key: entry key of the subject id (entries without it are not compared by subject); None: no subject
            check.
        hashes: optional content hashes per part (same names and order as ``parts``, see :func:`content_hashes`);
            parts without hashes are not compared by content.

    Raises:
        LeakageError: naming the two parts, up to 10 shared subjects and up to 10 pairs of identical image files
            (and how many more there are).
    """
    msg = _leakage_message(parts, group_key, hashes)
    if msg:
        raise LeakageError(msg)


def _check_mode(leakage: str) -> None:
    if leakage not in LEAKAGE_MODES:
        raise ValueError(f"leakage must be one of {LEAKAGE_MODES}, got {leakage!r}")


def _hint(where: str) -> str:
    return (
        f"\nFix the datalist, or pass leakage='drop' to {where} (removes the offending entries from the training "
        f"data, never from 'test'), or leakage='off' (no check, at the risk of optimistic results); in the "
        f"bundles: --leakage drop or --leakage off."
    )


def _drop_conflicting(
    name: str,
    entries: list[dict[str, Any]],
    hashes: list[str] | None,
    ref_name: str,
    ref: Sequence[Mapping[str, Any]],
    ref_hashes: Sequence[str] | None,
    group_key: str | None,
) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Remove the entries of ``entries`` that share a subject or an identical image with ``ref``; log them."""
    ref_subjects = {s for e in ref if (s := _subject(e, group_key)) is not None}
    ref_h = set(ref_hashes) if ref_hashes is not None and hashes is not None else set()
    drop = [
        i
        for i, e in enumerate(entries)
        if _subject(e, group_key) in ref_subjects or (hashes is not None and hashes[i] in ref_h)
    ]
    if not drop:
        return entries, hashes
    shown = ", ".join(_short(entries[i].get("image")) for i in drop[:_MAX_LISTED])
    more = f" and {len(drop) - _MAX_LISTED} more" if len(drop) > _MAX_LISTED else ""
    logger.warning(
        "leakage='drop': removed %d of %d '%s' entries that share a subject ('%s') or an identical image with '%s': "
        "%s%s",
        len(drop),
        len(entries),
        name,
        group_key,
        ref_name,
        shown,
        more,
    )
    keep = sorted(set(range(len(entries))) - set(drop))
    return [entries[i] for i in keep], ([hashes[i] for i in keep] if hashes is not None else None)


# ---------------------------------------------------------------------------------------------------- datalists


def _split_or_empty(datalist: PathLike, raw: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    if isinstance(raw.get(key), list) and raw[key]:
        return load_datalist(datalist, key)
    return []


def cv_fold_entries(
    datalist: PathLike,
    splits_file: PathLike,
    fold: int = 0,
    scheme: str = "kfold",
    n_folds: int = 5,
    n_repeats: int = 1,
    seed: int = 0,
    group_key: str | None = "subject",
    pool_validation: bool = True,
    leakage: str = "error",
    hash_cache: PathLike | None = None,
    label_key: str | None = "label",
    val_fraction: float = 0.2,
) -> dict[str, list[dict[str, Any]]]:
    """Training and validation entries of one cross-validation fold of a datalist.

    The pool is the datalist's ``training`` split (plus ``validation`` when present and ``pool_validation``); its
    ``test`` split (if any) is never split but checked against. The folds come from :func:`ensure_splits`
    (``splits_file``, computed once and reused), with identical images kept in one group.

    Args:
        datalist: the datalist JSON file.
        splits_file: the ``splits.json`` to create or reuse.
        fold: fold index, ``0 .. number of folds - 1``.
        scheme: one of ``SCHEMES`` (see :func:`make_folds`).
        n_folds: number of folds of the k-fold schemes.
        n_repeats: repetitions of ``repeated_kfold``.
        seed: shuffling seed.
        group_key: entry key of the subject/grouping id (also used for the subject leakage checks).
        pool_validation: add the datalist's ``validation`` split to the pool.
        leakage: ``"error"``: raise :class:`LeakageError` when a subject or an identical image is in both the pool
            and ``test``; ``"drop"``: remove those entries from the pool (logged as a warning); ``"off"``: no
            content hashing and no checks.
        hash_cache: content hash cache file; default ``content_hashes.json`` beside ``splits_file``.
        label_key: entry key of the class label (stratification).
        val_fraction: validation fraction of scheme ``holdout``.

    Returns:
        ``{"training": [...], "validation": [...]}`` in pool order.

    Raises:
        LeakageError: see ``leakage``; also when the chosen fold would leak into ``test`` (final guard).
        SplitsError: for a stale ``splits_file``, impossible settings or a fold out of range.
    """
    _check_mode(leakage)
    raw = load_datalist_file(datalist)
    pool = load_datalist(datalist, "training")
    if pool_validation:
        pool += _split_or_empty(datalist, raw, "validation")
    test = _split_or_empty(datalist, raw, "test")
    pool_h: list[str] | None = None
    test_h: list[str] | None = None
    if leakage != "off":
        cache = hash_cache if hash_cache is not None else Path(splits_file).parent / "content_hashes.json"
        all_h = content_hashes(pool + test, cache_file=cache)
        pool_h, test_h = all_h[: len(pool)], all_h[len(pool) :]
        if leakage == "drop":
            pool, pool_h = _drop_conflicting("training", pool, pool_h, "test", test, test_h, group_key)
        else:
            msg = _leakage_message({"training": pool, "test": test}, group_key, {"training": pool_h, "test": test_h})
            if msg:
                raise LeakageError(f"{datalist}: {msg}{_hint('cv_fold_entries')}")
    splits = ensure_splits(
        splits_file, pool, scheme, n_folds, n_repeats, seed, group_key, label_key, val_fraction, hashes=pool_h
    )
    folds = splits["folds"]
    if isinstance(fold, bool) or not isinstance(fold, int | np.integer) or not 0 <= fold < len(folds):
        raise SplitsError(f"fold {fold!r} is out of range: {splits_file} has {len(folds)} folds (0..{len(folds) - 1})")
    train_ids, val_ids = set(folds[fold]["train"]), set(folds[fold]["val"])
    ids = [case_id(e) for e in pool]
    tr = [i for i, c in enumerate(ids) if c in train_ids]
    va = [i for i, c in enumerate(ids) if c in val_ids]
    out = {"training": [pool[i] for i in tr], "validation": [pool[i] for i in va]}
    if leakage != "off":
        assert pool_h is not None and test_h is not None
        msg = _leakage_message(
            {**out, "test": test},
            group_key,
            {"training": [pool_h[i] for i in tr], "validation": [pool_h[i] for i in va], "test": test_h},
        )
        if msg:
            raise LeakageError(f"{datalist} fold {fold} of {splits_file}: {msg}{_hint('cv_fold_entries')}")
    return out


def holdout_split(
    entries: Sequence[dict[str, Any]],
    val_fraction: float = 0.2,
    seed: int = 0,
    group_key: str | None = "subject",
    label_key: str | None = "label",
    hashes: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split entries into training and validation parts, stratified by label and grouped by subject.

    Built on scikit-learn's ``StratifiedGroupKFold``: the validation part is the first of ``round(1 / val_fraction)``
    folds, so no ``group_key`` value appears in both parts and class proportions are kept as far as the groups allow.

    Args:
        entries: datalist entries.
        val_fraction: fraction of entries (approximately, by groups) for validation, in (0, 0.5].
        seed: shuffling seed.
        group_key: entry key holding the subject id; None (or a missing key / None value) treats every entry as its
            own subject.
        label_key: entry key holding the integer class label; None: no stratification.
        hashes: optional content hash per entry (:func:`content_hashes`): identical images stay on one side.

    Returns:
        (training entries, validation entries), in their original order.

    Raises:
        SplitsError: (a ``ValueError``) if the fraction is out of range or there are too few subjects for a split.
    """
    labels = _labels(entries, label_key)
    groups = _group_names(entries, group_key, hashes)
    tr, va = _holdout_indices(labels, groups, val_fraction, seed)
    return [entries[i] for i in tr], [entries[i] for i in va]


def train_val_entries(
    datalist: str,
    val_fraction: float = 0.2,
    seed: int = 0,
    group_key: str | None = "subject",
    leakage: str = "off",
    hash_cache: PathLike | None = None,
    label_key: str | None = "label",
) -> dict[str, list[dict[str, Any]]]:
    """Training and validation entries of a datalist file, optionally checked for leakage.

    Uses the datalist's own ``validation`` split when it has one; otherwise holds out a stratified, subject-grouped
    part of ``training`` (see :func:`holdout_split`; identical images are kept on one side). The ``test`` split is
    never changed, only checked against.

    Args:
        datalist: the datalist JSON file.
        val_fraction: validation fraction of the hold-out.
        seed: hold-out seed.
        group_key: entry key of the subject id; None: no subject grouping/check.
        leakage: ``"error"``: raise :class:`LeakageError` when a subject or an identical image (content hash) is
            in two of training/validation/test; ``"drop"``: remove such entries (logged as a warning) from
            training, or from the datalist's validation split when they conflict with test; ``"off"`` (default, the
            behaviour before the guard existed; the bundles pass ``"error"``): no content hashing and no checks.
        hash_cache: optional content hash cache file (see :func:`content_hashes`).
        label_key: entry key of the integer class the hold-out is stratified by; None: not stratified (e.g.
            segmentation data without a case-level class).

    Returns:
        ``{"training": [...], "validation": [...]}``.
    """
    _check_mode(leakage)
    raw = load_datalist_file(datalist)
    train = load_datalist(datalist, "training")
    val = _split_or_empty(datalist, raw, "validation")
    if leakage == "off":
        if val:
            return {"training": train, "validation": val}
        tr, va = holdout_split(train, val_fraction=val_fraction, seed=seed, group_key=group_key, label_key=label_key)
        return {"training": tr, "validation": va}
    test = _split_or_empty(datalist, raw, "test")
    all_h = content_hashes(train + val + test, cache_file=hash_cache)
    h_tr, h_va, h_te = all_h[: len(train)], all_h[len(train) : len(train) + len(val)], all_h[len(train) + len(val) :]
    if leakage == "drop":
        if val:
            val, h_va = _drop_conflicting("validation", val, h_va, "test", test, h_te, group_key)
            train, h_tr = _drop_conflicting(
                "training", train, h_tr, "validation/test", val + test, h_va + h_te, group_key
            )
        else:
            train, h_tr = _drop_conflicting("training", train, h_tr, "test", test, h_te, group_key)
    if not val:
        groups = _group_names(train, group_key, h_tr)
        tr_i, va_i = _holdout_indices(_labels(train, label_key), groups, val_fraction, seed)
        train, val = [train[i] for i in tr_i], [train[i] for i in va_i]
        h_tr, h_va = [h_tr[i] for i in tr_i], [h_tr[i] for i in va_i]
    msg = _leakage_message(
        {"training": train, "validation": val, "test": test},
        group_key,
        {"training": h_tr, "validation": h_va, "test": h_te},
    )
    if msg:
        raise LeakageError(f"{datalist}: {msg}{_hint('medmonai.data.splits.train_val_entries')}")
    return {"training": train, "validation": val}
