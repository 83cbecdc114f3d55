"""Transfer-learning strategies for a :class:`~medmonai.networks.classifier.Classifier`, named in configs.

:func:`apply_transfer_strategy` freezes the right parts of the network and returns torch optimizer parameter groups
with per-group learning rates (head at ``lr``, trainable backbone at ``lr * backbone_lr_scale``); frozen parameters
have ``requires_grad=False``, are left out of the groups, and their modules stay in eval mode whatever
``model.train()`` is called (BatchNorm running statistics frozen, dropout / stochastic depth off).

=========================  ========================================================================================
strategy                   trainable (everything else frozen, BatchNorm statistics included)
=========================  ========================================================================================
``scratch``                everything, all at ``lr`` (meant for a network built without pretrained weights; the
                           weights are not re-initialised)
``feature_extractor``      the new head only; the backbone is a fixed feature extractor (its features may be cached)
``finetune_head``          the head + ``model.feature_block``, the last layer group producing the features
                           (EfficientNet: the 1x1 head convolution and its BN; ResNet: the last residual block;
                           DenseNet: the last dense layer and the final BN; small CNN: the last conv unit). Unlike
                           ``feature_extractor``, the features adapt and that block's BN statistics follow the data.
``finetune_late``          the head + the last ``n_late_stages`` stages
``finetune_all_but_early`` everything except the stem and the first stage (the stem only, for a 2-stage network)
``finetune_all``           everything (backbone at the lower learning rate)
``auto``                   one of the above picked by :func:`choose_strategy` from the training-set size and the
                           :func:`domain_similarity` of a data sample; the reason is logged and kept in
                           ``model.transfer_info``
=========================  ========================================================================================

In a MONAI bundle::

    optimizer:
      _target_: torch.optim.AdamW
      params:
        _target_: medmonai.networks.transfer.apply_transfer_strategy
        model: "@network"
        strategy: finetune_late
        lr: 0.001
      lr: 0.001
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from medmonai.networks.classifier import Classifier, batchnorm_layers, is_frozen

__all__ = [
    "STRATEGIES",
    "choose_strategy",
    "domain_similarity",
    "bn_layer_similarities",
    "apply_transfer_strategy",
    "trainable_parameter_report",
]

logger = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = (
    "scratch",
    "feature_extractor",
    "finetune_head",
    "finetune_late",
    "finetune_all_but_early",
    "finetune_all",
    "auto",
)

_DESCRIPTIONS = {
    "feature_extractor": "train only a new head on frozen pretrained features (too little data to adapt the "
    "backbone, and the pretrained features already fit this kind of image)",
    "finetune_late": "fine-tune the last stage(s) and the head (little data, but the high-level features must "
    "adapt to a different image domain; generic early filters stay frozen)",
    "finetune_all_but_early": "fine-tune all but the stem and first stage (enough data to adapt most of the "
    "network; the generic early filters already suit this domain)",
    "finetune_all": "fine-tune the whole network at a reduced backbone learning rate (enough data, and a domain "
    "far from the pretraining one)",
}


def choose_strategy(
    n_train: int, similarity: float, small_data_max: int = 1000, similarity_threshold: float = 0.6
) -> tuple[str, str]:
    """Pick a transfer strategy from the training-set size and the domain similarity.

    Rule table (``small`` means ``n_train < small_data_max``; ``similar`` means
    ``similarity >= similarity_threshold``, see :func:`domain_similarity`):

    ============  ==========  ===========================
    data          domain      strategy
    ============  ==========  ===========================
    small         similar     ``feature_extractor``
    small         dissimilar  ``finetune_late``
    large         similar     ``finetune_all_but_early``
    large         dissimilar  ``finetune_all``
    ============  ==========  ===========================

    Args:
        n_train: number of training images (cases).
        similarity: domain similarity in [0, 1].
        small_data_max: training sets smaller than this are "small".
        similarity_threshold: similarities at or above this are "similar".

    Returns:
        ``(strategy, reason)``; the reason quotes ``n_train``, ``similarity`` and the thresholds.
    """
    if n_train < 0:
        raise ValueError(f"n_train must be >= 0, got {n_train}")
    if not 0.0 <= similarity <= 1.0:
        raise ValueError(f"similarity must be in [0, 1], got {similarity}")
    small = n_train < small_data_max
    similar = similarity >= similarity_threshold
    strategy = {
        (True, True): "feature_extractor",
        (True, False): "finetune_late",
        (False, True): "finetune_all_but_early",
        (False, False): "finetune_all",
    }[(small, similar)]
    reason = (
        f"n_train={n_train} {'<' if small else '>='} {small_data_max} ({'small' if small else 'large'} training set) "
        f"and similarity={similarity:.3f} {'>=' if similar else '<'} {similarity_threshold} "
        f"({'similar to' if similar else 'dissimilar from'} the pretraining domain) -> {strategy}: "
        f"{_DESCRIPTIONS[strategy]}"
    )
    return strategy, reason


def _iter_batches(data: Any, image_key: str, batch_size: int = 32) -> Iterable[torch.Tensor]:
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, torch.Tensor):
        for i in range(0, data.shape[0], batch_size):
            yield data[i : i + batch_size]
        return
    if isinstance(data, Mapping):
        yield from _iter_batches(data[image_key], image_key, batch_size)
        return
    for batch in data:
        if isinstance(batch, Mapping):
            batch = batch[image_key]
        elif isinstance(batch, list | tuple):
            batch = batch[0]
        yield torch.as_tensor(batch)


def bn_layer_similarities(
    model: nn.Module, data: Any, n_layers: int | None = None, max_batches: int = 8, image_key: str = "image"
) -> dict[str, float]:
    """Per-layer similarities behind :func:`domain_similarity` (``{BN layer name: similarity}``)."""
    backbone = model.backbone if isinstance(model, Classifier) else model
    layers = batchnorm_layers(backbone)
    if not layers:
        raise ValueError("domain_similarity needs a backbone with BatchNorm layers")
    # forward order can differ from registration order: record the order in which the BN layers run
    stats: dict[str, list[torch.Tensor | int]] = {}
    order: list[str] = []

    def hook(name: str):
        def fn(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            if name not in stats:
                if n_layers is not None and len(order) >= n_layers:  # only the first n_layers to run are measured
                    return
                c = inputs[0].shape[1]
                stats[name] = [torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0]
                order.append(name)
            x = inputs[0].detach().double()
            dims = [0] + list(range(2, x.ndim))
            s = stats[name]
            s[0] = s[0] + x.sum(dim=dims).cpu()
            s[1] = s[1] + (x * x).sum(dim=dims).cpu()
            s[2] = s[2] + x.numel() // x.shape[1]

        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers]
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    n_seen = 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(_iter_batches(data, image_key)):
                if i >= max_batches:
                    break
                backbone(batch.float().to(device))
                n_seen += batch.shape[0]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if n_seen == 0:
        raise ValueError("domain_similarity got no data")
    by_name = dict(layers)
    out: dict[str, float] = {}
    for name in order:
        bn = by_name[name]
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError(f"BatchNorm layer '{name}' tracks no running statistics")
        s_sum, s_sq, count = stats[name]
        mu_t = s_sum / count
        var_t = (s_sq / count - mu_t**2).clamp_min(0) + bn.eps
        mu_s = bn.running_mean.detach().double().cpu()
        var_s = bn.running_var.detach().double().cpu() + bn.eps
        # symmetric KL divergence between the per-channel Gaussians, median over channels (robust to dead channels)
        ratio = var_t / var_s
        dmu2 = (mu_t - mu_s) ** 2
        kl_sym = 0.5 * (ratio + 1 / ratio - 2) + 0.5 * dmu2 * (1 / var_s + 1 / var_t)
        out[name] = float(torch.exp(-kl_sym.median()))
    untouched = [
        n
        for n in out
        if torch.all(by_name[n].running_mean == 0) and torch.all(by_name[n].running_var == 1)  # default init
    ]
    if len(untouched) == len(out):
        raise ValueError(
            "domain_similarity needs pretrained BatchNorm statistics, but the early BatchNorm layers have their "
            "initial values (running mean 0, variance 1): the network is not pretrained"
        )
    return out


def domain_similarity(
    model: nn.Module, data: Any, n_layers: int | None = None, max_batches: int = 8, image_key: str = "image"
) -> float:
    """How close a data sample is to the pretraining domain, in [0, 1], from the BatchNorm statistics.

    Every BatchNorm layer of a pretrained backbone stores the per-channel mean and variance of its input over the
    pretraining data (``running_mean``, ``running_var``). The sample is passed through the backbone (eval mode, no
    gradient, statistics untouched) and, for each BatchNorm layer, the per-channel mean and variance of its input
    are pooled over all images and positions, as BatchNorm does. Each channel's two distributions are compared as
    Gaussians with the symmetric Kullback-Leibler divergence
    ``KL = (r + 1/r - 2) / 2 + (m1 - m2)^2 (1/v1 + 1/v2) / 2`` (``r = v1 / v2``); a layer's divergence is the median
    over its channels (robust to dead channels), its similarity ``exp(-divergence)``, and the result is the
    geometric mean of the layer similarities, i.e. ``exp(-mean layer divergence)``: 1 for data distributed like
    the pretraining data, towards 0 as the activations drift. Early layers react to intensity, contrast and
    texture; late layers to content, so all layers are used by default (early layers alone rate Gaussian noise as
    close to ImageNet as natural photos). Preprocess the sample exactly as the training data (e.g. [-1, 1] for
    EfficientNet-Lite), since intensity scaling changes the statistics.

    Measured with ImageNet EfficientNet-Lite0 (all 49 layers; 64 crops of the scikit-image photos chelsea,
    astronaut, coffee and rocket; 16 crops of the grayscale ``camera``; 64 training images of the MedMNIST sets;
    Gaussian noise; every set resized to the size shown and scaled to [-1, 1]):

    ======  =======  ===========  ===========  ==============  =====
    size    natural  camera gray  BreastMNIST  PneumoniaMNIST  noise
    ======  =======  ===========  ===========  ==============  =====
    28 px   0.39     0.17         0.26         0.23            0.01
    64 px   0.75     0.63         0.53         0.55            0.03
    128 px  0.88     0.81         0.46         0.44            0.08
    224 px  0.92     0.88         0.22         0.18            0.07
    ======  =======  ===========  ===========  ==============  =====

    Hence the default threshold 0.6 of :func:`choose_strategy`. The statistics also depend on the input size
    (ImageNet statistics were collected at 224 px): at 28 px even natural photos score low, which correctly says that
    the pretrained features do not fit such inputs as they are.

    Args:
        model: a pretrained Classifier (or a bare backbone).
        data: a tensor / array ``(N, C, *spatial)``, a dict with ``image_key``, or an iterable of batches (tensors,
            dicts with ``image_key`` or ``(image, label)`` tuples), e.g. a DataLoader.
        n_layers: use only the first ``n_layers`` BatchNorm layers in execution order (``None``: all).
        max_batches: at most this many batches are read from ``data``.
        image_key: key of the image in dict batches.

    Raises:
        ValueError: no BatchNorm layer, no data, or BatchNorm statistics still at their initial values.
    """
    per_layer = bn_layer_similarities(model, data, n_layers=n_layers, max_batches=max_batches, image_key=image_key)
    return _geometric_mean(per_layer.values())


def _geometric_mean(values: Iterable[float]) -> float:
    return float(np.exp(np.mean(np.log(np.clip(list(values), 1e-12, None)))))


def _n(params: Iterable[nn.Parameter]) -> int:
    return int(sum(p.numel() for p in params))


def trainable_parameter_report(model: nn.Module) -> dict[str, Any]:
    """Counts of trainable / frozen parameters (and per stage and frozen BatchNorm layers for a Classifier)."""
    params = list(model.parameters())
    total, trainable = _n(params), _n(p for p in params if p.requires_grad)
    report: dict[str, Any] = {
        "total": total,
        "trainable": trainable,
        "frozen": total - trainable,
        "trainable_fraction": round(trainable / total, 6) if total else 0.0,
    }
    bns = batchnorm_layers(model)
    report["batchnorm_layers"] = len(bns)
    report["frozen_batchnorm_layers"] = sum(is_frozen(m) for _, m in bns)
    if isinstance(model, Classifier):
        stages = {}
        for name, stage_params in model.stage_parameters().items():
            stages[name] = {"params": _n(stage_params), "trainable": _n(p for p in stage_params if p.requires_grad)}
        report["stages"] = stages
        head = list(model.head.parameters())
        report["head"] = {"params": _n(head), "trainable": _n(p for p in head if p.requires_grad)}
    return report


def apply_transfer_strategy(
    model: Classifier,
    strategy: str = "finetune_all",
    lr: float = 1e-3,
    backbone_lr_scale: float = 0.1,
    n_late_stages: int = 1,
    weight_decay: float | None = None,
    n_train: int | None = None,
    sample: Any = None,
    similarity: float | None = None,
    small_data_max: int = 1000,
    similarity_threshold: float = 0.6,
    similarity_layers: int | None = None,
    max_batches: int = 8,
    image_key: str = "image",
) -> list[dict[str, Any]]:
    """Freeze/unfreeze ``model`` for a transfer strategy and return optimizer parameter groups.

    The strategy replaces any earlier one (everything is unfrozen first). See the module docstring for what each
    strategy trains.

    Args:
        model: a :class:`~medmonai.networks.classifier.Classifier` (see
            :func:`~medmonai.networks.factory.build_network`).
        strategy: one of :data:`STRATEGIES`.
        lr: learning rate of the head (and of everything for ``scratch``).
        backbone_lr_scale: the trainable backbone parameters get ``lr * backbone_lr_scale``.
        n_late_stages: stages trained by ``finetune_late`` (and by ``auto`` when it picks it).
        weight_decay: weight decay of every group; ``None`` leaves it out of the groups so that the optimizer's own
            ``weight_decay`` applies (a group value would silently override it).
        n_train: training-set size (``auto``).
        sample: images to measure the domain similarity (``auto``; see :func:`domain_similarity` for the accepted
            forms), preprocessed like the training data.
        similarity: a similarity measured beforehand (``auto``; used instead of ``sample``).
        small_data_max: ``auto`` threshold on ``n_train`` (see :func:`choose_strategy`).
        similarity_threshold: ``auto`` threshold on the similarity.
        similarity_layers: BatchNorm layers used by the similarity (``None``: all).
        max_batches: batches of ``sample`` read.
        image_key: image key in dict batches of ``sample``.

    Returns:
        Parameter groups for a ``torch.optim`` optimizer: ``{"name": "head" | "backbone", "params": [...],
        "lr": ...[, "weight_decay": ...]}`` (the backbone group is absent when the backbone is frozen). What was done
        is stored in ``model.transfer_info`` (strategy, reason, similarity, parameter counts) and logged.
    """
    if not isinstance(model, Classifier):
        raise TypeError(
            f"apply_transfer_strategy needs a medmonai Classifier (build_network), got {type(model).__name__}"
        )
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown transfer strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    if backbone_lr_scale < 0 or lr <= 0:
        raise ValueError(f"lr must be > 0 and backbone_lr_scale >= 0, got {lr} and {backbone_lr_scale}")
    requested = strategy
    info: dict[str, Any] = {"requested": requested}
    reason = f"strategy '{strategy}' set in the configuration"
    if strategy == "auto":
        if model.pretrained_source is None:
            strategy = "scratch"
            reason = "the network has no pretrained weights (pretrained=None), so it is trained from scratch"
        else:
            if n_train is None:
                raise ValueError("strategy 'auto' needs n_train (the number of training images)")
            if similarity is None:
                if sample is None:
                    raise ValueError("strategy 'auto' needs sample (training images) or a precomputed similarity")
                per_layer = bn_layer_similarities(
                    model, sample, n_layers=similarity_layers, max_batches=max_batches, image_key=image_key
                )
                similarity = _geometric_mean(per_layer.values())
                info["similarity_per_layer"] = per_layer
            strategy, reason = choose_strategy(n_train, similarity, small_data_max, similarity_threshold)
        info.update(n_train=n_train, similarity=similarity)
        logger.info("transfer strategy auto: %s", reason)

    model.unfreeze()
    n_stages = len(model.stages)
    if strategy == "scratch" and model.pretrained_source is not None:
        logger.warning(
            "strategy 'scratch' on a network with pretrained weights (%s): all layers train at lr=%g; the weights "
            "are not re-initialised",
            model.pretrained_source,
            lr,
        )
    if strategy not in ("scratch", "finetune_all") and model.pretrained_source is None:
        logger.warning("strategy '%s' freezes layers of a network that has no pretrained weights", strategy)
    frozen_stages: list[str] = []
    if strategy == "feature_extractor":
        model.freeze(model.backbone)
        frozen_stages = list(model.stage_names)
    elif strategy == "finetune_head":
        model.freeze(model.backbone)
        model.unfreeze(model.feature_block)
        frozen_stages = list(model.stage_names)  # all but their feature block
    elif strategy == "finetune_late":
        if not 1 <= n_late_stages <= n_stages:
            raise ValueError(f"n_late_stages must be in [1, {n_stages}] for {model.name}, got {n_late_stages}")
        model.freeze(model.stages[: n_stages - n_late_stages])
        frozen_stages = model.stage_names[: n_stages - n_late_stages]
    elif strategy == "finetune_all_but_early":
        k = min(2, n_stages - 1)
        model.freeze(model.stages[:k])
        frozen_stages = model.stage_names[:k]

    head_params = [p for p in model.head.parameters() if p.requires_grad]
    backbone_params = [p for p in model.backbone.parameters() if p.requires_grad]
    backbone_lr = lr if strategy == "scratch" else lr * backbone_lr_scale
    groups: list[dict[str, Any]] = [{"name": "head", "params": head_params, "lr": lr}]
    if backbone_params:
        groups.append({"name": "backbone", "params": backbone_params, "lr": backbone_lr})
    if weight_decay is not None:
        for g in groups:
            g["weight_decay"] = weight_decay

    counts = trainable_parameter_report(model)
    info.update(
        strategy=strategy,
        reason=reason,
        frozen_stages=frozen_stages,
        features_cacheable=strategy == "feature_extractor",
        groups=[{"name": g["name"], "lr": g["lr"], "params": _n(g["params"])} for g in groups],
        trainable_params=counts["trainable"],
        total_params=counts["total"],
        frozen_batchnorm_layers=counts["frozen_batchnorm_layers"],
    )
    model.transfer_info = info
    logger.info(
        "%s: transfer strategy %s, %d/%d parameters trainable (%d frozen BatchNorm layers), lr head %g / backbone %g",
        model.name,
        strategy,
        counts["trainable"],
        counts["total"],
        counts["frozen_batchnorm_layers"],
        lr,
        backbone_lr if backbone_params else 0.0,
    )
    return groups
