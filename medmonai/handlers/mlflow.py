"""MLflow tracking for the training bundles, on top of MONAI's ``MLFlowHandler`` (docs/tracking.md).

MONAI's bundle runner patches tracking handlers into a bundle when asked (``--tracking mlflow`` or
``--tracking <settings file>``). Each training bundle has such a settings file, ``configs/mlflow.yaml``, that puts
:class:`MLflowTrainingHandler` on the trainer and MONAI's ``MLFlowHandler`` on the validator of one MLflow run: the
resolved settings as params, the validation metrics and the training losses once per epoch, and the run's files (the
executed config, the preprocessing plan ``fingerprint.json``, ``provenance.json``, ``training_domain.json``, the
pre-flight report, the selected model) as artifacts. Nothing is tracked, and no store is created, without
``--tracking``. The handlers are built on rank 0 only under torchrun (``_disabled_: '@is_not_rank0'``).

:func:`log_files` / :func:`log_report` record finished outputs (an evaluation or a cross-validation report, the demo
summary) as a run of their own: ``medmonai cv --mlflow-uri URI`` and ``medmonai demo --mlflow-uri URI``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.handlers import MLFlowHandler
from monai.utils import optional_import

Events, _ = optional_import("ignite.engine", name="Events")

__all__ = [
    "MLflowTrainingHandler",
    "default_run_name",
    "flatten_params",
    "log_files",
    "log_report",
    "report_metrics",
    "require_mlflow",
]

#: MLflow refuses longer param values (6000 characters in MLflow 3); longer ones are cut and marked
MAX_PARAM_CHARS = 500


def require_mlflow() -> Any:
    """Import MLflow, or fail with the extra to install.

    Returns:
        The ``mlflow`` module.

    Raises:
        ImportError: MLflow is not installed.
    """
    mlflow, has_mlflow = optional_import("mlflow")
    if not has_mlflow:
        raise ImportError(
            "MLflow tracking needs the 'mlflow' package: pip install 'medmonai[mlflow]' (docs/tracking.md)"
        )
    return mlflow


def default_run_name(prefix: str = "train") -> str:
    """A run name unique to this process: ``<prefix>_<UTC date>_<time>_<pid>``.

    The trainer and the validator handlers of one bundle run share it (the config resolves it once), so the
    validation metrics land in the trainer's run and never in an older run left open by a crashed process.

    Args:
        prefix: the start of the name (the experiment or the bundle).

    Returns:
        The run name.
    """
    return f"{prefix}_{time.strftime('%Y%m%d_%H%M%S', time.gmtime())}_{os.getpid()}"


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested settings into MLflow params: ``{'plan': {'spatial_size': [64, 64]}}`` -> ``plan.spatial_size``.

    Lists, tuples and other values become their ``str``; values longer than :data:`MAX_PARAM_CHARS` are cut and end
    in ``...``. ``None`` is kept as ``'None'`` (an unset option is a setting too).

    Args:
        params: the settings, values of any type.
        prefix: prepended to every key with a dot (used in the recursion).

    Returns:
        Flat ``{key: str}``.
    """
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name))
            continue
        text = str(value)
        flat[name] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
    return flat


def _existing_files(paths: Sequence[str | os.PathLike | None] | str | os.PathLike | None) -> list[str]:
    """The files among ``paths`` (a folder gives its files, recursively); missing paths are left out."""
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[str] = []
    for path in paths:
        if not path:
            continue
        p = Path(path)
        if p.is_file():
            files.append(str(p))
        elif p.is_dir():
            files.extend(str(f) for f in sorted(p.rglob("*")) if f.is_file())
    return files


