"""Small shared helpers: atomic file writes, the shared-data location, seeding."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_PATTERN",
    "latest_checkpoint",
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "file_signature",
    "atomic_torch_save",
    "to_cpu",
    "remove_stale_temp_files",
    "read_json",
    "shared_data_dir",
    "safe_output_path",
    "PathLike",
]

PathLike = str | os.PathLike


def atomic_write(path: PathLike, writer: Callable[[str], None], suffix: str = "", durable: bool = False) -> Path:
    """Write a file atomically: ``writer`` writes a temporary file in the same folder, which is then renamed.

    A crash or kill while writing never leaves a half-written ``path`` behind: ``path`` is either the old file (or
    absent) or the complete new one. A killed writer may leave its temporary file (``.<stem>.<random>.tmp``,
    hidden) behind; :func:`remove_stale_temp_files` cleans them. The temporary name does not end in the destination's
    suffix, so that no pattern for the finished files (``*.pt``, ``*.json``) ever matches a partial one.

    Args:
        path: destination file.
        writer: callable that receives the temporary file name and writes the content there.
        suffix: appended to the temporary name (``.tmp<suffix>``), only for writers that pick the format from the
            file name (nibabel: ``.nii.gz``); every other writer is given the format explicitly.
        durable: also ``fsync`` the file before the rename and the folder after it, so that the new content survives
            a power loss or an operating-system crash, not only a killed process (checkpoints use this).

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        _fsync(path.parent)
    return path


def _fsync(path: PathLike) -> None:
    """Flush a file's (or a folder's) data to disk; folders cannot be opened on some platforms (then skipped)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def to_cpu(obj: Any) -> Any:
    """A copy of ``obj`` (nested dicts, lists, tuples) with every tensor on the CPU; everything else as it is.

    Tensors already on the CPU are kept (not copied); tensors shared between entries stay shared, and a state
    dict's ``_metadata`` (the module versions ``load_state_dict`` migrates by) is kept, which
    ``ignite.utils.convert_tensor`` would drop.
    """
    memo: dict[int, Any] = {}

    def conv(o: Any) -> Any:
        if isinstance(o, torch.Tensor):
            if o.device.type == "cpu":
                return o
            if id(o) not in memo:
                memo[id(o)] = o.detach().cpu()
            return memo[id(o)]
        if isinstance(o, dict):
            out = type(o)() if type(o) in (dict, OrderedDict) else {}
            out.update((k, conv(v)) for k, v in o.items())
            if hasattr(o, "_metadata"):
                out._metadata = o._metadata  # type: ignore[attr-defined]
            return out
        if isinstance(o, list):
            return [conv(v) for v in o]
        if isinstance(o, tuple) and not hasattr(o, "_fields"):
            return tuple(conv(v) for v in o)
        return o

    return conv(obj)


def atomic_torch_save(obj: Any, path: PathLike, durable: bool = True, cpu: bool = True) -> Path:
    """``torch.save`` through :func:`atomic_write` (temporary file + rename; ``fsync`` when ``durable``).

    The temporary file ends in ``.tmp``, not in ``.pt``, so that no ``*.pt`` pattern (a resume search, a copy
    script) ever picks up the partial file a killed writer leaves behind. With ``cpu`` (default) tensors are saved
    on the CPU (:func:`to_cpu`), so a checkpoint written on a GPU loads on a machine without one with a plain
    ``torch.load(path, weights_only=True)``, no ``map_location`` needed.
    """
    obj = to_cpu(obj) if cpu else obj
    return atomic_write(path, lambda tmp: torch.save(obj, tmp), durable=durable)


def remove_stale_temp_files(folder: PathLike, pattern: str = ".*.tmp*") -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_write` calls left in ``folder``; return them.

    Only call this where no other process is writing into ``folder`` at the same time.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(pattern):
        if p.is_file() and ".tmp" in p.name:
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""

    def _w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, _w)


def atomic_write_json(path: PathLike, obj: Any, indent: int = 2) -> Path:
    """Atomically write ``obj`` as JSON to ``path`` (numpy scalars and arrays are converted)."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=indent) + "\n")


