"""Trained bundles for inference on the hospital side: :class:`ClinicalModel` and :func:`load_clinical_model`.

A bundle run (its ``bundle_root``) is loaded with exactly the preprocessing, network, class names, decision rule and
training-domain record of training: nothing is re-planned or written into the run. Used by ``medmonai infer``,
``watch`` and ``export`` (:mod:`medmonai.deploy.pipeline`, :mod:`medmonai.deploy.onnx`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medmonai.bundles import bundle_configs, parse_bundle, resolve_bundle, task_type
from medmonai.data.domain import RECORD_FILE, load_training_domain
from medmonai.engines.evaluation import load_weights
from medmonai.metrics.clinical import (
    decision_rule_from_report,
)
from medmonai.utils import PathLike, atomic_write_json, read_json

__all__ = ["ClinicalModel", "load_clinical_model"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------- model
class _AsLogits(torch.nn.Module):
    """Wrap a model whose output may be class probabilities (a fold ensemble) so that softmax gives them back.

    Probabilities (non-negative, summing to 1 over dim 1) are returned as their logarithm, for which softmax is
    the identity; logits pass unchanged.
    """

    def __init__(self, model: torch.nn.Module, output: str = "auto") -> None:
        super().__init__()
        if output not in ("auto", "logits", "probabilities"):
            raise ValueError(f"output must be 'auto', 'logits' or 'probabilities', got {output!r}")
        self.model = model
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x).float()
        probs = self.output == "probabilities"
        if self.output == "auto":
            probs = bool((y >= 0).all()) and bool(torch.allclose(y.sum(1), torch.ones_like(y.sum(1)), atol=1e-4))
        return torch.log(y.clamp_min(1e-12)) if probs else y


@dataclass
class ClinicalModel:
    """A trained bundle ready for inference (see :func:`load_clinical_model`).

    Attributes:
        task: ``classification`` or ``segmentation``.
        name: model name (the bundle's ``metadata.json`` ``name``, else its ``bundle_name``, e.g.
            ``classification_2d``, else the bundle folder name).
        version: the bundle version (``metadata.json``).
        network_name: the bundle's ``network_name``.
        spatial_dims: 2 or 3.
        classes: class names (segmentation: index 0 is the background).
        network: the network (returns logits; probability outputs are wrapped).
        preprocessing: the bundle's deterministic preprocessing.
        weights: the checkpoint or TorchScript file.
        threshold: binary classification: decision threshold on the probability of ``positive_class``.
        threshold_source: where the threshold comes from.
        positive_class: binary classification: the class the threshold applies to (the report's, default 1).
        device: compute device.
        options: segmentation settings (``roi_size``, ``sw_batch_size``, ``overlap``, ``tta_flip_axes``).
        decision_rule: classification with three or more classes: the decision rule chosen on validation data
            (``report.json`` / ``cv_report.json``), applied by :func:`medmonai.metrics.clinical.apply_decision_rule`;
            ``None``: argmax.
        domain: the training-domain record (:mod:`medmonai.data.domain`) inputs are checked against; None for a
            model trained before records were written (inputs not checked, with a warning).
        domain_file: where the record was read from (or looked for).
        runtime: ``torch``, or ``onnx`` for a network run by ONNX Runtime (:mod:`medmonai.deploy.onnx`).
        parser: the bundle's config parser (for the ONNX export's sample inputs and planned shapes).
    """

    task: str
    name: str
    version: str
    network_name: str
    spatial_dims: int
    classes: list[str]
    network: torch.nn.Module
    preprocessing: Callable
    weights: str
    threshold: float | None = None
    threshold_source: str = ""
    positive_class: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    options: dict[str, Any] = field(default_factory=dict)
    decision_rule: dict[str, Any] | None = None
    domain: dict[str, Any] | None = None
    domain_file: str | None = None
    runtime: str = "torch"
    parser: Any = field(default=None, repr=False, compare=False)

    def info(self) -> dict[str, Any]:
        """JSON-safe description for the result files."""
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "network": self.network_name,
            "weights": self.weights,
            "spatial_dims": self.spatial_dims,
            "runtime": self.runtime,
        }


#: ``cv_settings.json`` keys that are not training overrides of the bundle (cross-validation runner options), or that
#: the recorded plan already gives (the datalist) or the inference side chooses (the device)
_NOT_TRAINING_OVERRIDES = ("classifier", "synthetic", "feature_gan", "datalist", "device", "bundle_root")


def _cv_training_settings(cv_dir: Path) -> dict[str, Any]:
    """The bundle overrides a cross-validation folder was trained with (its ``cv_settings.json``) and its ``cv_dir``.

    A fold ensemble is then loaded with the preprocessing and network settings of its folds (e.g. a candidate of
    :mod:`medmonai.apps.auto` with ``network_name=resnet18`` or a 64 px input) without the user repeating them.
    """
    settings_file = cv_dir / "cv_settings.json"
    settings = read_json(settings_file, "cross-validation settings") if settings_file.is_file() else {}
    out = {k: v for k, v in settings.items() if k not in _NOT_TRAINING_OVERRIDES}
    out["cv_dir"] = str(cv_dir)
    return out


def _threshold_from_report(path: Path) -> tuple[float, int] | None:
    """``(threshold, positive class)`` of an evaluation ``report.json`` or ``cv_report.json``, if it has one.

    Read with :func:`~medmonai.metrics.clinical.decision_rule_from_report`, the one reader of recorded rules.
    """
    if not path.is_file():
        return None
    rule = decision_rule_from_report(read_json(path, "report"))
    if rule is None or "threshold" not in rule:
        return None
    return float(rule["threshold"]), int(rule["positive_class"])


def _use_recorded_spatial_dims(
    parser: Any, cached: Mapping[str, Any], fp_file: Path, overrides: Mapping[str, Any]
) -> None:
    """Set ``spatial_dims`` to the trained run's (one bundle serves 2D and 3D); refuse a contradicting override.

    Raises:
        ValueError: when ``overrides`` give a ``spatial_dims`` other than the one the run was planned with.
    """
    recorded = (cached.get("plan") or {}).get("spatial_dims")
    if recorded is None:
        return
    given = overrides.get("spatial_dims")
    if given is not None and int(given) != int(recorded):
        raise ValueError(
            f"{fp_file}: the run was trained in {int(recorded)}D but spatial_dims={given} was given; "
            f"drop the override or pass spatial_dims={int(recorded)}"
        )
    parser["spatial_dims"] = int(recorded)


def _use_recorded_plan(parser: Any, fp_file: Path, overrides: Mapping[str, Any]) -> None:
    """Make the parser use the training run's cached plan, never re-planning or writing into the run.

    The datalist recorded in the fingerprint file (or the one given in ``overrides``, when the data moved) becomes
    ``datalist_file``; when it differs from the recorded one, the plan is read through a temporary copy of the
    fingerprint file that names it, so ``ensure_plan`` finds its cache and the run's file is left untouched.
    """
    cached = read_json(fp_file, "fingerprint file")
    _use_recorded_spatial_dims(parser, cached, fp_file, overrides)
    recorded = cached.get("datalist")
    given = overrides.get("datalist_file") or overrides.get("datalist")
    datalist = str(given) if given else recorded
    if not datalist:
        return
    if not Path(datalist).is_file():
        where = "given" if given else f"the training datalist recorded in {fp_file}"
        raise FileNotFoundError(f"{datalist}: {where} is missing (it gives the class names); pass --set datalist=FILE")
    parser["datalist_file"] = datalist
    if datalist == recorded:
        return
    with tempfile.TemporaryDirectory(prefix="medmonai_plan_") as tmp:
        copy = Path(tmp) / "fingerprint.json"
        atomic_write_json(copy, {**cached, "datalist": datalist})
        parser["fingerprint_file"] = str(copy)
        parser.get_parsed_content("plan")  # resolved (and cached by the parser) while the copy exists


def load_clinical_model(
    bundle: PathLike,
    bundle_root: PathLike = ".",
    model: PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    model_output: str = "auto",
    threshold: float | None = None,
    runtime: str = "torch",
    onnx_model: PathLike | None = None,
) -> ClinicalModel:
    """Load a trained classification or segmentation bundle for inference.

    The bundle's own configs are parsed (``train.yaml`` + ``inference.yaml``; with ``crossval.yaml`` as well when
    ``model`` is a fold ensemble ``<cv_dir>/ensemble/model.ts`` beside a ``cv_report.json``), so preprocessing,
    network and class names are exactly those of training. The preprocessing plan is read from the training
    run's cached fingerprint, and the datalist recorded in it gives the class names: nothing is re-planned or
    regenerated.

    Args:
        bundle: the bundle folder (``bundles/classification``, ``bundles/segmentation``).
        bundle_root: the ``bundle_root`` the bundle was trained with (holds ``runs/``).
        model: weights: a checkpoint (``.pt``, default: the bundle's ``runs/checkpoints/model.pt``) or a
            TorchScript file (``.ts``, ``.jit`` or ``.zip``: a ``ckpt_export`` network or the cross-validation fold
            ensemble).
        overrides: further config overrides (those used in training, e.g. ``{"network_name": "resnet18"}``).
        device: compute device (default: the bundle's ``device``).
        model_output: for TorchScript models: ``logits``, ``probabilities`` or ``auto`` (detected per batch).
        threshold: binary classification: decision threshold on the second class's probability; default: the
            one chosen on out-of-fold predictions (``cv_report.json`` beside a fold ensemble), else the one of
            the run's evaluation report (chosen on validation data), else 0.5.
        runtime: ``torch`` (default) or ``onnx``: the forward pass runs in ONNX Runtime on the CPU
            (:func:`medmonai.deploy.onnx.use_onnx_runtime`; needs the ``onnx`` extra).
        onnx_model: ``runtime="onnx"``: the exported ``.onnx`` file of this checkpoint (``medmonai export``);
            default: exported on the fly into a temporary folder, checked against the checkpoint.

    Returns:
        The :class:`ClinicalModel`.

    Raises:
        FileNotFoundError: for a missing bundle, an untrained ``bundle_root`` (no fingerprint / checkpoint) or a
            missing model file, naming the file.
        ValueError: for a bundle that is neither classification nor segmentation.
    """
    threshold_override = threshold
    folder, implied = resolve_bundle(bundle)
    overrides = {**implied, **(overrides or {})}
    cfg = folder / "configs"
    bundle_configs(folder, ("train", "inference"))  # both must be there: FileNotFoundError naming the file
    model_path = Path(model) if model is not None else None
    if model_path is not None and not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: model file does not exist")
    torchscript = model_path is not None and model_path.suffix.lower() in (".ts", ".jit", ".zip")
    cv_report = model_path.parent.parent / "cv_report.json" if torchscript and model_path is not None else None
    names = ["train"]
    if cv_report is not None and cv_report.is_file() and (cfg / "crossval.yaml").is_file():
        names.append("crossval")
        # the fold ensemble's own training settings (network, input size...) and folder, under the user's overrides
        overrides = {**_cv_training_settings(cv_report.parent), **overrides}
    else:
        cv_report = None
    names.append("inference")
    parser = parse_bundle(folder, names, {"bundle_root": str(bundle_root), **overrides})
    meta = read_json(cfg / "metadata.json", "bundle metadata") if (cfg / "metadata.json").is_file() else {}
    fp_file = Path(parser.get_parsed_content("fingerprint_file"))
    if not fp_file.is_file():
        raise FileNotFoundError(
            f"{fp_file}: no preprocessing plan; the bundle has not been trained with bundle_root {bundle_root} "
            "(train it first, or pass the bundle_root and the overrides used in training)"
        )
    _use_recorded_plan(parser, fp_file, overrides or {})
    try:
        task = task_type(parser)
    except ValueError:
        task = "none"
    if task not in ("classification", "segmentation"):
        raise ValueError(f"{bundle}: neither a classification (classes) nor a segmentation (label_names) bundle")
    classes = [str(c) for c in parser.get_parsed_content("label_names" if task == "segmentation" else "classes")]
    dev = torch.device(device) if device is not None else torch.device(parser.get_parsed_content("device"))
    preprocessing = parser.get_parsed_content("preprocessing")
    if torchscript:
        assert model_path is not None
        net: torch.nn.Module = _AsLogits(torch.jit.load(str(model_path), map_location=dev), model_output)
        weights = str(model_path)
    else:
        weights = str(model_path) if model_path is not None else str(parser.get_parsed_content("checkpoint"))
        if not Path(weights).is_file():
            raise FileNotFoundError(f"{weights}: checkpoint does not exist; train the bundle first or pass --model")
        net = parser.get_parsed_content("network_def", instantiate=True)
        try:
            load_weights(net, weights)
        except RuntimeError as e:  # state-dict mismatch: other network settings in training
            raise ValueError(
                f"{weights}: the checkpoint does not fit the network built from {bundle}'s config; pass the "
                f"overrides used in training (--set KEY=VALUE, e.g. network_name, base_filters): "
                f"{str(e).splitlines()[0]}"
            ) from e
    net = net.to(dev).eval()
    threshold, thr_source, positive_class = None, "argmax", 1
    if task == "classification" and len(classes) == 2:
        threshold, thr_source = 0.5, "default 0.5 (no report with a threshold chosen on validation data)"
        # the fold ensemble: the threshold chosen on the out-of-fold predictions; a checkpoint (or its TorchScript
        # export) of the run under bundle_root: the one its evaluation chose on validation data
        src = cv_report if cv_report is not None else Path(parser.get_parsed_content("eval_report"))
        recorded = _threshold_from_report(src)
        if recorded is not None:  # a threshold given by the user applies to the same (the report's) positive class
            threshold, positive_class = recorded
            thr_source = (
                "chosen on out-of-fold predictions (cv_report.json)"
                if src == cv_report
                else "chosen on validation data (evaluation report)"
            )
        if threshold_override is not None:
            threshold, thr_source = float(threshold_override), "given by the user"
    decision_rule = None
    if task == "classification" and len(classes) > 2:
        src = cv_report if cv_report is not None else Path(parser.get_parsed_content("eval_report"))
        if src.is_file():
            decision_rule = decision_rule_from_report(read_json(src, "report"))
        if decision_rule is not None:
            thr_source = f"decision rule '{decision_rule['method']}' chosen on validation data ({src.name})"
    domain, domain_file = _find_domain_record(model_path if torchscript else None, parser)
    options: dict[str, Any] = {}
    if task == "segmentation":
        options = {
            "roi_size": [int(s) for s in parser.get_parsed_content("roi_size")],
            "sw_batch_size": int(parser.get_parsed_content("sw_batch_size")),
            "overlap": float(parser.get_parsed_content("infer_overlap")),
            "tta_flip_axes": [int(a) for a in parser.get_parsed_content("tta_flip_axes")],
        }
    clinical = ClinicalModel(
        task=task,
        name=str(
            meta.get("name")
            or (parser.get_parsed_content("bundle_name") if parser.get("bundle_name") else folder.resolve().name)
        ),
        version=str(meta.get("version", "0")),
        network_name=str(parser.get_parsed_content("network_name")),
        spatial_dims=int(parser.get_parsed_content("spatial_dims")),
        classes=classes,
        network=net,
        preprocessing=preprocessing,
        weights=weights,
        threshold=threshold,
        threshold_source=thr_source,
        positive_class=positive_class,
        device=dev,
        options=options,
        decision_rule=decision_rule,
        domain=domain,
        domain_file=domain_file,
        parser=parser,
    )
    if runtime not in ("torch", "onnx"):
        raise ValueError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
    if runtime == "onnx":
        from medmonai.deploy.onnx import use_onnx_runtime  # deploy.onnx builds on this module

        clinical = use_onnx_runtime(clinical, onnx_model)
    elif onnx_model is not None:
        raise ValueError(f"{onnx_model}: an ONNX model needs runtime 'onnx' (--runtime onnx)")
    return clinical


def _find_domain_record(model_path: Path | None, parser: Any) -> tuple[dict[str, Any] | None, str]:
    """The training-domain record of the model and its file.

    Looked for beside a TorchScript model (and in its parent, the cross-validation folder of a fold ensemble), then
    in the training run's ``output_dir``.
    """
    places = [model_path.parent, model_path.parent.parent] if model_path is not None else []
    places.append(Path(parser.get_parsed_content("output_dir")))
    for folder in places:
        record = load_training_domain(folder / RECORD_FILE)
        if record is not None:
            return record, str(folder / RECORD_FILE)
    return None, str(places[-1] / RECORD_FILE)