class MLflowTrainingHandler(MLFlowHandler):
    """MONAI's ``MLFlowHandler`` for a bundle trainer, logging the training losses once per epoch.

    MONAI's handler logs the loss of every iteration (``iteration_log``); this one (``iteration_log=False`` by
    default) averages the losses over the epoch and logs one value per epoch (``train_loss``, or every key of a
    dict output such as the GAN's ``g_loss``/``d_loss``) at the trainer's epoch, plus the learning rate of every
    optimizer param group (``lr_group_<i>``). ``experiment_param`` may be nested (flattened with
    :func:`flatten_params`); ``artifacts`` are logged when training completes, missing ones left out (optional
    reports). Everything else is MONAI's handler.

    Args:
        args: passed to ``MLFlowHandler``.
        iteration_log: MONAI's per-iteration logging, off by default.
        experiment_param: settings logged as params when training starts.
        kwargs: passed to ``MLFlowHandler`` (``tracking_uri``, ``experiment_name``, ``run_name``,
            ``output_transform``, ``tag_name``, ``artifacts``, ``close_on_complete``, ...).
    """

    def __init__(
        self,
        *args: Any,
        iteration_log: bool | Callable = False,
        experiment_param: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        require_mlflow()
        params = flatten_params(experiment_param) if experiment_param else None
        super().__init__(*args, iteration_log=iteration_log, experiment_param=params, **kwargs)
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def attach(self, engine: Any) -> None:
        """Attach MONAI's handler and the per-epoch loss average to ``engine``.

        Args:
            engine: the trainer.
        """
        super().attach(engine)
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        if not self.epoch_log:  # MONAI's epoch log is where the averages are written
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._log_epoch_losses)

    def _reset(self, engine: Any) -> None:
        self._sums, self._counts = {}, {}

    def _accumulate(self, engine: Any) -> None:
        out = self.output_transform(engine.state.output)
        if out is None:
            return
        values = out if isinstance(out, Mapping) else {self.tag_name: out}
        for key, value in values.items():
            v = float(value.item() if hasattr(value, "item") else value)
            self._sums[key] = self._sums.get(key, 0.0) + v
            self._counts[key] = self._counts.get(key, 0) + 1

    def _log_epoch_losses(self, engine: Any) -> None:
        if not self.cur_run:
            return
        epoch = self.global_epoch_transform(engine.state.epoch)
        metrics: dict[str, float] = {k: self._sums[k] / self._counts[k] for k in self._sums if self._counts[k]}
        optimizer = getattr(engine, "optimizer", None)
        if optimizer is not None:
            for name in self.optimizer_param_names:
                for i, group in enumerate(optimizer.param_groups):
                    metrics[f"{name}_group_{i}"] = float(group[name])
        if metrics:
            self._log_metrics(metrics, step=epoch)

    def _default_epoch_log(self, engine: Any) -> None:
        super()._default_epoch_log(engine)
        self._log_epoch_losses(engine)

    def _parse_artifacts(self) -> list[str]:
        return _existing_files(list(self.artifacts))


def log_files(
    files: Sequence[str | os.PathLike] | str | os.PathLike,
    tracking_uri: str,
    experiment_name: str,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
) -> str:
    """Record finished outputs (an evaluation report, a cross-validation report, plots) as one MLflow run.

    Args:
        files: files or folders (their files, recursively) logged as artifacts; missing ones are left out.
        tracking_uri: the MLflow store, e.g. ``sqlite:////abs/path/mlruns.db`` or ``http://host:5000``.
        experiment_name: created when missing; a local SQLite store keeps its artifacts in ``mlruns`` next to the
            database.
        run_name: the run's name (default: :func:`default_run_name` of the experiment name).
        params: settings logged as params (nested ones flattened with :func:`flatten_params`).
        metrics: scalar results logged as metrics (step 0).

    Returns:
        The MLflow run id.

    Raises:
        ImportError: MLflow is not installed.
    """
    mlflow = require_mlflow()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        location = None
        if tracking_uri.startswith("sqlite:///"):
            location = Path(tracking_uri[len("sqlite:///") :]).parent.joinpath("mlruns").resolve().as_uri()
        experiment_id = client.create_experiment(experiment_name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    run = client.create_run(experiment_id, run_name=run_name or default_run_name(experiment_name))
    run_id = run.info.run_id
    status = "FAILED"
    try:
        for key, value in flatten_params(params or {}).items():
            client.log_param(run_id, key, value)
        for key, value in (metrics or {}).items():
            client.log_metric(run_id, key, float(value), step=0)
        for path in _existing_files(files):
            client.log_artifact(run_id, path)
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status)
    return run_id


