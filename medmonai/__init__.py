"""medmonai: small-data medical image classification and segmentation on top of MONAI."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
