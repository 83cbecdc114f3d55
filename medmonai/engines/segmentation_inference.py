"""Segmentation inference in the input's original geometry: sliding window, inversion, NIfTI and DICOM SEG outputs.

For every input (a NIfTI/PNG/NumPy file or a DICOM series):

1. the bundle's deterministic preprocessing (:func:`medmonai.transforms.segmentation.build_segmentation_preprocessing`:
   crop to the non-zero region, re-orientation, resampling to the planned spacing, normalisation) is applied;
2. MONAI's :class:`~monai.inferers.SlidingWindowInferer` (Gaussian-weighted overlapping patches of the training
   patch size) gives class probabilities, optionally averaged over mirrored inputs (test-time augmentation);
3. MONAI's :class:`~monai.transforms.Invertd` maps the probabilities back through every geometric step
   (resampling with linear interpolation, orientation, crop → padding), onto the original voxel grid; the arg-max
   is the label map;
4. the label map is written (atomically) as NIfTI with the input's affine — for a NIfTI input with the input's
   own header, so the affine and the shape are exactly those of the input — and, when the input is a DICOM series,
   as a DICOM Segmentation object (``highdicom``) whose frames reference the source instances
   (:func:`write_dicom_seg`).

:func:`evaluate_segmentation` does the same on a labelled split and compares each prediction with its reference mask
on the original grid (Dice and HD95 in mm per class, :mod:`medmonai.metrics.segmentation`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose, Invertd

from medmonai.data.dicom_output import write_dicom_seg, write_nifti_mask
from medmonai.data.domain import screen_for_report
from medmonai.engines.evaluation import load_weights
from medmonai.engines.inference import collect_inputs
from medmonai.metrics.segmentation import case_metrics, format_summary, segmentation_report, write_segmentation_report
from medmonai.transforms.io import load_image_transforms, reader_name_for
from medmonai.transforms.preprocessing import PlanarAffined
from medmonai.utils import PathLike, atomic_write_json, safe_output_path

__all__ = [
    "SegmentationPredictor",
    "is_dicom_input",
    "write_nifti_mask",
    "write_dicom_seg",
    "predict_segmentation_to_files",
    "evaluate_segmentation",
    "evaluate_mask_files",
]

logger = logging.getLogger(__name__)


_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy", ".npz", ".dcm")


def _case_name(entry: Mapping[str, Any], index: int) -> str:
    """A file-name-safe case id: the entry's ``case_id``, else the image file name, without an image suffix."""
    cid = entry.get("case_id")
    if not cid:
        image = entry["image"]
        first = str(image[0] if isinstance(image, list | tuple) else image)
        cid = Path(first.rstrip("/")).name
    cid = str(cid)
    for suffix in _IMAGE_SUFFIXES:
        if cid.lower().endswith(suffix):
            cid = cid[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", cid).strip("._") or f"case_{index:04d}"


def is_dicom_input(image: Any) -> bool:
    """Whether :class:`~medmonai.transforms.io.MedicalImageReader` reads ``image`` as DICOM (a series or a file)."""
    try:
        return reader_name_for(image) == "DicomSeriesReader"
    except (ValueError, FileNotFoundError):
        return False


def _nifti_reference(image: Any) -> Path | None:
    if isinstance(image, list | tuple):
        return None
    p = Path(str(image))
    return p if p.is_file() and p.name.lower().endswith((".nii", ".nii.gz")) else None


class SegmentationPredictor:
    """Sliding-window prediction of one image, returned on the image's original voxel grid.

    Args:
        network: the segmentation network (logits ``(B, C, *patch)``).
        preprocessing: the deterministic preprocessing ``Compose`` used in training (invertible geometry).
        roi_size: sliding-window size (the training patch size).
        num_classes: classes including background.
        sw_batch_size: windows per forward pass.
        overlap: window overlap fraction.
        mode: window blending, ``"gaussian"`` (nnU-Net) or ``"constant"``.
        device: device of the network.
        tta_flip_axes: spatial axes to mirror for test-time augmentation (probabilities averaged); empty: none.
        image_key: image key of the preprocessing.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        preprocessing: Callable,
        roi_size: Sequence[int],
        num_classes: int,
        sw_batch_size: int = 4,
        overlap: float = 0.5,
        mode: str = "gaussian",
        device: str | torch.device = "cpu",
        tta_flip_axes: Sequence[int] = (),
        image_key: str = "image",
    ) -> None:
        self.network = network
        self.preprocessing = preprocessing
        self.num_classes = int(num_classes)
        self.device = torch.device(device)
        self.tta_flip_axes = [int(a) for a in tta_flip_axes]
        self.image_key = image_key
        self.inferer = SlidingWindowInferer(
            roi_size=[int(s) for s in roi_size], sw_batch_size=sw_batch_size, overlap=overlap, mode=mode
        )

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``(C, *spatial)`` of a preprocessed image ``(channels, *spatial)``."""
        x = torch.as_tensor(image).unsqueeze(0).to(self.device)
        self.network.eval()
        probs = torch.softmax(self.inferer(x, self.network), dim=1)
        for axis in self.tta_flip_axes:
            dims = [axis + 2]
            probs = probs + torch.softmax(self.inferer(torch.flip(x, dims), self.network), dim=1).flip(dims)
        probs = probs / (1 + len(self.tta_flip_axes))
        if probs.shape[1] != self.num_classes:
            raise ValueError(f"the network gives {probs.shape[1]} channels, expected {self.num_classes} classes")
        return probs[0].cpu()

    @torch.no_grad()
    def predict(self, image: Any) -> dict[str, Any]:
        """Predict one image (a path, a DICOM folder or file list).

        Returns:
            ``{"label": uint8 array (*original spatial), "probabilities": float32 (C, *original spatial),
            "affine": 4x4 RAS affine of the original grid, "spacing": original spacing, "meta": image metadata}``.

        Raises:
            RuntimeError: when the inverted prediction is not on the original grid (shape), naming the image.
        """
        data = self.preprocessing({self.image_key: image})
        img = data[self.image_key]
        probs = self.probabilities(img)
        data["pred"] = MetaTensor(probs, meta=dict(img.meta), applied_operations=list(img.applied_operations))
        inverted = Invertd(
            keys="pred", transform=self.preprocessing, orig_keys=self.image_key, nearest_interp=False, to_tensor=True
        )(data)["pred"]
        meta = dict(img.meta)
        original_shape = tuple(int(s) for s in np.asarray(meta.get("spatial_shape", inverted.shape[1:])))
        if tuple(inverted.shape[1:]) != original_shape:
            raise RuntimeError(
                f"{meta.get('filename_or_obj', image)}: inverted prediction has shape {tuple(inverted.shape[1:])}, "
                f"the image {original_shape}"
            )
        affine = np.asarray(meta.get("original_affine", inverted.affine), dtype=np.float64)
        p = torch.as_tensor(inverted).float()
        label = p.argmax(0).numpy().astype(np.uint8)
        return {
            "label": label,
            "probabilities": p.numpy(),
            "affine": affine,
            "spacing": [float(s) for s in affine_to_spacing(affine, r=label.ndim)],
            "meta": meta,
        }


def _reference_loader() -> Compose:
    """Loads a mask file as stored (no resampling): channel-first, with its RAS affine."""
    return Compose([*load_image_transforms("ref"), PlanarAffined("ref")])


def _load_on_grid(
    loader: Compose, path: Any, shape: Sequence[int] | None, affine: np.ndarray | None, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """An integer label map and its affine; refused (naming ``path``) when off the given grid (shape, affine)."""
    ref = loader({"ref": path})["ref"]
    arr = np.rint(ref[0].numpy()).astype(np.int64)
    aff = np.asarray(ref.meta.get("original_affine", ref.affine), dtype=float)
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{path}: mask shape {tuple(arr.shape)} differs from {what} {tuple(shape)}")
    if affine is not None and aff.shape == np.shape(affine) and not np.allclose(aff, affine, atol=1e-2):
        raise ValueError(f"{path}: mask affine differs from {what}")
    return arr, aff


def _load_weights(network: torch.nn.Module, checkpoint: PathLike | None) -> None:
    if checkpoint is not None:
        load_weights(network, checkpoint)


def predict_segmentation_to_files(
    network: torch.nn.Module,
    preprocessing: Callable,
    source: PathLike | Sequence[Mapping[str, Any]],
    out_dir: PathLike,
    class_names: Sequence[str],
    roi_size: Sequence[int],
    checkpoint: PathLike | None = None,
    input_key: str = "all",
    device: str | torch.device = "cpu",
    sw_batch_size: int = 4,
    overlap: float = 0.5,
    tta_flip_axes: Sequence[int] = (),
    dicom_seg: bool = True,
    model_info: Mapping[str, Any] | None = None,
    training_domain: PathLike | Mapping[str, Any] | None = None,
    allow_out_of_distribution: bool = False,
) -> dict[str, Any]:
    """Segment every input and write ``{case}_seg.nii.gz`` (and ``{case}_seg.dcm`` for DICOM input) into ``out_dir``.

    Args:
        network: the network (weights from ``checkpoint`` when given).
        preprocessing: the bundle's deterministic preprocessing.
        source: a datalist JSON (split ``input_key``), a folder of images or of DICOM files (one case per series), a
            single image, or a list of entries (``{"image": ...}``).
        out_dir: output folder.
        class_names: class names (index 0 = background).
        roi_size: sliding-window size.
        checkpoint: weights file (``torch.load(weights_only=True)``).
        input_key: datalist split to predict (``"all"``: every split).
        device: device.
        sw_batch_size: windows per forward pass.
        overlap: window overlap.
        tta_flip_axes: mirrored test-time augmentation axes.
        dicom_seg: also write DICOM SEG objects for DICOM inputs.
        model_info: recorded in ``predictions.json`` (bundle, version, network).
        training_domain: the model's training-domain record (``training_domain.json``, :mod:`medmonai.data.domain`):
            inputs outside it are refused before anything is written
            (:class:`~medmonai.data.domain.OutOfDistributionError`), or, with ``allow_out_of_distribution``,
            segmented and marked (``out_of_distribution`` and the reasons per case); None: not checked (a warning).
        allow_out_of_distribution: see ``training_domain``.

    Returns:
        The content of ``predictions.json``: one record per case with the output files, the shape, the spacing and
        the predicted volume (mm^3) per class.
    """
    _load_weights(network, checkpoint)
    network = network.to(device)
    entries = list(source) if isinstance(source, list | tuple) else collect_inputs(source, input_key)
    keyed = [{**e, "case_id": _case_name(e, i)} for i, e in enumerate(entries)]
    check = screen_for_report(training_domain, keyed, preprocessing, allow_out_of_distribution, what="input")
    ood = {c["index"]: c["reasons"] for c in check["out_of_distribution"]}
    predictor = SegmentationPredictor(
        network, preprocessing, roi_size, len(class_names), sw_batch_size, overlap, device=device,
        tta_flip_axes=tta_flip_axes,
    )  # fmt: skip
    out = Path(out_dir)
    records = []
    seen: dict[str, int] = {}
    for i, e in enumerate(entries):
        name = _case_name(e, i)
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        seen.setdefault(name, 0)
        result = predictor.predict(e["image"])
        label = result["label"]
        nii = write_nifti_mask(
            safe_output_path(out, name, "_seg.nii.gz", "case id"), label, result["affine"], _nifti_reference(e["image"])
        )
        rec: dict[str, Any] = {"case_id": name, "image": e["image"], "nifti": str(nii), "shape": list(label.shape)}
        reasons = ood.get(i, [])
        rec["out_of_distribution"], rec["out_of_distribution_reasons"] = bool(reasons), list(reasons)
        rec["spacing"] = result["spacing"]
        voxel = float(np.prod(result["spacing"]))
        rec["volume"] = {class_names[c]: float((label == c).sum() * voxel) for c in range(1, len(class_names))}
        if dicom_seg and is_dicom_input(e["image"]):
            info = dict(model_info or {})
            seg = write_dicom_seg(
                safe_output_path(out, name, "_seg.dcm", "case id"),
                label,
                e["image"],
                class_names,
                affine=result["affine"],
                series_uid=result["meta"].get("SeriesInstanceUID"),
                model_name=str(info.get("bundle", "medmonai segmentation")),
                model_version=str(info.get("version", "0")),
                series_description="medmonai segmentation" + (" (OUT OF DISTRIBUTION)" if reasons else ""),
            )
            rec["dicom_seg"] = str(seg)
            rec["SeriesInstanceUID"] = result["meta"].get("SeriesInstanceUID")
        records.append(rec)
        logger.info(f"{name}: segmented ({', '.join(f'{k} {v:.0f} mm3' for k, v in rec['volume'].items())})")
    result_json = {"model": dict(model_info or {}), "classes": list(class_names), "n_cases": len(records)}
    result_json["input_check"] = {k: v for k, v in check.items() if k != "out_of_distribution"}
    result_json["predictions"] = records
    atomic_write_json(out / "predictions.json", result_json)
    logger.info(f"wrote {len(records)} segmentations to {out}")
    return result_json


def evaluate_segmentation(
    network: torch.nn.Module,
    preprocessing: Callable,
    entries: Sequence[Mapping[str, Any]],
    eval_dir: PathLike,
    class_names: Sequence[str],
    roi_size: Sequence[int],
    checkpoint: PathLike | None = None,
    device: str | torch.device = "cpu",
    sw_batch_size: int = 4,
    overlap: float = 0.5,
    tta_flip_axes: Sequence[int] = (),
    save_predictions: bool = False,
    mask_key: str = "mask",
    extra: Mapping[str, Any] | None = None,
    training_domain: PathLike | Mapping[str, Any] | None = None,
    allow_out_of_distribution: bool = False,
) -> dict[str, Any]:
    """Predict every labelled entry in its original geometry and report Dice/HD95 per class against its mask.

    The reference mask is loaded unchanged (no resampling) and must lie on the image's grid; metrics use the
    original spacing (HD95 in mm).

    Args:
        network: the network (weights from ``checkpoint`` when given).
        preprocessing: the bundle's deterministic preprocessing.
        entries: datalist entries with ``image`` and ``mask_key`` (or ``label`` holding the mask path).
        eval_dir: where ``report.json`` and ``per_case.csv`` go (and ``predictions/`` with ``save_predictions``);
            every case (its ``report.json`` record and its ``per_case.csv`` row) carries ``out_of_distribution`` and
            ``out_of_distribution_reasons`` (columns of ``per_case.csv`` too).
        class_names: class names (index 0 = background).
        roi_size: sliding-window size.
        checkpoint: weights file.
        device: device.
        sw_batch_size: windows per forward pass.
        overlap: window overlap.
        tta_flip_axes: mirrored test-time augmentation axes.
        save_predictions: also write the predicted masks (NIfTI).
        mask_key: entry key of the reference mask (``label`` is used when the entry has no ``mask_key``).
        extra: further report fields.
        training_domain: the model's training-domain record (``training_domain.json``): entries outside it are
            refused (:class:`~medmonai.data.domain.OutOfDistributionError`), or with ``allow_out_of_distribution``
            evaluated and listed in the report's ``input_check``; None: not checked (a warning).
        allow_out_of_distribution: see ``training_domain``.

    Returns:
        The report (see :func:`medmonai.metrics.segmentation.segmentation_report`).

    Raises:
        ValueError: for an entry without a reference mask, or a mask off the image grid (naming the files).
    """
    if not entries:
        raise ValueError("no entries to evaluate")
    keyed = [{**e, "case_id": _case_name(e, i)} for i, e in enumerate(entries)]
    check = screen_for_report(training_domain, keyed, preprocessing, allow_out_of_distribution, what="test image")
    ood = {c["index"]: c["reasons"] for c in check["out_of_distribution"]}
    _load_weights(network, checkpoint)
    network = network.to(device)
    predictor = SegmentationPredictor(
        network, preprocessing, roi_size, len(class_names), sw_batch_size, overlap, device=device,
        tta_flip_axes=tta_flip_axes,
    )  # fmt: skip
    load_ref = _reference_loader()
    out = Path(eval_dir)
    cases = []
    for i, e in enumerate(entries):
        ref_path = e.get(mask_key, e.get("label") if isinstance(e.get("label"), str | list) else None)
        if ref_path is None:
            raise ValueError(f"{e.get('image')}: entry {i} has no reference mask ('{mask_key}')")
        name = _case_name(e, i)
        result = predictor.predict(e["image"])
        ref_arr, _ = _load_on_grid(
            load_ref, ref_path, result["label"].shape, result["affine"], f"the image's ({e['image']})"
        )
        rec: dict[str, Any] = {"case_id": name}
        rec.update(case_metrics(result["label"], ref_arr, len(class_names), result["spacing"], class_names))
        reasons = ood.get(i, [])
        rec["out_of_distribution"] = bool(reasons) if check["checked"] else None
        rec["out_of_distribution_reasons"] = list(reasons)
        cases.append(rec)
        if save_predictions:
            ref_nii = _nifti_reference(e["image"])
            write_nifti_mask(out / "predictions" / f"{name}_seg.nii.gz", result["label"], result["affine"], ref_nii)
        dice = ", ".join(f"{k} {v:.3f}" for k, v in rec["dice"].items() if v is not None)
        logger.info(f"{name}: Dice {dice}")
    report = segmentation_report(
        cases, class_names, extra={"checkpoint": str(checkpoint), "input_check": check, **dict(extra or {})}
    )
    write_segmentation_report(report, out)
    logger.info("test-set segmentation metrics:\n" + format_summary(report))
    return report


def evaluate_mask_files(
    cases: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    eval_dir: PathLike | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score predicted mask files against reference mask files: the same Dice/HD95 as :func:`evaluate_segmentation`.

    For comparing any segmenter's outputs (another tool's NIfTI predictions, say) with the same scoring code as the
    bundles: both masks are loaded as stored (no resampling), must share the grid (shape and affine), and are scored
    with :func:`medmonai.metrics.segmentation.case_metrics` at the reference's voxel spacing (HD95 in mm).

    Args:
        cases: ``{"case_id", "pred", "ref"}`` per case (mask file paths).
        class_names: class names (index 0 = background); label values must be ``0 .. len - 1``.
        eval_dir: where ``report.json`` and ``per_case.csv`` go; None: not written.
        extra: further report fields.

    Returns:
        The report (see :func:`medmonai.metrics.segmentation.segmentation_report`).

    Raises:
        ValueError: for no cases, a case without both files, a prediction off the reference grid or label values
            out of range (naming the files).
    """
    if not cases:
        raise ValueError("no cases to score")
    loader = _reference_loader()
    records = []
    for i, c in enumerate(cases):
        if not c.get("pred") or not c.get("ref"):
            raise ValueError(f"case {i} ({c.get('case_id')}): needs both 'pred' and 'ref' mask files")
        ref, ref_aff = _load_on_grid(loader, c["ref"], None, None, "")
        pred, _ = _load_on_grid(loader, c["pred"], ref.shape, ref_aff, f"the reference's ({c['ref']})")
        try:
            metrics = case_metrics(pred, ref, len(class_names), affine_to_spacing(ref_aff, r=ref.ndim), class_names)
        except ValueError as e:
            raise ValueError(f"{c['pred']} / {c['ref']}: {e}") from e
        records.append({"case_id": str(c.get("case_id", i)), **metrics})
    report = segmentation_report(records, class_names, extra=dict(extra or {}))
    if eval_dir is not None:
        write_segmentation_report(report, Path(eval_dir))
    return report
