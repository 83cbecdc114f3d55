from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from medmonai.deploy.models import load_clinical_model
from medmonai.utils import shared_data_dir
from tests._seg_dicom import write_oblique_series_case
from tests.deploy._clinical_data import bundle_dir, trained_classifier

# runs with the default bundle_root write to $MEDMONAI_HOME/<bundle>_<dims>d: the tests' ones not into the home
os.environ["MEDMONAI_HOME"] = tempfile.mkdtemp(prefix="medmonai_home_")


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


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory):
    """A coronal, 15°-oblique 3D phantom with a lesion mask, written as a DICOM series: (case, series folder)."""
    return write_oblique_series_case(tmp_path_factory.mktemp("dicom"))


@pytest.fixture(scope="module")
def cls_root(tmp_path_factory):
    """A tiny classification_2d run on phantoms, trained and evaluated once per session."""
    return trained_classifier(tmp_path_factory)


@pytest.fixture(scope="module")
def cls_model(cls_root):
    """The clinical model of :func:`cls_root` (loaded once per test module)."""
    return load_clinical_model(bundle_dir("classification_2d"), cls_root, device="cpu")


_REPO = Path(__file__).resolve().parents[1]
#: where a bundle run with bundle_root '.' (the working directory) or bundles/<name> would write inside the checkout
_SOURCE_TREE_OUTPUTS = ("data", "runs", "bundles/*/data", "bundles/*/runs")


def _source_tree_outputs() -> set[Path]:
    return {p for pattern in _SOURCE_TREE_OUTPUTS for p in _REPO.glob(pattern)}


def pytest_sessionstart(session):
    session.config._outputs_before = _source_tree_outputs()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a test wrote run outputs or generated data into the source tree."""
    new = sorted(_source_tree_outputs() - getattr(session.config, "_outputs_before", set()))
    if new:
        names = ", ".join(str(p.relative_to(_REPO)) for p in new)
        print(f"\nERROR: the tests wrote into the source tree: {names} (give the run a bundle_root under tmp_path)")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
