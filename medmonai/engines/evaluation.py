"""Post-training evaluation of a classifier: threshold on validation data, test set once, one report."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from sklearn.metrics import roc_auc_score

from medmonai.data.domain import out_of_distribution_columns, screen_for_report
from medmonai.engines.losses import training_class_prior
from medmonai.metrics.report import write_classification_report
from medmonai.metrics.threshold import choose_decision_rule, choose_threshold
from medmonai.utils import PathLike

__all__ = ["load_weights", "predict_probabilities", "evaluate_classifier"]

logger = logging.getLogger(__name__)


def load_weights(network: torch.nn.Module, checkpoint: PathLike, key: str | None = None) -> torch.nn.Module:
    """Load a state dict saved by the bundles (``torch.load(weights_only=True)``) into ``network``.

    Args:
        network: the network (DDP wrappers are unwrapped).
        checkpoint: ``.pt`` file holding a state dict, or a dict of objects (``key`` selects one, default: the
            first of ``network``, ``model``, ``state_dict``).
        key: entry of a multi-object checkpoint.

    Returns:
        The network.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if key is not None:
        state = state[key]
    elif isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for k in ("network", "model", "state_dict"):
            if k in state:
                state = state[k]
                break
    net = network.module if hasattr(network, "module") else network
    net.load_state_dict(state)
    return network


@torch.no_grad()
def predict_probabilities(
    network: torch.nn.Module,
    entries: Sequence[dict[str, Any]],
    transform: Callable,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    id_key: str = "case_id",
    tta_flip_axes: Sequence[int] = (),
) -> tuple[np.ndarray | None, np.ndarray, list[str]]:
    """Class probabilities (softmax) of ``network`` for datalist entries.

    Args:
        network: classifier returning logits (B, C).
        entries: datalist entries with ``image`` (and ``label`` when known).
        transform: the deterministic preprocessing (no augmentation).
        device: compute device.
        batch_size: batch size.
        num_workers: DataLoader workers.
        id_key: entry key used as case id in outputs (default ``case_id``; entries without it are numbered). Patient
            ids are not used unless you choose such a key.
        tta_flip_axes: test-time augmentation: spatial axes (0-based) along which a mirrored copy of every image is
            also predicted; the softmax outputs of the original and the mirrored copies are averaged. Use only axes
            the model was trained to be invariant to (the bundles' flip augmentation uses axis 0).

    Returns:
        (labels or None, probabilities (N, C), case ids).
    """
    data = [{"image": e["image"], "_index": i} for i, e in enumerate(entries)]
    loader = DataLoader(Dataset(data, transform=transform), batch_size=batch_size, num_workers=num_workers)
    network.eval()
    probs = np.zeros((len(entries), 0), dtype=np.float64)
    chunks, order = [], []
    for batch in loader:
        x = batch["image"].to(device)
        views = [x] + [torch.flip(x, dims=(int(a) + 2,)) for a in tta_flip_axes]
        prob = torch.stack([torch.softmax(network(v).float(), dim=1) for v in views]).mean(0)
        chunks.append(prob.cpu().numpy())
        order.extend(int(i) for i in batch["_index"])
    if chunks:
        probs = np.concatenate(chunks)[np.argsort(order)]
    labels = None
    if entries and all("label" in e for e in entries):
        labels = np.asarray([int(e["label"]) for e in entries])
    ids = [str(e.get(id_key, f"case_{i:05d}")) for i, e in enumerate(entries)]
    return labels, probs, ids


