"""Image content identity: the SHA-1 of a decoded voxel array, read with one shared :class:`MedicalImageReader`.

Used by the pre-flight check (``sha1`` of every checked image, the ``data_sha1`` fingerprint) and by the leakage guard
of the splits (identical images are one group), so both hash the same decoded arrays the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from medmonai.data.reader import MedicalImageReader
from medmonai.utils import PathLike

__all__ = ["shared_reader", "array_sha1", "image_hash"]

_READER: MedicalImageReader | None = None


def shared_reader() -> MedicalImageReader:
    """The module's :class:`~medmonai.data.reader.MedicalImageReader` (stored channels kept), created on first use."""
    global _READER
    if _READER is None:
        _READER = MedicalImageReader()
    return _READER


def array_sha1(arr: np.ndarray) -> str:
    """SHA-1 of a decoded array: its dtype, shape and bytes (C order)."""
    arr = np.ascontiguousarray(np.asarray(arr))
    h = hashlib.sha1()
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def image_hash(path: PathLike | Sequence[PathLike]) -> str:
    """SHA-1 of an image's decoded voxel array (dtype, shape and bytes), not of the file.

    The image is read with :func:`shared_reader`, so the same pixels saved in two files (other names, other
    compression, another container of the same type) give the same hash.

    Args:
        path: an image file, a DICOM series folder or a list of DICOM files.

    Returns:
        The hexadecimal SHA-1.
    """
    reader = shared_reader()
    arr, _ = reader.get_data(reader.read(path))
    return array_sha1(arr)
