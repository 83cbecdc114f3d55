"""The one datalist format of medmonai (MONAI decathlon-style JSON) and its loading, writing and validation.

A datalist is a JSON object::

    {
      "name": "phantom3d",
      "description": "...",
      "tensorImageSize": "3D",
      "classes": ["benign", "malignant"],          # class index = position (classification)
      "mask_labels": {"0": "background", "1": "lesion"},   # optional (segmentation)
      "training":   [{"image": "nifti/sub-000_img-00.nii.gz", "label": 0,
                      "mask": "nifti/sub-000_img-00_seg.nii.gz", "subject": "sub-000", ...}],
      "validation": [...],                          # optional
      "test":       [...]                           # optional
    }

``image`` is a file, a DICOM series folder, or a list of DICOM files of one series; ``label`` is the integer
class index; ``mask`` (optional) a segmentation file; ``subject`` the patient/subject id used by group-aware
splits. Any other key is free metadata. Relative paths are relative to the datalist file's folder (or to a
top-level ``base_dir`` when present), so a data set folder with its datalist can be moved as a whole.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medmonai.utils import PathLike, atomic_write_json, read_json

__all__ = [
    "PATH_KEYS",
    "SPLIT_KEYS",
    "DatalistError",
    "Problem",
    "load_datalist_file",
    "load_datalist",
    "write_datalist",
    "make_datalist",
    "class_names",
    "validate_entries",
    "check_entries",
    "format_problems",
]

PATH_KEYS: tuple[str, ...] = ("image", "mask")
SPLIT_KEYS: tuple[str, ...] = ("training", "validation", "test")


class DatalistError(ValueError):
    """A datalist or one of its entries is invalid; the message names the file/entry and the reason."""


@dataclass
class Problem:
    """One problem found in a datalist entry.

    Attributes:
        index: position of the entry in its split list (-1 for the datalist as a whole).
        file: the offending file (or the datalist file), as a string.
        reason: human-readable reason.
        key: the entry key concerned (``image``, ``label``, ``mask``...).
    """

    index: int
    file: str
    reason: str
    key: str = ""

    def __str__(self) -> str:
        where = f"entry {self.index}" if self.index >= 0 else "datalist"
        key = f" [{self.key}]" if self.key else ""
        return f"{where}{key}: {self.file}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        """Return the problem as a plain dict (for JSON reports)."""
        return asdict(self)


def load_datalist_file(path: PathLike) -> dict[str, Any]:
    """Read and structurally check a datalist JSON file.

    Args:
        path: the JSON file.

    Returns:
        The raw datalist dict (paths not resolved).

    Raises:
        DatalistError: if the file is missing, not JSON, or has no entry list.
    """
    path = Path(path)
    data = read_json(path, "datalist file", DatalistError)
    if isinstance(data, list):  # a bare list of entries is accepted as the training split
        data = {"training": data}
    if not isinstance(data, dict):
        raise DatalistError(f"{path}: a datalist must be a JSON object with a 'training' list, got {type(data)}")
    lists = [k for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
    if not lists and not any(isinstance(data.get(k), list) for k in SPLIT_KEYS):
        raise DatalistError(f"{path}: no entry list found (expected one of {SPLIT_KEYS})")
    return data


def _base_dir(datalist: dict[str, Any], datalist_path: Path) -> Path:
    base = datalist.get("base_dir")
    if base:
        base = Path(base)
        return base if base.is_absolute() else (datalist_path.parent / base)
    return datalist_path.parent


def _resolve(value: Any, base: Path) -> Any:
    if isinstance(value, str):
        p = Path(os.path.expanduser(value))
        return str(p if p.is_absolute() else (base / p))
    if isinstance(value, list | tuple):
        return [_resolve(v, base) for v in value]
    return value


def load_datalist(
    path: PathLike, key: str = "training", resolve: bool = True, path_keys: Sequence[str] = PATH_KEYS
) -> list[dict[str, Any]]:
    """Load one split of a datalist as a list of entry dicts, with absolute paths.

    Args:
        path: the datalist JSON file.
        key: the split to load (``training``, ``validation``, ``test`` or any list key); ``all`` concatenates
            every split present and records it under ``split`` in each entry.
        resolve: turn relative paths into absolute ones.
        path_keys: entry keys that hold paths.

    Returns:
        The entries (copies; the file is not modified).

    Raises:
        DatalistError: if the split does not exist or an entry is malformed.
    """
    path = Path(path)
    data = load_datalist_file(path)
    if key == "all":
        keys = [k for k in SPLIT_KEYS if isinstance(data.get(k), list)]
    else:
        if key not in data or not isinstance(data[key], list):
            present = [k for k, v in data.items() if isinstance(v, list)]
            raise DatalistError(f"{path}: no split '{key}' in datalist (present: {present})")
        keys = [key]
    base = _base_dir(data, path)
    out: list[dict[str, Any]] = []
    for k in keys:
        for i, entry in enumerate(data[k]):
            if not isinstance(entry, dict) or "image" not in entry:
                raise DatalistError(f"{path}: entry {i} of '{k}' has no 'image' key: {entry!r}")
            e = dict(entry)
            if key == "all":
                e.setdefault("split", k)
            if resolve:
                for pk in path_keys:
                    if pk in e and e[pk] is not None:
                        e[pk] = _resolve(e[pk], base)
            out.append(e)
    return out


def _relativize(value: Any, base: Path) -> Any:
    if isinstance(value, str | Path):
        p = Path(os.path.expanduser(value))
        p = p if p.is_absolute() else Path.cwd() / p  # in-memory relative paths are relative to the cwd
        try:
            return p.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            return str(p.resolve())
    if isinstance(value, list | tuple):
        return [_relativize(v, base) for v in value]
    return value


def write_datalist(path: PathLike, datalist: dict[str, Any], path_keys: Sequence[str] = PATH_KEYS) -> Path:
    """Write a datalist atomically; paths below the datalist's folder are stored relative to it.

    In-memory relative paths are taken relative to the current directory; paths outside the datalist's folder are
    stored absolute.

    Args:
        path: destination JSON file.
        datalist: the datalist dict (see module docstring).
        path_keys: entry keys that hold paths.

    Returns:
        The written path.
    """
    path = Path(path)
    base = _base_dir(datalist, path)
    out = dict(datalist)
    for k, v in datalist.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            entries = []
            for e in v:
                e = dict(e)
                for pk in path_keys:
                    if pk in e and e[pk] is not None:
                        e[pk] = _relativize(e[pk], base)
                entries.append(e)
            out[k] = entries
    for k in SPLIT_KEYS:
        if isinstance(out.get(k), list):
            out[f"num{k[0].upper()}{k[1:]}"] = len(out[k])
    return atomic_write_json(path, out)


def make_datalist(
    splits: dict[str, list[dict[str, Any]]],
    classes: Sequence[str] | None = None,
    name: str = "",
    description: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """Assemble a datalist dict from split entry lists and metadata.

    Args:
        splits: mapping split name (``training``/``validation``/``test``) to entries.
        classes: class names; the integer ``label`` of an entry indexes this list.
        name: data set name.
        description: free text (source, licence...).
        extra: further top-level fields (``tensorImageSize``, ``modality``, ``mask_labels``...).

    Returns:
        The datalist dict.
    """
    d: dict[str, Any] = {"name": name, "description": description}
    if classes is not None:
        d["classes"] = list(classes)
    d.update(extra)
    for k, v in splits.items():
        d[k] = list(v)
    return d


def class_names(datalist: dict[str, Any]) -> list[str] | None:
    """Return the class names of a datalist (its ``classes`` list), or None when it has none."""
    if isinstance(datalist.get("classes"), list):
        return [str(c) for c in datalist["classes"]]
    return None


def _iter_paths(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _iter_paths(v)


def check_entries(
    entries: Sequence[dict[str, Any]],
    classes: Sequence[str] | None = None,
    check_files: bool = True,
    require_all_classes: bool = True,
    source: str = "",
) -> list[Problem]:
    """Find problems in datalist entries without raising.

    Checks: the list is not empty; every path exists (and is not empty); ``label`` is an integer index into
    ``classes`` (or a class name in it); with ``require_all_classes``, every class has at least one entry.

    Args:
        entries: resolved entries (see :func:`load_datalist`).
        classes: class names, or None to skip label checks.
        check_files: check that files exist and are not 0 bytes.
        require_all_classes: report classes with no entries.
        source: name of the datalist (for messages).

    Returns:
        The problems found (empty when everything is fine).
    """
    problems: list[Problem] = []
    if len(entries) == 0:
        problems.append(Problem(-1, source, "the datalist has no entries"))
        return problems
    counts: Counter[int] = Counter()
    for i, e in enumerate(entries):
        first = next(iter(_iter_paths(e.get("image"))), str(e.get("image")))
        if check_files:
            for key in PATH_KEYS:
                for p in _iter_paths(e.get(key)):
                    if not os.path.exists(p):
                        problems.append(Problem(i, p, "file does not exist", key))
                    elif os.path.isfile(p) and os.path.getsize(p) == 0:
                        problems.append(Problem(i, p, "file is empty (0 bytes)", key))
        if classes is not None and "label" in e:
            lab = e["label"]
            if isinstance(lab, str) and lab in classes:
                lab = list(classes).index(lab)
            if isinstance(lab, bool) or not isinstance(lab, int) or not 0 <= lab < len(classes):
                problems.append(
                    Problem(i, first, f"label {e['label']!r} is outside the class list {list(classes)}", "label")
                )
            else:
                counts[lab] += 1
    if classes is not None and require_all_classes:
        labelled = any("label" in e for e in entries)
        for c, name in enumerate(classes):
            if labelled and counts[c] == 0:
                problems.append(Problem(-1, source, f"class {c} ('{name}') has no entries", "label"))
    return problems


def format_problems(problems: Sequence[Problem]) -> str:
    """Render problems as a plain-text table (one line each)."""
    if not problems:
        return "no problems found"
    rows = [("entry", "key", "file", "problem")] + [
        (str(p.index) if p.index >= 0 else "-", p.key or "-", p.file, p.reason) for p in problems
    ]
    widths = [min(max(len(r[c]) for r in rows), 70) for c in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows]
    return "\n".join(lines)


def validate_entries(
    entries: Sequence[dict[str, Any]],
    classes: Sequence[str] | None = None,
    check_files: bool = True,
    require_all_classes: bool = True,
    source: str = "",
) -> None:
    """Like :func:`check_entries` but raise :class:`DatalistError` listing every problem."""
    problems = check_entries(entries, classes, check_files, require_all_classes, source)
    if problems:
        raise DatalistError(f"{source or 'datalist'}: {len(problems)} problem(s):\n{format_problems(problems)}")
