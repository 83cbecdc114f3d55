"""One console line per training epoch: train loss, validation metrics, best so far, time.

MONAI's ``StatsHandler`` on a trainer and its evaluator, with ignite's engine messages, print about ten lines per
epoch; the bundles print this one line instead (the bundles' ``logging.conf`` keeps ignite's engine loggers at
WARNING) and keep the details in TensorBoard (and MLflow when tracked).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["EpochStatsHandler", "epoch_line"]


def _loss_of(output: Any) -> float | None:
    """The loss of one trainer iteration's output (a dict, or a list of per-sample dicts, with ``loss``)."""
    if isinstance(output, (list, tuple)) and output:
        output = output[0]
    if isinstance(output, dict) and "loss" in output:
        value = output["loss"]
        return float(value.item() if hasattr(value, "item") else value)
    return None


def epoch_line(
    epoch: int,
    max_epochs: int,
    loss: float | None,
    metrics: dict[str, Any] | None,
    best: tuple[str, float, int] | None,
    seconds: float,
) -> str:
    """The text of one epoch line, e.g. ``epoch 3/50: train loss 0.4123 | val_auc 0.9100 ... | best ... | 2.1 s``.

    Args:
        epoch: the finished epoch (1-based).
        max_epochs: the planned number of epochs.
        loss: mean training loss of the epoch, or ``None`` when the trainer gave none.
        metrics: the evaluator's metrics when validation ran this epoch, else ``None``.
        best: ``(key metric name, best value, epoch of the best)`` when known.
        seconds: wall time of the epoch, validation included.
    """
    parts = [f"epoch {epoch}/{max_epochs}: train loss " + ("n/a" if loss is None else f"{loss:.4f}")]
    if metrics:
        shown = []
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                shown.append(f"{name} {value:.4f}")
        parts.append(" ".join(shown) if shown else "validated")
    else:
        parts.append("no validation this epoch")
    if best is not None and best[2] > 0 and not math.isnan(float(best[1])):
        parts.append(f"best {best[0]} {best[1]:.4f} (epoch {best[2]})")
    parts.append(f"{seconds:.1f} s")
    return " | ".join(parts)


class EpochStatsHandler:
    """Logs :func:`epoch_line` once per trainer epoch, after the validation of that epoch.

    Attach it to the trainer after the ``ValidationHandler`` (its place in the bundle's handler list), so the epoch's
    validation metrics are there.

    Args:
        evaluator: the validation evaluator (``None``: training loss only).
        name: logger name.
        loss_transform: maps one iteration's ``engine.state.output`` to its loss (default: the ``loss`` entry).
    """

    def __init__(
        self,
        evaluator: Engine | None = None,
        name: str = "medmonai.train",
        loss_transform: Callable[[Any], float | None] = _loss_of,
    ) -> None:
        self.evaluator = evaluator
        self.logger = logging.getLogger(name)
        self.loss_transform = loss_transform
        self._losses: list[float] = []
        self._t0 = time.perf_counter()

    def attach(self, engine: Engine) -> None:
        """Register the epoch start, iteration and epoch end events on the trainer ``engine``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _start(self, engine: Engine) -> None:
        self._losses = []
        self._t0 = time.perf_counter()

    def _iteration(self, engine: Engine) -> None:
        loss = self.loss_transform(engine.state.output)
        if loss is not None and math.isfinite(loss):
            self._losses.append(loss)

    def __call__(self, engine: Engine) -> None:
        """Log the line of the epoch that just finished."""
        epoch = engine.state.epoch
        loss = sum(self._losses) / len(self._losses) if self._losses else None
        metrics, best = None, None
        ev = self.evaluator
        if ev is not None and getattr(ev, "state", None) is not None:
            if ev.state.epoch == epoch and ev.state.metrics:
                metrics = dict(ev.state.metrics)
            key = getattr(ev.state, "key_metric_name", None)
            if key is not None:
                best = (str(key), float(ev.state.best_metric), int(ev.state.best_metric_epoch))
        max_epochs = engine.state.max_epochs or epoch
        self.logger.info(epoch_line(epoch, max_epochs, loss, metrics, best, time.perf_counter() - self._t0))
