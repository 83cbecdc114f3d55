"""Deep-feature extraction with any backbone, cached on disk so cross-validation never re-extracts.

:func:`extract_features` runs every image of a datalist (or a MONAI ``Dataset``) through a preprocessing transform
and a network in ``eval()`` mode under ``torch.no_grad()`` and returns one feature vector per image, ready for the
classical classifiers of :mod:`medmonai.engines.classical`.

The network is any ``torch.nn.Module`` (or plain callable) that maps a ``(B, C, *spatial)`` batch to features:
its ``features`` method/sub-module is used when it has one (e.g. the ``Classifier`` of ``medmonai.networks``), else
its forward pass. Outputs with spatial dimensions are global-average pooled (``pool="avg"``) or flattened
(``pool="flatten"``), giving an ``(N, D)`` array.

Caching: with ``cache_dir``, the features are written once (atomically, as an ``.npz`` without pickled objects)
under a name that hashes everything they depend on: the model (architecture ``repr`` and every state-dict tensor),
the feature method and pooling, the entries (their image paths with file sizes and modification times, plus any
other existing files they reference, e.g. masks) and an identifier of the transform. A later call with the same
inputs reloads the file instead of running the model; any change (new weights, one more image, an edited file, a
different transform) gives a new name, so a stale cache is never returned.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.utils import convert_to_tensor
from tqdm.auto import tqdm

from medmonai.utils import PathLike, atomic_write

__all__ = ["POOLING", "extract_features", "features_cache_key", "describe_transform", "model_fingerprint"]

logger = logging.getLogger(__name__)

#: How outputs with spatial dimensions ``(B, C, *spatial)`` become vectors.
POOLING: tuple[str, ...] = ("avg", "flatten")

_CACHE_VERSION = 1


# ----------------------------------------------------------------------------------------------------------- hashing
def _hash_tensor(h: Any, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    h.update(f"{t.dtype}:{tuple(t.shape)}:".encode())
    if t.numel():
        h.update(t.view(torch.uint8).numpy().tobytes())


def model_fingerprint(model: Any, method: str | None = None, model_id: str | None = None) -> str:
    """SHA-256 of a model's architecture and weights (the part of the feature cache key that is the model).

    Args:
        model: a ``torch.nn.Module`` (its ``repr`` and every state-dict entry are hashed) or another callable.
        method: the feature method name used (part of the key).
        model_id: an explicit identifier; required for callables that are not ``nn.Module`` (their behaviour cannot
            be hashed), and mixed into the key of modules as well.

    Raises:
        ValueError: for a non-module callable without ``model_id``.
    """
    h = hashlib.sha256()
    h.update(f"method={method};id={model_id};".encode())
    if isinstance(model, torch.nn.Module):
        h.update(repr(model).encode())
        for name, value in model.state_dict().items():
            h.update(f"|{name}=".encode())
            if isinstance(value, torch.Tensor):
                _hash_tensor(h, value)
            else:  # extra state
                h.update(repr(value).encode())
    elif model_id is None:
        raise ValueError(
            f"cannot cache features of {type(model).__name__!r}: it is not a torch.nn.Module, so its behaviour cannot "
            "be hashed; pass model_id='<a name that changes whenever the model changes>' or cache_dir=None"
        )
    return h.hexdigest()


def _describe(obj: Any, depth: int, seen: set[int]) -> str:
    if obj is None or isinstance(obj, bool | int | float | str | bytes):
        return repr(obj)
    if isinstance(obj, enum.Enum):
        return f"{type(obj).__name__}.{obj.name}"
    if isinstance(obj, torch.dtype | np.dtype | type):
        return str(obj)
    if isinstance(obj, np.generic):
        return repr(obj.item())
    if isinstance(obj, torch.Tensor):
        h = hashlib.sha256()
        _hash_tensor(h, obj)
        return f"tensor({h.hexdigest()[:16]})"
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            return _describe(obj.tolist(), depth, seen)
        digest = hashlib.sha256(f"{obj.dtype.str}:{obj.shape}:".encode() + np.ascontiguousarray(obj).tobytes())
        return f"array({digest.hexdigest()[:16]})"
    if isinstance(obj, np.random.RandomState | np.random.Generator | logging.Logger | torch.Generator):
        return type(obj).__name__  # random state and loggers change while in use: not part of the identity
    if depth <= 0 or id(obj) in seen:
        return type(obj).__qualname__
    seen = seen | {id(obj)}
    if isinstance(obj, Mapping):
        items = sorted((str(k), _describe(v, depth - 1, seen)) for k, v in obj.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(obj, list | tuple | set | frozenset):
        parts = [_describe(v, depth - 1, seen) for v in obj]
        return "[" + ",".join(sorted(parts) if isinstance(obj, set | frozenset) else parts) + "]"
    name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if isinstance(obj, torch.nn.Module):
        return f"{name}<{model_fingerprint(obj)[:16]}>"
    if hasattr(obj, "__qualname__") and callable(obj):  # functions, methods
        return f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"
    attrs = getattr(obj, "__dict__", None)
    if not attrs:
        return name
    # private attributes are skipped: they hold caches filled on first use (e.g. a lazily created reader), which
    # would make a used transform describe differently from a fresh one
    inner = ",".join(f"{k}={_describe(v, depth - 1, seen)}" for k, v in sorted(attrs.items()) if not k.startswith("_"))
    return f"{name}({inner})"


def describe_transform(transform: Any, max_depth: int = 8) -> str:
    """A stable text description of a transform (class names and settings, recursively), used as cache identity.

    MONAI transforms keep their settings as public attributes, so two ``build_preprocessing(...)`` calls with the
    same arguments describe identically and a changed setting (size, spacing, normalization, ...) changes the
    description. Private (``_``-prefixed) attributes and random generators are left out: they hold caches and
    random state that change during use. This is a best effort: a transform whose behaviour depends on something
    not stored in its public attributes (a global, a closure) should be given an explicit ``transform_id``
    instead. Random transforms (which store their last draw publicly) make features non-deterministic anyway and do
    not belong in a cached extraction.
    """
    return _describe(transform, max_depth, set())


def _file_stats(value: Any) -> list[str]:
    """``path:size:mtime_ns`` of a file, or of every file under a folder (e.g. a DICOM series)."""
    p = Path(value)
    if p.is_file():
        st = p.stat()
        return [f"{p}:{st.st_size}:{st.st_mtime_ns}"]
    out = [f"{p}/"]
    for root, dirs, files in os.walk(p):
        dirs.sort()
        for f in sorted(files):
            st = os.stat(os.path.join(root, f))
            out.append(f"{os.path.relpath(os.path.join(root, f), p)}:{st.st_size}:{st.st_mtime_ns}")
    return out


def _entry_identity(entry: Mapping[str, Any], image_key: str) -> list[str]:
    """What a feature vector depends on in an entry: the image value and every existing file the entry names."""
    parts: list[str] = []
    for key in sorted(entry, key=str):
        value = entry[key]
        values = value if isinstance(value, list | tuple) else [value]
        if key == image_key:
            for v in values:
                if isinstance(v, str | os.PathLike):
                    parts += [f"{key}="] + (_file_stats(v) if Path(v).exists() else [f"missing:{v}"])
                else:
                    parts.append(f"{key}={_describe(v, 2, set())}")
            continue
        for v in values:
            if isinstance(v, str | os.PathLike) and str(v) and os.path.isabs(v) and Path(v).exists():
                parts += [f"{key}="] + _file_stats(v)
    return parts


def features_cache_key(
    model: Any,
    entries: Sequence[Mapping[str, Any]],
    transform_id: str,
    method: str | None,
    pool: str,
    image_key: str = "image",
    model_id: str | None = None,
) -> str:
    """SHA-256 naming the cached features of ``entries`` (see the module docstring for what goes into it)."""
    h = hashlib.sha256()
    h.update(f"v{_CACHE_VERSION};pool={pool};model={model_fingerprint(model, method, model_id)};".encode())
    h.update(f"transform={transform_id};n={len(entries)};".encode())
    for entry in entries:
        h.update(("\x1e".join(_entry_identity(entry, image_key)) + "\x1d").encode())
    return h.hexdigest()


# -------------------------------------------------------------------------------------------------------- extraction
class _StackImages:
    """Collate function: stack the ``key`` tensors of a batch (other entry fields are not needed)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, batch: list[Any]) -> torch.Tensor:
        images = []
        for item in batch:
            if isinstance(item, list | tuple):
                raise ValueError(
                    "the transform returned several samples per image (e.g. a random crop with num_samples > 1); "
                    "feature extraction needs exactly one sample per image"
                )
            if not isinstance(item, Mapping) or self.key not in item:
                raise ValueError(f"a transformed item has no {self.key!r} key (got {type(item).__name__})")
            x = convert_to_tensor(item[self.key], track_meta=False)
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"{self.key!r} is not an array after the transform (got {type(x).__name__})")
            images.append(x.float())
        shapes = {tuple(x.shape) for x in images}
        if len(shapes) > 1:
            raise ValueError(
                f"images of different shapes in one batch {sorted(shapes)}: give a transform that brings every image "
                "to one size (e.g. build_preprocessing(spatial_size=...)) or use batch_size=1"
            )
        return torch.stack(images)