def evaluate_classifier(
    network: torch.nn.Module,
    transform: Callable,
    validation: Sequence[dict[str, Any]],
    test: Sequence[dict[str, Any]],
    out_dir: PathLike,
    classes: Sequence[str],
    checkpoint: PathLike | None = None,
    threshold: str = "youden",
    target_sensitivity: float = 0.9,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    n_boot: int = 1000,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    train_entries: Sequence[dict[str, Any]] | None = None,
    class_weights: str | Sequence[float] | None = None,
    balanced_sampler: bool = False,
    decision_objective: str = "balanced_accuracy_above_majority",
    training_domain: PathLike | dict[str, Any] | None = None,
    allow_out_of_distribution: bool = False,
    ordinal: bool = False,
) -> dict[str, Any]:
    """Choose the decision rule on validation data, evaluate the test set once and write the report.

    Binary problems: the threshold on the positive-class probability is chosen on ``validation`` (``"youden"``,
    ``"sensitivity"`` for a target sensitivity, or ``"fixed"`` 0.5) and then applied unchanged to ``test``. Three or
    more classes: the decision rule (plain argmax, or the argmax of probabilities corrected from the class prior the
    model was trained for, class weights and sampler, towards the real class frequencies) is chosen on ``validation``
    by ``decision_objective`` (:func:`medmonai.metrics.threshold.choose_decision_rule`), recorded in the report's
    ``decision_rule`` and applied unchanged to ``test`` (and by inference, which reads it from the report). The report
    (``report.json``, ``predictions.csv``, ``roc.png``, ``confusion_matrix.png`` in ``out_dir``) holds every metric
    with a bootstrap 95 % confidence interval, the majority-class rate (with a warning when the accuracy is below it),
    plus the validation metrics. ``predictions.csv`` ends with the columns ``out_of_distribution`` and
    ``out_of_distribution_reasons`` per case (:func:`~medmonai.data.domain.out_of_distribution_columns`).

    Args:
        network: the classifier.
        transform: deterministic preprocessing.
        validation: validation entries (model selection / threshold only).
        test: test entries (used once).
        out_dir: report folder.
        classes: class names.
        checkpoint: weights to load first (e.g. the best-validation ``model.pt``).
        threshold: ``"youden"``, ``"sensitivity"`` or ``"fixed"``.
        target_sensitivity: for ``threshold="sensitivity"``.
        device: compute device.
        batch_size: batch size.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
        extra: more fields for the report (model name, strategy...).
        train_entries: the training entries as trained on (multi-class: the real class frequencies and, with
            ``class_weights`` and ``balanced_sampler``, the prior the model was trained for); default: the
            validation labels.
        class_weights: the training loss's ``class_weights`` setting (``"balanced"``, a list or None).
        balanced_sampler: whether training used the class-balanced sampler.
        decision_objective: multi-class rule selection objective (:data:`~medmonai.metrics.threshold.
            DECISION_OBJECTIVES`).
        training_domain: the model's training-domain record (``training_domain.json``): test entries outside it
            are refused (:class:`~medmonai.data.domain.OutOfDistributionError`), or with
            ``allow_out_of_distribution`` evaluated and listed in the report's ``extra.input_check``; None or a
            missing file: not checked (a warning says so).
        allow_out_of_distribution: see ``training_domain``.
        ordinal: three or more classes in ordinal order (the datalist's ``"ordinal": true``): the report adds the
            quadratic weighted kappa.

    Returns:
        The report dict.
    """
    if checkpoint is not None:
        load_weights(network, checkpoint)
    network = network.to(device)
    if not test:
        raise ValueError("the datalist has no test entries to evaluate")
    binary = len(classes) == 2
    info: dict[str, Any] = dict(extra or {})
    info["input_check"] = screen_for_report(training_domain, test, transform, allow_out_of_distribution)
    thr: Any = None
    if binary:
        yv, pv, _ = predict_probabilities(network, validation, transform, device, batch_size)
        if yv is None or len(set(yv.tolist())) < 2:
            logger.warning("validation data lack a class: using the fixed threshold 0.5")
            thr = choose_threshold(yv if yv is not None else np.zeros(len(pv), int), pv[:, 1], method="fixed")
        else:
            thr = choose_threshold(yv, pv[:, 1], method=threshold, target_sensitivity=target_sensitivity)
            # the model-selection number, beside the test report (compare settings by it, not by the test AUC)
            info["validation_auc"] = float(roc_auc_score(yv, pv[:, 1]))
        info["n_validation"] = len(validation)
    else:
        thr = _multiclass_rule(
            network, transform, validation, classes, device, batch_size, train_entries, class_weights,
            balanced_sampler, decision_objective,
        )  # fmt: skip
        info["n_validation"] = len(validation)
    yt, pt, ids = predict_probabilities(network, test, transform, device, batch_size)
    if yt is None:
        raise ValueError("test entries have no labels: use the inference config for unlabelled data")
    report = write_classification_report(
        out_dir, yt, pt if not binary else pt[:, 1], case_ids=ids, classes=list(classes), threshold=thr,
        n_boot=n_boot, seed=seed, extra=info, extra_columns=out_of_distribution_columns(info["input_check"], len(test)),
        ordinal=ordinal,
    )  # fmt: skip
    return report


def _multiclass_rule(
    network: torch.nn.Module,
    transform: Callable,
    validation: Sequence[dict[str, Any]],
    classes: Sequence[str],
    device: str | torch.device,
    batch_size: int,
    train_entries: Sequence[dict[str, Any]] | None,
    class_weights: str | Sequence[float] | None,
    balanced_sampler: bool,
    objective: str,
) -> dict[str, Any] | None:
    """The multi-class decision rule chosen on the validation predictions (``None``: argmax, no validation labels)."""
    if not validation:
        logger.warning("no validation entries: multi-class decisions are the plain argmax")
        return None
    yv, pv, _ = predict_probabilities(network, validation, transform, device, batch_size)
    if yv is None:
        logger.warning("validation entries have no labels: multi-class decisions are the plain argmax")
        return None
    source = "training entries" if train_entries else "validation labels (no training entries given)"
    entries = list(train_entries) if train_entries else [{"label": int(y)} for y in yv]
    try:
        prior = training_class_prior(entries, len(classes), class_weights, balanced_sampler)
    except ValueError as e:
        logger.warning(f"cannot estimate the class priors ({e}): multi-class decisions are the plain argmax")
        return None
    rule = choose_decision_rule(
        yv, pv, prior["class_priors"], prior["training_prior"], objective=objective, classes=list(classes),
        source={
            "class_priors_from": source, "class_weights": prior["class_weights"], "sampler": prior["sampler"],
            "n_train": prior["n_train"],
        },
    )  # fmt: skip
    logger.info(
        f"multi-class decision rule chosen on {len(yv)} validation cases ({objective}): {rule['method']}"
        + (f", alpha {rule['alpha']:g}" if rule["alpha"] is not None else "")
        + f" (validation accuracy {rule['validation']['accuracy']:.3f}, majority-class rate of the training labels "
        f"{rule['majority_rate']:.3f})"
    )
    return rule
