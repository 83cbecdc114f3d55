"""A uniform image classifier: ``backbone`` (image -> feature vector) + ``head`` (dropout + linear).

Every network of :func:`medmonai.networks.factory.build_network` is a :class:`Classifier`, so transfer strategies,
feature extraction and checkpoint loading work the same way whatever the backbone. Freezing is done with
:meth:`Classifier.freeze`: the parameters stop requiring gradients *and* the frozen modules stay in eval mode
whatever ``model.train()`` is called — BatchNorm running statistics are not updated, dropout and stochastic depth
are off — so a frozen backbone computes deterministic features that may be cached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = ["Classifier", "FROZEN_ATTR", "is_frozen", "batchnorm_layers"]

#: Attribute set on every module frozen by :meth:`Classifier.freeze`.
FROZEN_ATTR = "_medmonai_frozen"


def is_frozen(module: nn.Module) -> bool:
    """Whether ``module`` was frozen by :meth:`Classifier.freeze` (kept in eval mode)."""
    return bool(getattr(module, FROZEN_ATTR, False))


def batchnorm_layers(module: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """``(name, layer)`` of every BatchNorm layer (1D/2D/3D, sync) inside ``module``, in registration order."""
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class Classifier(nn.Module):
    """``forward(x) = head(backbone(x))`` with named backbone stages for transfer learning.

    Args:
        backbone: module mapping an image batch ``(B, C, *spatial)`` to features ``(B, feature_dim)``.
        feature_dim: length of the feature vector.
        num_classes: number of output logits.
        dropout: dropout probability before the linear layer of the head.
        stages: ordered backbone parts ``[stem, stage1, ..., stageN]`` (modules inside ``backbone``; may be
            unregistered containers grouping several registered modules). Defaults to ``[backbone]``.
        stage_names: names of ``stages`` (defaults to ``stem``, ``stage1``...).
        feature_block: the last layer group that produces the features (e.g. the 1x1 head convolution of an
            EfficientNet, the last residual block of a ResNet); trained by ``finetune_head``. Defaults to
            the last stage.
        name: network name (for logs).
        spatial_dims: 2 or 3.
        in_channels: number of input channels.

    Attributes:
        pretrained_source: where the backbone weights came from (``None`` when trained from scratch,
            ``"imagenet"`` or a checkpoint path); set by the factory.
        load_report: the :class:`~medmonai.networks.pretrained.LoadReport` of a checkpoint load, if any.
        transfer_info: what :func:`~medmonai.networks.transfer.apply_transfer_strategy` did (strategy, reason...).
    """

    #: properties TorchScript must not compile (``ckpt_export`` scripts the model)
    __jit_unused_properties__ = ["feature_block"]

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        dropout: float = 0.0,
        stages: Sequence[nn.Module] | None = None,
        stage_names: Sequence[str] | None = None,
        feature_block: nn.Module | None = None,
        name: str = "",
        spatial_dims: int = 2,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.backbone = backbone
        self.head = nn.Sequential(
            OrderedDict([("dropout", nn.Dropout(dropout)), ("fc", nn.Linear(feature_dim, num_classes))])
        )
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.name = name
        self.input_scale = 1.0  # see set_input_affine
        self.input_shift = 0.0
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        # plain lists: the stages are views on modules already registered in the backbone (no duplicate keys)
        self.stages: list[nn.Module] = list(stages) if stages is not None else [backbone]
        if stage_names is None:
            stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(self.stages))]
        if len(stage_names) != len(self.stages):
            raise ValueError(f"{len(stage_names)} stage names for {len(self.stages)} stages")
        self.stage_names: list[str] = list(stage_names)
        # kept in a list so that it is not registered twice as a submodule
        self._feature_block: list[nn.Module] = [feature_block if feature_block is not None else self.stages[-1]]
        self.pretrained_source: str | None = None
        self.load_report = None
        self.transfer_info: dict = {}

    @property
    def feature_block(self) -> nn.Module:
        """The last backbone layer group producing the features (trained by ``finetune_head``)."""
        return self._feature_block[0]

    def set_input_affine(self, scale: float = 1.0, shift: float = 0.0) -> None:
        """Map inputs ``x -> x * scale + shift`` before the backbone.

        E.g. ``(2, -1)`` maps [0, 1] to the [-1, 1] range that ImageNet EfficientNet-Lite weights expect. Stored as
        plain attributes, not in the state dict.
        """
        self.input_scale = float(scale)
        self.input_shift = float(shift)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale != 1.0 or self.input_shift != 0.0:
            x = x * self.input_scale + self.input_shift
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(B, feature_dim)``."""
        return self.backbone(self._prepare(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``."""
        return self.head(self.backbone(self._prepare(x)))

    # ---- freezing -------------------------------------------------------------------------------------------
    def freeze(self, modules: nn.Module | Iterable[nn.Module]) -> None:
        """Freeze ``modules``: ``requires_grad=False`` and eval mode kept across ``train()`` calls (BN stats fixed)."""
        for module in [modules] if isinstance(modules, nn.Module) else modules:
            for m in module.modules():
                setattr(m, FROZEN_ATTR, True)
                m.training = False
            for p in module.parameters():
                p.requires_grad_(False)

    def unfreeze(self, modules: nn.Module | Iterable[nn.Module] | None = None) -> None:
        """Undo :meth:`freeze` on ``modules`` (default: the whole model); their train/eval mode follows the model."""
        if modules is None:
            modules = [self]
        for module in [modules] if isinstance(modules, nn.Module) else modules:
            for m in module.modules():
                if hasattr(m, FROZEN_ATTR):
                    delattr(m, FROZEN_ATTR)
                m.training = self.training
            for p in module.parameters():
                p.requires_grad_(True)

    def frozen_batchnorm_names(self) -> list[str]:
        """Names of the BatchNorm layers whose running statistics are frozen."""
        return [n for n, m in batchnorm_layers(self) if is_frozen(m)]

    def train(self, mode: bool = True) -> Classifier:
        """Set train/eval mode; modules frozen by :meth:`freeze` always stay in eval mode."""
        super().train(mode)
        if mode:
            for m in self.modules():
                if is_frozen(m):
                    m.training = False
        return self

    def stage_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters of every stage, keyed by stage name (a parameter belongs to the first stage listing it)."""
        seen: set[int] = set()
        out: dict[str, list[nn.Parameter]] = {}
        for name, stage in zip(self.stage_names, self.stages):
            params = [p for p in stage.parameters() if id(p) not in seen]
            seen.update(id(p) for p in params)
            out[name] = params
        return out
