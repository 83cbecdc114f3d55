"""The budget-aware network plan: the width rule, its cache, the probe, and the budget it leaves for training."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from medmonai.engines import budget_plan
from medmonai.engines.budget_plan import ensure_network_plan, plan_width, probe_step_seconds, training_minutes
from medmonai.networks.segmentation import build_segmentation_network

# a step time that grows with the width: 8 -> 0.2 s, 16 -> 0.8 s, 32 -> 3.2 s
QUADRATIC = {8: 0.2, 16: 0.8, 32: 3.2}


def test_the_widest_width_that_gets_enough_steps_is_chosen():
    # 60 min: 16 filters get 4500 steps, 32 filters 1125; 15 min: 32 filters get 281, too few
    assert plan_width(60, [8, 16, 32], QUADRATIC.__getitem__, min_iterations=1000)["base_filters"] == 32
    plan = plan_width(15, [32, 8, 16], QUADRATIC.__getitem__, min_iterations=1000)
    assert plan["base_filters"] == 16
    assert plan["iterations"] == {"8": 4500, "16": 1125, "32": 281}
    assert "widest" in plan["reasons"][0] and "15 min" in plan["reasons"][0]


def test_the_narrowest_width_when_none_gets_enough_steps_and_wider_ones_are_not_timed():
    timed = []

    def seconds(width):
        timed.append(width)
        return QUADRATIC[width]

    plan = plan_width(1, [8, 16, 32], seconds, min_iterations=1000)  # 8 filters: 300 steps
    assert plan["base_filters"] == 8 and "narrowest" in plan["reasons"][0]
    assert timed == [8]  # a wider network is not faster: the search stops at the first width that falls short


def test_no_budget_gives_the_default_width_without_a_probe(tmp_path, monkeypatch):
    monkeypatch.setattr(budget_plan, "probe_step_seconds", _no_probe)
    plan = ensure_network_plan(tmp_path / "np.json", time_budget_min=None, patch_size=[16, 16, 16])
    assert plan["base_filters"] == 16 and "no time budget" in plan["reasons"][0]
    assert json.loads((tmp_path / "np.json").read_text()) == plan
    assert training_minutes(None, plan) is None


def test_a_width_set_in_the_config_is_used_as_set(tmp_path, monkeypatch):
    monkeypatch.setattr(budget_plan, "probe_step_seconds", _no_probe)
    plan = ensure_network_plan(tmp_path / "np.json", time_budget_min=30, base_filters=4, patch_size=[16, 16, 16])
    assert plan["base_filters"] == 4 and "set in the config" in plan["reasons"][0]
    assert training_minutes(30, plan) == 30


def test_a_budget_probes_the_widths_once_and_later_runs_read_the_cache(tmp_path, monkeypatch, caplog):
    calls = []

    def fake_probe(net, batch_size, in_channels, out_channels, patch_size, **kw):
        width = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d)).out_channels
        calls.append((width, batch_size, tuple(patch_size)))
        return QUADRATIC[width]

    monkeypatch.setattr(budget_plan, "probe_step_seconds", fake_probe)
    kw = {"patch_size": [16] * 3, "spacing": [1.0] * 3, "batch_size": 8, "out_channels": 3, "min_iterations": 1000}
    out = tmp_path / "np.json"
    plan = ensure_network_plan(out, time_budget_min=15, **kw)
    # the default width and twice it are timed (never narrower); 32 filters get 281 steps in 15 minutes
    assert plan["base_filters"] == 16 and plan["min_iterations"] == 1000
    assert [c[0] for c in calls] == [16, 32] and {c[1:] for c in calls} == {(8, (16, 16, 16))}
    assert plan["step_seconds"] == {"16": 0.8, "32": 3.2} and plan["probe_seconds"] >= 0
    # the probe's time is taken off the training budget of this run
    assert training_minutes(15, plan) == pytest.approx(15 - plan["probe_seconds"] / 60, abs=1e-3)
    # a resumed / evaluated run (any budget, or none) builds the network the folder was planned with
    calls.clear()
    with caplog.at_level(logging.INFO, logger="medmonai.engines.budget_plan"):
        assert ensure_network_plan(out, time_budget_min=60, **kw) == plan
    assert "is kept" in caplog.text
    assert ensure_network_plan(out, time_budget_min=None, **kw) == plan and calls == []


def test_planning_leaves_the_seeded_random_state_as_it_was(tmp_path, monkeypatch):
    # the candidate networks are really built (their initialisation draws random numbers); only the timing is faked
    monkeypatch.setattr(budget_plan, "probe_step_seconds", lambda net, *a, **k: 0.1)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    plan = ensure_network_plan(tmp_path / "p.json", time_budget_min=60, patch_size=[16] * 3, default_base_filters=4)
    assert plan["base_filters"] == 8 and set(plan["step_seconds"]) == {"4", "8"}
    assert torch.equal(torch.rand(3), expected)


def test_a_set_width_other_than_the_folders_plan_is_used_but_does_not_change_the_file(tmp_path, caplog):
    out = tmp_path / "np.json"
    ensure_network_plan(out, base_filters=4)
    with caplog.at_level(logging.WARNING, logger="medmonai.engines.budget_plan"):
        assert ensure_network_plan(out, base_filters=8)["base_filters"] == 8
    assert "planned with base_filters 4" in caplog.text
    assert json.loads(out.read_text())["base_filters"] == 4
    assert ensure_network_plan(out)["base_filters"] == 4


def test_a_broken_plan_file_is_named(tmp_path):
    bad = tmp_path / "np.json"
    bad.write_text('{"reasons": []}')
    with pytest.raises(ValueError, match="np.json: not a network plan"):
        ensure_network_plan(bad, time_budget_min=15)


def test_the_probe_times_a_real_step_and_leaves_the_random_generators_alone():
    net = build_segmentation_network("dynunet", 3, 1, 2, patch_size=[16, 16, 16], base_filters=4)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    seconds = probe_step_seconds(net, 2, 1, 2, [16, 16, 16], precision="fp32", probe_steps=1)
    assert seconds > 0
    assert torch.equal(torch.rand(3), expected)


def _no_probe(*args, **kwargs):
    raise AssertionError("no probe expected")
