"""The image reader of every file type medmonai handles: one MONAI ``ImageReader`` that dispatches explicitly.

MONAI's :class:`~monai.transforms.LoadImage` picks a reader by file suffix only when no reader is given; as soon as
readers are passed it tries them one after the other (last registered first) and swallows their exceptions, falling
back to MONAI's default readers. That can hide a clear error (a broken DICOM series) behind a generic message or,
worse, let a fallback reader return a differently-oriented volume. :class:`MedicalImageReader` therefore dispatches
explicitly, once, on the input type:

====================================================  ==============================================
input                                                 reader
====================================================  ==============================================
``.nii`` / ``.nii.gz``                                :class:`monai.data.NibabelReader`
``.png`` ``.jpg`` ``.jpeg`` ``.bmp`` ``.tif`` ``.tiff``  :class:`monai.data.PILReader`
``.npy`` / ``.npz``                                   :class:`monai.data.NumpyReader`
folder, list of files, ``.dcm``, ``DICM``-magic file  :class:`medmonai.data.dicom.DicomSeriesReader`
====================================================  ==============================================

Before a reader runs, the input is checked without reading voxels: every path must be a regular file or a folder
(:func:`medmonai.data.datalist.path_problem`; a FIFO or a device is refused before it is opened, a symbolic link loop
is named as such), a folder must hold DICOM files (a folder of NIfTI/PNG files is refused with that reason), and a
NIfTI/NumPy header may not declare more than :data:`MAX_IMAGE_VOXELS` voxels (nor, for an uncompressed ``.nii``, more
bytes than the file holds).

:class:`LoadMedicalImaged` always calls the dispatcher as MONAI's *runtime* reader, so its errors (which name the file)
propagate unchanged and no other reader is ever tried; :func:`load_image_transforms` is the loading chain for images
and masks. They live in the data layer because the data modules read images too (pre-flight check, content hashes,
domain statistics, fingerprint); :mod:`medmonai.transforms.io` re-exports them under their usual names.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import nibabel as nib
import numpy as np
from monai.config import DtypeLike, KeysCollection
from monai.data import ImageReader, NibabelReader, NumpyReader, PILReader
from monai.transforms import EnsureChannelFirstd, LoadImaged, MapTransform
from monai.utils import ensure_tuple

from medmonai.data.datalist import path_problem
from medmonai.data.dicom import DicomSeriesReader

__all__ = [
    "NIFTI_SUFFIXES",
    "PIL_SUFFIXES",
    "NUMPY_SUFFIXES",
    "DICOM_SUFFIXES",
    "MAX_IMAGE_VOXELS",
    "MedicalImageReader",
    "LoadMedicalImaged",
    "load_image_transforms",
    "reader_name_for",
]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
PIL_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NUMPY_SUFFIXES: tuple[str, ...] = (".npy", ".npz")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")

#: images whose header declares more voxels than this (2^31, 8 GiB as float32) are refused before any voxel is read:
#: a corrupt header (100000^3 voxels) must be a clear error, not a MemoryError or an exhausted machine
MAX_IMAGE_VOXELS = 2**31

# PIL modes that hold colour (or palette/alpha) and are averaged to one grey channel by ``channels=1``.
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "LA", "CMYK", "YCbCr", "HSV", "LAB")


def _to_grey(img: Any) -> Any:
    """PIL converter: colour/palette images to 8-bit grey ("L", ITU-R 601 luma); other modes unchanged.

    Module-level (not a lambda) so that readers holding it can be pickled by DataLoader workers.
    """
    if getattr(img, "mode", None) in _COLOUR_MODES:
        return img.convert("L")
    return img


def _to_rgb(img: Any) -> Any:
    """PIL converter: grey/palette/alpha images to 8-bit "RGB" (grey replicated, alpha dropped); RGB unchanged."""
    if getattr(img, "mode", None) in _COLOUR_MODES + ("L", "1") and img.mode != "RGB":
        return img.convert("RGB")
    return img


def _suffix_of(path: str) -> str:
    name = os.path.basename(str(path).rstrip("/\\")).lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return os.path.splitext(name)[1]


def _refuse_non_dicom_folder(folder: str) -> None:
    """Raise a clear error for a folder of NIfTI/2D/NumPy images without any DICOM file (read as a DICOM series).

    A folder is an image only as a DICOM series; a folder holding ``.nii.gz`` or ``.png`` files and no DICOM file
    (by suffix or ``DICM`` marker) would otherwise fail with a DICOM-series error that does not say what is wrong.
    """
    if not folder:
        return
    others: list[str] = []
    try:
        with os.scandir(folder) as it:
            files = sorted(e.path for e in it if not e.name.startswith(".") and e.is_file())
    except OSError:
        return
    for f in files:
        suffix = _suffix_of(f)
        if suffix in DICOM_SUFFIXES:
            return
        if suffix in NIFTI_SUFFIXES + PIL_SUFFIXES + NUMPY_SUFFIXES:
            others.append(f)
            continue
        try:
            with open(f, "rb") as fh:
                if fh.read(132)[128:132] == b"DICM":
                    return
        except OSError:
            continue
    if others:
        kinds = sorted({_suffix_of(f) for f in others})
        raise ValueError(
            f"{folder}: a folder of {len(others)} {'/'.join(kinds)} file(s) (e.g. {os.path.basename(others[0])}) "
            "and no DICOM file, so not a DICOM series: a folder is an image only as a DICOM series; list each "
            "image file as its own entry"
        )


def _check_declared_size(path: str, suffix: str) -> None:
    """Refuse a NIfTI/NumPy file whose header declares too many voxels, or more bytes than an uncompressed file holds.

    Reads the header only; raises ValueError naming the file, the declared shape and the limit.
    """
    if suffix in NIFTI_SUFFIXES:
        try:
            img = nib.load(path)
        except Exception:  # noqa: BLE001 - unreadable headers are reported by the reader itself
            return
        shape = tuple(int(s) for s in img.header.get_data_shape())
        itemsize = np.dtype(img.header.get_data_dtype()).itemsize
        offset = int(getattr(img.dataobj, "offset", 0) or 0)
    elif suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception:  # noqa: BLE001 - including a file shorter than its header declares (mmap fails)
            return
        shape, itemsize, offset = tuple(int(s) for s in arr.shape), arr.dtype.itemsize, 0
    else:
        return
    n = math.prod(shape)
    if n > MAX_IMAGE_VOXELS:
        raise ValueError(
            f"{path}: the header declares shape {shape} = {n:.3g} voxels, more than the limit of "
            f"{MAX_IMAGE_VOXELS:.3g} (medmonai.data.reader.MAX_IMAGE_VOXELS): a corrupt header, or an image "
            "too large to load whole; nothing was read"
        )
    if suffix == ".nii":
        need, have = offset + n * itemsize, os.path.getsize(path)
        if have < need:
            raise ValueError(
                f"{path}: corrupt or truncated NIfTI file: the header declares {n * itemsize} bytes of voxel data "
                f"(shape {shape}) from byte {offset}, the file has {have} bytes"
            )


class _Loaded:
    """What :meth:`MedicalImageReader.read` returns: the reader that was used and its native image object."""

    __slots__ = ("reader", "obj", "filename")

    def __init__(self, reader: ImageReader, obj: Any, filename: str) -> None:
        self.reader = reader
        self.obj = obj
        self.filename = filename


class MedicalImageReader(ImageReader):
    """A MONAI ``ImageReader`` that picks the right reader for each input (NIfTI, 2D image, NumPy, DICOM).

    The choice is explicit (see the module docstring) rather than MONAI's try-every-reader fallback, so an input is
    read by exactly one reader and its error, naming the file, is the one raised. Stateless between calls
    (``read`` returns the chosen reader along with the image), so it is safe with multi-worker/threaded loaders.

    Args:
        channels: ``1`` converts colour/palette 2D images (PNG/JPEG/...) to one grey channel (PIL ``"L"``);
            ``3`` converts 8-bit grey/palette/alpha 2D images to RGB (PIL ``"RGB"``: grey replicated, alpha dropped);
            ``None`` keeps the stored channels. Other types are unaffected.
        dicom_kwargs: keyword arguments for :class:`medmonai.data.dicom.DicomSeriesReader`.
        nibabel_kwargs: keyword arguments for :class:`monai.data.NibabelReader`.
        pil_kwargs: keyword arguments for :class:`monai.data.PILReader`.
    """

    def __init__(
        self,
        channels: int | None = None,
        dicom_kwargs: dict[str, Any] | None = None,
        nibabel_kwargs: dict[str, Any] | None = None,
        pil_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be None (keep), 1 (grey) or 3 (RGB), got {channels!r}")
        self.channels = channels
        pil_kwargs = dict(pil_kwargs or {})
        if channels in (1, 3):
            pil_kwargs.setdefault("converter", _to_grey if channels == 1 else _to_rgb)
        self.nifti = NibabelReader(**(nibabel_kwargs or {}))
        self.pil = PILReader(**pil_kwargs)
        self.numpy = NumpyReader()
        self.dicom_kwargs = dict(dicom_kwargs or {})
        self._dicom: ImageReader | None = None

    @property
    def dicom(self) -> ImageReader:
        """The DICOM series reader (created on first use)."""
        if self._dicom is None:
            self._dicom = DicomSeriesReader(**self.dicom_kwargs)
        return self._dicom

    def select(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> ImageReader:
        """Return the reader for ``filename`` (a file, a DICOM folder, or a list of files).

        Raises:
            FileNotFoundError: if a path does not exist.
            ValueError: if the type is not supported (the message lists the supported types).
        """
        names = [str(f) for f in ensure_tuple(filename)]
        if not names:
            raise ValueError("no file name given")
        for n in names:  # the file type is checked before anything is opened (a FIFO would block forever)
            problem = path_problem(n)
            if problem == "file does not exist":
                raise FileNotFoundError(f"{n}: file or folder does not exist")
            if problem is not None:
                raise ValueError(f"{n}: {problem}")
        suffixes = {_suffix_of(n) if os.path.isfile(n) else "<dir>" for n in names}
        if suffixes == {"<dir>"}:
            _refuse_non_dicom_folder(names[0] if len(names) == 1 else "")
        if len(suffixes) == 1:
            suffix = next(iter(suffixes))
            if suffix in NIFTI_SUFFIXES:
                return self.nifti
            if suffix in PIL_SUFFIXES:
                return self.pil
            if suffix in NUMPY_SUFFIXES:
                return self.numpy
        if self._looks_like_dicom(names):
            return self.dicom
        shown = names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} more)"
        raise ValueError(
            f"{shown}: unsupported image type (suffix {sorted(suffixes)}); supported: NIfTI {NIFTI_SUFFIXES}, "
            f"2D images {PIL_SUFFIXES}, NumPy {NUMPY_SUFFIXES}, DICOM (a series folder, a list of DICOM files, "
            f"{DICOM_SUFFIXES} or any file with the DICM preamble)"
        )

    def _looks_like_dicom(self, names: list[str]) -> bool:
        try:
            return bool(self.dicom.verify_suffix(names if len(names) > 1 else names[0]))
        except ImportError:
            # Without the DICOM module, still recognise DICOM input so that the error says what is missing.
            def _is_dcm(n: str) -> bool:
                if os.path.isdir(n) or _suffix_of(n) in DICOM_SUFFIXES:
                    return True
                with open(n, "rb") as f:
                    return f.read(132)[128:132] == b"DICM"

            if all(_is_dcm(n) for n in names):
                _ = self.dicom  # raises the ImportError with its reason
            return False

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """Return whether some reader of this dispatcher can read ``filename``."""
        try:
            self.select(filename)
        except (ValueError, FileNotFoundError, ImportError, OSError):
            return False
        return True

    def read(self, data: Sequence[os.PathLike | str] | os.PathLike | str, **kwargs: Any) -> _Loaded:
        """Read ``data`` with the selected reader; errors name the file."""
        reader = self.select(data)
        names = [str(f) for f in ensure_tuple(data)]
        shown = names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} more)"
        # MONAI's NibabelReader/PILReader take a single file as-is; a 1-tuple for a DICOM folder is unwrapped too.
        arg: Any = names[0] if len(names) == 1 else names
        if len(names) == 1:
            _check_declared_size(names[0], _suffix_of(names[0]))
        try:
            obj = reader.read(arg, **kwargs)
        except (FileNotFoundError, ImportError):
            raise
        except Exception as e:
            if shown in str(e) or names[0] in str(e):
                raise
            msg = f"{shown}: cannot read with {type(reader).__name__}: {e}"
            try:
                err = type(e)(msg)
            except Exception:  # exception types with unusual constructors
                err = RuntimeError(msg)
            raise err from e
        return _Loaded(reader, obj, shown)

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Return ``(array, meta)`` from the object returned by :meth:`read`."""
        if not isinstance(img, _Loaded):
            raise TypeError(f"MedicalImageReader.get_data expects the result of its read(), got {type(img)}")
        return img.reader.get_data(img.obj)


