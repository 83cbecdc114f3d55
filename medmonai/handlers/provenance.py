"""Provenance of a training run: what was run, on which data, with which software, written beside its results.

:class:`ProvenanceHandler` (on the trainer) writes, atomically, into the run's output folder:

- ``provenance.json``: the command line, the time, Python / platform / CPU threads / device, the versions of the
  packages that shape the result (torch, MONAI, ignite, NumPy, scikit-learn, pydicom, nibabel, SimpleITK...), the
  medmonai version and git commit (when run from a checkout), the seed and determinism settings, the datalist (path and
  SHA-256 of the file), the data fingerprint (``data_sha1`` of the pre-flight check: case ids, labels and the SHA-1 of
  every decoded image), the dataset fingerprint file (path, SHA-256 and the preprocessing plan), the split (case ids
  of the training and validation parts) and, when training ends, the epochs run, the checkpoint resumed from and the
  best validation metric;
- ``resolved_config.json``: the bundle config as run (all files merged, command-line overrides applied) and the
  resolved value of every top-level setting that was evaluated (numbers, strings, lists, the plan...; lists of datalist
  entries are replaced by their length).

Patient identifiers are not written: the split lists case ids (the datalist's ``id``, or the image path) as
``splits.json`` does, and entry lists (which may hold a ``subject``) are not copied.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import logging
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

from medmonai import __version__
from medmonai.data.splits import case_id
from medmonai.handlers.attached import attached, evaluators
from medmonai.utils import PathLike, atomic_write_json

__all__ = ["PACKAGES", "ProvenanceHandler", "package_versions", "git_commit", "file_sha256", "collect_provenance"]

logger = logging.getLogger(__name__)

PACKAGES: tuple[str, ...] = (
    "medmonai", "torch", "monai", "pytorch-ignite", "numpy", "scipy", "scikit-learn", "pydicom", "highdicom",
    "nibabel", "SimpleITK", "Pillow", "PyYAML",
)  # fmt: skip
"""Distributions whose versions are recorded."""


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when not installed)."""
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(start: PathLike | None = None) -> dict[str, Any] | None:
    """The git commit of the checkout holding ``start`` (default: the medmonai package), read from ``.git`` files.

    Returns:
        ``{"commit": sha or None, "ref": branch ref or None}``, or None outside a git checkout.
    """
    here = Path(start) if start is not None else Path(__file__).resolve().parent
    for folder in [here, *here.parents]:
        git = folder / ".git"
        if git.is_file():  # worktree or submodule: "gitdir: PATH"
            text = git.read_text(encoding="utf-8").strip()
            git = (folder / text.split(":", 1)[1].strip()).resolve() if text.startswith("gitdir:") else git
        if git.is_dir():
            break
    else:
        return None
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref:"):
            return {"commit": head, "ref": None}
        ref = head.split(":", 1)[1].strip()
        common = git / (git / "commondir").read_text().strip() if (git / "commondir").is_file() else git
        for base in (git, common):
            if (base / ref).is_file():
                return {"commit": (base / ref).read_text(encoding="utf-8").strip(), "ref": ref}
            if (base / "packed-refs").is_file():
                for line in (base / "packed-refs").read_text(encoding="utf-8").splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[1] == ref:
                        return {"commit": parts[0], "ref": ref}
        return {"commit": None, "ref": ref}
    except OSError:
        return None


def file_sha256(path: PathLike) -> str | None:
    """SHA-256 of a file's bytes (None when it does not exist)."""
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
    }
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return env


def _split_ids(split: Mapping[str, Sequence[Mapping[str, Any]]] | None) -> dict[str, list[str]] | None:
    if not split:
        return None
    return {k: [case_id(e) for e in v] for k, v in split.items() if isinstance(v, list | tuple)}


def _read_json(path: PathLike | None) -> Any:
    if path is None or not Path(path).is_file():
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def collect_provenance(
    datalist: PathLike | None = None,
    split: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    fingerprint_file: PathLike | None = None,
    preflight_report: PathLike | None = None,
    seed: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance record of a run (see the module docstring); JSON-safe.

    Args:
        datalist: the datalist the run trains on.
        split: the training/validation entries (recorded as case ids).
        fingerprint_file: the dataset fingerprint / plan JSON.
        preflight_report: the pre-flight report (its ``data_sha1`` is the data fingerprint).
        seed: the run's seed.
        extra: further fields.
    """
    record: dict[str, Any] = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": list(sys.argv),
        "cwd": os.getcwd(),
        "medmonai": {"version": __version__, "git": git_commit()},
        "packages": package_versions(),
        "environment": _environment(),
        "seed": seed,
    }
    if datalist is not None:
        record["datalist"] = {"path": os.fspath(datalist), "sha256": file_sha256(datalist)}
    report = _read_json(preflight_report)
    if isinstance(report, dict):
        record["data"] = {
            "data_sha1": report.get("data_sha1"),
            "checked": report.get("checked"),
            "skipped": len(report.get("skipped") or []),
            "preflight_report": os.fspath(preflight_report),
            "preflight_mode": report.get("mode"),
        }
    if fingerprint_file is not None:
        fp = _read_json(fingerprint_file)
        record["fingerprint"] = {
            "path": os.fspath(fingerprint_file),
            "sha256": file_sha256(fingerprint_file),
            "plan": fp.get("plan") if isinstance(fp, dict) else None,
        }
    ids = _split_ids(split)
    if ids is not None:
        record["split"] = {"counts": {k: len(v) for k, v in ids.items()}, "case_ids": ids}
    if extra:
        record.update(extra)
    return record


# ------------------------------------------------------------------------------------------- resolved config


def _calling_config_parser() -> Any:
    """The MONAI ``ConfigParser`` instantiating the caller (found on the call stack), or None."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            obj = frame.f_locals.get("self")
            if isinstance(obj, ConfigParser):
                return obj
            frame = frame.f_back
    finally:
        del frame
    return None


def _is_entry_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) and "image" in v for v in value)


