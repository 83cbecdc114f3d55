"""Classification losses: (class-weighted) cross-entropy, an L1 weight penalty, and the class prior they train for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medmonai.data.samplers import class_counts
from medmonai.data.samplers import class_weights as make_weights
from medmonai.data.synthetic import is_synthetic

__all__ = ["L1Penalty", "classification_loss", "training_class_prior"]


class L1Penalty(torch.nn.Module):
    """``base_loss(pred, target) + l1 * sum(|w|)`` over a set of weights.

    With ``scope="head"`` the penalty applies to the classifier head's weights (sparse use of the deep features, i.e.
    L1 feature selection inside the network); with ``"all"`` to every trainable weight (biases and normalisation
    parameters excluded).

    Args:
        base_loss: the data term (e.g. cross-entropy).
        model: the network; a ``Classifier`` exposes ``head``; DDP-wrapped models are unwrapped.
        l1: penalty strength (0 disables it).
        scope: ``"head"`` or ``"all"``.
    """

    def __init__(self, base_loss: torch.nn.Module, model: torch.nn.Module, l1: float = 0.0, scope: str = "head"):
        super().__init__()
        if scope not in ("head", "all"):
            raise ValueError(f"L1 scope must be 'head' or 'all', got {scope!r}")
        self.base_loss = base_loss
        self.l1 = float(l1)
        net = model.module if hasattr(model, "module") else model
        source = getattr(net, "head", None) if scope == "head" else net
        if source is None:
            raise ValueError("L1 scope 'head' needs a model with a `head` (build it with medmonai.networks)")
        self._params = [p for n, p in source.named_parameters() if p.ndim > 1 and "bn" not in n.lower()]

    def penalty(self) -> torch.Tensor:
        """The current L1 term (without the factor ``l1``), counting trainable weights only."""
        terms = [p.abs().sum() for p in self._params if p.requires_grad]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Data term plus the weighted L1 term."""
        loss = self.base_loss(pred, target)
        if self.l1 > 0:
            loss = loss + self.l1 * self.penalty().to(loss.device)
        return loss


def classification_loss(
    num_classes: int,
    class_weights: str | Sequence[float] | None = None,
    entries: Sequence[dict[str, Any]] | None = None,
    label_smoothing: float = 0.0,
    l1: float = 0.0,
    model: torch.nn.Module | None = None,
    l1_scope: str = "head",
    device: Any = "cpu",
) -> torch.nn.Module:
    """Cross-entropy for integer labels of shape (B,) or (B, 1), with optional class weights and L1 penalty.

    Args:
        num_classes: number of classes.
        class_weights: ``"balanced"`` (inverse class frequency of ``entries``), explicit weights, or None.
        entries: training entries (for ``"balanced"``).
        label_smoothing: cross-entropy label smoothing.
        l1: L1 penalty strength (needs ``model``).
        model: the network (for the L1 term).
        l1_scope: ``"head"`` or ``"all"``, see :class:`L1Penalty`.
        device: where the class weights live.

    Returns:
        A loss module ``loss(logits, labels)``.
    """
    w = make_weights(entries, num_classes, class_weights)
    ce = _FlatCrossEntropy(weight=None if w is None else w.to(device), label_smoothing=label_smoothing)
    if l1 > 0:
        if model is None:
            raise ValueError("an L1 penalty needs the model")
        return L1Penalty(ce, model, l1=l1, scope=l1_scope)
    return ce


def training_class_prior(
    entries: Sequence[dict[str, Any]],
    num_classes: int,
    class_weights: str | Sequence[float] | None = None,
    balanced_sampler: bool = False,
) -> dict[str, Any]:
    """The class distribution a classifier was effectively trained for, and the real one (for the decision rule).

    Cross-entropy with class weights ``w`` (:func:`classification_loss`, the same weights) on cases drawn with class
    frequencies ``s`` (the training entries' frequencies, or uniform with the class-balanced sampler) trains the
    model's softmax to estimate posteriors for the prior ``w_c * s_c`` (normalised): with ``balanced`` weights that is
    uniform, whatever the real frequencies. :func:`medmonai.metrics.threshold.choose_decision_rule` uses both to
    correct the probabilities back towards the real class frequencies.

    Args:
        entries: the training entries the loss saw (synthetic ones included; the real frequencies leave them out).
        num_classes: number of classes.
        class_weights: the loss's ``class_weights`` setting (``"balanced"``, a list, or None).
        balanced_sampler: whether training drew classes uniformly (``class_balanced_sampler``).

    Returns:
        ``{"class_priors": real training frequencies, "training_prior": the effective prior, "class_weights": the
        weights or None, "sampler": "class_balanced" | "data", "n_train": real training cases}``.

    Raises:
        ValueError: when a class has no training entry.
    """
    real = [e for e in entries if not is_synthetic(e)] or list(entries)
    counts = class_counts(real, num_classes).astype(np.float64)
    if (counts == 0).any():
        raise ValueError(f"class(es) {np.flatnonzero(counts == 0).tolist()} have no training entries")
    drawn = np.full(num_classes, 1.0) if balanced_sampler else class_counts(entries, num_classes).astype(np.float64)
    w = make_weights(entries, num_classes, class_weights)
    weights = None if w is None else [float(v) for v in w]
    effective = drawn * (np.asarray(weights) if weights is not None else 1.0)
    return {
        "class_priors": (counts / counts.sum()).tolist(),
        "training_prior": (effective / effective.sum()).tolist(),
        "class_weights": weights,
        "sampler": "class_balanced" if balanced_sampler else "data",
        "n_train": int(counts.sum()),
    }


class _FlatCrossEntropy(torch.nn.CrossEntropyLoss):
    """Cross-entropy that accepts (B, 1) float/int labels as MONAI dictionary batches give them."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: A002
        target = torch.as_tensor(target)
        if target.ndim == input.ndim:  # (B, 1)
            target = target.squeeze(1)
        return super().forward(input, target.long())
