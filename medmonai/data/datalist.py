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

import errno
import json
import os
import stat
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
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
    "is_ordinal",
    "validate_entries",
    "check_entries",
    "format_problems",
    "entry_problems",
    "path_problem",
    "path_escape",
    "datalist_base_dir",
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
    for k in SPLIT_KEYS:
        if k in data and data[k] is not None and not isinstance(data[k], list):
            raise DatalistError(f"{path}: '{k}' must be a list of entries, got {_shown_value(data[k])}")
    _check_classes_field(data.get("classes"), path)
    labels = data.get("mask_labels")
    if labels is not None and not (isinstance(labels, dict) and all(_is_int_text(k) for k in labels)):
        raise DatalistError(
            f"{path}: 'mask_labels' must be an object mapping integer mask values to names, e.g. "
            f'{{"0": "background", "1": "lesion"}}; got {_shown_value(labels)}'
        )
    return data


def _shown_value(value: Any, limit: int = 60) -> str:
    """A JSON rendering of a value for messages (``null``, ``12345``, ``"a,b"``), cut to ``limit`` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int_text(value: Any) -> bool:
    try:
        int(str(value).strip())
    except ValueError:
        return False
    return True


def _check_classes_field(classes: Any, path: Path) -> None:
    """``classes`` must be absent/null or a list of distinct, non-empty class names."""
    if classes is None:
        return
    ok = isinstance(classes, list) and all(
        (isinstance(c, str) and c.strip()) or (isinstance(c, int) and not isinstance(c, bool)) for c in classes
    )
    if not ok:
        raise DatalistError(
            f'{path}: \'classes\' must be a list of class names in index order, e.g. ["benign", "malignant"]; '
            f"got {_shown_value(classes)}"
        )
    names = [str(c) for c in classes]
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise DatalistError(f"{path}: 'classes' lists {dup} more than once: {names}")


def datalist_base_dir(datalist: Mapping[str, Any], datalist_path: PathLike) -> Path:
    """The folder that the relative paths of a datalist are resolved against.

    That is its ``base_dir`` (absolute, or relative to the datalist's folder), else the datalist file's folder.
    """
    return _base_dir(datalist, Path(datalist_path))


# ------------------------------------------------------------------------------------- entry value checks


def _path_value_problem(value: Any, key: str) -> str | None:
    """Why ``value`` is not a valid path value (a non-empty string, or a non-empty list of them), or None."""
    if isinstance(value, str) and value.strip():
        return None
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) and v.strip() for v in value):
        return None
    return f"'{key}' must be a path (a non-empty string) or a list of DICOM file paths, got {_shown_value(value)}"


def entry_problems(entry: Any) -> list[tuple[str, str]]:
    """Type problems of one raw datalist entry, as ``(key, reason)`` pairs (empty when the entry is well-formed).

    ``image`` must be a non-empty path string or a non-empty list of path strings (``null``, numbers, objects and
    empty strings are refused); ``mask`` likewise when present and not ``null``; ``label``, when present and not
    ``null``, an integer class index or a class name.
    """
    if not isinstance(entry, Mapping):
        return [("entry", f"an entry must be a JSON object with an 'image', got {_shown_value(entry)}")]
    out: list[tuple[str, str]] = []
    if "image" not in entry:
        out.append(("image", "no 'image' key"))
    else:
        reason = _path_value_problem(entry["image"], "image")
        if reason:
            out.append(("image", reason))
    if entry.get("mask") is not None:
        reason = _path_value_problem(entry["mask"], "mask")
        if reason:
            out.append(("mask", reason))
    label = entry.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int | str)):
        out.append(("label", f"'label' must be an integer class index or a class name, got {_shown_value(label)}"))
    return out


def path_escape(value: Any, base: PathLike) -> str | None:
    """Why a raw path value leaves the datalist's folder, or None.

    The containment rule: a *relative* path must stay inside ``base`` (the datalist's folder or its declared
    ``base_dir``) once ``..`` components are resolved (lexically: symbolic links inside the folder may point
    anywhere); absolute paths (and ``~`` paths) are allowed, since they state where the data is.
    """
    base_n = os.path.normpath(os.fspath(base))
    for v in _iter_paths(value):
        expanded = os.path.expanduser(v)
        if os.path.isabs(expanded):
            continue
        target = os.path.normpath(os.path.join(base_n, expanded))
        if os.path.relpath(target, base_n).split(os.sep)[0] == os.pardir:
            return (
                f"relative path {v!r} leads outside the datalist's folder {base_n} (to {target}); relative paths "
                "must stay inside that folder (or the datalist's base_dir): give data stored elsewhere as an "
                "absolute path"
            )
    return None


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def path_problem(path: PathLike) -> str | None:
    """Why ``path`` cannot be an image (a regular file or a folder), or None; never opens the file.

    Distinguishes a missing file, a broken symbolic link, a symbolic link loop, a permission problem, an empty
    (0-byte) file and special files (FIFO, device, socket), which would block or never end when read.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop (the link leads back to itself); point it at the real file"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            if os.path.islink(path):
                return f"broken symbolic link (points to {os.readlink(path)!r}, which does not exist)"
            return "file does not exist"
        if e.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        if e.errno == errno.ENAMETOOLONG:
            return "file name too long"
        return f"cannot access the file ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        return None
    if stat.S_ISREG(st.st_mode):
        return "file is empty (0 bytes)" if st.st_size == 0 else None
    kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "a special file")
    return f"not a regular file or folder ({kind}); an image must be a file or a DICOM series folder"


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
    path: PathLike,
    key: str = "training",
    resolve: bool = True,
    path_keys: Sequence[str] = PATH_KEYS,
    validate: bool = True,
) -> list[dict[str, Any]]:
    """Load one split of a datalist as a list of entry dicts, with absolute paths.

    Args:
        path: the datalist JSON file.
        key: the split to load (``training``, ``validation``, ``test`` or any list key); ``all`` concatenates
            every split present and records it under ``split`` in each entry.
        resolve: turn relative paths into absolute ones.
        path_keys: entry keys that hold paths.
        validate: raise for malformed entries (:func:`entry_problems`: ``"image": null``, a number...) and for
            relative paths that leave the datalist's folder (:func:`path_escape`); ``False`` returns them as they
            are (values that are not strings unresolved), for a checker that reports them entry by entry.

    Returns:
        The entries (copies; the file is not modified).

    Raises:
        DatalistError: if the split does not exist or an entry is malformed (naming the file, split and entry).
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
        for i, entry in enumerate(data[k] or []):
            if not isinstance(entry, dict):
                raise DatalistError(
                    f"{path}: entry {i} of '{k}': an entry must be a JSON object with an 'image', got "
                    f"{_shown_value(entry)}"
                )
            if validate:
                problems = [r for _, r in entry_problems(entry)]
                problems += [r for r in (path_escape(entry.get(pk), base) for pk in path_keys) if r]
                if problems:
                    raise DatalistError(f"{path}: entry {i} of '{k}': {'; '.join(problems)}")
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


def is_ordinal(datalist: Mapping[str, Any] | PathLike) -> bool:
    """Whether a datalist (dict or file) marks its ``classes`` as ordered grades: top-level ``"ordinal": true``.

    Ordinal labels get the quadratic weighted kappa in the reports (:func:`medmonai.metrics.report.
    write_classification_report`).

    Raises:
        ValueError: when ``ordinal`` is present but not a boolean, naming the file.
    """
    source = None
    if not isinstance(datalist, Mapping):
        source = datalist
        datalist = load_datalist_file(datalist)
    value = datalist.get("ordinal", False)
    if not isinstance(value, bool):
        where = f"{source}: " if source is not None else ""
        raise ValueError(f"{where}'ordinal' must be true or false, got {value!r}")
    return value


def _iter_paths(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _iter_paths(v)


def _image_key(value: Any) -> Any:
    """A hashable identity of an image value (resolved paths), for duplicate detection."""
    if isinstance(value, str):
        return os.path.normpath(os.path.abspath(value))
    if isinstance(value, list | tuple):
        return tuple(_image_key(v) for v in value)
    return None


def check_entries(
    entries: Sequence[dict[str, Any]],
    classes: Sequence[str] | None = None,
    check_files: bool = True,
    require_all_classes: bool = True,
    source: str = "",
    require_labels: bool | None = None,
) -> list[Problem]:
    """Find problems in datalist entries without raising.

    Checks: the list is not empty; every entry is well-formed (:func:`entry_problems`); every path is a regular
    file or a folder (:func:`path_problem`: missing, broken link, link loop, 0 bytes, FIFO/device...); no image is
    listed twice; ``label`` is an integer index into ``classes`` (or a class name in it) and present where labels
    are required; with ``require_all_classes``, every class has at least one entry.

    Args:
        entries: resolved entries (see :func:`load_datalist`).
        classes: class names, or None to skip label checks.
        check_files: check the files (see above) without opening them.
        require_all_classes: report classes with no entries.
        source: name of the datalist (for messages).
        require_labels: with ``classes``: ``True``: every entry needs a ``label``; ``False``: labels are optional;
            ``None`` (default): required as soon as one entry of the list has one (a partly labelled list).

    Returns:
        The problems found (empty when everything is fine).
    """
    problems: list[Problem] = []
    if len(entries) == 0:
        problems.append(Problem(-1, source, "the datalist has no entries"))
        return problems
    counts: Counter[int] = Counter()
    if require_labels is None:
        require_labels = any(isinstance(e, Mapping) and e.get("label") is not None for e in entries)
    seen: dict[Any, int] = {}
    for i, e in enumerate(entries):
        invalid = entry_problems(e)
        if not isinstance(e, Mapping):
            problems += [Problem(i, source, r, k) for k, r in invalid]
            continue
        first = next(iter(_iter_paths(e.get("image"))), _shown_value(e.get("image")))
        problems += [Problem(i, first if k != "image" else source, r, k) for k, r in invalid]
        bad_keys = {k for k, _ in invalid}
        if check_files:
            for key in PATH_KEYS:
                if key in bad_keys:
                    continue
                for p in _iter_paths(e.get(key)):
                    reason = path_problem(p)
                    if reason is not None:
                        problems.append(Problem(i, p, reason, key))
        ident = _image_key(e.get("image")) if "image" not in bad_keys else None
        if ident is not None:
            if ident in seen:
                problems.append(Problem(i, first, f"duplicate entry: the same image as entry {seen[ident]}", "image"))
            else:
                seen[ident] = i
        if classes is not None and "label" not in bad_keys:
            lab = e.get("label")
            if lab is None:
                if require_labels:
                    problems.append(
                        Problem(
                            i,
                            first,
                            f"no 'label' (this is a classification datalist with classes {list(classes)}: every "
                            "entry needs its class index)",
                            "label",
                        )
                    )
                continue
            if isinstance(lab, str) and lab in classes:
                lab = list(classes).index(lab)
            if isinstance(lab, bool) or not isinstance(lab, int) or not 0 <= lab < len(classes):
                problems.append(
                    Problem(i, first, f"label {e['label']!r} is outside the class list {list(classes)}", "label")
                )
            else:
                counts[lab] += 1
    if classes is not None and require_all_classes:
        labelled = any(isinstance(e, Mapping) and e.get("label") is not None for e in entries)
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
