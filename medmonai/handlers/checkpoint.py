"""Checkpoint handlers: crash-safe resume, atomic checkpoint files, early stopping, best-weight restore.

A run killed at any point (SIGKILL, power loss, out-of-memory) and started again with the same command continues
from its last complete checkpoint and ends with the same result as an uninterrupted run: see
:class:`ResumableCheckpoint` and docs/reliability.md.
"""

from __future__ import annotations

import copy
import glob
import logging
import os
import random
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointSaver

from medmonai.utils import PathLike, atomic_torch_save, remove_stale_temp_files

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = [
    "latest_checkpoint",
    "CheckpointError",
    "AtomicDiskSaver",
    "AtomicCheckpointSaver",
    "TrainingState",
    "ResumableCheckpoint",
    "EarlyStopOnValidation",
    "RestoreBestWeights",
]

logger = logging.getLogger(__name__)

_CHECKPOINT_PATTERN = "checkpoint_epoch=*.pt"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used to resume; the message names the file and the reason."""


def latest_checkpoint(ckpt_dir: str, pattern: str = _CHECKPOINT_PATTERN) -> str | None:
    """The checkpoint with the highest epoch number in ``ckpt_dir`` matching ``pattern`` (None if there is none).

    :class:`ResumableCheckpoint` writes ``checkpoint_epoch=N.pt`` atomically (temporary file + rename, see
    :class:`AtomicDiskSaver`), so any file found here is complete.
    """
    best: tuple[int, str] | None = None
    for path in glob.glob(os.path.join(glob.escape(ckpt_dir), pattern)):
        m = re.search(r"(\d+)\.pt$", path)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), path)
    return best[1] if best else None


# ------------------------------------------------------------------------------------------------ atomic saving


class AtomicDiskSaver(BaseSaveHandler):
    """ignite save handler writing each checkpoint atomically (temporary file, ``fsync``, rename).

    ignite's :class:`~ignite.handlers.Checkpoint` removes the file it no longer keeps *before* writing the new one;
    this handler postpones that removal until the new file is complete, so a kill between the two never leaves the
    folder without a checkpoint. With a fixed ``filename`` (e.g. ``model.pt``) the new file simply replaces the old.

    Args:
        dirname: the folder (created when missing).
        filename: a fixed file name used instead of ignite's (MONAI's ``key_metric_filename``), or None.
        durable: ``fsync`` before the rename (survives a power loss, not only a killed process).
    """

    def __init__(self, dirname: PathLike, filename: str | None = None, durable: bool = True) -> None:
        self.dirname = Path(dirname)
        self.filename = filename
        self.durable = durable
        self._pending: list[str] = []

    def __call__(self, checkpoint: Any, filename: str, metadata: Any = None) -> None:
        """Write ``checkpoint`` to ``dirname/filename`` atomically, then remove the files released before."""
        name = self.filename or filename
        self.dirname.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(checkpoint, self.dirname / name, durable=self.durable)
        pending, self._pending = self._pending, []
        for old in pending:
            if old != name and (self.dirname / old).is_file():
                os.remove(self.dirname / old)

    def remove(self, filename: str) -> None:
        """Release ``filename``: it is deleted once the next checkpoint is complete."""
        name = self.filename or filename
        if name != self.filename:
            self._pending.append(name)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's :class:`~monai.handlers.CheckpointSaver` writing every file atomically (see :class:`AtomicDiskSaver`).

    MONAI's saver writes with ``torch.save`` straight into the final file, so a kill during the write leaves a
    truncated ``model.pt``; this one takes the same arguments and writes through a temporary file and a rename.
    """

    def __init__(self, *args: Any, durable: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:
                fixed = getattr(ckpt.save_handler, "filename", None)
                ckpt.save_handler = AtomicDiskSaver(self.save_dir, filename=fixed, durable=durable)


# ------------------------------------------------------------------------------------------- training state


def _handler_objects(engine: Engine) -> Iterator[Any]:
    """The objects behind the event handlers of ``engine`` (bound methods -> their instance), each once."""
    seen: set[int] = set()
    for handlers in getattr(engine, "_event_handlers", {}).values():
        for entry in handlers:
            fn = entry[0]
            while hasattr(fn, "__wrapped__"):  # event filters (every=N) wrap the handler
                fn = fn.__wrapped__
            obj = getattr(fn, "__self__", fn)
            if id(obj) not in seen:
                seen.add(id(obj))
                yield obj


def _evaluators(engine: Engine) -> list[Any]:
    """Evaluators run by the trainer's ``ValidationHandler`` s, in registration order."""
    from monai.handlers import ValidationHandler

    return [o.validator for o in _handler_objects(engine) if isinstance(o, ValidationHandler) and o.validator]


def _random_states(root: Any) -> list[tuple[str, Any]]:
    """``(path, object)`` of every random generator in a transform chain / sampler, in a stable traversal order.

    Follows MONAI transforms (``Compose`` and the transforms they hold, e.g. ``RandAffined.rand_affine``), lists,
    tuples and dicts; records ``numpy.random.RandomState`` (MONAI's ``Randomizable.R``) and ``torch.Generator``
    objects. Cached data (a ``CacheDataset``'s ``_cache``) is never visited.
    """
    from monai.transforms import Transform

    out: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def visit(obj: Any, path: str, depth: int) -> None:
        if depth > 12 or id(obj) in seen:
            return
        if isinstance(obj, np.random.RandomState | torch.Generator):
            seen.add(id(obj))
            out.append((path, obj))
            return
        if isinstance(obj, list | tuple):
            for i, v in enumerate(obj):
                visit(v, f"{path}.{i}", depth + 1)
            return
        if isinstance(obj, dict):
            for k in sorted(obj, key=str):
                visit(obj[k], f"{path}.{k}", depth + 1)
            return
        if isinstance(obj, Transform) or type(obj).__name__.endswith("Sampler"):
            seen.add(id(obj))
            for k in sorted(vars(obj)):
                if not k.startswith("__"):
                    visit(vars(obj)[k], f"{path}.{k}", depth + 1)

    visit(root, "", 0)
    return out


def _numpy_state(rs: np.random.RandomState) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = rs.get_state(legacy=True)
    keys = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    return {"name": name, "keys": keys, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(rs: np.random.RandomState, state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    rs.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]))


