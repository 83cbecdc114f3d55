"""Moved: the DIMSE client and the Orthanc helpers live in :mod:`medmonai.deploy.pacs` (kept here for one release)."""

from __future__ import annotations

from typing import Any

from medmonai.deploy import pacs as _pacs
from medmonai.deploy.pacs import *  # noqa: F403

__all__ = list(_pacs.__all__)


def __getattr__(name: str) -> Any:
    """Any other (private) name of the former module, from :mod:`medmonai.deploy.pacs`."""
    return getattr(_pacs, name)
