"""TimeBudget per epoch: every epoch that runs completes (and is validated); it stops when the next would not fit."""

from __future__ import annotations

import time

import pytest
import torch
from ignite.engine import Engine, Events
from torch.optim.lr_scheduler import PolynomialLR

from medmonai.handlers.time_budget import TimeBudget


def _sleeping_engine(seconds: float) -> Engine:
    return Engine(lambda e, b: time.sleep(seconds))


def test_epoch_budget_stops_between_epochs_when_the_next_would_not_fit():
    engine = _sleeping_engine(0.2)  # 0.4 s per epoch of 2 iterations
    validated = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validated.append(e.state.epoch))  # a "validation"
    budget = TimeBudget(minutes=1.4 / 60, per="epoch")  # 1.4 s: 3 epochs fit, a 4th would not
    budget.attach(engine)
    engine.run(range(2), max_epochs=20)
    assert engine.state.epoch == budget.stopped_at_epoch == 3
    assert engine.state.iteration == 6  # no epoch cut short
    assert validated == [1, 2, 3]


def test_epoch_budget_always_runs_one_epoch():
    engine = _sleeping_engine(0.01)
    budget = TimeBudget(minutes=1e-9, per="epoch")
    budget.attach(engine)
    engine.run(range(3), max_epochs=5)
    assert engine.state.epoch == 1 and engine.state.iteration == 3


def test_bad_granularity():
    with pytest.raises(ValueError, match="per must be"):
        TimeBudget(1.0, per="batch")


def _poly(total_iters: int) -> tuple[torch.optim.Optimizer, PolynomialLR]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return opt, PolynomialLR(opt, total_iters=total_iters, power=0.9)


def test_schedule_is_fitted_to_the_epochs_the_budget_buys():
    """0.2 s epochs, 1.1 s budget, 100 planned epochs: the decay ends where the budget stops, smoothly, not early."""
    opt, sched = _poly(100)
    engine = _sleeping_engine(0.1)  # 2 iterations: 0.2 s per epoch
    lrs = []
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: lrs.append(opt.param_groups[0]["lr"]))
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: (opt.step(), sched.step()))
    budget = TimeBudget(minutes=1.1 / 60, per="iteration", lr_scheduler=sched)
    budget.attach(engine)
    engine.run(range(2), max_epochs=100)
    assert budget.stopped_at_epoch == engine.state.epoch
    assert 5 <= engine.state.epoch <= 6  # the 6th epoch is cut short by the budget (the 5th ends it on a slow machine)
    # the decay was fitted to end where the budget stopped (one epoch later when a slow epoch overran the forecast)
    assert engine.state.epoch <= sched.total_iters <= engine.state.epoch + 1
    assert lrs[0] == 1.0 and all(a > b > 0 for a, b in zip(lrs, lrs[1:], strict=False))  # decreasing, still training
    assert lrs[-1] < 0.3  # the last epoch runs near the end of the decay (planned over 100 epochs it would be ~0.96)


def test_schedule_never_extends_past_the_plan_and_is_left_alone_without_a_budget():
    opt, sched = _poly(3)
    engine = _sleeping_engine(0.0)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: (opt.step(), sched.step()))
    TimeBudget(minutes=10.0, per="epoch", lr_scheduler=sched).attach(engine)  # a generous budget
    engine.run(range(2), max_epochs=3)
    assert sched.total_iters == 3 and opt.param_groups[0]["lr"] == 0.0  # the planned end, reached at the last epoch

    opt, sched = _poly(50)
    engine = _sleeping_engine(0.0)
    TimeBudget(minutes=None, lr_scheduler=sched).attach(engine)
    engine.run(range(2), max_epochs=2)
    assert sched.total_iters == 50


def test_only_polynomial_schedules_can_be_fitted():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(TypeError, match="PolynomialLR"):
        TimeBudget(1.0, lr_scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10))