def _generator_state(g: Any) -> Any:
    return _numpy_state(g) if isinstance(g, np.random.RandomState) else g.get_state()


def _set_generator_state(g: Any, state: Any) -> None:
    if isinstance(g, np.random.RandomState):
        _set_numpy_state(g, state)
    else:
        g.set_state(state)


def _best_metric(evaluator: Engine) -> dict[str, Any]:
    return {
        "best_metric": _as_number(evaluator.state.best_metric),
        "best_metric_epoch": int(evaluator.state.best_metric_epoch),
    }


def _set_best_metric(evaluator: Engine, state: dict[str, Any]) -> None:
    evaluator.state.best_metric = state["best_metric"]
    evaluator.state.best_metric_epoch = state["best_metric_epoch"]


def _as_number(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _loadable(value: Any) -> Any:
    """``value`` with NumPy scalars/arrays turned into Python numbers/tensors (``torch.load(weights_only=True)``)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict):
        return {k: _loadable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_loadable(v) for v in value]
    if isinstance(value, tuple):  # named tuples (ignite's Checkpoint.Item) become plain tuples
        return tuple(_loadable(v) for v in value)
    return value


class TrainingState:
    """What a resumed run needs besides weights, optimizer and epoch counter to continue exactly where it stopped.

    An ignite-style stateful object (``state_dict`` / ``load_state_dict``) that :class:`ResumableCheckpoint` saves in
    every checkpoint under ``training_state``:

    - the global random generators (Python, NumPy, torch CPU and CUDA): data-loader shuffling, dropout;
    - the random generators of the training data's transforms (MONAI ``Randomizable.R``: augmentation draws) and of
      its sampler;
    - every evaluator run by a ``ValidationHandler``: its best key metric and epoch;
    - early stopping (counter, best score), :class:`RestoreBestWeights` (the best weights so far) and the best-model
      saver's record (so ``model.pt`` is only replaced by a better model after a resume), found among the handlers of
      the trainer and its evaluators;
    - whether the trainer was told to stop (early stopping): a resumed, early-stopped run trains no further.

    Everything is stored as tensors, numbers, strings and containers, so checkpoints load with
    ``torch.load(weights_only=True)``.

    Args:
        engine: the trainer.
    """

    VERSION = 1

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _components(self) -> dict[str, tuple[Any, Any]]:
        """Name -> (getter, setter) of the stateful parts found on the trainer and its evaluators."""
        from monai.handlers import EarlyStopHandler

        comps: dict[str, tuple[Any, Any]] = {}
        engines = [("trainer", self.engine)] + [(f"evaluator{i}", e) for i, e in enumerate(_evaluators(self.engine))]
        for name, eng in engines:
            if name != "trainer":
                comps[f"{name}/best_metric"] = (partial(_best_metric, eng), partial(_set_best_metric, eng))
            counts: dict[str, int] = {}
            for obj in _handler_objects(eng):
                kind = type(obj).__name__
                counts[kind] = counts.get(kind, 0) + 1
                key = f"{name}/{kind}{counts[kind] - 1}"  # e.g. evaluator0/EarlyStopHandler0
                if isinstance(obj, EarlyStopHandler) and obj._handler is not None:
                    comps[key] = (obj._handler.state_dict, obj._handler.load_state_dict)
                elif isinstance(obj, CheckpointSaver) and obj._key_metric_checkpoint is not None:
                    ck = obj._key_metric_checkpoint
                    comps[key] = (ck.state_dict, ck.load_state_dict)
                elif isinstance(obj, RestoreBestWeights):
                    comps[key] = (obj.state_dict, obj.load_state_dict)
        return comps

    def _generators(self) -> list[tuple[str, Any]]:
        loader = getattr(self.engine, "data_loader", None)
        roots = {}
        if loader is not None:
            roots["transform"] = getattr(getattr(loader, "dataset", None), "transform", None)
            roots["sampler"] = getattr(loader, "sampler", None)
            roots["batch_sampler"] = getattr(loader, "batch_sampler", None)
        return _random_states(roots)

    def state_dict(self) -> dict[str, Any]:
        """The current state (called when a checkpoint is written, after the epoch's validation)."""
        rng: dict[str, Any] = {
            "python": list(random.getstate()),
            "numpy": _numpy_state(np.random.mtrand._rand),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "version": self.VERSION,
            "rng": rng,
            "generators": {path: _generator_state(g) for path, g in self._generators()},
            "components": {k: _loadable(get()) for k, (get, _) in self._components().items()},
            "terminated": bool(self.engine.should_terminate),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict` (the trainer and its handlers must be attached)."""
        rng = state.get("rng", {})
        if "python" in rng:
            version, internal, gauss = rng["python"]
            random.setstate((version, tuple(internal), gauss))
        if "numpy" in rng:
            _set_numpy_state(np.random.mtrand._rand, rng["numpy"])
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        saved = state.get("generators", {})
        current = dict(self._generators())
        for path, g in current.items():
            if path in saved:
                _set_generator_state(g, saved[path])
        lost = sorted(set(saved) ^ set(current))
        if lost:
            logger.warning(f"resume: random generators that do not match the checkpoint (not restored): {lost}")
        comps = self._components()
        for key, value in state.get("components", {}).items():
            if key in comps:
                comps[key][1](value)
            else:
                logger.warning(f"resume: the checkpoint holds state for {key!r}, which this run does not have")
        if state.get("terminated"):
            logger.info("resume: the checkpointed run had stopped early; no further epochs are trained")
            self.engine.terminate()


# -------------------------------------------------------------------------------------------------- resuming


class ResumableCheckpoint:
    """Save a complete checkpoint after every epoch and resume from the newest one: attach to the *trainer*.

    Each ``checkpoint_epoch=N.pt`` holds the trainer's counters, the ``save_dict`` objects (network, optimizer,
    scheduler...) and a :class:`TrainingState` (random generators, early stopping, best weights and best metric), and
    is written atomically (:class:`AtomicDiskSaver`: temporary file, ``fsync``, rename; the older file is deleted only
    after the new one is complete) after every other end-of-epoch handler, i.e. after the epoch's validation. A run
    killed at any point and started again with the same command therefore resumes from the last complete epoch and,
    on CPU with a fixed seed, ends with the same weights and metrics as an uninterrupted run (docs/reliability.md).
    A run that had finished (``max_epochs`` reached or stopped early) is not trained further; the best weights are
    restored as at its end.

    Loading uses ``torch.load(weights_only=True)``; a checkpoint that cannot be read raises :class:`CheckpointError`
    naming the file. The trainer itself is added to the saved/loaded objects at ``attach`` time, so a config does not
    need to reference the trainer from its own handler list (which would be circular). Under ``torch.distributed``
    every rank resumes and only rank 0 saves.

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
        if "training_state" in save_dict or "trainer" in save_dict:
            raise ValueError("save_dict keys 'trainer' and 'training_state' are reserved by ResumableCheckpoint")
        self.ckpt_dir = ckpt_dir
        self.save_dict = dict(save_dict)
        self.resume = resume
        self.n_saved = n_saved
        self.map_location = map_location
        self.loaded_from: str | None = None
        self._objects: dict[str, Any] = {}
        self._started = False

    def attach(self, engine: Engine) -> None:
        """Resume (when asked) and register the per-epoch saver when ``engine`` (the trainer) starts.

        The saver is registered at ``STARTED``, after every handler attached when the engine was built, so each
        checkpoint is written after that epoch's validation, early-stopping and best-weight handlers have run.
        """
        from ignite.engine import Events

        self._objects = {**self.save_dict, "trainer": engine, "training_state": TrainingState(engine)}
        engine.add_event_handler(Events.STARTED, self._on_started)

    def _on_started(self, engine: Engine) -> None:
        if self._started:  # a second run() of the same engine: everything is in place
            return
        self._started = True
        if self.resume:
            path = latest_checkpoint(self.ckpt_dir)
            if path is None:
                logger.info(f"no checkpoint in {self.ckpt_dir}: training from the start")
            else:
                self.load(engine, path)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
            return  # every rank resumes; only rank 0 writes
        from ignite.engine import Events

        remove_stale_temp_files(self.ckpt_dir)  # left by a run killed while writing
        saver = AtomicCheckpointSaver(
            save_dir=self.ckpt_dir, save_dict=self._objects, save_interval=1, n_saved=self.n_saved, epoch_level=True
        )
        saver.attach(engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._prune)

    def load(self, engine: Engine, path: str) -> None:
        """Load checkpoint ``path`` into the trainer, the ``save_dict`` objects and the training state.

        Raises:
            CheckpointError: if the file cannot be read, lacks an object, or is beyond ``max_epochs``.
        """
        from ignite.handlers import Checkpoint

        try:
            ckpt = torch.load(path, map_location=self.map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - unreadable, truncated or unsafe content
            raise CheckpointError(
                f"{path}: cannot load checkpoint ({type(e).__name__}: {e}); delete it to resume from an older one "
                "or to start over"
            ) from e
        if not isinstance(ckpt, dict):
            raise CheckpointError(f"{path}: not a medmonai training checkpoint (a {type(ckpt).__name__})")
        missing = [k for k in self._objects if k != "training_state" and k not in ckpt]
        if missing:
            raise CheckpointError(f"{path}: checkpoint has no {missing} (has {sorted(ckpt)})")
        prior_max_epochs = engine.state.max_epochs
        to_load = {k: v for k, v in self._objects.items() if k != "training_state"}
        try:
            Checkpoint.load_objects(to_load=to_load, checkpoint=ckpt)
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: does not fit this run's objects ({e})") from e
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise CheckpointError(
                f"{path}: checkpoint is at epoch {engine.state.epoch}, beyond max_epochs={prior_max_epochs}"
            )
        engine.state.max_epochs = prior_max_epochs
        if "training_state" in ckpt:
            self._objects["training_state"].load_state_dict(ckpt["training_state"])
        else:
            logger.warning(
                f"{path}: no training state (written by an older medmonai): random generators, early stopping and "
                "the best weights start fresh, so the resumed run may differ from an uninterrupted one"
            )
        self.loaded_from = path
        logger.info(f"resumed from {path} (epoch {engine.state.epoch})")

    def _prune(self, _: Engine) -> None:
        """Remove per-epoch checkpoints older than the ``n_saved`` newest (e.g. left by an earlier, resumed run)."""
        found = []
        for path in glob.glob(os.path.join(glob.escape(self.ckpt_dir), _CHECKPOINT_PATTERN)):
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

    def state_dict(self) -> dict[str, Any]:
        """The best snapshot so far (for :class:`TrainingState`)."""
        return {"best_state": self.best_state, "best_epoch": self.best_epoch, "best_metric": self.best_metric}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict`."""
        self.best_state = state["best_state"]
        self.best_epoch = int(state["best_epoch"])
        self.best_metric = None if state["best_metric"] is None else float(state["best_metric"])

    def restore(self) -> bool:
        """Load the best snapshot into the network; returns False when there is none (no validation ran)."""
        if self.best_state is None:
            logger.warning("RestoreBestWeights: no validation result recorded, keeping the last weights")
            return False
        self._net().load_state_dict(copy.deepcopy(self.best_state))
        logger.info(f"restored the best weights (epoch {self.best_epoch}, metric {self.best_metric:.4f})")
        return True