def _feature_function(model: Any, method: str | None) -> tuple[Callable[[torch.Tensor], Any], str | None]:
    if method is None:
        fn = getattr(model, "features", None)
        if callable(fn):
            return fn, "features"
        if not callable(model):
            raise TypeError(f"model {type(model).__name__!r} is not callable and has no 'features' method")
        return model, None
    fn = getattr(model, method, None)
    if not callable(fn):
        raise ValueError(f"model {type(model).__name__!r} has no callable {method!r}")
    return fn, method


def _to_vectors(out: Any, pool: str) -> torch.Tensor:
    if isinstance(out, list | tuple):  # e.g. (features, logits) or a feature pyramid: take the last
        out = out[-1]
    if isinstance(out, Mapping):
        raise ValueError("the model returned a dict; pass method=... naming a function that returns a tensor")
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the model returned {type(out).__name__}, expected a tensor")
    out = out.detach().float()
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim > 2:
        out = out.mean(dim=tuple(range(2, out.ndim))) if pool == "avg" else out.flatten(1)
    return out


def _load_cache(path: Path, key: str, n: int) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            stored_key = str(z["key"])
            feats = np.asarray(z["features"])
    except Exception as e:  # corrupt / foreign file: recompute (the new write replaces it atomically)
        logger.warning("ignoring unreadable feature cache %s (%s)", path, e)
        return None
    if stored_key != key or feats.ndim != 2 or feats.shape[0] != n:
        logger.warning("ignoring feature cache %s: it does not match the requested inputs", path)
        return None
    return feats


