"""Checkpoint handlers: crash-safe resume, atomic checkpoint files, early stopping, best-weight restore.

A run killed at any point (SIGKILL, power loss, out-of-memory) and started again with the same command continues
from its last complete checkpoint and ends with the same result as an uninterrupted run: see
:class:`ResumableCheckpoint` and docs/reliability.md. A resume with settings that change the result (another seed,
data, network, learning rate...) is refused (:class:`ResumeSettingsError`), and an output folder is locked by the run
using it (:func:`lock_output_dir`), so two runs never write into one folder.
"""

from __future__ import annotations

import copy
import datetime
import errno
import glob
import hashlib
import json
import logging
import os
import random
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointSaver, EarlyStopHandler
from monai.transforms import Transform
from monai.utils import optional_import

from medmonai.data.splits import case_id
from medmonai.handlers.attached import attached, evaluators, register
from medmonai.handlers.provenance import _calling_config_parser, file_sha256, resolved_config
from medmonai.utils import CHECKPOINT_PATTERN as _CHECKPOINT_PATTERN
from medmonai.utils import PathLike, atomic_torch_save, latest_checkpoint, remove_stale_temp_files

# not POSIX (Windows): output folders are not locked
fcntl, _HAS_FCNTL = optional_import("fcntl")

__all__ = [
    "latest_checkpoint",
    "CheckpointError",
    "ResumeSettingsError",
    "OutputDirLockedError",
    "LOCK_FILE",
    "RESUME_MAY_CHANGE",
    "lock_output_dir",
    "release_output_dir",
    "run_settings",
    "compare_settings",
    "AtomicDiskSaver",
    "AtomicCheckpointSaver",
    "TrainingState",
    "ResumableCheckpoint",
    "EarlyStopOnValidation",
    "RestoreBestWeights",
]

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used to resume; the message names the file and the reason."""


class ResumeSettingsError(CheckpointError):
    """The run's result-changing settings differ from those its checkpoint was trained with."""


class OutputDirLockedError(RuntimeError):
    """The output folder is in use by another run (its lock file is held); the message names folder and holder."""


# ------------------------------------------------------------------------------------------ output-folder lock

#: lock file of an output folder (held with ``fcntl.flock`` by the run using the folder)
LOCK_FILE = ".medmonai.lock"

# folders locked by this process: resolved path -> file descriptor holding the lock
_HELD_LOCKS: dict[str, int] = {}


def _rank() -> int:
    """The process's rank under ``torchrun`` (``RANK``), 0 outside it."""
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def lock_output_dir(output_dir: PathLike) -> str:
    """Lock ``output_dir`` for this process (an exclusive ``fcntl.flock`` on ``output_dir/.medmonai.lock``).

    The bundles call it as the first step of ``initialize`` (before the pre-flight check or anything else writes
    into ``output_dir``) and :func:`release_output_dir` in ``finalize``, so a second training, evaluation or inference
    in a folder that a running process holds fails at once, before writing anything. The lock belongs to the open
    file, so it is released when the process ends in any way (also SIGKILL or a crash): a killed run leaves no stale
    lock, and the lock file itself (pid, host, start time and command of the holder, for the error message) may
    stay. Calling it again in the same process is a no-op (training and then evaluating in one process is fine).
    Under ``torchrun`` only rank 0 (``RANK`` 0) locks; the other ranks share its folder. Without ``fcntl``
    (Windows) nothing is locked.

    Args:
        output_dir: the run's output folder (created when missing).

    Returns:
        ``output_dir`` unchanged (as a string), so a config can wrap its first use of the folder in it.

    Raises:
        OutputDirLockedError: when another process holds the folder's lock.
    """
    out = os.fspath(output_dir)
    if not _HAS_FCNTL or _rank() > 0:
        return out
    folder = Path(out).resolve()
    key = str(folder)
    if key in _HELD_LOCKS:
        return out
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _lock_holder(fd)
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise OutputDirLockedError(f"{folder}: cannot lock the output folder ({lock}: {e})") from e
        raise OutputDirLockedError(
            f"{folder}: this output folder is in use by another run ({holder}); two runs in one folder would "
            "overwrite each other's checkpoints and reports. Wait for that run to finish (or stop it), or give this "
            "one another output folder (--bundle_root / --output_dir)"
        ) from None
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": list(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
    _HELD_LOCKS[key] = fd
    logger.debug(f"locked output folder {folder}")
    return out