def reader_name_for(filename: Sequence[os.PathLike | str] | os.PathLike | str) -> str:
    """Name of the reader class that :class:`MedicalImageReader` uses for ``filename`` (for diagnostics/tests)."""
    return type(MedicalImageReader().select(filename)).__name__


@contextlib.contextmanager
def _quiet_default_readers() -> Iterator[None]:
    """Silence the notices MONAI's unused default readers emit when ``LoadImage`` constructs them.

    ``LoadImage`` always instantiates every default reader; without a GPU, the nvImageCodec DICOM reader logs a
    warning and warns on every construction. The dispatcher never uses those readers.
    """
    logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)
            yield
    finally:
        logger.setLevel(level)


class LoadMedicalImaged(LoadImaged):
    """``LoadImaged`` that always reads through a :class:`MedicalImageReader` (explicit per-type reader choice).

    Unlike ``LoadImaged(keys, reader=[...])`` it never falls back to other readers after an error, so a bad file
    fails with its own message.

    Args:
        keys: keys of the paths to load.
        channels: ``1`` to convert colour 2D images to grey, see :class:`MedicalImageReader`.
        reader_kwargs: further arguments of :class:`MedicalImageReader`.
        dtype: data type of the loaded arrays.
        image_only: return MetaTensors only (``True``) or also ``<key>_meta_dict`` entries.
        ensure_channel_first: move/add the channel dimension while loading.
        allow_missing_keys: do not fail when a key is absent from the data dict.
        kwargs: further arguments of :class:`monai.transforms.LoadImaged`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        channels: int | None = None,
        reader_kwargs: dict[str, Any] | None = None,
        dtype: DtypeLike = np.float32,
        image_only: bool = True,
        ensure_channel_first: bool = False,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        self.medical_reader = MedicalImageReader(channels=channels, **(reader_kwargs or {}))
        with _quiet_default_readers():
            super().__init__(
                keys,
                reader=self.medical_reader,
                dtype=dtype,
                image_only=image_only,
                ensure_channel_first=ensure_channel_first,
                allow_missing_keys=allow_missing_keys,
                **kwargs,
            )

    def __call__(self, data: Any, reader: ImageReader | None = None) -> dict:
        """Load the keys of ``data`` (with ``reader`` if given, else the dispatcher)."""
        return super().__call__(data, reader if reader is not None else self.medical_reader)


def load_image_transforms(
    keys: KeysCollection,
    mask_keys: KeysCollection = (),
    image_only: bool = True,
    ensure_channel_first: bool = True,
    channels: int | None = None,
) -> list[MapTransform]:
    """Loading transforms for images (required keys) and masks (optional keys).

    Args:
        keys: image keys; they must be present in every data dict.
        mask_keys: segmentation mask keys; loaded when present, skipped when absent (``allow_missing_keys``).
        image_only: see ``LoadImaged`` (``False`` also stores ``<key>_meta_dict``).
        ensure_channel_first: append an :class:`~monai.transforms.EnsureChannelFirstd`.
        channels: ``1`` converts colour 2D images of the image keys to grey (masks are never converted).

    Returns:
        ``[LoadMedicalImaged(keys), LoadMedicalImaged(mask_keys, allow_missing_keys=True), EnsureChannelFirstd]``
        (entries that do not apply are left out).
    """
    keys = list(ensure_tuple(keys))
    mask_keys = [k for k in ensure_tuple(mask_keys) if k is not None]
    out: list[MapTransform] = [LoadMedicalImaged(keys, channels=channels, image_only=image_only)]
    if mask_keys:
        out.append(LoadMedicalImaged(mask_keys, image_only=image_only, allow_missing_keys=True))
    if ensure_channel_first:
        # Image keys were loaded above (the loader fails when one is missing), so allowing missing keys here only
        # concerns the optional masks.
        out.append(EnsureChannelFirstd(keys + mask_keys, allow_missing_keys=bool(mask_keys)))
    return out
