"""Resume checks the configuration; an output folder in use is locked (issue 21, item 9).

- Re-running a finished output folder with another seed (or other result-changing settings) is refused with an error
  naming the keys, the checkpoint's and the new values, and the fix; nothing is trained and provenance.json keeps the
  seed the weights were trained with.
- The same settings resume (and ``max_epochs`` may be raised to continue).
- A second run in a folder whose lock another process holds fails at once, naming the folder and the holder, and
  leaves the first run's files untouched; a killed holder leaves no stale lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medmonai.handlers.checkpoint import LOCK_FILE, OutputDirLockedError, ResumeSettingsError
from tests.reliability._bundle import REPO, make_phantoms, run_in_process

FAST = {"max_epochs": 2, "patience": 5}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantoms(tmp_path_factory.mktemp("phantoms2d"))


@pytest.fixture(scope="module")
def finished(phantoms, tmp_path_factory):
    """A finished 2-epoch training run (seed 0)."""
    root = tmp_path_factory.mktemp("finished")
    run_in_process(root, phantoms, **FAST)
    return root


def _raised(kind: type[BaseException], *args: Any, **kwargs: Any) -> BaseException:
    """The ``kind`` error of a bundle run (MONAI wraps errors raised inside the config in ``RuntimeError`` s)."""
    with pytest.raises(Exception) as info:
        run_in_process(*args, **kwargs)
    err: BaseException | None = info.value
    while err is not None and not isinstance(err, kind):
        err = err.__cause__ or err.__context__
    assert err is not None, f"no {kind.__name__} in the chain of {info.value!r}"
    return err


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(LOCK_FILE))
    return dst


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def test_another_seed_on_a_finished_folder_is_refused(finished, phantoms, tmp_path):
    root = _copy(finished, tmp_path / "run")
    ckpts = root / "runs" / "checkpoints"
    before = {p.name: p.read_bytes() for p in ckpts.glob("*.pt")}
    msg = str(_raised(ResumeSettingsError, root, phantoms, seed=1, **FAST))
    assert "checkpoint_epoch=2.pt" in msg and "seed: checkpoint 0, now 1" in msg
    assert "--resume false" in msg and "another output folder" in msg
    # nothing trained or recorded with the new seed: checkpoints and provenance are those of seed 0
    assert {p.name: p.read_bytes() for p in ckpts.glob("*.pt")} == before
    assert json.loads((root / "runs" / "provenance.json").read_text())["seed"] == 0


def test_other_result_changing_settings_are_refused_with_every_key_named(finished, phantoms, tmp_path):
    root = _copy(finished, tmp_path / "run")
    msg = str(_raised(ResumeSettingsError, root, phantoms, learning_rate=0.01, class_weights=[1.0, 2.0], **FAST))
    assert "learning_rate: checkpoint 0.001, now 0.01" in msg
    assert 'class_weights: checkpoint "balanced", now [1.0, 2.0]' in msg


def test_a_changed_datalist_content_is_refused(finished, phantoms, tmp_path):
    root = _copy(finished, tmp_path / "run")
    data = json.loads(Path(phantoms).read_text())
    data["training"] = data["training"][:-1]  # one training entry fewer
    other = Path(phantoms).with_name("datalist_one_fewer.json")  # beside it: the image paths are relative
    other.write_text(json.dumps(data))
    assert "sha256(datalist_file): checkpoint" in str(_raised(ResumeSettingsError, root, str(other), **FAST))


def test_the_same_settings_resume_and_max_epochs_may_be_raised(finished, phantoms, tmp_path):
    root = _copy(finished, tmp_path / "run")
    run_in_process(root, phantoms, **FAST)  # finished: resumes, trains no further
    prov = json.loads((root / "runs" / "provenance.json").read_text())
    assert prov["training"]["resumed_from"].endswith("checkpoint_epoch=2.pt") and prov["seed"] == 0
    run_in_process(root, phantoms, **{**FAST, "max_epochs": 3, "patience": 1, "num_workers": 0})
    ckpts = sorted(p.name for p in (root / "runs" / "checkpoints").glob("checkpoint_epoch=*.pt"))
    assert ckpts == ["checkpoint_epoch=3.pt"]


def test_resume_false_starts_over_in_the_same_folder(finished, phantoms, tmp_path):
    root = _copy(finished, tmp_path / "run")
    run_in_process(root, phantoms, seed=1, resume=False, **{**FAST, "max_epochs": 1})
    ckpts = sorted(p.name for p in (root / "runs" / "checkpoints").glob("checkpoint_epoch=*.pt"))
    assert ckpts == ["checkpoint_epoch=1.pt"]  # the seed-0 run's epoch-2 checkpoint is gone, not resumable
    prov = json.loads((root / "runs" / "provenance.json").read_text())
    assert prov["seed"] == 1 and prov["training"]["resumed_from"] is None


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock (as a running training does) until its stdin closes."""
    code = (
        "import sys; from medmonai.handlers.checkpoint import lock_output_dir; "
        f"lock_output_dir({str(folder)!r}); print('locked', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.slow
def test_a_held_lock_makes_a_second_training_fail_before_writing_anything(finished, phantoms, tmp_path):
    root = _copy(finished, tmp_path / "run")
    runs = root / "runs"
    before = _digests(runs)
    holder = _hold_lock(runs)
    try:
        msg = str(_raised(OutputDirLockedError, root, phantoms, seed=1, **FAST))
        assert str(runs.resolve()) in msg and f"pid {holder.pid} on host" in msg and "in use by another run" in msg
        assert _digests(runs) == before  # preflight_report.json, checkpoints, provenance: all untouched
    finally:
        holder.kill()
        holder.wait(timeout=30)


@pytest.mark.slow
def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    from medmonai.handlers.checkpoint import lock_output_dir, release_output_dir

    folder = tmp_path / "runs"
    holder = _hold_lock(folder)
    with pytest.raises(OutputDirLockedError):
        lock_output_dir(folder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    assert (folder / LOCK_FILE).is_file()  # the file stays, the lock does not
    assert lock_output_dir(folder) == str(folder)
    assert lock_output_dir(folder) == str(folder)  # again in the same process: fine
    assert release_output_dir(folder)
