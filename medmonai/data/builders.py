"""Datalist builders: turn common data set layouts into a medmonai datalist dict.

Every builder returns a datalist dict made with :func:`medmonai.data.datalist.make_datalist` (write it with
:func:`medmonai.data.datalist.write_datalist`); entries have ``image``, ``label`` (int index into ``classes``,
when the source has class labels), optional ``mask``, ``subject`` and free metadata. Paths in entries are
absolute; ``write_datalist`` stores those below the datalist's folder as relative paths.

Supported sources:

- :func:`datalist_from_medmnist`: a MedMNIST ``.npz`` (2D grey, 2D RGB or 3D), images written as PNG / NIfTI.
- :func:`datalist_from_image_folder`: ``root/<class>/*`` or ``root/<split>/<class>/*``.
- :func:`datalist_from_csv`: a table of paths, labels, subjects (and optional splits).
- :func:`datalist_from_dicom_folder`: one entry per validated DICOM series, labels joined from a CSV.
- :func:`datalist_from_msd`: Medical Segmentation Decathlon layout (``dataset.json``, ``imagesTr``...).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from medmonai.data.datalist import DatalistError, Problem, make_datalist
from medmonai.data.dicom import DicomError, is_error, list_folder_files, scan_dicom_folder
from medmonai.utils import PathLike, atomic_write, read_json

__all__ = [
    "MEDMNIST_CLASSES",
    "MEDMNIST_ORDINAL",
    "IMAGE_EXTENSIONS",
    "MIN_PSEUDONYM_KEY_BYTES",
    "SPLIT_FOLDER_NAMES",
    "datalist_from_medmnist",
    "datalist_from_image_folder",
    "datalist_from_csv",
    "datalist_from_dicom_folder",
    "datalist_from_msd",
    "pseudonym",
    "read_pseudonym_key",
]

_ORGAN = [
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
]

#: MedMNIST sets whose labels are ordered grades (MedMNIST's "ordinal regression" task): their datalists get
#: ``"ordinal": true``
MEDMNIST_ORDINAL: frozenset[str] = frozenset({"retinamnist"})
MEDMNIST_CLASSES: dict[str, list[str]] = {
    "breastmnist": ["malignant", "normal_benign"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "pathmnist": [
        "adipose",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth_muscle",
        "normal_colon_mucosa",
        "cancer_associated_stroma",
        "colorectal_adenocarcinoma_epithelium",
    ],
    "dermamnist": [
        "actinic_keratoses_intraepithelial_carcinoma",
        "basal_cell_carcinoma",
        "benign_keratosis_like_lesions",
        "dermatofibroma",
        "melanoma",
        "melanocytic_nevi",
        "vascular_lesions",
    ],
    "octmnist": ["choroidal_neovascularization", "diabetic_macular_edema", "drusen", "normal"],
    "bloodmnist": [
        "basophil",
        "eosinophil",
        "erythroblast",
        "immature_granulocytes",
        "lymphocyte",
        "monocyte",
        "neutrophil",
        "platelet",
    ],
    "retinamnist": ["grade_0", "grade_1", "grade_2", "grade_3", "grade_4"],
    "organamnist": _ORGAN,
    "organcmnist": _ORGAN,
    "organsmnist": _ORGAN,
    "organmnist3d": _ORGAN,
    "nodulemnist3d": ["benign", "malignant"],
    "adrenalmnist3d": ["normal", "hyperplasia"],
    "fracturemnist3d": ["buckle_rib_fracture", "nondisplaced_rib_fracture", "displaced_rib_fracture"],
    "vesselmnist3d": ["vessel", "aneurysm"],
    "synapsemnist3d": ["inhibitory_synapse", "excitatory_synapse"],
}
"""Class names (index order) of the MedMNIST v2 sets, keyed by lower-case file stem without a size suffix."""

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".dcm")

SPLIT_FOLDER_NAMES: dict[str, str] = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
}
"""Folder (or CSV split column) names recognised as splits, lower case, mapped to datalist split keys."""

_NPZ_SPLITS = (("train", "training"), ("val", "validation"), ("test", "test"))


# ------------------------------------------------------------------------------------------------- helpers


def _labels_to_indices(
    labels: Sequence[Any], classes: Sequence[str] | None, where: Sequence[str]
) -> tuple[list[int], list[str]]:
    """Map label values (class names or integer indices, as read from a table) to class indices.

    Args:
        labels: one label per row (str or int).
        classes: the class list, or None to infer it (sorted names, or ``class_0``... for integer labels).
        where: a description of each row for error messages (e.g. ``"labels.csv row 3"``).

    Returns:
        ``(indices, classes)``.

    Raises:
        DatalistError: naming the row of an empty, unknown or out-of-range label.
    """

    def as_int(v: Any) -> int | None:
        if isinstance(v, bool):
            return None
        if isinstance(v, int | np.integer):
            return int(v)
        s = str(v).strip()
        return int(s) if re.fullmatch(r"[+-]?\d+", s) else None

    for v, w in zip(labels, where):
        if str(v).strip() == "":
            raise DatalistError(f"{w}: empty label")
    if classes is None:
        ints = [as_int(v) for v in labels]
        if all(i is not None for i in ints):
            bad = [(w, i) for w, i in zip(where, ints) if i < 0]
            if bad:
                raise DatalistError(f"{bad[0][0]}: negative class index {bad[0][1]}")
            n = max(ints) + 1 if ints else 0
            return [int(i) for i in ints], [f"class_{c}" for c in range(n)]
        names = [str(v).strip() for v in labels]
        mixed = [w for w, i, v in zip(where, ints, names) if i is not None]
        if mixed:
            raise DatalistError(
                f"{mixed[0]}: labels mix class names and integer indices; pass classes= to say which index is "
                "which class"
            )
        classes = sorted(set(names))
        return [classes.index(n) for n in names], list(classes)
    classes = [str(c) for c in classes]
    out = []
    for v, w in zip(labels, where):
        s = str(v).strip()
        if s in classes:
            out.append(classes.index(s))
            continue
        i = as_int(v)
        if i is None:
            raise DatalistError(f"{w}: label {s!r} is not one of the classes {classes}")
        if not 0 <= i < len(classes):
            raise DatalistError(
                f"{w}: label {i} is outside the class list {classes} (valid indices 0..{len(classes) - 1})"
            )
        out.append(i)
    return out, classes


def _read_csv(path: Path, required: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV (header row required); DatalistError naming the file and any missing column."""
    if not path.is_file():
        raise DatalistError(f"{path}: CSV file does not exist")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatalistError(f"{path}: cannot read the CSV file ({e.strerror or e})") from e
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark is accepted
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DatalistError(
            f"{path}: not UTF-8 text (line {line}, byte {e.start}: {e.reason}); save the CSV as UTF-8 (e.g. in a "
            "spreadsheet: 'CSV UTF-8'), so that names and labels are read as written"
        ) from e
    f = io.StringIO(text, newline="")
    sample = text[:4096]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(f, dialect=dialect)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    rows = [{k: (v.strip() if isinstance(v, str) else "") for k, v in r.items() if k is not None} for r in reader]
    if not header:
        raise DatalistError(f"{path}: empty CSV (no header row)")
    missing = [c for c in required if c not in header]
    if missing:
        raise DatalistError(f"{path}: missing column(s) {missing} (columns present: {header})")
    if not rows:
        raise DatalistError(f"{path}: CSV has a header but no rows")
    return header, rows


