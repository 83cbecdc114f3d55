"""Cross-validation results: per-fold predictions, out-of-fold (OOF) predictions, the fold ensemble and its report.

Layout of a cross-validation folder ``cv_dir`` (written by the bundles' ``crossval.yaml`` and
:mod:`medmonai.apps.crossval`, in the spirit of nnU-Net's ``fold_k`` folders):

* ``splits.json`` — the folds, as case ids (:func:`medmonai.data.splits.ensure_splits`); reused when present.
* ``fold<k>/`` — that fold's training run (checkpoints, TensorBoard) and ``fold_predictions.npz``: the
  probabilities of the fold's validation part (its out-of-fold cases) and of the test split. The file is written
  atomically, last, so its presence means the fold is finished.
* ``oof/`` — a report on the pooled out-of-fold predictions (every pooled case predicted by the model that did
  not train on it; with repeated k-fold, averaged over the repeats).
* ``ensemble/`` — the test report of the fold ensemble (the mean of the k models' probabilities), with bootstrap
  CIs, and ``model.ts``: the ensemble as one TorchScript module.
* ``cv_report.json`` — per-fold metrics, their mean ± std across folds, the OOF metrics and the ensemble's.

Segmentation bundles (``crossval.yaml`` of ``bundles/segmentation``) write, per fold, the Dice/HD95
report of the fold's validation part in its original geometry (``fold<k>/eval_validation/report.json``, written
last); :func:`aggregate_segmentation_crossval` pools those cases into ``oof/`` (``report.json``, ``per_case.csv``) and
``cv_report.json`` (per-class Dice and HD95 of every fold, their mean ± std across folds, and the pooled
out-of-fold mean ± std over cases).

The binary decision threshold (with three or more classes: the decision rule, see
:func:`medmonai.metrics.threshold.choose_decision_rule`) is chosen on the OOF predictions (never on the test split)
and applied unchanged to the per-fold test predictions and to the ensemble. Note that each fold's validation part
also decided that fold's early stopping, so OOF metrics are slightly optimistic (as in nnU-Net); the test split is the
unbiased estimate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmonai.data.splits import case_id
from medmonai.engines.evaluation import load_weights, predict_probabilities
from medmonai.engines.losses import training_class_prior
from medmonai.metrics.calibration import apply_temperature
from medmonai.metrics.clinical import classification_metrics
from medmonai.metrics.report import write_classification_report
from medmonai.metrics.segmentation import segmentation_report, summary_stats, write_segmentation_report
from medmonai.metrics.threshold import choose_decision_rule, choose_threshold
from medmonai.utils import PathLike, atomic_write, atomic_write_json, read_json

__all__ = [
    "FOLD_PREDICTIONS",
    "fold_dir",
    "fold_done",
    "save_fold_predictions",
    "write_fold_predictions",
    "load_fold_predictions",
    "pool_oof",
    "FoldEnsemble",
    "TemperatureScaled",
    "aggregate_crossval",
    "SEGMENTATION_FOLD_REPORT",
    "segmentation_fold_done",
    "aggregate_segmentation_crossval",
    "export_ensemble",
]

logger = logging.getLogger(__name__)

#: file name of a finished fold's predictions
FOLD_PREDICTIONS = "fold_predictions.npz"
#: a finished segmentation fold's validation report, relative to its fold folder (written last)
SEGMENTATION_FOLD_REPORT = Path("eval_validation") / "report.json"
_SUMMARY_METRICS = ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity")


def fold_dir(cv_dir: PathLike, fold: int) -> Path:
    """The folder of fold ``fold`` (``cv_dir/fold<k>``)."""
    return Path(cv_dir) / f"fold{int(fold)}"


def fold_done(cv_dir: PathLike, fold: int) -> bool:
    """Whether fold ``fold`` has written its predictions (the last step of a fold)."""
    return (fold_dir(cv_dir, fold) / FOLD_PREDICTIONS).is_file()


def write_fold_predictions(
    out_dir: PathLike,
    val_ids: Sequence[str],
    val_labels: np.ndarray,
    val_probs: np.ndarray,
    test_ids: Sequence[str] = (),
    test_labels: np.ndarray | None = None,
    test_probs: np.ndarray | None = None,
) -> Path:
    """Write ``fold_predictions.npz`` atomically (plain arrays, no pickled objects).

    Args:
        out_dir: the fold folder.
        val_ids: case ids (``medmonai.data.splits.case_id``) of the fold's validation part.
        val_labels: their class indices.
        val_probs: their class probabilities ``(N, C)``.
        test_ids: test case ids (``case_00000``... in datalist order, as in the evaluation reports).
        test_labels: test class indices (``-1`` where unknown), or None.
        test_probs: test probabilities ``(M, C)``, or None.

    Returns:
        The written file.
    """
    val_probs = np.asarray(val_probs, dtype=np.float64)
    n_classes = val_probs.shape[1] if val_probs.ndim == 2 else 0
    test_probs = np.zeros((0, n_classes)) if test_probs is None else np.asarray(test_probs, dtype=np.float64)
    test_labels = np.full(len(test_probs), -1) if test_labels is None else np.asarray(test_labels)
    arrays = {
        "val_ids": np.asarray([str(i) for i in val_ids], dtype=str),
        "val_labels": np.asarray(val_labels, dtype=np.int64),
        "val_probs": val_probs,
        "test_ids": np.asarray([str(i) for i in test_ids], dtype=str),
        "test_labels": test_labels.astype(np.int64),
        "test_probs": test_probs,
    }
    path = Path(out_dir) / FOLD_PREDICTIONS

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, _write)
    return path


def load_fold_predictions(path: PathLike) -> dict[str, np.ndarray]:
    """Read a ``fold_predictions.npz`` (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_fold_predictions(
    network: torch.nn.Module,
    transform: Callable,
    validation: Sequence[dict[str, Any]],
    test: Sequence[dict[str, Any]],
    out_dir: PathLike,
    checkpoint: PathLike | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    tta_flip_axes: Sequence[int] = (),
) -> Path:
    """Predict a fold's validation part and the test split with the fold's best model; write the fold's file.

    Called at the end of a fold by the bundles' ``crossval.yaml``. The best-validation checkpoint is loaded first
    (so the predictions come from the selected model even when the run was resumed).

    Args:
        network: the fold's network.
        transform: deterministic preprocessing.
        validation: the fold's validation entries (its out-of-fold cases).
        test: the datalist's test entries (may be empty).
        out_dir: the fold folder.
        checkpoint: weights to load (the fold's ``model.pt``); None keeps the network's current weights.
        device: compute device.
        batch_size: batch size.
        tta_flip_axes: test-time mirroring axes (see :func:`medmonai.engines.evaluation.predict_probabilities`).

    Returns:
        The written ``fold_predictions.npz``.
    """
    if checkpoint is not None:
        load_weights(network, checkpoint)
    network = network.to(device)
    yv, pv, _ = predict_probabilities(network, validation, transform, device, batch_size, tta_flip_axes=tta_flip_axes)
    if yv is None:
        raise ValueError(f"{out_dir}: the fold's validation entries have no labels")
    test_ids: list[str] = []
    yt = pt = None
    if test:
        yt, pt, test_ids = predict_probabilities(
            network, test, transform, device, batch_size, tta_flip_axes=tta_flip_axes
        )
    return write_fold_predictions(out_dir, [case_id(e) for e in validation], yv, pv, test_ids, yt, pt)


class FoldEnsemble(torch.nn.Module):
    """The mean of several classifiers' softmax probabilities (the k models of a cross-validation).

    ``forward`` returns probabilities ``(B, C)``, not logits.

    Args:
        models: the fold models (same input and class count).
        flip_axes: test-time mirroring: spatial axes along which a mirrored copy is also predicted and averaged.
    """

    flip_dims: list[int]

    def __init__(self, models: Sequence[torch.nn.Module], flip_axes: Sequence[int] = ()) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = torch.nn.ModuleList(models)
        self.flip_dims = [int(a) + 2 for a in flip_axes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average class probabilities over models (and mirrored views)."""
        total = torch.zeros(0)
        count = 0
        views = [x]
        for d in self.flip_dims:
            views.append(torch.flip(x, dims=[d]))
        for model in self.models:
            for v in views:
                p = torch.softmax(model(v).float(), dim=1)
                total = p if count == 0 else total + p
                count += 1
        return total / count


class TemperatureScaled(torch.nn.Module):
    """Probabilities of a model that returns probabilities, recalibrated: ``softmax(log p / T)``.

    See :mod:`medmonai.metrics.calibration` (the temperature is chosen on out-of-fold predictions).

    Args:
        model: a module returning class probabilities ``(B, C)`` (e.g. a :class:`FoldEnsemble`).
        temperature: ``T > 0``.
    """

    temperature: float

    def __init__(self, model: torch.nn.Module, temperature: float) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Recalibrated probabilities."""
        p = self.model(x).clamp_min(1e-12)
        return torch.softmax(torch.log(p) / self.temperature, dim=1)


def _fold_summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {m: metrics.get(m) for m in _SUMMARY_METRICS}


def _mean_std(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in _SUMMARY_METRICS:
        vals = [r[m] for r in rows if r.get(m) is not None]
        out[m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)} if vals else None
    return out


def pool_oof(preds: Sequence[Mapping[str, np.ndarray]], case_ids: Sequence[str], source: str = "") -> dict[str, Any]:
    """The pooled out-of-fold predictions of the folds' ``fold_predictions.npz`` contents, in ``splits.json`` order.

    A case predicted by several folds (repeated k-fold) gets the mean of their probabilities.

    Args:
        preds: the folds' predictions (:func:`load_fold_predictions`), fold 0 first.
        case_ids: the pooled case ids of ``splits.json`` (their order is the output order).
        source: named in the error message (the cross-validation folder).

    Returns:
        ``{"index": positions in case_ids, "labels": (N,), "probs": (N, C), "fold": (N,) the first fold predicting
        each case}``.

    Raises:
        ValueError: a fold predicted a case that is not in ``case_ids``.
    """
    index = {cid: i for i, cid in enumerate(case_ids)}
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    labels: dict[int, int] = {}
    first: dict[int, int] = {}
    for k, p in enumerate(preds):
        for cid, y, prob in zip(p["val_ids"].tolist(), p["val_labels"], p["val_probs"], strict=True):
            if cid not in index:
                raise ValueError(f"{source}: fold {k} predicted case {cid!r}, which is not in its splits.json")
            i = index[cid]
            sums[i] = sums.get(i, 0) + prob
            counts[i] = counts.get(i, 0) + 1
            labels[i] = int(y)
            first.setdefault(i, k)
    order = sorted(sums)
    return {
        "index": order,
        "labels": np.asarray([labels[i] for i in order]),
        "probs": np.stack([sums[i] / counts[i] for i in order]),
        "fold": np.asarray([first[i] for i in order]),
    }


def aggregate_crossval(
    cv_dir: PathLike,
    classes: Sequence[str],
    threshold_method: str = "youden",
    target_sensitivity: float = 0.9,
    n_boot: int = 1000,
    seed: int = 0,
    extra: Mapping[str, Any] | None = None,
    class_weights: str | Sequence[float] | None = None,
    balanced_sampler: bool = False,
    decision_objective: str = "balanced_accuracy_above_majority",
    ordinal: bool = False,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Combine the finished folds of ``cv_dir`` into the OOF report, the ensemble test report and ``cv_report.json``.

    Args:
        cv_dir: the cross-validation folder (``splits.json`` and ``fold<k>/fold_predictions.npz``).
        classes: class names.
        threshold_method: binary threshold rule applied to the OOF predictions (``youden``, ``sensitivity``,
            ``fixed``); the chosen threshold is then used for every test prediction.
        target_sensitivity: for ``threshold_method="sensitivity"``.
        n_boot: bootstrap resamples for the CIs.
        seed: bootstrap seed.
        extra: more fields for the reports (model, bundle, settings).
        class_weights: three or more classes: the folds' training ``class_weights`` setting (the class prior they
            were trained for, with ``balanced_sampler``; the class frequencies are those of the pooled labels).
        balanced_sampler: whether the folds trained with the class-balanced sampler.
        decision_objective: the objective choosing the multi-class decision rule on the OOF predictions.
        ordinal: three or more ordered classes: the reports add the quadratic weighted kappa.
        temperature: calibration temperature (:mod:`medmonai.metrics.calibration`) applied to the fold files'
            (uncalibrated) probabilities: to each fold model's, and to the ensemble's *after* the fold mean, as the
            exported ensemble does; 1: none.

    Returns:
        The ``cv_report.json`` content.

    Raises:
        FileNotFoundError: when ``splits.json`` or a fold's predictions are missing (the message lists the folds).
        ValueError: when folds disagree on the test cases.
    """
    cv_dir = Path(cv_dir)
    splits_file = cv_dir / "splits.json"
    if not splits_file.is_file():
        raise FileNotFoundError(f"{splits_file}: no splits file; run the cross-validation first")
    splits = read_json(splits_file)
    n_folds = len(splits["folds"])
    missing = [k for k in range(n_folds) if not fold_done(cv_dir, k)]
    if missing:
        raise FileNotFoundError(
            f"{cv_dir}: folds {missing} of {n_folds} have no {FOLD_PREDICTIONS} yet; run or resume the cross-validation"
        )
    preds = [load_fold_predictions(fold_dir(cv_dir, k) / FOLD_PREDICTIONS) for k in range(n_folds)]
    raw_test = [p["test_probs"] for p in preds]
    if float(temperature) != 1.0:
        for p in preds:
            p["val_probs"] = apply_temperature(p["val_probs"], temperature)
            if len(p["test_probs"]):
                p["test_probs"] = apply_temperature(p["test_probs"], temperature)
    binary = len(classes) == 2
    info = dict(extra or {})
    info.update({"scheme": splits.get("scheme"), "n_folds": n_folds, "splits": str(splits_file)})

    # out-of-fold predictions, in splits order (averaged over repeats)
    pooled = pool_oof(preds, splits["case_ids"], source=str(cv_dir))
    order, oof_y, oof_p = pooled["index"], pooled["labels"], pooled["probs"]
    oof_ids = [f"pool_{i:05d}" for i in order]
    thr: Any = None
    if binary:
        if len(set(oof_y.tolist())) < 2:
            thr = choose_threshold(oof_y, oof_p[:, 1], method="fixed")
        else:
            thr = choose_threshold(oof_y, oof_p[:, 1], method=threshold_method, target_sensitivity=target_sensitivity)
    else:
        try:
            prior = training_class_prior(
                [{"label": int(y)} for y in oof_y], len(classes), class_weights, balanced_sampler
            )
        except ValueError as e:
            logger.warning(f"cannot estimate the class priors ({e}): multi-class decisions are the plain argmax")
        else:
            thr = choose_decision_rule(
                oof_y, oof_p, prior["class_priors"], prior["training_prior"], objective=decision_objective,
                classes=list(classes), source={
                    "class_priors_from": "pooled out-of-fold labels", "class_weights": prior["class_weights"],
                    "sampler": prior["sampler"],
                },
            )  # fmt: skip
            thr["chosen_on"] = "out-of-fold predictions"

    def score(p: np.ndarray) -> np.ndarray:
        return p[:, 1] if binary else p

    oof_report = write_classification_report(
        cv_dir / "oof", oof_y, score(oof_p), case_ids=oof_ids, classes=list(classes), threshold=thr, n_boot=n_boot,
        seed=seed, extra={**info, "what": "out-of-fold predictions (threshold chosen on them: optimistic ACC)"},
        split="cv (out-of-fold)", ordinal=ordinal,
    )  # fmt: skip

    # per-fold metrics: validation part at the default rule, test split at the OOF threshold
    folds: list[dict[str, Any]] = []
    test_ids = preds[0]["test_ids"].tolist()
    has_test = len(test_ids) > 0
    for k, p in enumerate(preds):
        row: dict[str, Any] = {"fold": k, "n_val": len(p["val_ids"])}
        vm = classification_metrics(p["val_labels"], score(p["val_probs"]), classes=list(classes))
        row["validation"] = _fold_summary(vm)
        if has_test:
            if p["test_ids"].tolist() != test_ids:
                raise ValueError(f"{fold_dir(cv_dir, k)}: test cases differ from fold 0's; the folds must share a test")
            tm = classification_metrics(p["test_labels"], score(p["test_probs"]), threshold=thr, classes=list(classes))
            row["test"] = _fold_summary(tm)
        folds.append(row)
    result: dict[str, Any] = {
        **info,
        "classes": list(classes),
        "threshold": thr if binary else None,
        "decision_rule": None if binary else (thr or {"method": "argmax"}),
        "folds": folds,
        "across_folds": {"validation": _mean_std([f["validation"] for f in folds])},
        "oof": {
            "n": len(order),
            "metrics": oof_report["metrics"],
            "majority_class": oof_report["majority_class"],
            "warnings": oof_report["warnings"],
            "report": str(cv_dir / "oof" / "report.json"),
        },
    }
    if has_test:
        result["across_folds"]["test"] = _mean_std([f["test"] for f in folds])
        test_y = preds[0]["test_labels"]
        ens_p = np.mean(raw_test, axis=0)
        if float(temperature) != 1.0:
            ens_p = apply_temperature(ens_p, temperature)  # after the mean, as TemperatureScaled(FoldEnsemble)
        if (test_y >= 0).all():
            ens_report = write_classification_report(
                cv_dir / "ensemble", test_y, score(ens_p), case_ids=test_ids, classes=list(classes), threshold=thr,
                n_boot=n_boot, seed=seed, extra={**info, "what": f"mean probability of the {n_folds} fold models"},
                split="test", ordinal=ordinal,
            )  # fmt: skip
            result["ensemble"] = {
                "n": len(test_ids),
                "metrics": ens_report["metrics"],
                "majority_class": ens_report["majority_class"],
                "warnings": ens_report["warnings"],
                "report": str(cv_dir / "ensemble" / "report.json"),
            }
        else:
            logger.warning("the test split has unlabelled cases: no ensemble report")
    atomic_write_json(cv_dir / "cv_report.json", result)
    return result


def export_ensemble(
    models: Sequence[torch.nn.Module],
    path: PathLike,
    example: torch.Tensor,
    flip_axes: Sequence[int] = (),
    atol: float = 1e-5,
    temperature: float = 1.0,
) -> Path:
    """Save the fold ensemble as one TorchScript module (scripted when possible, else traced) and check it.

    The saved module is reloaded and its output compared with the eager ensemble on ``example``.

    Args:
        models: the fold models with their trained weights (the folds of one or of several candidates; each model
            has the same weight).
        path: output ``.ts`` file (written atomically).
        example: an input batch ``(B, C, *spatial)`` for tracing and the check.
        flip_axes: test-time mirroring axes built into the module.
        atol: tolerance of the check.
        temperature: calibration temperature built into the module (:class:`TemperatureScaled`); 1: none.

    Returns:
        The written file.

    Raises:
        RuntimeError: if the exported module does not reproduce the eager ensemble.
    """
    ensemble: torch.nn.Module = FoldEnsemble([m.eval().cpu() for m in models], flip_axes=flip_axes).eval()
    if float(temperature) != 1.0:
        ensemble = TemperatureScaled(ensemble, temperature).eval()
    example = example.cpu()
    with torch.no_grad():
        expected = ensemble(example)
        try:
            module = torch.jit.script(ensemble)
        except Exception as e:  # noqa: BLE001 - some backbones (EfficientNet) only trace
            logger.info(f"scripting the ensemble failed ({type(e).__name__}); tracing it")
            module = torch.jit.trace(ensemble, example, check_trace=False)
    path = Path(path)
    atomic_write(path, lambda tmp: torch.jit.save(module, tmp))
    with torch.no_grad():
        got = torch.jit.load(str(path), map_location="cpu")(example)
    if not torch.allclose(got, expected, atol=atol):
        path.unlink(missing_ok=True)
        raise RuntimeError(
            f"{path}: the exported ensemble differs from the eager one (max {(got - expected).abs().max()})"
        )
    return path


def segmentation_fold_done(cv_dir: PathLike, fold: int) -> bool:
    """Whether segmentation fold ``fold`` has written its validation report (the last step of a fold)."""
    return (fold_dir(cv_dir, fold) / SEGMENTATION_FOLD_REPORT).is_file()


def aggregate_segmentation_crossval(
    cv_dir: PathLike, n_folds: int, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Combine the finished segmentation folds of ``cv_dir`` into ``oof/`` and ``cv_report.json``.

    Args:
        cv_dir: the cross-validation folder (``fold<k>/eval_validation/report.json`` for every fold).
        n_folds: the number of folds.
        extra: more top-level fields (bundle, network, settings).

    Returns:
        The ``cv_report.json`` content: ``per_fold`` (each fold's per-class Dice / HD95 means over its validation
        cases), ``across_folds`` (mean ± std of those fold means, population std, and ``n`` folds), and ``oof`` (the
        summary over every out-of-fold case evaluation; with repeated k-fold a case counts once per repeat).

    Raises:
        FileNotFoundError: when a fold's report is missing (the message lists the folds).
        ValueError: when the folds disagree on the class names.
    """
    cv_dir = Path(cv_dir)
    missing = [k for k in range(n_folds) if not segmentation_fold_done(cv_dir, k)]
    if missing:
        raise FileNotFoundError(
            f"{cv_dir}: folds {missing} have no {SEGMENTATION_FOLD_REPORT} (not trained or interrupted); "
            "run the cross-validation again to finish them"
        )
    reports = [read_json(fold_dir(cv_dir, k) / SEGMENTATION_FOLD_REPORT, "fold report") for k in range(n_folds)]
    classes = list(reports[0]["classes"])
    cases: list[dict[str, Any]] = []
    per_fold: list[dict[str, Any]] = []
    for k, rep in enumerate(reports):
        if list(rep["classes"]) != classes:
            raise ValueError(
                f"{fold_dir(cv_dir, k) / SEGMENTATION_FOLD_REPORT}: classes {rep['classes']} differ from fold 0's "
                f"{classes}"
            )
        cases.extend({**c, "fold": k} for c in rep["cases"])
        per_fold.append(
            {
                "fold": k,
                "n_cases": rep["n_cases"],
                **{m: {name: st.get("mean") for name, st in v.items()} for m, v in rep["summary"].items()},
            }
        )
    across: dict[str, Any] = {}
    for m in ("dice", "hd95"):
        names = list(dict.fromkeys(n for f in per_fold for n in f.get(m, {})))
        if names:
            across[m] = {name: summary_stats([f.get(m, {}).get(name) for f in per_fold]) for name in names}
    oof = segmentation_report(cases, classes, extra={"n_folds": n_folds})
    write_segmentation_report(oof, cv_dir / "oof")
    report = {
        "task": "segmentation",
        "n_folds": n_folds,
        "classes": classes,
        "per_fold": per_fold,
        "across_folds": across,
        "oof": {"n": len(cases), "summary": oof["summary"], "report": str(cv_dir / "oof" / "report.json")},
        **dict(extra or {}),
    }
    atomic_write_json(cv_dir / "cv_report.json", report)
    return report
