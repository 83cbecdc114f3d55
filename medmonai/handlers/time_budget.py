"""Stop training when a wall-clock budget is spent (e.g. "60 minutes of 2-core CPU training")."""

from __future__ import annotations

import logging
import math
import time

import torch
from ignite.engine import Engine, Events
from torch.optim.lr_scheduler import PolynomialLR

from medmonai.handlers.distributed import _flag_device, is_distributed

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

    The learning-rate schedule can follow the budget (``lr_scheduler``): a polynomial decay planned over
    ``max_epochs`` would otherwise barely decay in a run that the budget stops after a fraction of them (nnU-Net's
    poly schedule ends at zero at the last epoch that runs). After every epoch the handler forecasts, at the mean epoch
    time so far (validation included), how many epochs the rest of the budget buys and sets the scheduler's
    ``total_iters`` to the last of them (never above the planned value, never below the next epoch). Torch's
    :class:`~torch.optim.lr_scheduler.PolynomialLR` is chainable: after such a change the rate decays polynomially
    from its current value to zero at the new end, with no jump. The scheduler must be stepped once per epoch (MONAI's
    ``LrScheduleHandler`` with ``epoch_level=True``, the default). Under torchrun rank 0's forecast is broadcast, so
    that every rank uses the same rate.

    Args:
        minutes: the budget in minutes, or None.
        per: ``"iteration"`` or ``"epoch"``.
        lr_scheduler: a :class:`~torch.optim.lr_scheduler.PolynomialLR` stepped per epoch whose end is fitted to the
            budget; None leaves the schedule alone.
    """

    def __init__(
        self, minutes: float | None = None, per: str = "iteration", lr_scheduler: PolynomialLR | None = None
    ) -> None:
        if minutes is not None and minutes <= 0:
            raise ValueError(f"minutes must be positive or None, got {minutes}")
        if per not in ("iteration", "epoch"):
            raise ValueError(f"per must be 'iteration' or 'epoch', got {per!r}")
        if lr_scheduler is not None and not isinstance(lr_scheduler, PolynomialLR):
            raise TypeError(
                "lr_scheduler: only torch.optim.lr_scheduler.PolynomialLR can be fitted to a time budget (its decay "
                f"is chainable), got {type(lr_scheduler).__name__}; pass lr_scheduler=None to leave it alone"
            )
        self.minutes = minutes
        self.per = per
        self.lr_scheduler = lr_scheduler
        self.planned_total: int | None = None
        self.start: float | None = None
        self.first_epoch = 0
        self.stopped_at_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        """Start the clock at ``STARTED``, check it at every ``ITERATION_COMPLETED`` (or ``EPOCH_COMPLETED``).

        With ``lr_scheduler``, the schedule's end is also refitted at every ``EPOCH_COMPLETED``.
        """
        if self.minutes is None:
            return
        engine.add_event_handler(Events.STARTED, self._start)
        event = Events.ITERATION_COMPLETED if self.per == "iteration" else Events.EPOCH_COMPLETED
        engine.add_event_handler(event, self._check)
        if self.lr_scheduler is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._fit_schedule)

    def _fit_schedule(self, engine: Engine) -> None:
        """Set ``total_iters`` to the last epoch that the rest of the budget buys at the mean epoch time so far."""
        # no early return on engine.should_terminate: under torchrun a rank may see it before BroadcastTerminate
        # has synchronised it, and every rank must take part in the broadcast below
        if self.start is None or self.minutes is None or self.lr_scheduler is None:
            return
        if self.planned_total is None:
            self.planned_total = int(self.lr_scheduler.total_iters)
        epoch = int(engine.state.epoch)
        elapsed = time.perf_counter() - self.start
        mean = elapsed / max(1, epoch - self.first_epoch)
        remaining = max(0.0, self.minutes * 60.0 - elapsed)
        # per epoch: only whole epochs that fit run; per iteration: the last one is cut short, and still trains
        more = math.floor(remaining / mean) if self.per == "epoch" else math.ceil(remaining / mean)
        total = min(self.planned_total, max(epoch + 1, epoch + more))
        total = _from_rank0(total)
        if total != self.lr_scheduler.total_iters:
            self.lr_scheduler.total_iters = total
            logger.debug(f"time budget: learning-rate schedule now ends after epoch {total}")

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


def _from_rank0(value: int) -> int:
    """Rank 0's ``value`` on every rank under torchrun; ``value`` itself in a single process."""
    if not is_distributed():
        return value
    flag = torch.tensor([value], dtype=torch.int64, device=_flag_device())
    torch.distributed.broadcast(flag, src=0)
    return int(flag.item())