def _convert_value(v: str) -> Any:
    """Turn a CSV cell into int/float when it looks numeric (kept as string otherwise)."""
    if re.fullmatch(r"[+-]?\d+", v):
        return int(v)
    try:
        f = float(v)
    except ValueError:
        return v
    return f if np.isfinite(f) else v


def _has_extension(path: Path, extensions: Sequence[str]) -> bool:
    name = path.name.lower()
    return any(name.endswith(e.lower()) for e in extensions)


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".tar.gz"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


# ------------------------------------------------------------------------------------------------ MedMNIST


def _write_png(path: Path, image: np.ndarray) -> None:
    if image.dtype == np.uint8:
        pil = Image.fromarray(image, mode="RGB" if image.ndim == 3 else "L")
    elif image.dtype == np.uint16 and image.ndim == 2:
        pil = Image.fromarray(image)  # 16-bit grey, lossless
    else:
        raise DatalistError(f"{path}: cannot write a {image.dtype} image of shape {image.shape} losslessly as PNG")
    atomic_write(path, lambda tmp: pil.save(tmp, format="PNG", compress_level=1))


def _write_nifti(path: Path, volume: np.ndarray) -> None:
    img = nib.Nifti1Image(volume, np.eye(4))
    atomic_write(path, lambda tmp: nib.save(img, tmp), suffix="".join(path.suffixes[-2:]))


