"""Tiny runs of the 2D classification bundle for the reliability tests (in this process or as a subprocess)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "classification"
CONFIGS = BUNDLE / "configs"
TINY = {"n_subjects": 16, "images_per_subject": [1, 2], "test_fraction": 0.25, "seed": 0}
# small and quick, but long enough (epochs, patience) for early stopping and resuming to matter
SETTINGS: dict[str, Any] = {
    "max_epochs": 5,
    "patience": 2,
    "batch_size": 8,
    "spatial_size": [24, 24],
    "image_log_interval": 100,
    "augment_level": "light",
}


def make_phantoms(folder: Path) -> str:
    """The tiny 2D phantom data set (generated once into ``folder``); returns its datalist."""
    from medmonai.data.defaults import resolve_datalist

    return resolve_datalist("", folder, 2, progress=False, **TINY)


def run_in_process(root: Path, datalist: str, *extra: str, **overrides: Any) -> None:
    """``monai.bundle.run`` of train.yaml (+ ``extra`` configs, e.g. "evaluate") with ``bundle_root=root``."""
    from monai.bundle import run

    run(
        config_file=[str(CONFIGS / "train.yaml")] + [str(CONFIGS / f"{e}.yaml") for e in extra],
        meta_file=str(CONFIGS / "metadata.json"),
        bundle_root=str(root),
        datalist=datalist,
        **{**SETTINGS, **overrides},
    )


def command(root: Path, datalist: str, **overrides: Any) -> list[str]:
    """The ``python -m monai.bundle run`` command line of a training run."""
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(CONFIGS / "train.yaml"),
        "--meta_file", str(CONFIGS / "metadata.json"),
        "--bundle_root", str(root),
        "--datalist", datalist,
    ]  # fmt: skip
    for k, v in {**SETTINGS, **overrides}.items():
        cmd += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    return cmd


def load_state(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(a: Any, b: Any, where: str = "") -> None:
    """Exact equality of nested tensors / numbers / containers."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)
