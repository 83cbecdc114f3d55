"""The inference latency benchmark in --quick mode: every bundle and runtime timed, JSON written where asked."""

from __future__ import annotations

import json

import onnxruntime  # noqa: F401 - the onnx extra (in dev): a broken install fails here
import onnxscript  # noqa: F401
import pytest

from benchmarks.inference import BUNDLES, RUNTIMES, main


@pytest.mark.slow
def test_quick_benchmark_times_every_bundle_and_runtime(tmp_path, capsys):
    out = tmp_path / "inference.json"
    assert main(["--quick", "--threads", "1", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["quick"] and result["threads"] == 1 and result["repeats"] == 3
    assert {(r["bundle"], r["runtime"]) for r in result["rows"]} == {(b, r) for b in BUNDLES for r in RUNTIMES}
    for r in result["rows"]:
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["max_abs_diff_vs_torch"] < 1e-3  # the three runtimes compute the same network
        assert r["per"] == ("2D image" if r["spatial_dims"] == 2 else "3D volume")
        assert len(r["input_shape"]) == 2 + r["spatial_dims"]
    assert "| onnxruntime |" in capsys.readouterr().out