def _number(value: Any) -> float | None:
    if isinstance(value, Mapping):
        value = value.get("value", value.get("mean"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _nested_means(section: Any, prefix: str, out: dict[str, float]) -> None:
    """``{name: {sub: {'mean': x}}}`` -> ``<prefix><name>.<sub>`` = x."""
    if not isinstance(section, Mapping):
        return
    for name, inner in section.items():
        if not isinstance(inner, Mapping):
            continue
        for sub, value in inner.items():
            if (v := _number(value)) is not None:
                out[f"{prefix}{name}.{sub}"] = v


def report_metrics(report: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The scalar results of a medmonai report, as MLflow metrics.

    Classification (``report['metrics']``): entries that are numbers or ``{'value': x}``. Segmentation
    (``report['summary']``, ``{metric: {class: {'mean': x, ...}}}``): ``<metric>.<class>`` = the mean.
    Cross-validation: the same for the ``oof`` and ``ensemble`` sections (``oof.auc``, ``ensemble.dice.<class>``)
    and the fold means of ``across_folds`` (``across_folds.test.auc``).

    Args:
        report: an evaluation ``report.json``, a ``cv_report.json`` or the demo ``summary.json`` content.
        prefix: prepended to every name (used in the recursion).

    Returns:
        ``{metric: value}`` (no entry for ``None`` values or for results with other nesting).
    """
    out: dict[str, float] = {}
    metrics = report.get("metrics")
    if isinstance(metrics, Mapping):
        for name, value in metrics.items():
            if (v := _number(value)) is not None:
                out[f"{prefix}{name}"] = v
    _nested_means(report.get("summary"), prefix, out)
    _nested_means(report.get("across_folds"), f"{prefix}across_folds.", out)
    for section in ("oof", "ensemble"):
        if isinstance(report.get(section), Mapping):
            out.update(report_metrics(report[section], f"{prefix}{section}."))
    return out


def log_report(
    report_file: str | os.PathLike,
    tracking_uri: str,
    experiment_name: str,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> str:
    """Record a finished report as one MLflow run: the report and the plots/tables beside it, its scalar metrics.

    The files directly in the report's folder (``*.json``, ``*.png``, ``*.csv``) are logged; subfolders (fold
    checkpoints, out-of-fold masks) are not.

    Args:
        report_file: the report JSON (``report.json``, ``cv_report.json``, ``summary.json``).
        tracking_uri: the MLflow store (see :func:`log_files`).
        experiment_name: the experiment.
        run_name: the run's name (default: :func:`default_run_name` of the experiment name).
        params: settings logged as params.

    Returns:
        The MLflow run id.

    Raises:
        FileNotFoundError: ``report_file`` does not exist.
        ValueError: ``report_file`` is not a JSON object.
    """
    report_file = Path(report_file)
    if not report_file.is_file():
        raise FileNotFoundError(f"{report_file}: no such report to log to MLflow")
    try:
        report = json.loads(report_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{report_file}: not valid JSON ({err})") from err
    if not isinstance(report, Mapping):
        raise ValueError(f"{report_file}: a report must be a JSON object, got {type(report).__name__}")
    files = sorted(f for f in report_file.parent.iterdir() if f.is_file() and f.suffix in (".json", ".png", ".csv"))
    return log_files(files, tracking_uri, experiment_name, run_name, params=params, metrics=report_metrics(report))
