"""Stop training when a wall-clock budget is spent (e.g. "60 minutes of 2-core CPU training")."""

from __future__ import annotations

import logging
import time

from ignite.engine import Engine, Events

__all__ = ["TimeBudget"]

logger = logging.getLogger(__name__)


class TimeBudget:
    """Terminate the trainer after ``minutes`` of training (checked after every iteration); None: no limit.

    Termination ends the run like early stopping does (ignite fires ``COMPLETED``), so
    :class:`~medmonai.handlers.checkpoint.RestoreBestWeights` still loads the best validated weights. The clock starts
    when the run starts (a resumed run gets a new budget). In multi-process (DDP) training each rank's clock would stop
    it at a different iteration; attach :class:`~medmonai.handlers.distributed.BroadcastTerminate` after this handler
    (the bundles' ``multi_gpu_train.yaml`` do) so that every rank stops where rank 0 stops.

    Args:
        minutes: the budget in minutes, or None.
    """

    def __init__(self, minutes: float | None = None) -> None:
        if minutes is not None and minutes <= 0:
            raise ValueError(f"minutes must be positive or None, got {minutes}")
        self.minutes = minutes
        self.start: float | None = None
        self.stopped_at_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        """Start the clock at ``STARTED``, check it at every ``ITERATION_COMPLETED``."""
        if self.minutes is None:
            return
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check)

    def _start(self, _: Engine) -> None:
        self.start = time.perf_counter()

    def _check(self, engine: Engine) -> None:
        if self.start is None or self.minutes is None:
            return
        if time.perf_counter() - self.start >= self.minutes * 60.0:
            self.stopped_at_epoch = int(engine.state.epoch)
            logger.info(f"time budget of {self.minutes:g} min spent: stopping in epoch {engine.state.epoch}")
            engine.terminate()
