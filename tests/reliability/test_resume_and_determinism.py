"""Crash safety and determinism of the 2D classification bundle on tiny phantoms.

- A training run killed with SIGKILL at a random point after its first checkpoint and started again resumes from the
  last complete checkpoint and ends with bit-identical weights and metrics to an uninterrupted run (CPU, same seed:
  the tolerance is zero).
- Two runs with the same seed and data give identical weights and identical evaluation reports.
- Every run writes provenance.json and resolved_config.json beside its results.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.reliability._bundle import (
    assert_same_tensors,
    command,
    load_state,
    make_phantoms,
    run_in_process,
)

EVAL = {"n_boot": 50}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return make_phantoms(tmp_path_factory.mktemp("phantoms2d"))


@pytest.fixture(scope="module")
def reference(phantoms, tmp_path_factory):
    """An uninterrupted run, then its evaluation."""
    root = tmp_path_factory.mktemp("reference")
    run_in_process(root, phantoms)
    run_in_process(root, phantoms, "evaluate", **EVAL)
    return root


def _final(root: Path) -> dict:
    ckpts = sorted((root / "runs" / "checkpoints").glob("checkpoint_epoch=*.pt"))
    assert len(ckpts) == 1, ckpts
    report = root / "runs" / "eval" / "report.json"
    return {
        "name": ckpts[0].name,
        "last": load_state(ckpts[0]),
        "best": load_state(root / "runs" / "checkpoints" / "model.pt"),
        "report": json.loads(report.read_text()) if report.is_file() else None,
        "provenance": json.loads((root / "runs" / "provenance.json").read_text()),
    }


def _assert_same_run(a: dict, b: dict) -> None:
    assert a["name"] == b["name"]
    assert_same_tensors(a["best"], b["best"], "model.pt")
    for key in ("network", "optimizer", "trainer"):
        assert_same_tensors(a["last"][key], b["last"][key], key)
    ts_a, ts_b = a["last"]["training_state"], b["last"]["training_state"]
    assert_same_tensors(ts_a["components"], ts_b["components"], "training_state.components")
    assert_same_tensors(ts_a["rng"], ts_b["rng"], "training_state.rng")
    assert ts_a["generators"], "the augmentation's random generators are saved"
    assert_same_tensors(ts_a["generators"], ts_b["generators"], "training_state.generators")
    assert a["provenance"]["training"]["validation"] == b["provenance"]["training"]["validation"]
    if a["report"] is not None and b["report"] is not None:  # identical weights give identical reports
        assert a["report"]["metrics"] == b["report"]["metrics"]
        assert a["report"]["threshold"] == b["report"]["threshold"]


def test_same_seed_same_data_gives_identical_results(reference, phantoms, tmp_path):
    run_in_process(tmp_path, phantoms)
    run_in_process(tmp_path, phantoms, "evaluate", **EVAL)
    a, b = _final(reference), _final(tmp_path)
    assert a["report"]["metrics"]["auc"]["value"] is not None
    _assert_same_run(a, b)


def test_every_run_writes_its_provenance_and_resolved_config(reference, phantoms):
    runs = reference / "runs"
    prov = json.loads((runs / "provenance.json").read_text())
    assert prov["datalist"]["path"] == phantoms and len(prov["datalist"]["sha256"]) == 64
    assert len(prov["data"]["data_sha1"]) == 40
    assert prov["data"]["data_sha1"] == json.loads((runs / "preflight_report.json").read_text())["data_sha1"]
    assert prov["fingerprint"]["plan"]["spatial_dims"] == 2
    assert prov["seed"] == 0 and prov["packages"]["torch"] and prov["packages"]["monai"]
    assert prov["split"]["counts"]["training"] > 0 and prov["split"]["counts"]["validation"] > 0
    assert prov["training"]["status"] == "completed" and prov["training"]["epochs"] >= 1
    cfg = json.loads((runs / "resolved_config.json").read_text())
    assert cfg["config"]["max_epochs"] == 5 and cfg["config"]["preflight"] == "error"
    assert cfg["resolved"]["datalist_file"] == phantoms
    assert cfg["resolved"]["spatial_size"] == [24, 24]
    assert "plan" in cfg["resolved"]
    text = (runs / "provenance.json").read_text() + (runs / "resolved_config.json").read_text()
    assert "Phantom^" not in text  # the phantom DICOM PatientName pattern: no patient names in the records


def _kill_after_first_checkpoint(root: Path, phantoms: str, rng: random.Random) -> tuple[int, str]:
    ckpt_dir = root / "runs" / "checkpoints"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(root / "killed_run.log", "w")
    proc = subprocess.Popen(command(root, phantoms), stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while not list(ckpt_dir.glob("checkpoint_epoch=*.pt")):
            if proc.poll() is not None:
                pytest.fail(f"the run ended before its first checkpoint:\n{(root / 'killed_run.log').read_text()}")
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))  # a random point after the first checkpoint (an epoch: ~0.2-2 s)
        when = ",".join(sorted(p.name for p in ckpt_dir.glob("*.pt")))
        proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=60), when
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


@pytest.mark.slow
def test_sigkill_at_a_random_point_then_rerun_ends_like_an_uninterrupted_run(reference, phantoms, tmp_path):
    seed = int(os.environ.get("MEDMONAI_KILL_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    root = tmp_path
    rc, when = _kill_after_first_checkpoint(root, phantoms, rng)
    ckpt_dir = root / "runs" / "checkpoints"
    # killed: whatever was being written, every file left is complete (written atomically)
    for p in ckpt_dir.glob("*.pt"):
        load_state(p)
    for p in (root / "runs").glob("*.json"):
        json.loads(p.read_text())
    stopped_at = sorted(ckpt_dir.glob("checkpoint_epoch=*.pt"))
    print(f"MEDMONAI_KILL_SEED={seed}: exit status {rc}, checkpoints when killed: {when}")
    # run the same training again (here in this process: the same as the command line): it resumes and completes
    run_in_process(root, phantoms)
    assert not list(ckpt_dir.glob(".*.tmp*")), "temporary files left behind"
    prov = json.loads((root / "runs" / "provenance.json").read_text())
    if rc == -signal.SIGKILL:
        assert prov["training"]["resumed_from"] is not None, (seed, when)
        assert Path(prov["training"]["resumed_from"]).name in {p.name for p in stopped_at}
    else:  # the run finished before the kill landed: the rerun loads the final checkpoint and trains no further
        assert rc == 0, (seed, rc)
    _assert_same_run(_final(reference), _final(root))
