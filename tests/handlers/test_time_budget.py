"""TimeBudget per epoch: every epoch that runs completes (and is validated); it stops when the next would not fit."""

from __future__ import annotations

import time

import pytest
from ignite.engine import Engine, Events

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
