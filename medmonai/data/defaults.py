"""Where a bundle's data comes from: a user datalist, a data set folder, or the embedded phantoms."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medmonai.data.datalist import load_datalist, load_datalist_file
from medmonai.data.phantoms import ensure_phantom_dataset
from medmonai.utils import PathLike

__all__ = ["resolve_datalist", "select_keys", "optional_split", "held_out_entries"]


def resolve_datalist(
    datalist: PathLike | None = None,
    dataset_dir: PathLike | None = None,
    spatial_dims: int = 2,
    progress: bool = True,
    **phantom: Any,
) -> str:
    """Pick the datalist a bundle runs on.

    1. ``datalist`` when given (a datalist JSON file);
    2. else ``dataset_dir/datalist.json`` when it exists and is not a phantom data set made by us;
    3. else the embedded default: the synthetic phantom data set, generated into ``dataset_dir`` (once; see
       :func:`medmonai.data.phantoms.ensure_phantom_dataset`) with the ``phantom`` config fields.

    Returns:
        The datalist path as a string.

    Raises:
        FileNotFoundError: if ``datalist`` is given but does not exist.
    """
    if datalist:
        path = Path(datalist)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: datalist file does not exist")
        return str(path)
    if dataset_dir is None:
        raise ValueError("give a datalist file or a dataset_dir")
    folder = Path(dataset_dir)
    candidate = folder / "datalist.json"
    if candidate.is_file() and not (folder / "phantom_truth.json").is_file():
        return str(candidate)

    return str(ensure_phantom_dataset(folder, spatial_dims=spatial_dims, progress=progress, **phantom))


def select_keys(entries: Iterable[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Keep only ``keys`` of every entry (those present), so that batches collate cleanly."""
    return [{k: e[k] for k in keys if k in e} for e in entries]


def optional_split(datalist_file: str, key: str = "test") -> list[dict[str, Any]]:
    """The entries of split ``key`` of a datalist file, or ``[]`` when the datalist has no such split."""
    if not isinstance(load_datalist_file(datalist_file).get(key), list):
        return []
    return load_datalist(datalist_file, key)


def held_out_entries(split: Mapping[str, Sequence[dict[str, Any]]], datalist_file: str) -> list[dict[str, Any]]:
    """Every case a model is judged on: the validation part of ``split`` plus the datalist's test split.

    Synthetic training data is refused when its generator saw one of these
    (:func:`medmonai.data.synthetic.add_synthetic`), so this set must hold all of them; one function, so that no
    config assembles it differently.

    Args:
        split: the training/validation split of the training data (``{"training": [...], "validation": [...]}``).
        datalist_file: the datalist whose ``test`` split (if any) is held out as well.

    Returns:
        The validation entries followed by the test entries.
    """
    return [*split.get("validation", []), *optional_split(datalist_file, "test")]
