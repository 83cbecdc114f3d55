"""Stop training when a wall-clock budget is spent (e.g. "60 minutes of 2-core CPU training")."""

from __future__ import annotations

import logging
import time

from ignite.engine import Engine, Events

__all__ = ["TimeBudget"]

logger = logging.getLogger(__name__)


class TimeBudget:
    """Terminate the trainer after ``minutes`` of training; None: no limit.

    Termination ends the run like early stopping does (ignite fires ``COMPLETED``), so
    :class:`~medmonai.handlers.checkpoint.RestoreBestWeights` still loads the best validated weights. The clock starts
    when the run starts (a resumed run gets a new budget). In multi-process (DDP) training each rank's clock would stop
    it at a different iteration; attach :class:`~medmonai.handlers.distributed.BroadcastTerminate` after this handler
    (the bundles' ``multi_gpu_train.yaml`` do) so that every rank stops where rank 0 stops.

    Two granularities:

    * ``per="iteration"`` (segmentation, long epochs): checked after every iteration, stops as soon as the budget is
      spent;
    * ``per="epoch"`` (classification, short epochs): checked after every epoch (attach it after the
      ``ValidationHandler``, so the epoch's validation has run), stops when the *next* epoch would not fit (the mean
      epoch time so far is the forecast). Every epoch that runs is validated, and at least one epoch always runs.

    Args:
        minutes: the budget in minutes, or None.
        per: ``"iteration"`` or ``"epoch"``.
    """

    def __init__(self, minutes: float | None = None, per: str = "iteration") -> None:
        if minutes is not None and minutes <= 0:
            raise ValueError(f"minutes must be positive or None, got {minutes}")
        if per not in ("iteration", "epoch"):
            raise ValueError(f"per must be 'iteration' or 'epoch', got {per!r}")
        self.minutes = minutes
        self.per = per
        self.start: float | None = None
        self.first_epoch = 0
        self.stopped_at_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        """Start the clock at ``STARTED``, check it at every ``ITERATION_COMPLETED`` (or ``EPOCH_COMPLETED``)."""
        if self.minutes is None:
            return
        engine.add_event_handler(Events.STARTED, self._start)
        event = Events.ITERATION_COMPLETED if self.per == "iteration" else Events.EPOCH_COMPLETED
        engine.add_event_handler(event, self._check)

    def _start(self, engine: Engine) -> None:
        self.start = time.perf_counter()
        self.first_epoch = int(engine.state.epoch)  # a resumed run starts after its restored epoch

    def _check(self, engine: Engine) -> None:
        if self.start is None or self.minutes is None:
            return
        elapsed = time.perf_counter() - self.start
        forecast = 0.0
        if self.per == "epoch":
            done = max(1, int(engine.state.epoch) - self.first_epoch)
            forecast = elapsed / done  # the next epoch, at the mean pace so far
        if elapsed + forecast >= self.minutes * 60.0:
            self.stopped_at_epoch = int(engine.state.epoch)
            what = "the next epoch would not fit" if self.per == "epoch" else "spent"
            logger.info(
                f"time budget of {self.minutes:g} min: {what} after {elapsed / 60:.1f} min; stopping in epoch "
                f"{engine.state.epoch}"
            )
            engine.terminate()
