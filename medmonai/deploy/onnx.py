"""ONNX export of a trained bundle's network, checked against its checkpoint, and ONNX Runtime inference.

``medmonai export BUNDLE --bundle-root RUN --out model.onnx`` (:func:`export_onnx`) builds the bundle's network
exactly as :func:`medmonai.deploy.models.load_clinical_model` does for ``medmonai infer`` (the bundle's configs,
the run's recorded plan, the checkpoint loaded with ``torch.load(weights_only=True)``, strict), exports it with
``torch.onnx.export`` (the ``torch.export``-based exporter, ``dynamo=True``; it needs ``onnxscript``) with a dynamic
batch axis, and then runs the exported file in ONNX Runtime on sample inputs and compares its outputs with the
checkpoint's: the file is written (atomically) only when every output agrees within the tolerance
(``|onnx - torch| <= atol + rtol * |torch|``, default ``atol=1e-4``, ``rtol=1e-3``), and a report
``<out>.json`` beside it records the largest difference, the inputs used, the opset and the library versions.

Sample inputs are the first ``n_samples`` cases of the run's validation split (``val_entries``), preprocessed by
the bundle's inference preprocessing; only when the run's data are not available (moved, deleted) are random
inputs of the planned shape used (the report says which).

Input shapes: a classification network takes ``(B, C, *plan spatial_size)`` (the preprocessing resizes to it); a
segmentation network takes patches ``(B, C, *roi_size)`` of the plan: sliding-window inference, test-time flips and
resampling stay outside the ONNX graph, in :class:`medmonai.engines.segmentation_inference.SegmentationPredictor`.

``medmonai infer --runtime onnx`` (:func:`use_onnx_runtime`) replaces the network of a loaded
:class:`~medmonai.deploy.models.ClinicalModel` by :class:`OnnxRuntimeNetwork`, an ONNX Runtime session behind the
``torch.nn.Module`` interface, so preprocessing, sliding window, decision threshold and the DICOM outputs are the
same code as with the PyTorch runtime.

Needs the ``onnx`` extra: ``pip install 'medmonai[onnx]'`` (``onnx``, ``onnxruntime``, ``onnxscript``).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import ResizeWithPadOrCrop
from monai.utils import optional_import

import medmonai
from medmonai.bundles import parse_bundle
from medmonai.data.datalist import load_datalist_file
from medmonai.deploy.models import ClinicalModel, _AsLogits, load_clinical_model
from medmonai.engines.evaluation import load_weights
from medmonai.utils import PathLike, atomic_write, atomic_write_json, read_json

__all__ = [
    "DEFAULT_OPSET",
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "OnnxRuntimeNetwork",
    "export_onnx",
    "export_clinical_model",
    "export_generator_onnx",
    "export_network_onnx",
    "sample_inputs",
    "use_onnx_runtime",
]

logger = logging.getLogger(__name__)

#: ONNX opset of the exported graphs (ONNX Runtime >= 1.14 runs it)
DEFAULT_OPSET = 18
#: tolerance of the export check: ``|onnx - torch| <= atol + rtol * |torch|`` on every output value
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3

_EXTRA = "install the ONNX extra: pip install 'medmonai[onnx]' (onnx, onnxruntime, onnxscript)"


def _require(module: str) -> Any:
    mod, ok = optional_import(module)
    if not ok:
        raise ImportError(f"{module} is not installed; {_EXTRA}")
    return mod


def _versions() -> dict[str, str]:
    out = {"medmonai": str(medmonai.__version__), "torch": torch.__version__}
    for name in ("onnx", "onnxruntime", "onnxscript"):
        mod, ok = optional_import(name)
        out[name] = str(getattr(mod, "__version__", "?")) if ok else "not installed"
    return out


def _session(path: PathLike, threads: int | None = None) -> Any:
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxRuntimeNetwork(torch.nn.Module):
    """An exported ONNX model run by ONNX Runtime (CPU) behind the ``torch.nn.Module`` interface.

    The input tensor is passed to the session as float32 NumPy array and the first output comes back as a tensor on
    the input's device, so code written for the PyTorch network (sliding-window inference, softmax) runs unchanged.

    Args:
        path: the ``.onnx`` file.
        threads: ONNX Runtime intra-op threads (default: ONNX Runtime's choice, one per physical core).
    """

    def __init__(self, path: PathLike, threads: int | None = None) -> None:
        super().__init__()
        self.path = str(path)
        self.session = _session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = list(self.session.get_inputs()[0].shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the session on ``x`` (B, C, *spatial)."""
        expected = [d for d in self.input_shape[1:]]
        got = list(x.shape[1:])
        if len(got) != len(expected) or any(isinstance(e, int) and e != g for e, g in zip(expected, got)):
            raise ValueError(f"{self.path}: the ONNX model takes inputs (B, {expected}), got {list(x.shape)}")
        arr = np.ascontiguousarray(x.detach().cpu().float().numpy())
        out = self.session.run(None, {self.input_name: arr})[0]
        return torch.from_numpy(out).to(x.device)


def _is_exportable(model: ClinicalModel) -> None:
    if isinstance(model.network, _AsLogits) or isinstance(model.network, torch.jit.ScriptModule):
        raise ValueError(
            f"{model.weights}: a TorchScript model is not exported to ONNX here; export the checkpoint (.pt) instead"
        )
    if isinstance(model.network, OnnxRuntimeNetwork):
        raise ValueError(f"{model.network.path}: already an ONNX model")


def _planned_shape(model: ClinicalModel) -> list[int]:
    """(C, *spatial) of the network's input: the plan's image size (classification) or patch (segmentation)."""
    parser = model.parser
    if parser is None:
        raise ValueError(f"{model.name}: the model was not loaded from a bundle config; cannot tell its input shape")
    channels = int(parser.get_parsed_content("in_channels"))
    if model.task == "segmentation":
        return [channels, *model.options["roi_size"]]
    return [channels, *(int(s) for s in parser.get_parsed_content("plan")["spatial_size"])]


def sample_inputs(model: ClinicalModel, n_samples: int = 3, seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    """Sample network inputs for the export check.

    The first ``n_samples`` validation cases of the run (``val_entries`` of the bundle config) whose image files
    exist, through the bundle's inference preprocessing (segmentation: centre-cropped / padded to the patch size);
    random normal inputs of the planned shape when none is available.

    Args:
        model: from :func:`medmonai.deploy.models.load_clinical_model`.
        n_samples: how many inputs.
        seed: seed of the random fallback.

    Returns:
        (inputs ``(N, C, *spatial)``, a JSON-safe description of where they come from).
    """
    shape = _planned_shape(model)
    entries = []
    if model.parser is not None:
        for e in model.parser.get_parsed_content("val_entries"):
            files = e["image"] if isinstance(e["image"], list | tuple) else [e["image"]]
            if all(Path(str(f)).exists() for f in files):
                entries.append({"image": e["image"]})
            if len(entries) == n_samples:
                break
    if entries:
        crop = ResizeWithPadOrCrop(shape[1:]) if model.task == "segmentation" else None
        xs = []
        for e in entries:
            x = model.preprocessing(e)["image"]
            x = crop(x) if crop is not None else x
            xs.append(torch.as_tensor(x).float())
        x = torch.stack(xs)
        if list(x.shape[1:]) != shape:
            raise ValueError(f"{model.name}: preprocessed validation inputs have shape {list(x.shape[1:])}, "
                             f"the plan says {shape}")  # fmt: skip
        return x, {"source": "validation", "n": len(entries), "shape": list(x.shape)}
    x = torch.randn([n_samples, *shape], generator=torch.Generator().manual_seed(seed))
    logger.warning(f"{model.name}: no validation images found; checking the export on random inputs")
    return x, {"source": "random normal (the run's validation images are not available)", "n": n_samples,
               "shape": list(x.shape), "seed": seed}  # fmt: skip


def _sha256(path: PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _compare(expected: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> tuple[bool, float]:
    if expected.shape != got.shape:
        return False, float("inf")
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    ok = bool(np.all(diff <= atol + rtol * np.abs(expected)))
    return ok, float(diff.max()) if diff.size else 0.0


def export_network_onnx(
    net: torch.nn.Module,
    x: torch.Tensor | tuple[torch.Tensor, ...],
    path: PathLike,
    opset: int = DEFAULT_OPSET,
    input_names: tuple[str, ...] = ("image",),
    output_name: str = "logits",
) -> None:
    """``torch.onnx.export`` of a network with the torch.export-based exporter and a dynamic batch axis (unchecked).

    Args:
        net: the network (in eval mode), one output.
        x: an example input, or a tuple of them (batch of at least 2: a batch of 1 would be specialised).
        path: the ``.onnx`` file (written in place: use :func:`export_clinical_model` for a checked, atomic export).
        opset: ONNX opset.
        input_names: the graph's input names, one per input.
        output_name: the graph's output name.
    """
    args = x if isinstance(x, tuple) else (x,)
    _require("onnxscript")
    _require("onnx")
    batch = torch.export.Dim("batch", min=1, max=4096)
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch._export")]
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net, args, str(path), input_names=list(input_names), output_names=[output_name], opset_version=opset,
                dynamic_shapes=tuple({0: batch} for _ in args), dynamo=True, external_data=False, verbose=False,
            )  # fmt: skip
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def export_clinical_model(
    model: ClinicalModel,
    out: PathLike,
    fmt: str = "onnx",
    n_samples: int = 3,
    opset: int = DEFAULT_OPSET,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> dict[str, Any]:
    """Export a loaded model's network to ONNX (or TorchScript), checked against the PyTorch network.

    The network is exported (ONNX: ``torch.onnx.export(dynamo=True)``, opset ``opset``, dynamic batch axis;
    TorchScript: ``torch.jit.trace``) into a temporary file beside ``out``; the exported model is run (ONNX Runtime /
    ``torch.jit.load``) on :func:`sample_inputs` as one batch and on the first input alone (the dynamic batch axis),
    and its outputs are compared with the PyTorch network's. Only when they agree within the tolerance is the file
    renamed to ``out``, and ``<out>.json`` written (check result, inputs, opset, versions, SHA-256 of the file).

    Args:
        model: from :func:`medmonai.deploy.models.load_clinical_model` (a checkpoint, not a TorchScript model).
        out: the output file (``.onnx`` or ``.ts``).
        fmt: ``onnx`` or ``torchscript``.
        n_samples: sample inputs of the check.
        opset: ONNX opset.
        atol: absolute tolerance of the check.
        rtol: relative tolerance of the check.

    Returns:
        The report (the content of ``<out>.json``).

    Raises:
        ValueError: a TorchScript model, an unknown format, or outputs that differ beyond the tolerance (nothing is
            written then).
        ImportError: ``onnx`` / ``onnxruntime`` / ``onnxscript`` missing (ONNX format).
    """
    if fmt not in ("onnx", "torchscript"):
        raise ValueError(f"format must be 'onnx' or 'torchscript', got {fmt!r}")
    _is_exportable(model)
    out = Path(out)
    net = model.network.to("cpu").eval()
    x, inputs = sample_inputs(model, n_samples)
    if len(x) == 1:
        x = torch.cat([x, x])  # the exporter specialises a batch of 1; the check still uses the one input
    t0 = time.perf_counter()
    with torch.no_grad():
        expected = [net(x).float().numpy(), net(x[:1]).float().numpy()]
    results: dict[str, Any] = {}

    def write(tmp: str) -> None:
        with torch.no_grad():
            if fmt == "onnx":
                export_network_onnx(net, x, tmp, opset)
                session = _session(tmp)
                got = [session.run(None, {session.get_inputs()[0].name: v.numpy()})[0] for v in (x, x[:1])]
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks: checked below
                    traced = torch.jit.trace(net, x[:1], check_trace=False)
                torch.jit.save(traced, tmp)
                loaded = torch.jit.load(tmp, map_location="cpu")
                got = [loaded(v).float().numpy() for v in (x, x[:1])]
        checks = [_compare(e, g, atol, rtol) for e, g in zip(expected, got)]
        results["max_abs_diff"] = max(d for _, d in checks)
        if model.task == "classification":
            prob = [torch.softmax(torch.from_numpy(a), 1).numpy() for a in (expected[0], got[0])]
            results["max_abs_diff_probabilities"] = float(np.abs(prob[0] - prob[1]).max())
            results["same_argmax"] = bool((prob[0].argmax(1) == prob[1].argmax(1)).all())
        if not all(ok for ok, _ in checks):
            raise ValueError(
                f"{out}: the exported {fmt} model's outputs differ from the checkpoint's ({model.weights}) by up to "
                f"{results['max_abs_diff']:.3g}, beyond the tolerance atol={atol:g}, rtol={rtol:g}; nothing written"
            )
        results["sha256"] = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()

    atomic_write(out, write)
    report: dict[str, Any] = {
        "file": out.name,
        "format": fmt,
        "sha256": results["sha256"],
        "model": model.info(),
        "weights_sha256": _sha256(model.weights),
        "task": model.task,
        "classes": list(model.classes),
        "input_shape": ["batch", *list(x.shape[1:])],
        "input_name": "image",
        "output_name": "logits",
        "opset": opset if fmt == "onnx" else None,
        "exporter": "torch.onnx.export(dynamo=True)" if fmt == "onnx" else "torch.jit.trace",
        "check": {
            "passed": True,
            "runtime": "onnxruntime (CPUExecutionProvider)" if fmt == "onnx" else "torch.jit.load",
            "reference": f"PyTorch network with the checkpoint {model.weights}",
            "inputs": inputs,
            "batch_sizes": [len(x), 1],
            "atol": atol,
            "rtol": rtol,
            "criterion": "|exported - torch| <= atol + rtol * |torch| for every output value",
            **{k: v for k, v in results.items() if k != "sha256"},
        },
        "versions": _versions(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if model.task == "segmentation":
        report["note"] = "patch network: sliding-window inference, TTA and resampling run outside the graph"
        report["segmentation"] = dict(model.options)
    atomic_write_json(out.with_name(out.name + ".json"), report)
    logger.info(f"exported {model.name} to {out} (max |diff| {results['max_abs_diff']:.3g} on {inputs['source']})")
    return report


def export_onnx(
    bundle_dir: PathLike,
    bundle_root: PathLike,
    out: PathLike,
    model: PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    fmt: str = "onnx",
    n_samples: int = 3,
    opset: int = DEFAULT_OPSET,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> dict[str, Any]:
    """Export a trained bundle's network to ONNX, checked against the checkpoint (see the module docstring).

    Args:
        bundle_dir: the bundle folder (``bundles/classification``, ``bundles/segmentation``).
        bundle_root: the ``bundle_root`` it was trained with (holds ``runs/``).
        out: the output ``.onnx`` file (a report ``<out>.json`` is written beside it).
        model: the checkpoint (default: the run's ``runs/checkpoints/model.pt``).
        overrides: config overrides used in training.
        fmt: ``onnx`` or ``torchscript``.
        n_samples: sample inputs of the check.
        opset: ONNX opset.
        atol: absolute tolerance of the check.
        rtol: relative tolerance of the check.

    Returns:
        The report written to ``<out>.json``.
    """
    cm = load_clinical_model(bundle_dir, bundle_root, model=model, overrides=overrides, device="cpu")
    return export_clinical_model(cm, out, fmt=fmt, n_samples=n_samples, opset=opset, atol=atol, rtol=rtol)


def export_generator_onnx(
    bundle_dir: PathLike,
    bundle_root: PathLike,
    out: PathLike,
    overrides: Mapping[str, Any] | None = None,
    n_samples: int = 4,
    opset: int = DEFAULT_OPSET,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> dict[str, Any]:
    """Export the conditional generator of a trained ``gan_augmentation`` run to ONNX, checked like :func:`export_onnx`.

    The generator is built from the bundle's ``generator_def`` (with ``overrides``, e.g. the ``spatial_size``,
    ``g_channels`` and ``latent_dim`` used in training; the number of classes from the training datalist recorded in
    the run's fingerprint), the run's ``generator_file`` (the EMA generator) is loaded with
    ``torch.load(weights_only=True)``, strict, and the ONNX graph (inputs ``z`` ``(B, latent_dim)`` float and
    ``label`` ``(B,)`` int64, output ``image``) is compared with it on ``n_samples`` seeded latent vectors covering
    every class. Written atomically, with ``<out>.json``, only when the check passes.

    Args:
        bundle_dir: the ``gan_augmentation`` bundle folder.
        bundle_root: the ``bundle_root`` it was trained with.
        out: the output ``.onnx`` file.
        overrides: config overrides used in training.
        n_samples: latent vectors of the check.
        opset: ONNX opset.
        atol: absolute tolerance of the check.
        rtol: relative tolerance of the check.

    Returns:
        The report written to ``<out>.json``.
    """
    cfg = Path(bundle_dir) / "configs"
    if not (cfg / "train.yaml").is_file() or not (cfg / "generate.yaml").is_file():
        raise FileNotFoundError(f"{cfg / 'train.yaml'}: not found; is {bundle_dir} the gan_augmentation bundle?")
    parser = parse_bundle(bundle_dir, ("train",), {"bundle_root": str(bundle_root), **(overrides or {})})
    fp_file = Path(parser.get_parsed_content("fingerprint_file"))
    if not fp_file.is_file():
        raise FileNotFoundError(
            f"{fp_file}: no fingerprint; the GAN has not been trained with bundle_root {bundle_root}"
        )
    datalist = (overrides or {}).get("datalist_file") or read_json(fp_file, "fingerprint file").get("datalist")
    classes = [str(c) for c in load_datalist_file(str(datalist))["classes"]]
    parser["num_classes"] = len(classes)  # not through the datalist pre-flight: nothing is written into the run
    weights = Path(parser.get_parsed_content("generator_file"))
    net = parser.get_parsed_content("generator_def", instantiate=True)
    try:
        load_weights(net, weights)
    except RuntimeError as e:
        raise ValueError(f"{weights}: the generator does not fit the config; pass the overrides used in training "
                         f"(spatial_size, g_channels, latent_dim): {str(e).splitlines()[0]}") from e  # fmt: skip
    net = net.to("cpu").eval()
    latent = int(parser.get_parsed_content("latent_dim"))
    n = max(2, int(n_samples))
    z = torch.randn(n, latent, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n, dtype=torch.long) % len(classes)
    with torch.no_grad():
        expected = net(z, y).float().numpy()
    out = Path(out)
    diffs: list[float] = []

    def write(tmp: str) -> None:
        export_network_onnx(net, (z, y), tmp, opset, input_names=("z", "label"), output_name="image")
        session = _session(tmp)
        got = session.run(None, {"z": z.numpy(), "label": y.numpy()})[0]
        ok, diff = _compare(expected, got, atol, rtol)
        diffs.append(diff)
        if not ok:
            raise ValueError(f"{out}: the exported generator's outputs differ from {weights} by up to {diff:.3g}, "
                             f"beyond the tolerance atol={atol:g}, rtol={rtol:g}; nothing written")  # fmt: skip

    atomic_write(out, write)
    report = {
        "file": out.name,
        "format": "onnx",
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "model": {"name": Path(bundle_dir).resolve().name, "task": "generation", "weights": str(weights)},
        "classes": classes,
        "inputs": {"z": ["batch", latent], "label": ["batch"]},
        "output_name": "image",
        "opset": opset,
        "exporter": "torch.onnx.export(dynamo=True)",
        "check": {
            "passed": True,
            "runtime": "onnxruntime (CPUExecutionProvider)",
            "reference": f"PyTorch generator with the checkpoint {weights}",
            "inputs": {"source": "random normal z (seed 0), labels cycling over the classes", "n": n},
            "atol": atol,
            "rtol": rtol,
            "criterion": "|exported - torch| <= atol + rtol * |torch| for every output value",
            "max_abs_diff": diffs[-1],
        },
        "versions": _versions(),
    }
    atomic_write_json(out.with_name(out.name + ".json"), report)
    return report


def use_onnx_runtime(
    model: ClinicalModel, onnx_model: PathLike | None = None, threads: int | None = None
) -> ClinicalModel:
    """Run a loaded model's forward pass in ONNX Runtime.

    Args:
        model: from :func:`medmonai.deploy.models.load_clinical_model`.
        onnx_model: an exported ``.onnx`` file of this model (:func:`export_onnx`); default: the network is
            exported on the fly into a temporary folder (checked against the checkpoint like :func:`export_onnx`),
            loaded into the session, and the folder removed.
        threads: ONNX Runtime intra-op threads.

    Returns:
        ``model`` with ``network`` an :class:`OnnxRuntimeNetwork` on the CPU and ``runtime`` ``onnx``.
    """
    if onnx_model is None:
        with tempfile.TemporaryDirectory(prefix="medmonai_onnx_") as tmp:
            path = Path(tmp) / "model.onnx"
            export_clinical_model(model, path)
            network = OnnxRuntimeNetwork(path, threads)
        network.path = f"{model.weights} (exported on the fly)"
    else:
        if not Path(onnx_model).is_file():
            raise FileNotFoundError(f"{onnx_model}: ONNX model file does not exist")
        network = OnnxRuntimeNetwork(onnx_model, threads)
        expected = _planned_shape(model) if model.parser is not None else None
        got = network.input_shape[1:]
        if expected is not None and [g for g in got] != expected:
            raise ValueError(f"{onnx_model}: the ONNX model takes inputs (B, {got}); {model.name}'s plan gives "
                             f"(B, {expected}): another model?")  # fmt: skip
        out_shape = list(network.session.get_outputs()[0].shape)
        rank = 2 if model.task == "classification" else 2 + model.spatial_dims
        if len(out_shape) != rank or (isinstance(out_shape[1], int) and out_shape[1] != len(model.classes)):
            raise ValueError(f"{onnx_model}: the ONNX model's output (B, {out_shape[1:]}) does not fit {model.name} "
                             f"({model.task}, {len(model.classes)} classes): another model?")  # fmt: skip
        report_file = Path(f"{onnx_model}.json")
        if report_file.is_file():  # written by export_onnx: the ONNX file must come from this very checkpoint
            recorded = read_json(report_file, "ONNX export report").get("weights_sha256")
            if recorded and Path(model.weights).is_file() and recorded != _sha256(model.weights):
                raise ValueError(f"{onnx_model}: exported from another checkpoint than {model.weights} (SHA-256 in "
                                 f"{report_file.name} differs): another model? export it again")  # fmt: skip
        model.weights = str(onnx_model)
    model.network = network
    model.device = torch.device("cpu")
    model.runtime = "onnx"
    return model
