from __future__ import annotations

import pytest

from medmonai.utils import shared_data_dir


@pytest.fixture(scope="session")
def shared_data():
    """The real data folder, or skip the test with the reason."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real data not available: {root} does not exist (set MEDMONAI_SHARED_DATA)")
    return root


def require(path):
    """Skip when a specific shared data file/folder is absent."""
    if not path.exists():
        pytest.skip(f"real data not available: {path} does not exist")
    return path