def _plain(value: Any, depth: int = 0) -> tuple[bool, Any]:
    """``(True, JSON value)`` for plain data (entry lists replaced by a summary), ``(False, None)`` otherwise."""
    if depth > 8:
        return False, None
    if value is None or isinstance(value, bool | int | float | str):
        return True, value
    if _is_entry_list(value):
        return True, f"<{len(value)} datalist entries>"
    if isinstance(value, list | tuple):
        items = [_plain(v, depth + 1) for v in value]
        return (True, [v for _, v in items]) if all(ok for ok, _ in items) else (False, None)
    if isinstance(value, Mapping):
        items = {str(k): _plain(v, depth + 1) for k, v in value.items()}
        ok = all(o for o, _ in items.values())
        return (True, {k: v for k, (_, v) in items.items()}) if ok else (False, None)
    if isinstance(value, os.PathLike):
        return True, os.fspath(value)
    return False, None


def resolved_config(parser: Any) -> dict[str, Any]:
    """The merged config of a MONAI ``ConfigParser`` and the plain resolved values of its evaluated top-level ids."""
    raw = parser.get()
    resolved: dict[str, Any] = {}
    for key, value in parser.ref_resolver.resolved_content.items():
        if not key or "#" in key or "::" in key or key.startswith("_"):  # top-level ids only
            continue
        ok, plain = _plain(value)
        if ok:
            resolved[key] = plain
    ok, config = _plain(raw)
    return {"config": config if ok else None, "resolved": dict(sorted(resolved.items()))}


# --------------------------------------------------------------------------------------------------- handler


class ProvenanceHandler:
    """Write ``provenance.json`` and ``resolved_config.json`` into ``output_dir``: attach to the *trainer*.

    Both are written when training starts (so a killed run has them too) and ``provenance.json`` again when it ends,
    with the epochs run, the checkpoint it resumed from and the best validation metric. Written atomically, and
    only by rank 0 under ``torch.distributed``.

    Args:
        output_dir: the run's output folder.
        datalist: the datalist the run trains on.
        split: the training/validation entries (recorded as case ids).
        fingerprint_file: the dataset fingerprint / plan JSON.
        preflight_report: the pre-flight report (default ``output_dir/preflight_report.json``).
        seed: the run's seed.
        config: the resolved config to record; default: the bundle config of the MONAI ``ConfigParser`` that builds
            this handler (found on the call stack; nothing is recorded when it is built outside a bundle).
        extra: further fields for ``provenance.json``.
    """

    def __init__(
        self,
        output_dir: PathLike,
        datalist: PathLike | None = None,
        split: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        fingerprint_file: PathLike | None = None,
        preflight_report: PathLike | None = None,
        seed: int | None = None,
        config: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.datalist = datalist
        self.split = split
        self.fingerprint_file = fingerprint_file
        self.preflight_report = (
            preflight_report if preflight_report is not None else self.output_dir / "preflight_report.json"
        )
        self.seed = seed
        self.config = dict(config) if config is not None else None
        self.extra = dict(extra or {})
        self._parser = _calling_config_parser() if config is None else None
        self.record: dict[str, Any] = {}

    @property
    def provenance_file(self) -> Path:
        """``output_dir/provenance.json``."""
        return self.output_dir / "provenance.json"

    @property
    def config_file(self) -> Path:
        """``output_dir/resolved_config.json``."""
        return self.output_dir / "resolved_config.json"

    def attach(self, engine: Engine) -> None:
        """Write at ``STARTED`` and at ``COMPLETED``."""
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    @staticmethod
    def _writer() -> bool:
        return not (dist.is_available() and dist.is_initialized() and dist.get_rank() > 0)

    @staticmethod
    def _resumed_from(engine: Engine) -> str | None:
        """The checkpoint a :class:`~medmonai.handlers.checkpoint.ResumableCheckpoint` on ``engine`` resumed from."""
        for obj in attached(engine):
            loaded = getattr(obj, "loaded_from", None)
            if loaded:
                return loaded
        return None

    def _started(self, engine: Engine) -> None:
        if not self._writer():
            return
        self.record = collect_provenance(
            self.datalist, self.split, self.fingerprint_file, self.preflight_report, self.seed, self.extra
        )
        self.record["training"] = {
            "status": "started",
            "max_epochs": engine.state.max_epochs,
            "start_epoch": int(engine.state.epoch),
            "resumed_from": self._resumed_from(engine),
        }
        atomic_write_json(self.provenance_file, self.record)
        if self.config is not None:
            atomic_write_json(self.config_file, {"config": self.config, "resolved": None})
        elif self._parser is not None:
            atomic_write_json(self.config_file, resolved_config(self._parser))

    def _completed(self, engine: Engine) -> None:
        if not self._writer() or not self.record:
            return
        best = {}
        for i, ev in enumerate(evaluators(engine)):
            best[f"evaluator{i}"] = {
                "metric": getattr(ev.state, "key_metric_name", None),
                "best_metric": _number(getattr(ev.state, "best_metric", None)),
                "best_metric_epoch": getattr(ev.state, "best_metric_epoch", None),
            }
        self.record["training"].update(
            status="completed",
            epochs=int(engine.state.epoch),
            iterations=int(engine.state.iteration),
            finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            validation=best,
        )
        atomic_write_json(self.provenance_file, self.record)


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
