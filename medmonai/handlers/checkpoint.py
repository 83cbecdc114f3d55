"""Checkpoint handlers: resume from the last complete checkpoint, restore the best weights after training."""

from __future__ import annotations

import copy
import glob
import logging
import os
import re
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers import CheckpointLoader

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["latest_checkpoint", "ResumableCheckpoint", "EarlyStopOnValidation", "RestoreBestWeights"]

logger = logging.getLogger(__name__)


def latest_checkpoint(ckpt_dir: str, pattern: str = "checkpoint_epoch=*.pt") -> str | None:
    """The checkpoint with the highest epoch number in ``ckpt_dir`` matching ``pattern`` (None if there is none).

    MONAI's ``CheckpointSaver`` writes ``checkpoint_epoch=N.pt`` through ignite's atomic ``DiskSaver`` (temporary file
    + rename), so any file found here is complete.
    """
    best: tuple[int, str] | None = None
    for path in glob.glob(os.path.join(ckpt_dir, pattern)):
        m = re.search(r"(\d+)\.pt$", path)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), path)
    return best[1] if best else None


class ResumableCheckpoint:
    """Save a complete checkpoint after every epoch and resume from the newest one: attach to the *trainer*.

    Saving uses MONAI's :class:`~monai.handlers.CheckpointSaver` (``checkpoint_epoch=N.pt``, ignite's atomic disk
    writes, keeping the ``n_saved`` newest); loading uses MONAI's :class:`~monai.handlers.CheckpointLoader`
    (``torch.load(weights_only=True)``). The trainer itself is added to the saved/loaded objects at ``attach`` time,
    so a config does not need to reference the trainer from its own handler list (which would be circular).
    Under ``torch.distributed`` every rank resumes and only rank 0 saves.

    Args:
        ckpt_dir: checkpoint folder.
        save_dict: objects to save/restore besides the trainer (network, optimizer, lr scheduler...).
        resume: load the newest checkpoint of ``ckpt_dir`` when one exists.
        n_saved: number of per-epoch checkpoints kept.
        map_location: device mapping for loading.
    """

    def __init__(
        self,
        ckpt_dir: str,
        save_dict: dict[str, Any],
        resume: bool = True,
        n_saved: int = 1,
        map_location: Any = "cpu",
    ) -> None:
        self.ckpt_dir = ckpt_dir
        self.save_dict = dict(save_dict)
        self.resume = resume
        self.n_saved = n_saved
        self.map_location = map_location
        self.loaded_from: str | None = None

    def attach(self, engine: Engine) -> None:
        """Register the per-epoch saver and, when resuming, the loader (runs at ``STARTED``)."""
        from monai.handlers import CheckpointSaver

        objects = {**self.save_dict, "trainer": engine}
        if self.resume:
            path = latest_checkpoint(self.ckpt_dir)
            if path is None:
                logger.info(f"no checkpoint in {self.ckpt_dir}: training from the start")
            else:
                logger.info(f"resuming from {path}")
                self.loaded_from = path
                CheckpointLoader(load_path=path, load_dict=objects, map_location=self.map_location).attach(engine)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
            return  # every rank resumes; only rank 0 writes
        from ignite.engine import Events

        CheckpointSaver(
            save_dir=self.ckpt_dir, save_dict=objects, save_interval=1, n_saved=self.n_saved, epoch_level=True
        ).attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._prune)

    def _prune(self, _: Engine) -> None:
        """Remove per-epoch checkpoints older than the ``n_saved`` newest (e.g. left by an earlier, resumed run)."""
        found = []
        for path in glob.glob(os.path.join(self.ckpt_dir, "checkpoint_epoch=*.pt")):
            m = re.search(r"(\d+)\.pt$", path)
            if m:
                found.append((int(m.group(1)), path))
        for _, path in sorted(found)[: -self.n_saved]:
            os.remove(path)


class EarlyStopOnValidation:
    """Early stopping on a validation metric: attach to the *trainer*, give it the evaluator.

    Wraps MONAI's :class:`~monai.handlers.EarlyStopHandler` (patience, min delta) on ``evaluator.state.metrics[
    metric]`` (higher is better; pass ``mode="min"`` for losses), wiring trainer and evaluator without a circular
    config reference.

    Args:
        evaluator: the validation evaluator (run by a ``ValidationHandler`` on the trainer).
        metric: name of the evaluator metric to watch (e.g. the key validation metric ``val_auc``).
        patience: number of validations without improvement before stopping.
        min_delta: minimum improvement that counts.
        mode: ``"max"`` or ``"min"``.
    """

    def __init__(
        self, evaluator: Engine, metric: str, patience: int = 10, min_delta: float = 0.0, mode: str = "max"
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.evaluator = evaluator
        self.metric = metric
        self.patience = patience
        self.min_delta = min_delta
        self.sign = 1.0 if mode == "max" else -1.0

    def score(self, engine: Engine) -> float:
        """The watched metric of the last validation (sign-adjusted so that higher is better)."""
        if self.metric not in engine.state.metrics:
            raise KeyError(f"early stopping: no metric {self.metric!r} (have {sorted(engine.state.metrics)})")
        return self.sign * float(engine.state.metrics[self.metric])

    def attach(self, engine: Engine) -> None:
        """Stop ``engine`` (the trainer) when the evaluator's metric stops improving."""
        from monai.handlers import EarlyStopHandler

        EarlyStopHandler(
            patience=self.patience,
            score_function=self.score,
            trainer=engine,
            min_delta=self.min_delta,
            epoch_level=True,
        ).attach(self.evaluator)


class RestoreBestWeights:
    """Keep the network weights of the best validation epoch and load them back when training ends.

    Attach to the *trainer*, giving it the evaluator: after each validation it checks whether the evaluator's key
    metric improved (MONAI evaluators track ``state.best_metric`` / ``best_metric_epoch``) and, if so, snapshots the
    weights (on CPU). When the trainer completes (also after an early stop), the best weights are loaded back, so what
    follows (evaluation, export) uses the model selected on validation data, not the last epoch's.

    Args:
        network: the trained network (the object the trainer optimises; DDP wrappers are unwrapped).
        evaluator: the validation evaluator.
    """

    def __init__(self, network: torch.nn.Module, evaluator: Engine) -> None:
        self.network = network
        self.evaluator = evaluator
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: int = -1
        self.best_metric: float | None = None

    def attach(self, engine: Engine) -> None:
        """Snapshot after improved validations; restore when ``engine`` (the trainer) completes."""
        from ignite.engine import Events

        self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._maybe_snapshot)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.restore())

    def _net(self) -> torch.nn.Module:
        return self.network.module if hasattr(self.network, "module") else self.network

    def _maybe_snapshot(self, evaluator: Engine) -> None:
        best = getattr(evaluator.state, "best_metric", None)
        epoch = int(getattr(evaluator.state, "best_metric_epoch", -1))
        if best is None or epoch < 0 or epoch == self.best_epoch:
            return
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self._net().state_dict().items()}
        self.best_epoch = epoch
        self.best_metric = float(best)

    def restore(self) -> bool:
        """Load the best snapshot into the network; returns False when there is none (no validation ran)."""
        if self.best_state is None:
            logger.warning("RestoreBestWeights: no validation result recorded, keeping the last weights")
            return False
        self._net().load_state_dict(copy.deepcopy(self.best_state))
        logger.info(f"restored the best weights (epoch {self.best_epoch}, metric {self.best_metric:.4f})")
        return True
