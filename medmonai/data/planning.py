"""Preprocessing plan from a dataset fingerprint, as named rules (after nnU-Net's ``ExperimentPlanner``).

:func:`plan_from_fingerprint` turns a fingerprint (:func:`medmonai.data.fingerprint.compute_fingerprint`) into a
preprocessing plan (target spacing, input size, normalization, orientation, channels) that
:func:`medmonai.transforms.preprocessing.build_preprocessing` consumes. Every decision is one rule function that
takes the fingerprint (and the values decided before it) and returns a :class:`Rule`: the value and the reason,
which goes into the plan's ``reasons``. :class:`Planner` composes the rules with one method per rule, so a planner
for other data can override a single rule (like nnU-Net's ``ExperimentPlanner`` subclasses).

Rules, in the order they are applied (after Isensee et al., nnU-Net, Nature Methods 2021, and nnU-Net v2):

- :func:`target_spacing_rule`: the median spacing per axis;
- :func:`anisotropy_rule`: if the coarsest axis is more than :data:`ANISOTROPY_THRESHOLD` x coarser than the
  others *and* has fewer than a third of their voxels, its target spacing is the 10th percentile of that axis'
  spacings (but never finer than the other axes);
- :func:`input_size_rule`: the median image shape after resampling to the target spacing, rounded up to a
  multiple of ``divisor``;
- :func:`size_budget_rule`: a size over the voxel budget is capped by shrinking the largest axes; when that would
  centre-crop away much of the field of view (less than :data:`MIN_KEPT_FRACTION` of the median resampled extent
  along an axis, or of the area/volume), the target spacing is coarsened instead until the whole median image fits
  (nnU-Net's low-resolution configuration: the finest axes first);
- :func:`size_mode_rule`: centre crop/pad to the input size (``"crop_pad"``);
- :func:`normalization_rule`: CT → clip to the pooled foreground 0.5/99.5 percentiles and z-score with the pooled
  foreground mean/std (``CTNormalization``; without masks over the in-field voxels); MR and other modalities →
  per-image z-score (over the non-zero region when cropping to it would remove more than a quarter of the image,
  as nnU-Net's ``use_mask_for_norm``); 8-bit 2D images → 0..255 to 0..1; mixed modalities → per-image z-score;
- :func:`ct_padding_rule` (CT only): reports the out-of-field padding left out of the CT statistics;
- :func:`orientation_rule`: 3D images are re-oriented to RAS, 2D images are kept as stored;
- :func:`channels_rule`: 2D data with any colour image → 3 input channels (grey images replicated); grey data
  (also RGB images with R = G = B) → 1; other data → its channel count;
- :func:`alpha_rule` (2D): an alpha channel is dropped and said so.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ANISOTROPY_THRESHOLD",
    "DEFAULT_DIVISOR",
    "DEFAULT_MAX_VOXELS",
    "MIN_KEPT_FRACTION",
    "Planner",
    "PlanOptions",
    "Rule",
    "alpha_rule",
    "anisotropy_rule",
    "channels_rule",
    "ct_padding_rule",
    "input_size_rule",
    "modality_category",
    "normalization_rule",
    "orientation_rule",
    "plan_from_fingerprint",
    "plan_options",
    "input_budget_rule",
    "classification_size_rule",
    "CLASSIFICATION_MAX_VOXELS",
    "PLAN_TASKS",
    "size_budget_rule",
    "size_mode_rule",
    "target_spacing_rule",
]

#: The coarsest axis is anisotropic when its spacing is more than this factor coarser than the other axes' (and
#: its size less than 1/this of theirs).
ANISOTROPY_THRESHOLD = 3.0
#: Centre-cropping that keeps less than this fraction of the median field of view (per axis, or of the
#: area/volume) is replaced by a coarser target spacing.
MIN_KEPT_FRACTION = 0.5
#: Default size divisor per spatial dimensionality (3D: 3 poolings like nnU-Net's hippocampus plan; 2D: 4).
DEFAULT_DIVISOR: dict[int, int] = {2: 16, 3: 8}
#: Default voxel budget of the input size per spatial dimensionality.
DEFAULT_MAX_VOXELS: dict[int, int] = {2: 256**2, 3: 128**3}
#: Voxel budget of a *classifier's* input (``task="classification"``): in 2D 48 x 48 pixels; a larger 2D image is
#: resized (anti-aliased) as a whole to fit it (:func:`classification_size_rule`). Measured on the default 2D
#: phantoms with the classification bundle (``benchmarks/bundle_defaults.py``, 3 seeds, compared by validation AUC):
#: every whole-field-of-view size from 32 to 64 px beats the native ~80 px (validation AUC about 0.97 vs 0.87), with
#: differences among them within the seed spread. Images smaller than the budget (e.g. MedMNIST's 28 px) are not
#: changed. 3D keeps the general budget and its rules (not measured for classification).
CLASSIFICATION_MAX_VOXELS: dict[int, int] = {2: 48**2, 3: DEFAULT_MAX_VOXELS[3]}
#: The tasks a plan can be made for (``None``: no task-specific rule).
PLAN_TASKS: tuple[str, ...] = ("classification", "segmentation")


@dataclass(frozen=True)
class Rule:
    """The outcome of one planning rule.

    Attributes:
        value: the decided value (its type depends on the rule).
        reason: why, in words; ``None`` when the rule has nothing to report (e.g. no alpha channel).
        reported: whether ``reason`` goes into the plan's ``reasons`` (``False`` for fixed choices that plans
            have never listed, so that plans stay unchanged).
    """

    value: Any
    reason: str | None
    reported: bool = True


@dataclass(frozen=True)
class PlanOptions:
    """Validated planning options.

    Attributes:
        spatial_dims: the fingerprint's dimensionality (2 or 3).
        divisor: every input size is a multiple of it.
        max_patch_voxels: the voxel budget of the input size.
        task: ``"classification"``, ``"segmentation"`` or ``None`` (no task-specific rule).
        budget_given: whether ``max_patch_voxels`` was given (else it is the task's default).
    """

    spatial_dims: int
    divisor: int
    max_patch_voxels: int
    task: str | None = None
    budget_given: bool = False

    @property
    def axes(self) -> list[str]:
        """Axis names for the reasons: ``LR, PA, IS`` (RAS order) in 3D, ``i, j`` (storage order) in 2D."""
        return "LR/PA/IS".split("/") if self.spatial_dims == 3 else ["i", "j"]


def _fmt(values: Sequence[float], nd: int = 3) -> str:
    return "(" + ", ".join(f"{v:.{nd}g}" for v in values) + ")"


def _arrays(fp: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-image spacings and shapes, ``(n_images, spatial_dims)``."""
    records = fp["images"]
    spacings = np.array([r["spacing"] for r in records], dtype=np.float64)
    shapes = np.array([r["shape"] for r in records], dtype=np.float64)
    return spacings, shapes


def _median_resampled(fp: Mapping[str, Any], spacing: np.ndarray) -> np.ndarray:
    spacings, shapes = _arrays(fp)
    return np.median(np.round(shapes * spacings / spacing[None, :]), axis=0)


def _round_up(shape: np.ndarray, divisor: int) -> list[int]:
    return [max(divisor, int(math.ceil(s / divisor) * divisor)) for s in shape]


def _unwrap(fp: Mapping[str, Any]) -> Mapping[str, Any]:
    if "fingerprint" in fp and isinstance(fp["fingerprint"], Mapping):
        return fp["fingerprint"]
    return fp


def modality_category(modality: str) -> str:
    """The normalization category of a modality: ``"CT"``, ``"8bit"`` or ``"zscore"`` (everything else)."""
    if modality == "CT":
        return "CT"
    if modality == "8bit":
        return "8bit"
    return "zscore"


def plan_options(
    fp: Mapping[str, Any],
    spatial_dims: int | None = None,
    max_patch_voxels: int | None = None,
    divisor: int | None = None,
    task: str | None = None,
) -> PlanOptions:
    """Check the planning options against the fingerprint and fill in the defaults.

    Args:
        fp: the fingerprint.
        spatial_dims: expected dimensionality (checked against the fingerprint).
        max_patch_voxels: voxel budget (default :data:`CLASSIFICATION_MAX_VOXELS` for ``task="classification"``,
            else :data:`DEFAULT_MAX_VOXELS`).
        divisor: size divisor, a power of two (default :data:`DEFAULT_DIVISOR`).
        task: one of :data:`PLAN_TASKS` or ``None``.

    Raises:
        ValueError: for an inconsistent ``spatial_dims``, an invalid divisor/budget or an unknown task.
    """
    if task is not None and task not in PLAN_TASKS:
        raise ValueError(f"unknown plan task {task!r}; valid: {list(PLAN_TASKS)} or None")
    sd = int(fp["spatial_dims"])
    if spatial_dims is not None and int(spatial_dims) != sd:
        raise ValueError(f"the fingerprint is {sd}D but spatial_dims={spatial_dims} was requested")
    div = int(divisor if divisor is not None else DEFAULT_DIVISOR[sd])
    if div < 1 or div & (div - 1):
        raise ValueError(f"divisor must be a power of two >= 1, got {div}")
    defaults = CLASSIFICATION_MAX_VOXELS if task == "classification" else DEFAULT_MAX_VOXELS
    budget = int(max_patch_voxels if max_patch_voxels is not None else defaults[sd])
    if budget < div**sd:
        raise ValueError(f"max_patch_voxels={budget} is smaller than one divisor block ({div}**{sd})")
    return PlanOptions(sd, div, budget, task=task, budget_given=max_patch_voxels is not None)


def classification_size_rule(
    fp: Mapping[str, Any],
    target_spacing: Sequence[float],
    spatial_size: Sequence[int],
    options: PlanOptions,
) -> Rule:
    """A 2D classifier's input: the whole image resized (anti-aliased) into the budget, at the median aspect ratio.

    Classification networks conventionally see the whole image at a fixed size (ImageNet and MedMNIST practice), and
    a centre crop would assume the finding is in the centre. Applies to ``task="classification"`` in 2D when the
    planned size exceeds the budget; otherwise (3D, within the budget, or a budget given by hand) this is
    :func:`size_budget_rule`.

    Returns:
        ``Rule(value={"target_spacing", "spatial_size", "median_shape_resampled", "size_mode"}, reason)``; the
        ``size_mode`` is ``"resize"`` when the rule resizes, else absent.
    """
    sd, divisor, budget = options.spatial_dims, options.divisor, options.max_patch_voxels
    if sd != 2 or int(np.prod(spatial_size)) <= budget:
        return size_budget_rule(fp, target_spacing, spatial_size, options)
    target = np.asarray(target_spacing, dtype=np.float64)
    med_res = _median_resampled(fp, target)
    scale = math.sqrt(budget / float(np.prod(np.maximum(med_res, 1.0))))
    size = [max(divisor, int(math.floor(m * scale / divisor)) * divisor) for m in med_res]
    while int(np.prod(size)) > budget and max(size) > divisor:
        axis = int(np.argmax(size))
        size[axis] -= divisor
    reason = (
        f"classification input: the whole image (median {_fmt(med_res, 4)} at the target spacing) is resized, "
        f"anti-aliased, to {tuple(size)} to fit the budget of {budget} pixels (size mode resize; a centre crop would "
        "assume the finding is in the centre)"
    )
    value = {
        "target_spacing": [float(t) for t in target],
        "spatial_size": [int(v) for v in size],
        "median_shape_resampled": [float(m) for m in med_res],
        "size_mode": "resize",
    }
    return Rule(value, reason)


def input_budget_rule(fp: Mapping[str, Any], options: PlanOptions) -> Rule:
    """Why the input size has the voxel budget it has: a classifier's is :data:`CLASSIFICATION_MAX_VOXELS`.

    Returns:
        ``Rule(value=max_patch_voxels, reason)``; the reason is ``None`` unless the classification budget (not
        given by hand) differs from the general one.
    """
    sd, budget = options.spatial_dims, options.max_patch_voxels
    if options.task != "classification" or options.budget_given or budget == DEFAULT_MAX_VOXELS[sd]:
        return Rule(budget, None)
    side = round(budget ** (1.0 / sd))
    reason = (
        f"input budget: {sd}D classification, {' x '.join([str(side)] * sd)} = {budget} voxels: the whole field of "
        "view at a lower resolution rather than the native one (measured: benchmarks/bundle_defaults.py); give "
        "max_patch_voxels or spatial_size for more detail"
    )
    return Rule(budget, reason)


def target_spacing_rule(fp: Mapping[str, Any], options: PlanOptions) -> Rule:
    """Target spacing = the median spacing per axis (nnU-Net's default).

    Returns:
        ``Rule(value=list of floats per axis, reason)``.
    """
    spacings, _ = _arrays(fp)
    target = np.median(spacings, axis=0)
    sd = options.spatial_dims
    reason = (
        f"target spacing: median spacing per axis {_fmt(target)} mm (axes {', '.join(options.axes)}"
        f"{', RAS order' if sd == 3 else ' as stored'}) "
        f"over {len(fp['images'])} images"
    )
    return Rule([float(t) for t in target], reason)


def anisotropy_rule(fp: Mapping[str, Any], target_spacing: Sequence[float], options: PlanOptions) -> Rule:
    """For anisotropic data, the coarsest axis' target spacing is the 10th percentile of its spacings.

    The coarsest axis is anisotropic when its median spacing is more than :data:`ANISOTROPY_THRESHOLD` x the other
    axes' *and* its median size is less than 1/:data:`ANISOTROPY_THRESHOLD` of theirs (nnU-Net: a median spacing
    would resample the few thick slices to even fewer; the 10th percentile keeps more of them). The target spacing
    is then rounded to 6 decimals.

    Returns:
        ``Rule(value={"target_spacing": [...], "anisotropic": bool}, reason)``; the reason is ``None`` when no axis
        is more than :data:`ANISOTROPY_THRESHOLD` x coarser.
    """
    spacings, shapes = _arrays(fp)
    median_shape = np.median(shapes, axis=0)
    target = np.asarray(target_spacing, dtype=np.float64).copy()
    sd, axes = options.spatial_dims, options.axes
    worst = int(np.argmax(target))
    others = [a for a in range(sd) if a != worst]
    anisotropic = False
    reason = None
    if others:
        max_other_spacing = max(target[a] for a in others)
        min_other_size = min(median_shape[a] for a in others)
        aniso_spacing = target[worst] > ANISOTROPY_THRESHOLD * max_other_spacing
        aniso_voxels = median_shape[worst] * ANISOTROPY_THRESHOLD < min_other_size
        if aniso_spacing and aniso_voxels:
            anisotropic = True
            p10 = float(np.percentile(spacings[:, worst], 10))
            new = max(p10, max_other_spacing + 1e-5) if p10 < max_other_spacing else p10
            reason = (
                f"anisotropic data: axis {axes[worst]} median spacing {target[worst]:.3g} mm is > "
                f"{ANISOTROPY_THRESHOLD:g}x the other axes' ({max_other_spacing:.3g} mm) and its median size "
                f"{median_shape[worst]:.0f} is < 1/{ANISOTROPY_THRESHOLD:g} of the others' ({min_other_size:.0f}): "
                f"its target spacing is the 10th percentile of its spacings, {new:.3g} mm (nnU-Net rule)"
            )
            target[worst] = new
        elif aniso_spacing:
            reason = (
                f"axis {axes[worst]} is > {ANISOTROPY_THRESHOLD:g}x coarser but has enough voxels "
                f"({median_shape[worst]:.0f}): median spacing kept"
            )
    target = np.round(target, 6)
    return Rule({"target_spacing": [float(t) for t in target], "anisotropic": anisotropic}, reason)


def input_size_rule(fp: Mapping[str, Any], target_spacing: Sequence[float], options: PlanOptions) -> Rule:
    """Input size = the median shape after resampling to the target spacing, rounded up to the divisor.

    Returns:
        ``Rule(value={"spatial_size": [...], "median_shape_resampled": [...]}, reason)``.
    """
    med_res = _median_resampled(fp, np.asarray(target_spacing, dtype=np.float64))
    size = _round_up(med_res, options.divisor)
    reason = (
        f"spatial size: median shape after resampling to the target spacing {_fmt(med_res, 4)} rounded up to a "
        f"multiple of {options.divisor} -> {tuple(size)}"
    )
    return Rule({"spatial_size": size, "median_shape_resampled": [float(s) for s in med_res]}, reason)


def size_budget_rule(
    fp: Mapping[str, Any],
    target_spacing: Sequence[float],
    spatial_size: Sequence[int],
    options: PlanOptions,
) -> Rule:
    """Fit the input size into the voxel budget: crop a little, or coarsen the spacing rather than crop a lot.

    A size over ``max_patch_voxels`` is shrunk on its largest axes; if the centre crop would then keep less than
    :data:`MIN_KEPT_FRACTION` of the median resampled extent along an axis (or of the area/volume), the target
    spacing is coarsened instead (by 3 % steps, axes finer than half the coarsest first: nnU-Net's low-resolution
    rule) until the whole median image fits.

    Returns:
        ``Rule(value={"target_spacing", "spatial_size", "median_shape_resampled"}, reason)``.
    """
    sd, divisor, budget, axes = options.spatial_dims, options.divisor, options.max_patch_voxels, options.axes
    target = np.asarray(target_spacing, dtype=np.float64)
    med_res = _median_resampled(fp, target)
    size = [int(s) for s in spatial_size]
    area = "area" if sd == 2 else "volume"
    if int(np.prod(size)) <= budget:
        reason = f"spatial size {tuple(size)} is within the budget of {budget} voxels"
    else:
        before = tuple(size)
        while int(np.prod(size)) > budget and max(size) > divisor:
            ratios = [size[a] / max(med_res[a], 1.0) for a in range(sd)]
            biggest = max(size)
            axis = max((a for a in range(sd) if size[a] == biggest), key=lambda a: ratios[a])
            size[axis] -= divisor
        kept = [min(1.0, size[a] / max(med_res[a], 1.0)) for a in range(sd)]
        kept_all = float(np.prod(kept))
        if min(kept) < MIN_KEPT_FRACTION or kept_all < MIN_KEPT_FRACTION:
            old_target = target.copy()
            worst_axis = int(np.argmin(kept))
            for _ in range(5000):
                fine = target < 0.5 * target.max()
                target = target * np.where(fine, 1.03, 1.0) if fine.any() else target * 1.03
                size = _round_up(_median_resampled(fp, target), divisor)
                if int(np.prod(size)) <= budget:
                    break
            target = np.round(target, 6)
            med_res = _median_resampled(fp, target)
            size = _round_up(med_res, divisor)
            reason = (
                f"spatial size {before} exceeds the budget of {budget} voxels; shrinking it to the budget would "
                f"centre-crop the median image to {kept[worst_axis]:.0%} of its extent along axis "
                f"{axes[worst_axis]} ({kept_all:.0%} of its {area}; the minimum is "
                f"{MIN_KEPT_FRACTION:.0%}): the target spacing is coarsened from {_fmt(old_target)} to "
                f"{_fmt(target)} mm instead (finest axes first, nnU-Net low-resolution rule), so that the whole "
                f"median field of view {_fmt(med_res, 4)} fits in {tuple(size)} "
                "(give target_spacing/spatial_size, a larger max_patch_voxels or patch-based training for more detail)"
            )
        else:
            reason = (
                f"spatial size {before} exceeds the budget of {budget} voxels: largest axes shrunk to {tuple(size)}; "
                f"the median image is centre-cropped to {_fmt([100 * k for k in kept])} % of its extent per axis "
                f"({kept_all:.0%} of its {area}, at least {MIN_KEPT_FRACTION:.0%} kept; "
                "use size_mode='resize', a coarser target spacing, a larger max_patch_voxels or patch-based "
                "training to keep the whole field of view)"
            )
    value = {
        "target_spacing": [float(t) for t in target],
        "spatial_size": [int(s) for s in size],
        "median_shape_resampled": [float(s) for s in med_res],
    }
    return Rule(value, reason)


def size_mode_rule(fp: Mapping[str, Any], options: PlanOptions) -> Rule:
    """Images are centre-cropped/padded to the input size (``"crop_pad"``), never resized.

    The reason is not reported in the plan (plans have always used ``crop_pad`` without saying so).
    """
    return Rule(
        "crop_pad",
        "size mode: crop_pad (centre crop/pad to the spatial size keeps the target spacing; resizing would change it)",
        reported=False,
    )


def normalization_rule(fp: Mapping[str, Any], options: PlanOptions) -> Rule:
    """Intensity normalization by modality (nnU-Net's ``CTNormalization`` / ``ZScoreNormalization``).

    Returns:
        ``Rule(value=normalization dict for build_preprocessing, reason)``: ``{"preset": "ct_clip_zscore",
        "lower", "upper", "mean", "std"}`` when every image is CT, ``{"preset": "scale255"}`` when every image is
        8-bit, else ``{"preset": "zscore", "nonzero", "channel_wise": True}``.
    """
    modalities: dict[str, int] = dict(fp.get("modality_counts", {}))
    categories: Counter[str] = Counter()
    for mod, n in modalities.items():
        categories[modality_category(mod)] += n
    sources = fp.get("modality_sources", {})
    src_txt = ", ".join(f"{k}: {v}" for k, v in sources.items())
    nz = float(fp.get("nonzero_bbox_fraction", {}).get("median", 1.0))
    if len(categories) == 1 and "CT" in categories:
        it = fp["intensity"]
        normalization = {
            "preset": "ct_clip_zscore",
            "lower": round(it["percentile_00_5"], 4),
            "upper": round(it["percentile_99_5"], 4),
            "mean": round(it["mean"], 4),
            "std": round(it["std"], 4),
        }
        reason = (
            f"normalization: all images are CT (modality from {src_txt}): nnU-Net CT normalization, clip to the "
            f"pooled {it['source']} 0.5/99.5 percentiles [{it['percentile_00_5']:.1f}, {it['percentile_99_5']:.1f}]"
            f" HU and z-score with their mean {it['mean']:.1f} / std {it['std']:.1f}"
            + ("" if it["source"] == "foreground" else f" (no masks for every image: statistics over {it['source']})")
        )
        return Rule(normalization, reason)
    if len(categories) == 1 and "8bit" in categories:
        return Rule(
            {"preset": "scale255"},
            f"normalization: all images are 8-bit (modality from {src_txt}): scale 0..255 to 0..1",
        )
    nonzero = nz < 0.75
    what = "all images are " + "/".join(modalities) if len(categories) == 1 else f"mixed modalities {modalities}"
    reason = f"normalization: {what} (modality from {src_txt}): per-image z-score" + (
        f" over the non-zero voxels (cropping to the non-zero region keeps a median {nz:.0%} of the image, < 75%)"
        if nonzero
        else f" over all voxels (the non-zero region covers a median {nz:.0%} of the image)"
    )
    return Rule({"preset": "zscore", "nonzero": bool(nonzero), "channel_wise": True}, reason)


def ct_padding_rule(fp: Mapping[str, Any], options: PlanOptions) -> Rule:
    """Report the out-of-field padding of CT images (the fingerprint already left it out of the statistics).

    Applied only when :func:`normalization_rule` chose CT normalization.

    Returns:
        ``Rule(value=number of padded images, reason)``; the reason is ``None`` without padding.
    """
    pad = dict(fp.get("padding") or {})
    n_pad = int(pad.get("n_images") or 0)
    if not n_pad:
        return Rule(0, None)
    it = fp["intensity"]
    values = ", ".join(f"{v} HU in {n}" for v, n in pad.get("values", {}).items())
    srcs = ", ".join(f"{k}: {v}" for k, v in pad.get("sources", {}).items())
    found = (
        f"{pad['n_images']} of {len(fp['images'])} images have padding outside the field of view ({values}; found "
        f"by {srcs}; a median {pad.get('median_fraction', 0):.0%} of their voxels)"
    )
    if it["source"] == "foreground":
        return Rule(n_pad, f"padding: {found}; not in the statistics (they use the mask foreground)")
    return Rule(n_pad, f"padding excluded from the CT statistics: {found}")


def orientation_rule(fp: Mapping[str, Any], options: PlanOptions) -> Rule:
    """3D images are re-oriented to RAS (so that axes and the target spacing match); 2D images are kept as stored.

    Returns:
        ``Rule(value="RAS" or None, reason)``.
    """
    if options.spatial_dims == 3:
        return Rule(
            "RAS", "orientation: re-orient 3D images to RAS so that axes (and the target spacing) match across images"
        )
    return Rule(None, "orientation: none for 2D images (projection images are kept as stored)")


def _channel_counts(fp: Mapping[str, Any]) -> dict[int, int]:
    return {int(k): int(v) for k, v in dict(fp.get("channels", {})).items()}


def _rgb_like(counts: Mapping[int, int], options: PlanOptions) -> bool:
    """2D data with grey, grey+alpha, RGB or RGBA images (channel semantics of PNG/JPEG)."""
    return options.spatial_dims == 2 and set(counts) <= {1, 2, 3, 4}


def channels_rule(fp: Mapping[str, Any], options: PlanOptions) -> Rule:
    """The network's input channels follow the data.

    2D data with any colour image (channels that differ) → 3 (RGB; grey images replicated to three channels);
    grey 2D data (also RGB images with R = G = B) → 1; other data → its channel count (mixed counts are reported,
    not harmonised).

    Returns:
        ``Rule(value={"in_channels": int, "channels": int or None (the build_preprocessing setting)}, reason)``.
    """
    counts = _channel_counts(fp)
    if not counts:
        return Rule(
            {"in_channels": 1, "channels": None},
            "channels: unknown (no channel counts in the fingerprint): in_channels 1",
        )
    n = sum(counts.values())
    if _rgb_like(counts, options):
        n_colour = fp.get("colour_images")
        if n_colour is None:  # older fingerprint: every 3/4-channel image counts as colour
            n_colour = counts.get(3, 0) + counts.get(4, 0)
        stored = ", ".join(f"{v} with {k}" for k, v in sorted(counts.items()))
        if n_colour:
            n_grey = n - int(n_colour)
            reason = (
                f"channels: {n_colour} of {n} images are colour (stored channels: {stored}): in_channels 3 (RGB)"
                + (f"; the {n_grey} grey image(s) are replicated to 3 channels" if n_grey else "")
            )
            return Rule({"in_channels": 3, "channels": 3}, reason)
        if set(counts) != {1}:
            reason = (
                f"channels: no image holds colour (stored channels: {stored}; R = G = B in every multi-channel "
                "image): converted to one grey channel without loss, in_channels 1"
            )
            return Rule({"in_channels": 1, "channels": 1}, reason)
        return Rule(
            {"in_channels": 1, "channels": None}, f"channels: all {n} images have one (grey) channel: in_channels 1"
        )
    if len(counts) == 1:
        c = next(iter(counts))
        return Rule(
            {"in_channels": c, "channels": None}, f"channels: all {n} images have {c} channel(s): in_channels {c}"
        )
    reason = (
        f"channels: mixed channel counts {counts} are not harmonised (they cannot be batched together): check the "
        f"data; in_channels {max(counts)}"
    )
    return Rule({"in_channels": max(counts), "channels": None}, reason)


def alpha_rule(fp: Mapping[str, Any], options: PlanOptions) -> Rule:
    """An alpha (transparency) channel of 2D grey+alpha/RGBA images is dropped, and said so.

    Returns:
        ``Rule(value=number of images with alpha, reason)``; the reason is ``None`` without alpha (or for data
        that are not 2D grey/colour images).
    """
    counts = _channel_counts(fp)
    if not counts or not _rgb_like(counts, options):
        return Rule(0, None)
    alpha = dict(fp.get("alpha_images") or {})
    n_alpha = int(alpha.get("n", counts.get(2, 0) + counts.get(4, 0)))
    if not n_alpha:
        return Rule(0, None)
    varying = alpha.get("varying")
    reason = (
        f"alpha: {n_alpha} image(s) have an alpha (transparency) channel"
        + (f", {varying} of them not fully constant" if varying else ", constant (no information)")
        + ": it is dropped, the grey/colour channels are used as stored"
        + ("; composite the images first if the transparency carries information" if varying else "")
    )
    return Rule(n_alpha, reason)


class Planner:
    """Composes the planning rules into a plan; subclass and override one method to change one rule.

    Each method applies the module-level rule of the same name (``target_spacing`` → :func:`target_spacing_rule`
    ...). :meth:`plan` applies them in order and collects the reported reasons.

    Args:
        spatial_dims: expected dimensionality (checked against the fingerprint).
        max_patch_voxels: voxel budget of the input size (default ``128**3`` in 3D, ``256**2`` in 2D).
        divisor: every input size is a multiple of it (a power of two: 2 ** number of down-samplings;
            default 8 in 3D, 16 in 2D).
    """

    def __init__(
        self,
        spatial_dims: int | None = None,
        max_patch_voxels: int | None = None,
        divisor: int | None = None,
        task: str | None = None,
    ) -> None:
        self.spatial_dims = spatial_dims
        self.max_patch_voxels = max_patch_voxels
        self.divisor = divisor
        self.task = task

    def options(self, fp: Mapping[str, Any]) -> PlanOptions:
        """See :func:`plan_options`."""
        return plan_options(fp, self.spatial_dims, self.max_patch_voxels, self.divisor, self.task)

    def input_budget(self, fp: Mapping[str, Any], options: PlanOptions) -> Rule:
        """See :func:`input_budget_rule`."""
        return input_budget_rule(fp, options)

    def classification_size(
        self, fp: Mapping[str, Any], target_spacing: Sequence[float], spatial_size: Sequence[int], options: PlanOptions
    ) -> Rule:
        """See :func:`classification_size_rule`."""
        return classification_size_rule(fp, target_spacing, spatial_size, options)

    def target_spacing(self, fp: Mapping[str, Any], options: PlanOptions) -> Rule:
        """See :func:`target_spacing_rule`."""
        return target_spacing_rule(fp, options)

    def anisotropy(self, fp: Mapping[str, Any], target_spacing: Sequence[float], options: PlanOptions) -> Rule:
        """See :func:`anisotropy_rule`."""
        return anisotropy_rule(fp, target_spacing, options)

    def input_size(self, fp: Mapping[str, Any], target_spacing: Sequence[float], options: PlanOptions) -> Rule:
        """See :func:`input_size_rule`."""
        return input_size_rule(fp, target_spacing, options)

    def size_budget(
        self, fp: Mapping[str, Any], target_spacing: Sequence[float], spatial_size: Sequence[int], options: PlanOptions
    ) -> Rule:
        """See :func:`size_budget_rule`."""
        return size_budget_rule(fp, target_spacing, spatial_size, options)

    def size_mode(self, fp: Mapping[str, Any], options: PlanOptions) -> Rule:
        """See :func:`size_mode_rule`."""
        return size_mode_rule(fp, options)

    def normalization(self, fp: Mapping[str, Any], options: PlanOptions) -> Rule:
        """See :func:`normalization_rule`."""
        return normalization_rule(fp, options)

    def ct_padding(self, fp: Mapping[str, Any], options: PlanOptions) -> Rule:
        """See :func:`ct_padding_rule`."""
        return ct_padding_rule(fp, options)

    def orientation(self, fp: Mapping[str, Any], options: PlanOptions) -> Rule:
        """See :func:`orientation_rule`."""
        return orientation_rule(fp, options)

    def channels(self, fp: Mapping[str, Any], options: PlanOptions) -> Rule:
        """See :func:`channels_rule`."""
        return channels_rule(fp, options)

    def alpha(self, fp: Mapping[str, Any], options: PlanOptions) -> Rule:
        """See :func:`alpha_rule`."""
        return alpha_rule(fp, options)

    def plan(self, fp: Mapping[str, Any]) -> dict[str, Any]:
        """The plan of a fingerprint (see :func:`plan_from_fingerprint`)."""
        fp = _unwrap(fp)
        opts = self.options(fp)
        reasons: list[str] = []

        def use(rule: Rule) -> Any:
            if rule.reason is not None and rule.reported:
                reasons.append(rule.reason)
            return rule.value

        target = use(self.target_spacing(fp, opts))
        aniso = use(self.anisotropy(fp, target, opts))
        size = use(self.input_size(fp, aniso["target_spacing"], opts))
        use(self.input_budget(fp, opts))
        if opts.task == "classification" and not opts.budget_given:
            fitted = use(self.classification_size(fp, aniso["target_spacing"], size["spatial_size"], opts))
        else:
            fitted = use(self.size_budget(fp, aniso["target_spacing"], size["spatial_size"], opts))
        size_mode = fitted.get("size_mode") or use(self.size_mode(fp, opts))
        normalization = use(self.normalization(fp, opts))
        if normalization.get("preset") == "ct_clip_zscore":
            use(self.ct_padding(fp, opts))
        orientation = use(self.orientation(fp, opts))
        channels = use(self.channels(fp, opts))
        use(self.alpha(fp, opts))
        return {
            "spatial_dims": opts.spatial_dims,
            "target_spacing": fitted["target_spacing"],
            "orientation": orientation,
            "spatial_size": fitted["spatial_size"],
            "size_mode": size_mode,
            "normalization": normalization,
            "denoise": None,
            "channels": channels["channels"],
            "in_channels": channels["in_channels"],
            "divisor": opts.divisor,
            "max_patch_voxels": opts.max_patch_voxels,
            "median_shape_resampled": fitted["median_shape_resampled"],
            "anisotropic": aniso["anisotropic"],
            "reasons": reasons,
        } | ({"task": opts.task} if opts.task is not None else {})


def plan_from_fingerprint(
    fp: Mapping[str, Any],
    spatial_dims: int | None = None,
    max_patch_voxels: int | None = None,
    divisor: int | None = None,
    task: str | None = None,
) -> dict[str, Any]:
    """Derive a preprocessing plan from a fingerprint with the default :class:`Planner` (rules: module docstring).

    Args:
        fp: the result of :func:`~medmonai.data.fingerprint.compute_fingerprint` (or a fingerprint result with a
            ``fingerprint`` key).
        spatial_dims: expected dimensionality (checked against the fingerprint).
        max_patch_voxels: voxel budget of the input size (default ``128**3`` in 3D, ``256**2`` in 2D).
        divisor: every input size is a multiple of it (a power of two: 2 ** number of down-samplings;
            default 8 in 3D, 16 in 2D).
        task: ``"classification"`` plans a classifier's input (:data:`CLASSIFICATION_MAX_VOXELS`), ``None`` or
            ``"segmentation"`` the general one; recorded as the plan's ``task`` when given.

    Returns:
        The plan: ``spatial_dims``, ``target_spacing``, ``orientation``, ``spatial_size``, ``size_mode``,
        ``normalization``, ``denoise``, ``channels`` (consumed by
        :func:`~medmonai.transforms.preprocessing.build_preprocessing`), ``in_channels`` (the network's input
        channels after preprocessing), plus ``divisor``, ``max_patch_voxels``,
        ``median_shape_resampled``, ``anisotropic`` and ``reasons`` (one string per reported rule).

    Raises:
        ValueError: for an inconsistent ``spatial_dims`` or an invalid divisor/budget.
    """
    return Planner(spatial_dims, max_patch_voxels, divisor, task).plan(fp)