def _lock_holder(fd: int) -> str:
    """``pid N on host H since T (command ...)`` from a lock file's content, as far as it can be read."""
    try:
        info = json.loads(os.pread(fd, 65536, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "holder unknown"
    text = f"pid {info.get('pid')} on host {info.get('host')}"
    if info.get("started"):
        text += f" since {info['started']}"
    if info.get("command"):
        text += f", command: {' '.join(map(str, info['command']))[:300]}"
    return text


def release_output_dir(output_dir: PathLike) -> bool:
    """Release this process's lock on ``output_dir`` (taken by :func:`lock_output_dir`); False if it held none."""
    fd = _HELD_LOCKS.pop(str(Path(output_dir).resolve()), None)
    if fd is None:
        return False
    os.close(fd)  # closing the file releases the flock
    return True


# ---------------------------------------------------------------------------------------- settings on resume

#: top-level config ids that may differ between a run and its resume: how long to train (``max_epochs`` may be raised
#: to continue a finished run; ``patience``/``min_delta`` decide when early stopping ends it), logging, data loading
#: and where things are (paths; the datalist is compared by content instead, see :func:`run_settings`)
RESUME_MAY_CHANGE: tuple[str, ...] = (
    "max_epochs", "patience", "min_delta", "time_budget_min", "resume", "num_workers", "image_log_interval",
    "sample_interval", "log_interval", "device", "is_not_rank0",
    "preflight", "bundle_root", "datalist", "source_datalist", "synthetic_datalist", "input", "checkpoint",
    "*_dir", "*_file", "*_root",
)  # fmt: skip


def _may_change(key: str, allowed: Sequence[str]) -> bool:
    return any(key == a or (a.startswith("*") and key.endswith(a[1:])) for a in allowed)


def _split_digest(split: Any, base: PathLike | None = None) -> str | None:
    """SHA-1 of the case ids of every part of a split (``{"training": [entries], ...}``).

    Case ids that are paths below ``base`` (the datalist's folder) are taken relative to it, so a data set moved or
    copied with its datalist keeps its digest.
    """
    if not isinstance(split, Mapping):
        return None
    root = os.path.abspath(os.fspath(base)) + os.sep if base is not None else None

    def key(entry: Any) -> str:
        cid = case_id(entry)
        if root is not None and os.path.isabs(cid) and os.path.abspath(cid).startswith(root):
            return os.path.relpath(cid, root)
        return cid

    try:
        ids = {str(k): [key(e) for e in v] for k, v in split.items() if isinstance(v, list | tuple)}
    except (KeyError, TypeError, AttributeError):
        return None
    return hashlib.sha1(json.dumps(ids, sort_keys=True).encode("utf-8")).hexdigest()


def run_settings(parser: Any, may_change: Sequence[str] = RESUME_MAY_CHANGE) -> dict[str, Any]:
    """The result-changing settings of a bundle run, compared on resume.

    Every top-level config id resolved so far with a plain value (numbers, strings, lists, dicts: seed, network,
    strategy, learning rate, batch size, class weights, augmentation, spatial size, the plan, classes...), except
    those matching ``may_change``; plus the content of the data: ``sha256(datalist_file)`` (and
    ``sha256(synthetic_datalist)``) and ``sha1(split case ids)`` (image paths relative to the datalist's folder), so a
    data set moved with its datalist resumes and a changed one does not.

    Args:
        parser: the MONAI ``ConfigParser`` of the run.
        may_change: ids (or ``*suffix`` patterns) left out.

    Returns:
        Setting name -> JSON value.
    """
    resolved = resolved_config(parser)["resolved"]
    out = {k: v for k, v in resolved.items() if not _may_change(k, may_change)}
    content = parser.ref_resolver.resolved_content
    for key in ("datalist_file", "synthetic_datalist"):
        value = content.get(key)
        if isinstance(value, str | os.PathLike) and os.fspath(value) and Path(value).is_file():
            out[f"sha256({key})"] = file_sha256(value)
    datalist = content.get("datalist_file")
    base = Path(datalist).parent if isinstance(datalist, str | os.PathLike) and os.fspath(datalist) else None
    digest = _split_digest(content.get("split"), base)
    if digest is not None:
        out["sha1(split case ids)"] = digest
    return out


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compare_settings(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"key: checkpoint X, now Y"`` for every setting present in both with different values (sorted by key).

    A setting present on one side only (a config written by another medmonai version) is not compared.
    """
    diffs = []
    for key in sorted(set(saved) & set(current)):
        a, b = saved[key], current[key]
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            diffs.append(f"{key}: checkpoint {_short(a)}, now {_short(b)}")
    return diffs


class _RunSettings:
    """The run's settings as a checkpoint entry (``run_settings``: a JSON string, loadable with weights_only)."""

    VERSION = 1

    def __init__(self, owner: ResumableCheckpoint) -> None:
        self.owner = owner

    def state_dict(self) -> dict[str, Any]:
        return {"version": self.VERSION, "json": json.dumps(self.owner.settings_now, sort_keys=True, default=str)}


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

    def attach(self, engine: Engine) -> None:
        """Attach as MONAI's saver does, and record it on ``engine`` (its best-model record is resumed)."""
        super().attach(engine)
        register(engine, self)


# ------------------------------------------------------------------------------------------- training state


def _random_states(root: Any) -> list[tuple[str, Any]]:
    """``(path, object)`` of every random generator in a transform chain / sampler, in a stable traversal order.

    Follows MONAI transforms (``Compose`` and the transforms they hold, e.g. ``RandAffined.rand_affine``), lists,
    tuples and dicts; records ``numpy.random.RandomState`` (MONAI's ``Randomizable.R``) and ``torch.Generator``
    objects. Cached data (a ``CacheDataset``'s ``_cache``) is never visited.
    """
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
    - every validation evaluator (the one of :class:`EarlyStopOnValidation` / :class:`RestoreBestWeights`): its best
      key metric and epoch;
    - early stopping (counter, best score: :class:`EarlyStopOnValidation`), :class:`RestoreBestWeights` (the best
      weights so far) and the best-model saver's record (:class:`AtomicCheckpointSaver`, so ``model.pt`` is only
      replaced by a better model after a resume), as recorded by these handlers when they attach to the trainer and
      its evaluators (:mod:`medmonai.handlers.attached`);
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
        comps: dict[str, tuple[Any, Any]] = {}
        engines = [("trainer", self.engine)] + [(f"evaluator{i}", e) for i, e in enumerate(evaluators(self.engine))]
        for name, eng in engines:
            if name != "trainer":
                comps[f"{name}/best_metric"] = (partial(_best_metric, eng), partial(_set_best_metric, eng))
            counts: dict[str, int] = {}
            for obj in attached(eng):
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

    **Settings check.** Every checkpoint also holds the run's result-changing settings (``run_settings``: by default
    :func:`run_settings` of the bundle config building this handler, taken when training starts). A resume whose
    settings differ (another seed, datalist content or split, network, strategy, plan, learning rate, batch size, class
    weights, augmentation...) raises :class:`ResumeSettingsError` naming every differing key with the checkpoint's
    and the new value, before anything is loaded or written; only :data:`RESUME_MAY_CHANGE` may differ
    (``max_epochs`` may be raised to continue a finished run). ``resume=False`` starts over: the folder's earlier
    per-epoch checkpoints are deleted when training starts, so they can never be resumed by mistake.

    Args:
        ckpt_dir: checkpoint folder.
        save_dict: objects to save/restore besides the trainer (network, optimizer, lr scheduler...).
        resume: load the newest checkpoint of ``ckpt_dir`` when one exists.
        n_saved: number of per-epoch checkpoints kept.
        map_location: device mapping for loading.
        settings: the settings to record and compare, instead of those of the calling bundle config (no check when
            neither exists).
        may_change: setting ids (or ``*suffix`` patterns) that may differ on resume.
    """

    def __init__(
        self,
        ckpt_dir: str,
        save_dict: dict[str, Any],
        resume: bool = True,
        n_saved: int = 1,
        map_location: Any = "cpu",
        settings: Mapping[str, Any] | None = None,
        may_change: Sequence[str] = RESUME_MAY_CHANGE,
    ) -> None:
        reserved = {"trainer", "training_state", "run_settings"}
        if reserved & set(save_dict):
            raise ValueError(f"save_dict keys {sorted(reserved)} are reserved by ResumableCheckpoint")
        self.ckpt_dir = ckpt_dir
        self.save_dict = dict(save_dict)
        self.resume = resume
        self.n_saved = n_saved
        self.map_location = map_location
        self.settings = None if settings is None else json.loads(json.dumps(dict(settings), default=str))
        self.may_change = tuple(may_change)
        self.settings_now: dict[str, Any] | None = self.settings
        self.loaded_from: str | None = None
        self._objects: dict[str, Any] = {}
        self._started = False
        self._parser = _calling_config_parser() if settings is None else None

    def attach(self, engine: Engine) -> None:
        """Resume (when asked) and register the per-epoch saver when ``engine`` (the trainer) starts.

        The saver is registered at ``STARTED``, after every handler attached when the engine was built, so each
        checkpoint is written after that epoch's validation, early-stopping and best-weight handlers have run.
        """
        register(engine, self)
        self._objects = {
            **self.save_dict,
            "trainer": engine,
            "training_state": TrainingState(engine),
            "run_settings": _RunSettings(self),
        }
        engine.add_event_handler(Events.STARTED, self._on_started)

    def _on_started(self, engine: Engine) -> None:
        if self._started:  # a second run() of the same engine: everything is in place
            return
        self._started = True
        if self.settings is None and self._parser is not None:
            self.settings_now = run_settings(self._parser, self.may_change)
        if self.resume:
            path = latest_checkpoint(self.ckpt_dir)
            if path is None:
                logger.info(f"no checkpoint in {self.ckpt_dir}: training from the start")
            else:
                self.load(engine, path)
        if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
            return  # every rank resumes; only rank 0 writes
        remove_stale_temp_files(self.ckpt_dir)  # left by a run killed while writing
        if not self.resume:  # start over: an earlier run's checkpoints must not be resumed (or outlive this run's)
            for old in glob.glob(os.path.join(glob.escape(self.ckpt_dir), _CHECKPOINT_PATTERN)):
                logger.info(f"resume is off: removing the earlier run's checkpoint {old}")
                os.remove(old)
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
        try:
            ckpt = torch.load(path, map_location=self.map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - unreadable, truncated or unsafe content
            raise CheckpointError(
                f"{path}: cannot load checkpoint ({type(e).__name__}: {e}); delete it to resume from an older one "
                "or to start over"
            ) from e
        if not isinstance(ckpt, dict):
            raise CheckpointError(f"{path}: not a medmonai training checkpoint (a {type(ckpt).__name__})")
        extras = ("training_state", "run_settings")
        missing = [k for k in self._objects if k not in extras and k not in ckpt]
        if missing:
            raise CheckpointError(f"{path}: checkpoint has no {missing} (has {sorted(ckpt)})")
        self.check_settings(path, ckpt.get("run_settings"))
        prior_max_epochs = engine.state.max_epochs
        to_load = {k: v for k, v in self._objects.items() if k not in extras}
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

    def check_settings(self, path: str, saved: Any) -> None:
        """Refuse to resume from ``path`` when its recorded settings differ from this run's.

        Args:
            path: the checkpoint (for the message).
            saved: its ``run_settings`` entry (``None`` for checkpoints of older medmonai versions: a warning).

        Raises:
            ResumeSettingsError: naming every differing setting, the checkpoint's and the new value, and the fix.
        """
        if self.settings_now is None:
            return
        old = None
        if isinstance(saved, Mapping) and isinstance(saved.get("json"), str):
            try:
                old = json.loads(saved["json"])
            except ValueError:
                old = None
        if not isinstance(old, Mapping):
            logger.warning(
                f"{path}: the checkpoint records no run settings (written by an older medmonai): resuming without "
                "checking that seed, data and hyper-parameters are those it was trained with"
            )
            return
        diffs = compare_settings(old, self.settings_now)
        if diffs:
            raise ResumeSettingsError(
                f"{path}: cannot resume: {len(diffs)} setting(s) differ from those this checkpoint was trained with "
                f"(resuming would mix them, and the records would name settings the weights were not trained "
                f"with):\n  " + "\n  ".join(diffs) + "\nUse another output folder (--bundle_root / --output_dir) for "
                "the new settings, or start over in this one with --resume false (its checkpoints are replaced), or "
                "rerun with the checkpoint's values. Settings that may change on resume: " + ", ".join(self.may_change)
            )

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
        stopper = EarlyStopHandler(
            patience=self.patience,
            score_function=self.score,
            trainer=engine,
            min_delta=self.min_delta,
            epoch_level=True,
        )
        stopper.attach(self.evaluator)
        register(engine, self)
        register(self.evaluator, stopper)


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
        self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._maybe_snapshot)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.restore())
        register(engine, self)

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
