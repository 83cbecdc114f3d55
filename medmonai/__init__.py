"""medmonai: small-data medical image classification and segmentation on top of MONAI.

Sub-packages (imported on first access, so ``import medmonai`` stays light and bundle expressions such as
``$medmonai.data.splits.holdout_split(...)`` work after a plain ``$import medmonai``):

- ``medmonai.data``: datalists, builders, DICOM series, phantoms, fingerprint, splits, samplers;
- ``medmonai.transforms``: loading and preprocessing transforms;
- ``medmonai.networks``: classifiers, pretrained backbones, transfer strategies;
- ``medmonai.engines``: losses, deep features + classical classifiers, evaluation and inference;
- ``medmonai.handlers``: Ignite handlers (resumable checkpoints, early stopping, TensorBoard);
- ``medmonai.metrics``: clinical metrics with bootstrap confidence intervals and reports;
- ``medmonai.deploy``: hospital side: DICOM in/out, PACS and DICOMweb, ONNX export;
- ``medmonai.bundles``: where the bundles are, their configs, default run folders;
- ``medmonai.apps`` / ``medmonai.cli``: the demo and the command line.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = (
    "apps",
    "bundles",
    "cli",
    "data",
    "deploy",
    "engines",
    "handlers",
    "metrics",
    "networks",
    "transforms",
    "utils",
)

__all__ = ["__version__", *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"medmonai.{name}")
    raise AttributeError(f"module 'medmonai' has no attribute {name!r}")
