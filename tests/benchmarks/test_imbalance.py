"""The imbalance benchmark's helpers: the minority subsampling and the GAN-time bookkeeping (no training here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.imbalance import gan_minutes, minority_datalist


def _write_datalist(tmp_path):
    entries = [{"image": f"img{i}.png", "label": int(i % 4 == 0)} for i in range(40)]  # 10 of class 1
    base = tmp_path / "datalist.json"
    base.write_text(
        json.dumps(
            {
                "classes": ["common", "rare"],
                "training": entries,
                "validation": [{"image": "v0.png", "label": 1}, {"image": "v1.png", "label": 0}],
                "test": [{"image": "t0.png", "label": 0}, {"image": "t1.png", "label": 1}],
            }
        )
    )
    return base


def test_minority_datalist_keeps_majority_and_n_seeded_minority(tmp_path):
    base = _write_datalist(tmp_path)
    path, counts = minority_datalist(base, 3, seed=0, minority=1)
    out = json.loads(path.read_text())
    labels = np.asarray([e["label"] for e in out["training"]])
    assert counts == {"common": 30, "rare": 3} and (labels == 1).sum() == 3 and (labels == 0).sum() == 30
    assert [e["image"] for e in out["test"]] == ["t0.png", "t1.png"]  # evaluation splits untouched
    again, _ = minority_datalist(base, 3, seed=0, minority=1)
    assert json.loads(again.read_text())["training"] == out["training"]  # same seed, same images
    other, _ = minority_datalist(base, 3, seed=1, minority=1)
    assert json.loads(other.read_text())["training"] != out["training"]
    _, all_counts = minority_datalist(base, None, seed=0, minority=1)
    assert all_counts == {"common": 30, "rare": 10}
    with pytest.raises(ValueError, match="11 minority images asked"):
        minority_datalist(base, 11, seed=0, minority=1)


def test_gan_minutes_sums_the_event_spans_of_each_trainer_process(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    tb = tmp_path / "gan" / "runs" / "tensorboard"
    assert gan_minutes(tmp_path / "gan") is None
    tb.mkdir(parents=True)
    # an interrupted run and its resumption: two trainer processes (pids 111 and 222), the first with two writers
    for pid, start, length, tags in ((111, 1000.0, 120.0, ("g_loss", "samples")), (222, 5000.0, 60.0, ("g_loss",))):
        for tag in tags:
            scratch = tmp_path / f"w{pid}{tag}"
            with SummaryWriter(str(scratch)) as w:
                for k, t in enumerate(np.linspace(start, start + length, 5)):
                    w.add_scalar(tag, 1.0 / (k + 1), k, walltime=float(t))
            (f,) = scratch.glob("events.out.tfevents.*")
            parts = f.name.split(".")
            parts[3], parts[-2] = str(int(start)), str(pid)
            f.rename(tb / ".".join(parts))
    assert len(list(tb.iterdir())) == 3
    assert gan_minutes(tmp_path / "gan") == pytest.approx(3.0)


def test_previous_cells_reuses_only_complete_cells_run_with_the_same_settings(tmp_path):
    from benchmarks.imbalance import REUSE_SETTINGS, previous_cells

    settings = {k: 1 for k in REUSE_SETTINGS} | {"seeds": "0,1"}  # seeds may differ between runs
    runs = [{"arm": a, "n_minority": n, "seed": s} for n in (10, "all") for s in (0, 1) for a in ("real", "gan")]
    runs = [r for r in runs if not (r["n_minority"] == 10 and r["seed"] == 1 and r["arm"] == "gan")]  # incomplete
    out = tmp_path / "result.json"
    out.write_text(json.dumps({"dataset": "toy", "minority_class": 0, "settings": settings, "runs": runs}))
    cells = previous_cells(out, "toy", 0, settings | {"seeds": "2"}, ["real", "gan"])
    assert sorted(cells) == [("10", 0), ("all", 0), ("all", 1)]
    assert [r["arm"] for r in cells[("all", 1)]] == ["real", "gan"]
    assert previous_cells(out, "toy", 0, settings, ["real", "gan", "weighted"]) == {}  # an arm never run
    assert previous_cells(out, "toy", 0, settings | {"max_epochs": 2}, ["real"]) == {}  # other settings
    assert previous_cells(out, "other", 0, settings, ["real"]) == {}
    assert previous_cells(out, "toy", 1, settings, ["real"]) == {}
    assert previous_cells(tmp_path / "absent.json", "toy", 0, settings, ["real"]) == {}


def test_missing_merge_json_is_a_clear_error(tmp_path, capsys):
    from benchmarks.imbalance import main

    with pytest.raises(SystemExit):
        main(["--datalist", str(_write_datalist(tmp_path)), "--merge", str(tmp_path / "gone.json")])
    err = capsys.readouterr().err
    assert "no such result JSON" in err and "gone.json" in err