def read_json(
    path: PathLike,
    what: str = "file",
    error: type[Exception] = ValueError,
    missing_error: type[Exception] | None = None,
) -> Any:
    """Read a JSON file; a missing file or invalid JSON raises an error naming the file.

    Args:
        path: the JSON file.
        what: what the file is, for the message (``"datalist file"``...).
        error: exception class for invalid JSON.
        missing_error: exception class for a missing file (default: ``error``).
    """
    path = Path(path)
    if not path.is_file():
        raise (missing_error or error)(f"{path}: {what} does not exist")
    try:
        with open(path, encoding="utf-8-sig") as f:  # a UTF-8 byte-order mark (BOM) is accepted
            return json.load(f)
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e})") from e
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the {what} as UTF-8") from e
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror or e})") from e


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, tuples and paths into JSON-serialisable Python objects."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "tolist") and callable(obj.tolist):  # torch tensors
        return obj.tolist()
    return obj


def shared_data_dir() -> Path:
    """Location of the real public data sets: ``$MEDMONAI_SHARED_DATA`` or ``../shared/data``.

    The default is resolved relative to the repository root (the folder above the ``medmonai`` package),
    so it works from any current directory when running from a checkout.
    """
    env = os.environ.get("MEDMONAI_SHARED_DATA")
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parent.parent
    return repo_root.parent / "shared" / "data"


def file_signature(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Any]:
    """Size and modification time of files (every file below a folder, in sorted order): a cheap cache key.

    Used by the content-hash cache of :mod:`medmonai.data.splits` and the pre-flight cache of
    :mod:`medmonai.data.preflight`.
    """
    names = [os.fspath(paths)] if isinstance(paths, str | os.PathLike) else [os.fspath(p) for p in paths]
    sig: list[Any] = []
    for name in names:
        if os.path.isdir(name):
            for root, dirs, files in os.walk(name):
                dirs.sort()
                for f in sorted(files):
                    st = os.stat(os.path.join(root, f))
                    sig.append([os.path.relpath(os.path.join(root, f), name), st.st_size, st.st_mtime_ns])
        else:
            st = os.stat(name)
            sig.append([st.st_size, st.st_mtime_ns])
    return sig


def safe_output_path(folder: PathLike, name: Any, suffix: str = "", what: str = "name") -> Path:
    """``folder / (safe name + suffix)`` for a name from untrusted data (a DICOM UID tag...), kept inside ``folder``.

    DICOM UIDs hold digits and dots only. Any other character (a path separator, a space...) is replaced by ``_``,
    runs of dots by ``_`` (no ``..``), leading dots and ``_`` are dropped (no hidden files) and the name is cut to 128
    characters; a changed name gets the first 8 hex digits of the original's SHA-1 appended, so that two different
    values never share a file. The result must resolve to a direct child of ``folder``.

    Args:
        folder: the output folder.
        name: the value the file name is built from (converted with ``str``).
        suffix: appended after sanitising (e.g. ``"_sr.dcm"``; it must itself be a safe name part).
        what: what the value is, for the error message (``"SeriesInstanceUID"``...).

    Returns:
        The path (not created).

    Raises:
        ValueError: for an empty value, or one whose path would not stay inside ``folder``, naming the value.
    """
    raw = "" if name is None else str(name)
    safe = re.sub(r"[^0-9A-Za-z._-]", "_", raw.strip())
    safe = re.sub(r"\.{2,}", "_", safe).lstrip("._")[:128]
    if not safe.strip("_"):
        raise ValueError(f"{what} {raw!r} gives no usable file name in {folder}")
    if safe != raw:
        safe = f"{safe}_{hashlib.sha1(raw.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    root = Path(folder)
    path = root / f"{safe}{suffix}"
    if os.sep in path.name or (os.altsep and os.altsep in path.name) or path.name in (".", ".."):
        raise ValueError(f"{what} {raw!r}: file name {path.name!r} is not a plain name inside {root}")
    if path.resolve().parent != root.resolve():  # also an existing symbolic link pointing elsewhere
        raise ValueError(f"{what} {raw!r}: {path} would be written outside the output folder {root}")
    return path


# the resumable training checkpoints (medmonai.handlers.checkpoint.ResumableCheckpoint), one per epoch
CHECKPOINT_PATTERN = "checkpoint_epoch=*.pt"


def latest_checkpoint(ckpt_dir: str, pattern: str = CHECKPOINT_PATTERN) -> str | None:
    """The checkpoint with the highest epoch number in ``ckpt_dir`` matching ``pattern`` (None if there is none).

    :class:`medmonai.handlers.checkpoint.ResumableCheckpoint` writes ``checkpoint_epoch=N.pt`` atomically (temporary
    file + rename), so any file found here is complete.
    """
    best: tuple[int, str] | None = None
    for path in glob.glob(os.path.join(glob.escape(ckpt_dir), pattern)):
        m = re.search(r"(\d+)\.pt$", path)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), path)
    return best[1] if best else None