def extract_features(
    model: torch.nn.Module | Callable[[torch.Tensor], Any],
    data: Sequence[Mapping[str, Any]] | torch.utils.data.Dataset,
    transform: Callable[[Any], Any] | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    cache_dir: PathLike | None = None,
    num_workers: int = 0,
    progress: bool = True,
    *,
    image_key: str = "image",
    method: str | None = None,
    pool: str = "avg",
    transform_id: str | None = None,
    model_id: str | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Extract one feature vector per image with a frozen network (optionally cached on disk).

    Args:
        model: a ``torch.nn.Module`` or callable mapping a ``(B, C, *spatial)`` float batch to features. It is put in
            ``eval()`` mode (its previous mode is restored afterwards) and moved to ``device``.
        data: datalist entries (dicts with ``image_key``, e.g. from :func:`medmonai.data.datalist.load_datalist`)
            or a MONAI ``Dataset`` (its own transform is used and its ``.data`` are the entries).
        transform: applied to each entry to load and preprocess the image (e.g.
            :func:`medmonai.transforms.preprocessing.build_preprocessing`); None when the entries already hold
            arrays, or when ``data`` is a ``Dataset``.
        batch_size: images per forward pass.
        device: torch device of the forward pass.
        cache_dir: folder of the feature cache; None disables caching.
        num_workers: ``DataLoader`` worker processes for loading/preprocessing.
        progress: show a tqdm progress bar.
        image_key: key of the image in the entries.
        method: name of the model's feature function; default ``"features"`` when the model has one, else the
            forward pass.
        pool: ``"avg"`` (global average over spatial dimensions of ``(B, C, *spatial)`` outputs) or ``"flatten"``.
        transform_id: identifier of the transform in the cache key; default :func:`describe_transform` of it.
        model_id: extra model identifier in the cache key (required to cache a callable that is not a Module).

    Returns:
        ``(features, entries)``: a float32 ``(N, D)`` array, row ``i`` for ``entries[i]`` (shallow copies of the
        input entries, in input order).

    Raises:
        ValueError: for bad arguments, an unhashable model with ``cache_dir``, string image paths without a
            transform, or transformed images of different shapes in a batch.
        TypeError: if ``data`` is neither a sequence of dicts nor a dataset with a ``.data`` list.
    """
    if pool not in POOLING:
        raise ValueError(f"unknown pool {pool!r}; valid: {list(POOLING)}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(data, torch.utils.data.Dataset):
        if transform is not None:
            raise ValueError("data is a Dataset, which applies its own transform: pass transform=None")
        entries_src = getattr(data, "data", None)
        if not isinstance(entries_src, Sequence) or len(entries_src) != len(data):  # type: ignore[arg-type]
            raise TypeError("a Dataset passed to extract_features needs a '.data' sequence of entries (MONAI Dataset)")
        dataset = data
        transform_desc = getattr(data, "transform", None)
    elif isinstance(data, Sequence) and not isinstance(data, str | bytes):
        entries_src = data
        dataset = None
        transform_desc = transform
    else:
        raise TypeError(f"data must be a list of datalist entries or a MONAI Dataset, got {type(data).__name__}")
    entries = [dict(e) for e in entries_src]
    for i, e in enumerate(entries):
        if image_key not in e:
            raise ValueError(f"entry {i} has no {image_key!r} key (keys: {sorted(map(str, e))})")
        if dataset is None and transform is None and isinstance(e[image_key], str | os.PathLike):
            raise ValueError(
                f"entry {i} ({e[image_key]}) holds a file path but no transform was given: pass a loading transform "
                "such as medmonai.transforms.preprocessing.build_preprocessing(...)"
            )
    if not entries:
        return np.zeros((0, 0), dtype=np.float32), []

    fn, method_used = _feature_function(model, method)
    cache_path: Path | None = None
    key = ""
    if cache_dir is not None:
        tid = transform_id if transform_id is not None else describe_transform(transform_desc)
        key = features_cache_key(model, entries, tid, method_used, pool, image_key=image_key, model_id=model_id)
        cache_path = Path(cache_dir) / f"features_{key[:32]}.npz"
        if cache_path.is_file():
            feats = _load_cache(cache_path, key, len(entries))
            if feats is not None:
                logger.info("feature cache hit: %s (%d x %d), model not run", cache_path, *feats.shape)
                return feats, entries
        logger.info("feature cache miss: extracting %d images into %s", len(entries), cache_path)

    if dataset is None:
        dataset = Dataset(data=entries, transform=transform)
    loader = DataLoader(
        dataset, batch_size=int(batch_size), shuffle=False, num_workers=num_workers, collate_fn=_StackImages(image_key)
    )
    is_module = isinstance(model, torch.nn.Module)
    was_training = bool(model.training) if is_module else False
    if is_module:
        model.to(device)
        model.eval()
    chunks: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc="features", disable=not progress, unit="batch"):
                chunks.append(_to_vectors(fn(batch.to(device)), pool).cpu())
    finally:
        if is_module and was_training:
            model.train()
    dims = {c.shape[1] for c in chunks}
    if len(dims) != 1:
        raise ValueError(f"the model returned feature vectors of different lengths {sorted(dims)} across batches")
    feats = torch.cat(chunks).numpy().astype(np.float32, copy=False)
    if feats.shape[0] != len(entries):
        raise ValueError(f"got {feats.shape[0]} feature vectors for {len(entries)} entries")

    if cache_path is not None:
        meta = {"version": _CACHE_VERSION, "n": len(entries), "method": method_used, "pool": pool}

        def _write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, features=feats, key=np.str_(key), meta=np.str_(json.dumps(meta)))

        atomic_write(cache_path, _write)
        logger.info("feature cache written: %s (%d x %d)", cache_path, *feats.shape)
    return feats, entries
