"""The pre-flight check inside a training bundle: a bad entry stops the run before anything is trained, or (with
``preflight: skip``) is left out and reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medmonai.cli.main import _root_cause
from medmonai.data.preflight import PreflightError
from tests.reliability._bundle import make_phantoms, run_in_process


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """A copy of the tiny phantom data set whose first training image is truncated."""
    src = Path(make_phantoms(tmp_path_factory.mktemp("phantoms")))
    folder = tmp_path_factory.mktemp("broken") / "data"
    shutil.copytree(src.parent, folder)
    datalist = folder / src.name
    raw = json.loads(datalist.read_text())
    bad = folder / raw["training"][0]["image"]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    return str(datalist), bad


def test_a_bad_entry_stops_the_bundle_before_training(broken, tmp_path):
    datalist, bad = broken
    with pytest.raises(Exception) as err:  # noqa: B017 - MONAI wraps the error; its root cause is checked
        run_in_process(tmp_path, datalist, max_epochs=1)
    cause = _root_cause(err.value)
    assert isinstance(cause, PreflightError)
    assert str(bad) in str(cause) and "cannot read image" in str(cause) and "nothing was trained" in str(cause)
    runs = tmp_path / "runs"
    assert not (runs / "checkpoints").exists() and not (runs / "tensorboard").exists()
    report = json.loads((runs / "preflight_report.json").read_text())
    assert report["problems"][0]["file"] == str(bad)


def test_skip_trains_without_the_bad_entry_and_reports_it(broken, tmp_path):
    datalist, bad = broken
    run_in_process(tmp_path, datalist, max_epochs=1, preflight="skip")
    runs = tmp_path / "runs"
    report = json.loads((runs / "preflight_report.json").read_text())
    assert [s["image"] for s in report["skipped"]] == [str(bad)]
    cleaned = runs / "preflight_datalist.json"
    assert report["datalist_used"] == str(cleaned)
    assert str(bad) not in cleaned.read_text()
    assert (runs / "checkpoints" / "checkpoint_epoch=1.pt").is_file()
    provenance = json.loads((runs / "provenance.json").read_text())
    assert provenance["datalist"]["path"] == str(cleaned) and provenance["data"]["skipped"] == 1