def datalist_from_medmnist(
    npz_path: PathLike,
    out_dir: PathLike,
    classes: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the images of a MedMNIST ``.npz`` to files and build a datalist with its official splits.

    2D images (``(N, H, W)`` grey or ``(N, H, W, 3)`` RGB, any resolution) are written losslessly as PNG
    (pixel rows = ``H``, so MONAI's ``PILReader`` loads them as ``arr[i, j] = image[j, i]``); 3D volumes
    ``(N, D, H, W)`` as NIfTI with an identity affine and ``nifti[i, j, k] = volume[k, j, i]`` (``i`` = W,
    ``j`` = H, ``k`` = D, the same axis convention as the 2D images). Files go to
    ``out_dir/<split>/<class>/<name>_<split>_<index>.png|.nii.gz`` (a tree that ``datalist_from_image_folder`` also
    reads) (atomic writes; existing files are replaced).

    MedMNIST has no patient ids, so every image is its own ``subject`` (``<name>_<split>_<index>``); images
    of one patient may therefore appear in several entries. This is recorded in the description.

    Args:
        npz_path: the ``.npz`` file (keys ``train_images``, ``train_labels`` (N, 1), ``val_*``, ``test_*``).
        out_dir: folder for the image files (typically the folder of the datalist JSON).
        classes: class names in index order; default: the built-in table :data:`MEDMNIST_CLASSES` for known sets
            (from the file name, e.g. ``breastmnist.npz`` or ``breastmnist_224.npz``), else ``class_0``...
        progress: show a progress bar.

    Returns:
        The datalist dict (splits ``training``, ``validation``, ``test``), entries with ``image``, ``label``,
        ``subject`` and ``index`` (position in the npz split).

    Raises:
        DatalistError: if the file is missing or malformed, labels are multi-label (more than one column) or
            outside ``classes``.
    """
    npz_path, out_dir = Path(npz_path), Path(out_dir)
    if not npz_path.is_file():
        raise DatalistError(f"{npz_path}: MedMNIST .npz file does not exist")
    name = re.sub(r"_\d+$", "", npz_path.stem.lower())
    try:
        data = np.load(npz_path)
    except Exception as e:  # noqa: BLE001 - numpy raises several types for bad files
        raise DatalistError(f"{npz_path}: cannot read as .npz ({e})") from e
    present = [s for s, _ in _NPZ_SPLITS if f"{s}_images" in data.files]
    if not present:
        raise DatalistError(f"{npz_path}: no '<split>_images' arrays (keys: {data.files}); not a MedMNIST file")
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s in present:
        if f"{s}_labels" not in data.files:
            raise DatalistError(f"{npz_path}: '{s}_images' without '{s}_labels'")
        images, labels = data[f"{s}_images"], np.asarray(data[f"{s}_labels"])
        if labels.ndim == 2 and labels.shape[1] > 1:
            raise DatalistError(
                f"{npz_path}: '{s}_labels' has {labels.shape[1]} columns: multi-label data sets (e.g. ChestMNIST) "
                "are not supported (one class label per image is required)"
            )
        labels = labels.reshape(-1)
        if len(labels) != len(images):
            raise DatalistError(f"{npz_path}: {len(images)} '{s}_images' but {len(labels)} '{s}_labels'")
        arrays[s] = (images, labels.astype(np.int64))
    sample = arrays[present[0]][0]
    if sample.ndim == 3:
        kind = "2d"
    elif sample.ndim == 4 and not name.endswith("3d") and sample.shape[-1] in (1, 3):
        kind = "2d-rgb" if sample.shape[-1] == 3 else "2d-c1"
    elif sample.ndim == 4:
        kind = "3d"
    else:
        raise DatalistError(f"{npz_path}: unsupported image array shape {sample.shape} (expected 3D or 4D)")
    n_max = max(int(lab.max()) for _, lab in arrays.values() if len(lab)) + 1
    if classes is None:
        classes = MEDMNIST_CLASSES.get(name, [f"class_{c}" for c in range(n_max)])
    classes = list(classes)
    for s, (_, labels) in arrays.items():
        bad = np.flatnonzero((labels < 0) | (labels >= len(classes)))
        if len(bad):
            raise DatalistError(
                f"{npz_path}: '{s}_labels'[{bad[0]}] = {labels[bad[0]]} is outside the class list {classes}"
            )

    total = sum(len(a[0]) for a in arrays.values())
    bar = None
    if progress:
        bar = tqdm(total=total, desc=f"writing {name} images", unit="img")
    splits: dict[str, list[dict[str, Any]]] = {}
    ext = ".nii.gz" if kind == "3d" else ".png"
    class_dirs = [re.sub(r"[^A-Za-z0-9_.-]+", "_", str(c)) for c in classes]
    for s, key in _NPZ_SPLITS:
        if s not in arrays:
            continue
        images, labels = arrays[s]
        entries = []
        for idx in range(len(images)):
            img = np.asarray(images[idx])
            path = out_dir / s / class_dirs[int(labels[idx])] / f"{name}_{s}_{idx:05d}{ext}"
            if kind == "3d":
                _write_nifti(path, np.ascontiguousarray(np.transpose(img, (2, 1, 0))))
            else:
                _write_png(path, img[..., 0] if kind == "2d-c1" else img)
            entries.append(
                {"image": str(path), "label": int(labels[idx]), "subject": f"{name}_{s}_{idx:05d}", "index": idx}
            )
            if bar is not None:
                bar.update(1)
        splits[key] = entries
    if bar is not None:
        bar.close()
    description = (
        f"MedMNIST {name} from {npz_path.name} with its official splits; images written as "
        f"{'NIfTI (identity affine, nifti[i, j, k] = volume[k, j, i])' if kind == '3d' else 'PNG'}. MedMNIST has "
        "no patient ids: each image is its own subject, so images of one patient may be in several entries."
    )
    extra = {"ordinal": True} if name in MEDMNIST_ORDINAL else {}
    return make_datalist(
        splits,
        classes=classes,
        name=name,
        description=description,
        tensorImageSize="3D" if kind == "3d" else "2D",
        source=str(npz_path),
        licence="CC BY 4.0 (MedMNIST)",
        **extra,
    )


# -------------------------------------------------------------------------------------------- image folder


def _images_in(folder: Path, extensions: Sequence[str]) -> list[Path]:
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            p = Path(root) / n
            if not n.startswith(".") and _has_extension(p, extensions):
                out.append(p)
    return out


def _relative_id(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` (POSIX separators) without its image extension: a unique per-file subject id.

    Paths outside ``base`` give their absolute path without extension.
    """
    try:
        rel = Path(os.path.normpath(path)).relative_to(Path(os.path.normpath(base)))
    except ValueError:
        rel = Path(os.path.normpath(os.path.abspath(path)))
    return (rel.parent / _stem(rel)).as_posix()


def _regex_subject(pattern: re.Pattern[str], rel: str, name: str) -> str | None:
    """Subject id from ``pattern`` searched in the relative path, else in the file name; None when neither matches.

    The subject is the named group ``subject`` when the pattern has one, else its first group, else the whole match.
    """
    for text in (rel, name):
        m = pattern.search(text)
        if m is None:
            continue
        if "subject" in pattern.groupindex:
            value = m.group("subject")
        else:
            value = m.group(1) if m.groups() else m.group(0)
        if value:
            return value
    return None


def _subjects_from_csv(csv_path: Path, root: Path) -> dict[str, str]:
    """Read a ``path,subject`` CSV: resolved image path -> subject (paths relative to ``root``, or absolute)."""
    _, rows = _read_csv(csv_path, ["path", "subject"])
    out: dict[str, str] = {}
    for i, r in enumerate(rows):
        w = f"{csv_path} row {i + 2}"
        if not r["path"] or not r["subject"]:
            raise DatalistError(f"{w}: empty {'path' if not r['path'] else 'subject'}")
        p = Path(os.path.expanduser(r["path"]))
        p = p if p.is_absolute() else root / p
        if not p.is_file():
            raise DatalistError(f"{w}: file does not exist: {p}")
        key = os.path.realpath(p)
        if key in out and out[key] != r["subject"]:
            raise DatalistError(f"{w}: {r['path']} has two different subjects ({out[key]!r} and {r['subject']!r})")
        out[key] = r["subject"]
    return out


def datalist_from_image_folder(
    root: PathLike,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    subject_regex: str | None = None,
    classes: Sequence[str] | None = None,
    subjects_csv: PathLike | None = None,
) -> dict[str, Any]:
    r"""Build a classification datalist from class sub-folders.

    Layouts: ``root/<class>/<image>`` (all entries go to ``training``), or ``root/<split>/<class>/<image>`` with
    split folders ``train|training``, ``val|valid|validation``, ``test|testing`` (case-insensitive). Images may
    sit in sub-folders of a class folder. Hidden files and files with other extensions are ignored.

    Subjects: by default every file is its own subject, named by its path relative to ``root`` without extension
    (``train/Benign/1``), so that ``train/Benign/1.jpg`` and ``test/Benign/1.jpg`` are never taken for one patient.
    Images are grouped into subjects only by an explicit rule: ``subject_regex`` or ``subjects_csv``.

    Args:
        root: the data set folder.
        extensions: image file extensions (case-insensitive; ``.nii.gz`` is matched as a whole).
        subject_regex: regular expression searched in the file's path relative to ``root`` (POSIX separators, e.g.
            ``train/Benign/patient07_a.png``) and, when it does not match there, in the file name (patterns written
            for the file name keep working); the subject id is its named group ``subject``, else its first group,
            else the whole match, e.g. ``r"(?P<subject>patient\d+)_"``.
        classes: class names in index order; default: the sorted class folder names.
        subjects_csv: a CSV with columns ``path`` (relative to ``root``, or absolute) and ``subject``; every image
            must be listed. Exclusive with ``subject_regex``.

    Returns:
        The datalist dict; entries have ``image``, ``label``, ``subject``.

    Raises:
        DatalistError: if ``root`` is missing or empty, holds no images, mixes split and class folders, a class
            folder is empty, a class folder exists in validation/test but not in training, a folder name is not
            in ``classes``, ``subject_regex`` is invalid or matches neither the relative path nor the name of a
            file, or ``subjects_csv`` is malformed, names a missing file or does not list an image.
    """
    if subject_regex and subjects_csv is not None:
        raise DatalistError("give subject_regex or subjects_csv, not both")
    try:
        pattern = re.compile(subject_regex) if subject_regex else None
    except re.error as e:
        raise DatalistError(f"subject_regex {subject_regex!r} is not a valid regular expression ({e})") from e
    root = Path(root)
    if not root.is_dir():
        raise DatalistError(f"{root}: image folder does not exist")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        if any(_has_extension(p, extensions) for p in root.iterdir() if p.is_file()):
            raise DatalistError(
                f"{root}: images found directly in the folder; expected one sub-folder per class "
                "(root/<class>/<image>) or per split (root/train/<class>/<image>)"
            )
        raise DatalistError(f"{root}: empty folder (no class or split sub-folders)")
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_FOLDER_NAMES]
    if split_dirs and len(split_dirs) != len(subdirs):
        others = [d.name for d in subdirs if d not in split_dirs]
        raise DatalistError(
            f"{root}: mixes split folders {[d.name for d in split_dirs]} with other folders {others}; use either "
            "root/<class>/... or root/<split>/<class>/..."
        )
    layout: dict[str, list[Path]] = {}  # split key -> class folders
    if split_dirs:
        for d in split_dirs:
            key = SPLIT_FOLDER_NAMES[d.name.lower()]
            if key in layout:
                raise DatalistError(f"{root}: two folders for the {key} split ({d.name} and another)")
            layout[key] = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            if not layout[key]:
                raise DatalistError(f"{d}: split folder has no class sub-folders")
        if "training" not in layout:
            raise DatalistError(f"{root}: split folders found but no training folder (train/ or training/)")
        train_classes = {p.name for p in layout["training"]}
        for key, dirs in layout.items():
            extra = sorted({p.name for p in dirs} - train_classes)
            if extra:
                raise DatalistError(
                    f"{root}: class folder(s) {extra} present in the {key} split but not in training "
                    f"(training classes: {sorted(train_classes)})"
                )
    else:
        layout["training"] = subdirs
    folder_classes = sorted({p.name for dirs in layout.values() for p in dirs})
    if classes is None:
        classes = folder_classes
    else:
        classes = [str(c) for c in classes]
        unknown = [c for c in folder_classes if c not in classes]
        if unknown:
            raise DatalistError(f"{root}: class folder(s) {unknown} are not in the given classes {classes}")
    csv_subjects = _subjects_from_csv(Path(subjects_csv), root) if subjects_csv is not None else None
    splits: dict[str, list[dict[str, Any]]] = {}
    n_images = 0
    for key in ("training", "validation", "test"):
        if key not in layout:
            continue
        entries = []
        for class_dir in layout[key]:
            images = _images_in(class_dir, extensions)
            if not images:
                raise DatalistError(f"{class_dir}: class folder has no images with extensions {list(extensions)}")
            for p in images:
                rel = p.relative_to(root).as_posix()
                if pattern is not None:
                    found = _regex_subject(pattern, rel, p.name)
                    if found is None:
                        raise DatalistError(
                            f"{p}: subject_regex {subject_regex!r} matches neither the relative path {rel!r} nor "
                            "the file name (or its subject group is empty)"
                        )
                    subject = found
                elif csv_subjects is not None:
                    if os.path.realpath(p) not in csv_subjects:
                        raise DatalistError(f"{p}: not listed in the subjects CSV {subjects_csv} (path {rel!r})")
                    subject = csv_subjects[os.path.realpath(p)]
                else:
                    subject = _relative_id(p, root)
                entries.append({"image": str(p), "label": classes.index(class_dir.name), "subject": subject})
        n_images += len(entries)
        splits[key] = entries
    if n_images == 0:
        raise DatalistError(f"{root}: no images found with extensions {list(extensions)}")
    return make_datalist(
        splits,
        classes=classes,
        name=root.name,
        description=f"image folder {root} ({'split folders' if split_dirs else 'class folders'}); subject: "
        + (
            f"subject_regex {subject_regex!r}"
            if pattern is not None
            else f"from {subjects_csv}"
            if csv_subjects is not None
            else "one per file (relative path without extension)"
        ),
    )


# ------------------------------------------------------------------------------------------------------ CSV


def datalist_from_csv(
    csv_path: PathLike,
    path_col: str = "path",
    label_col: str | None = "label",
    subject_col: str | None = "subject",
    classes: Sequence[str] | None = None,
    split_col: str | None = None,
) -> dict[str, Any]:
    """Build a datalist from a CSV table (one row per image).

    Args:
        csv_path: the CSV file (header row; ``,``, ``;`` or tab separated).
        path_col: column of image paths (a file or a DICOM series folder), relative paths resolved against the
            CSV's folder.
        label_col: column of labels, class names or integer indices; None for an unlabelled table.
        subject_col: column of subject ids; None (or the default ``subject`` column being absent): every image is
            its own subject, named by its path relative to the CSV's folder without extension (``img/a``; absolute
            without extension for files outside it), so that ``a/1.png`` and ``b/1.png`` are two subjects.
        classes: class names in index order; default: sorted label names, or ``class_0``... for integer labels.
        split_col: optional column of split names (``train``/``training``, ``val``/``valid``/``validation``,
            ``test``/``testing``); default: every row goes to ``training``.

    Returns:
        The datalist dict. Other columns are kept as entry metadata (numbers converted to int/float).

    Raises:
        DatalistError: naming the CSV and the column for a missing column, or the CSV row (line number) for an
            empty path, a missing file, an empty or unknown label or an unknown split.
    """
    csv_path = Path(csv_path)
    optional_subject = subject_col == "subject"  # the default column may be absent: path,label[,subject]
    required = [c for c in (path_col, label_col, subject_col, split_col) if c is not None]
    if optional_subject:
        required.remove("subject")
    header, rows = _read_csv(csv_path, required)
    if optional_subject and "subject" not in header:
        subject_col = None
    base = csv_path.parent
    where = [f"{csv_path} row {i + 2}" for i in range(len(rows))]  # line 1 is the header
    labels: list[int] | None = None
    if label_col is not None:
        labels, classes = _labels_to_indices([r[label_col] for r in rows], classes, where)
    used = {path_col, label_col, subject_col, split_col}
    splits: dict[str, list[dict[str, Any]]] = {}
    for i, (r, w) in enumerate(zip(rows, where)):
        value = r[path_col]
        if not value:
            raise DatalistError(f"{w}: empty '{path_col}'")
        p = Path(os.path.expanduser(value))
        p = p if p.is_absolute() else base / p
        if not p.exists():
            raise DatalistError(f"{w}: file does not exist: {p}")
        split = "training"
        if split_col is not None:
            split = SPLIT_FOLDER_NAMES.get(r[split_col].lower(), "")
            if not split:
                raise DatalistError(
                    f"{w}: unknown split {r[split_col]!r} in column '{split_col}' "
                    f"(expected one of {sorted(SPLIT_FOLDER_NAMES)})"
                )
        entry: dict[str, Any] = {"image": str(p)}
        if labels is not None:
            entry["label"] = labels[i]
        if subject_col is not None:
            if not r[subject_col]:
                raise DatalistError(f"{w}: empty subject in column '{subject_col}'")
            entry["subject"] = r[subject_col]
        else:  # one subject per file: the path (relative to the CSV's folder) without extension
            entry["subject"] = _relative_id(p, base)
        for c in header:
            if c not in used and c not in entry:
                entry[c] = _convert_value(r.get(c, ""))
        splits.setdefault(split, []).append(entry)
    return make_datalist(
        {k: splits[k] for k in ("training", "validation", "test") if k in splits},
        classes=classes,
        name=csv_path.stem,
        description=f"built from {csv_path}",
    )


# ---------------------------------------------------------------------------------------------------- DICOM


def datalist_from_dicom_folder(
    folder: PathLike,
    labels_csv: PathLike | None = None,
    key: Literal["PatientID", "StudyInstanceUID", "SeriesInstanceUID"] = "PatientID",
    label_col: str = "label",
    classes: Sequence[str] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    progress: bool = True,
    pseudonym_key: bytes | None = None,
) -> tuple[dict[str, Any], list[Problem]]:
    """Build a datalist with one entry per valid DICOM series found (recursively) in a folder.

    The ``image`` of an entry is the series folder when that folder (not counting sub-folders) holds exactly the
    series' files (plus files skipped by design, such as DICOMDIR) and nothing bad, else the explicit list of the
    series' files in slice order; both load with :class:`medmonai.data.dicom.DicomSeriesReader`. ``subject`` is
    the PatientID, or with ``pseudonym_key`` its keyed pseudonym (:func:`pseudonym`), so that the datalist holds no
    patient identifier while leave-one-subject-out still groups a patient's series; metadata comes from
    :meth:`medmonai.data.dicom.SeriesInfo.to_entry_metadata` (no patient name or id beyond ``subject``).

    Args:
        folder: the DICOM folder.
        labels_csv: optional CSV with a ``key`` column and a ``label_col`` column (class names or indices);
            every row whose key matches applies to all series with that key value.
        key: the DICOM attribute joining series to CSV rows (also the CSV column name).
        label_col: the label column of the CSV.
        classes: class names in index order (default: inferred from the labels, see :func:`datalist_from_csv`).
        on_error: ``"raise"``: a bad file/series or a series without a label row raises; ``"skip"``: they are
            left out and reported.
        progress: show a progress bar while reading headers.
        pseudonym_key: secret key (see :func:`read_pseudonym_key`); when given, ``subject`` is
            ``pseudonym(PatientID, key)`` instead of the PatientID (the labels CSV is still joined on the raw key).

    Returns:
        ``(datalist, problems)``: problems are the DICOM problems (including files skipped by design, with
        ``key == "skipped"``), series left out for lack of a label, and CSV rows that match no series (always
        reported, never raised).

    Raises:
        medmonai.data.dicom.DicomError: for DICOM problems with ``on_error="raise"``, or when no series is found.
        DatalistError: for CSV problems, or a series without a label row with ``on_error="raise"``.
    """
    folder = Path(folder)
    series, problems = scan_dicom_folder(folder, recursive=True, on_error=on_error, progress=progress)
    csv_resolved = Path(labels_csv).resolve() if labels_csv is not None else None
    problems = [p for p in problems if csv_resolved is None or Path(p.file).resolve() != csv_resolved]
    if not series:
        detail = "; ".join(f"{p.file}: {p.reason}" for p in problems[:5])
        raise DicomError(f"{folder}: no valid DICOM series found{f' ({detail})' if detail else ''}", str(folder))

    label_of: dict[str, str] | None = None
    classes_out: list[str] | None = None
    label_index: dict[str, int] = {}
    if labels_csv is not None:
        csv_path = Path(labels_csv)
        _, rows = _read_csv(csv_path, [key, label_col])
        where = [f"{csv_path} row {i + 2}" for i in range(len(rows))]
        label_of = {}
        for r, w in zip(rows, where):
            k = r[key]
            if not k:
                raise DatalistError(f"{w}: empty '{key}'")
            if k in label_of and label_of[k] != r[label_col]:
                raise DatalistError(f"{w}: {key} {k!r} has two different labels ({label_of[k]!r} and {r[label_col]!r})")
            label_of[k] = r[label_col]
        keys = list(label_of)
        indices, classes_out = _labels_to_indices(
            [label_of[k] for k in keys], classes, [f"{csv_path} {key}={k}" for k in keys]
        )
        label_index = dict(zip(keys, indices))

    errors_by_folder: dict[str, int] = {}
    for p in problems:
        if is_error(p):
            errors_by_folder[str(Path(p.file).parent)] = errors_by_folder.get(str(Path(p.file).parent), 0) + 1
    skipped_files = {p.file for p in problems if not is_error(p)}

    entries: list[dict[str, Any]] = []
    dims: set[int] = set()  # spatial dims of the series kept
    matched: set[str] = set()
    for s in series:
        key_value = {"PatientID": s.patient_id, "StudyInstanceUID": s.study_uid, "SeriesInstanceUID": s.series_uid}[key]
        entry: dict[str, Any] = {}
        if label_of is not None:
            if key_value not in label_index:
                msg = f"series {s.series_uid} in {s.folder}: no label row with {key} = {key_value!r} in {labels_csv}"
                if on_error == "raise":
                    raise DatalistError(msg)
                problems.append(Problem(-1, s.folder, msg, "label"))
                continue
            matched.add(key_value)
            entry["label"] = label_index[key_value]
        # the folder can stand for the series only when it holds exactly its files and nothing bad
        own = {str(Path(f)) for f in s.files}
        folder_s = Path(s.folder)
        in_folder = {str(p) for p in list_folder_files(folder_s, recursive=False)} if folder_s.is_dir() else set()
        exclusive = (
            all(Path(f).parent == Path(s.folder) for f in s.files)
            and in_folder - skipped_files == own
            and errors_by_folder.get(s.folder, 0) == 0
        )
        subject = s.patient_id
        if not subject:
            subject = s.study_uid
            problems.append(
                Problem(
                    -1, s.folder, f"series {s.series_uid}: no PatientID, subject set to StudyInstanceUID", "subject"
                )
            )
        if pseudonym_key is not None:
            subject = pseudonym(subject, pseudonym_key)
        dims.add(2 if s.n_slices == 1 else 3)
        entries.append(
            {"image": s.folder if exclusive else list(s.files), **entry, "subject": subject, **s.to_entry_metadata()}
        )
    if label_of is not None:
        for k in label_of:
            if k not in matched:
                problems.append(
                    Problem(-1, str(labels_csv), f"label row {key} = {k!r} matches no DICOM series", "label")
                )
    if not entries:
        raise DatalistError(f"{folder}: no series left after joining labels from {labels_csv}")
    description = f"DICOM series found in {folder}" + (f", labels from {labels_csv} by {key}" if labels_csv else "")
    if pseudonym_key is not None:
        description += "; subject = keyed pseudonym of the PatientID (HMAC-SHA256)"
    # single-slice series load as 2D images, the others as 3D volumes: say which (a mix is left unstated)
    extra = {"tensorImageSize": f"{dims.pop()}D"} if len(dims) == 1 else {}
    datalist = make_datalist(
        {"training": entries}, classes=classes_out, name=folder.name, description=description, **extra
    )
    return datalist, problems


#: bytes of a pseudonym key below which :func:`read_pseudonym_key` refuses it (a short key can be guessed)
MIN_PSEUDONYM_KEY_BYTES = 16


def pseudonym(value: str, key: bytes) -> str:
    """Keyed pseudonym of an identifier (e.g. a PatientID): ``sub-`` + the first 16 hex digits of HMAC-SHA256.

    The same value and key always give the same pseudonym, so a patient's series stay grouped across datalists
    built with one key; without the key the identifier cannot be recovered or confirmed by hashing guesses (a plain
    hash of a PatientID could be, since PatientIDs are short and structured).

    Args:
        value: the identifier.
        key: the secret key (keep it outside the data and the datalist).

    Returns:
        ``"sub-" + 16 hex digits``.
    """
    return "sub-" + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def read_pseudonym_key(path: PathLike) -> bytes:
    """Read a pseudonym key from a file (surrounding whitespace stripped), so it stays out of shell histories.

    Raises:
        DatalistError: naming the file, when it is missing, unreadable or holds fewer than
            :data:`MIN_PSEUDONYM_KEY_BYTES` bytes.
    """
    path = Path(path)
    try:
        key = path.read_bytes().strip()
    except OSError as e:
        raise DatalistError(f"{path}: cannot read the pseudonym key ({e.strerror or e})") from e
    if len(key) < MIN_PSEUDONYM_KEY_BYTES:
        raise DatalistError(
            f"{path}: the pseudonym key has {len(key)} bytes; use at least {MIN_PSEUDONYM_KEY_BYTES} random bytes "
            '(e.g. `python -c "import secrets; print(secrets.token_hex(32))" > key.txt`)'
        )
    return key


# ------------------------------------------------------------------------------------------------------ MSD


def _msd_path(folder: Path, value: str, what: str) -> Path:
    p = Path(value)
    p = p if p.is_absolute() else Path(os.path.normpath(folder / p))
    if p.name.startswith("._"):
        raise DatalistError(f"{folder / 'dataset.json'}: {what} {value!r} is a macOS '._' resource file")
    if not p.is_file():
        raise DatalistError(f"{folder / 'dataset.json'}: {what} file does not exist: {p}")
    return p


def datalist_from_msd(folder: PathLike) -> dict[str, Any]:
    """Build a segmentation datalist from a Medical Segmentation Decathlon folder.

    Reads ``dataset.json`` (``training`` pairs of ``image``/``label`` paths starting with ``./``, ``test`` image
    paths, ``labels``, ``modality``, ``tensorImageSize``); when it lists no training cases, pairs
    ``imagesTr/<case>.nii.gz`` with ``labelsTr/<case>.nii.gz``. macOS ``._`` files are ignored.

    Args:
        folder: the MSD task folder.

    Returns:
        The datalist: ``training`` entries ``{"image", "mask", "subject"}`` (subject = case id, e.g.
        ``hippocampus_001``; no class label), ``test`` entries ``{"image", "subject"}`` when present, top-level
        ``mask_labels`` (from ``labels``), ``modality`` and ``tensorImageSize``.

    Raises:
        DatalistError: if ``dataset.json`` is missing or invalid, or a listed file does not exist.
    """
    folder = Path(folder)
    meta_path = folder / "dataset.json"
    if not meta_path.is_file():
        raise DatalistError(f"{folder}: not an MSD folder (no dataset.json)")
    meta = read_json(meta_path, "MSD dataset.json", DatalistError)
    if not isinstance(meta, dict):
        raise DatalistError(f"{meta_path}: expected a JSON object")

    training: list[dict[str, Any]] = []
    listed = meta.get("training") or []
    if listed:
        for i, item in enumerate(listed):
            if not isinstance(item, dict) or "image" not in item or "label" not in item:
                raise DatalistError(f"{meta_path}: training item {i} needs 'image' and 'label': {item!r}")
            if Path(item["image"]).name.startswith("._"):
                continue
            image = _msd_path(folder, item["image"], "image")
            mask = _msd_path(folder, item["label"], "label")
            training.append({"image": str(image), "mask": str(mask), "subject": _stem(image)})
    else:
        images_dir = folder / "imagesTr"
        if not images_dir.is_dir():
            raise DatalistError(f"{meta_path}: no 'training' list and no imagesTr folder")
        for image in sorted(images_dir.glob("*.nii*")):
            if image.name.startswith("."):
                continue
            mask = folder / "labelsTr" / image.name
            if not mask.is_file():
                raise DatalistError(f"{image}: no matching label file {mask}")
            training.append({"image": str(image), "mask": str(mask), "subject": _stem(image)})
    if not training:
        raise DatalistError(f"{folder}: no training cases found")
    test: list[dict[str, Any]] = []
    for item in meta.get("test") or []:
        value = item["image"] if isinstance(item, dict) else item
        if Path(value).name.startswith("._"):
            continue
        image = _msd_path(folder, value, "test image")
        test.append({"image": str(image), "subject": _stem(image)})
    splits: dict[str, list[dict[str, Any]]] = {"training": training}
    if test:
        splits["test"] = test
    extra: dict[str, Any] = {
        "mask_labels": {str(k): v for k, v in (meta.get("labels") or {}).items()},
        "modality": meta.get("modality", {}),
        "tensorImageSize": meta.get("tensorImageSize", "3D"),
    }
    for k in ("reference", "licence", "release"):
        if k in meta:
            extra[k] = meta[k]
    return make_datalist(
        splits,
        classes=None,
        name=str(meta.get("name", folder.name)),
        description=str(meta.get("description", "")),
        **extra,
    )
