"""The README demo: phantoms -> DICOM datalist -> check -> fingerprint/plan -> preprocessing -> baseline.

It runs on the embedded synthetic phantom data, on CPU, in a few minutes, and writes everything to one folder:

- ``phantoms/``: the generated NIfTI and DICOM files with their datalists;
- ``labels.csv`` and ``datalist_dicom.json``: a hospital-style label sheet keyed by PatientID, joined to the DICOM
  series found by scanning the DICOM folder;
- ``fingerprint.json``: the dataset fingerprint and the preprocessing plan derived from it;
- ``preview.png``: preprocessed cases (central slices), per class;
- ``baseline.json``: a subject-grouped 5-fold CV baseline (logistic regression on down-sampled preprocessed images)
  showing how hard the task is;
- ``classification_2d/``: the 2D classification bundle trained on 2D phantoms (``python -m monai.bundle run``
  components, early stopping on the validation AUC, TensorBoard logs in ``runs/tensorboard``) and evaluated once on
  the held-out test subjects (``runs/eval``: report with bootstrap 95 % CIs, ROC and confusion-matrix plots);
- ``summary.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from medmonai.apps.baseline import downsample_features, grouped_cv_baseline
from medmonai.bundles import bundles_dir, medmonai_home, run_bundle
from medmonai.data.builders import datalist_from_dicom_folder
from medmonai.data.datalist import (
    class_names,
    format_problems,
    load_datalist,
    load_datalist_file,
    validate_entries,
    write_datalist,
)
from medmonai.data.dicom import is_error
from medmonai.data.fingerprint import fingerprint_datalist, write_fingerprint
from medmonai.data.phantoms import PhantomConfig, generate_phantom_dataset
from medmonai.transforms.preprocessing import build_preprocessing
from medmonai.utils import PathLike, atomic_write, atomic_write_json

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)


def _step(i: int, n: int, text: str) -> None:
    print(f"[{i}/{n}] {text}", flush=True)


def _save_preview(images: list[np.ndarray], labels: list[int], classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_class = 4
    fig, axes = plt.subplots(len(classes), per_class, figsize=(2.2 * per_class, 2.3 * len(classes)), squeeze=False)
    for c, name in enumerate(classes):
        idx = [i for i, lab in enumerate(labels) if lab == c][:per_class]
        for col in range(per_class):
            ax = axes[c][col]
            ax.axis("off")
            if col < len(idx):
                img = images[idx[col]][0]
                if img.ndim == 3:
                    img = img[:, :, img.shape[2] // 2]
                ax.imshow(img.T, cmap="gray", origin="lower")
                ax.set_title(name, fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)


def _train_and_evaluate_bundle(root: Path, seed: int = 0, quick: bool = False) -> dict[str, Any]:
    """Train then evaluate ``bundles/classification`` (2D, its default) with MONAI's bundle runner.

    Returns:
        The test report.
    """
    cfg = bundles_dir() / "classification" / "configs"
    # the bundle's own defaults (planned input size, epochs, early stopping): the demo overrides nothing but the seed
    common: dict[str, Any] = {"meta_file": str(cfg / "metadata.json"), "bundle_root": str(root), "seed": seed}
    train_args: dict[str, Any] = {}
    if quick:  # the tests' small preset: fewer phantoms, two epochs
        common["phantom"] = {"n_subjects": 16, "images_per_subject": [1, 2], "test_fraction": 0.25, "seed": seed}
        train_args = {"max_epochs": 2}
    run_bundle([str(cfg / "train.yaml")], **common, **train_args)
    run_bundle([str(cfg / "train.yaml"), str(cfg / "evaluate.yaml")], **common)
    return json.loads((root / "runs" / "eval" / "report.json").read_text(encoding="utf-8"))


def run_demo(
    out: PathLike | None = None, spatial_dims: int = 3, seed: int = 0, quick: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run the end-to-end demo on synthetic phantoms and return its summary.

    Args:
        out: output folder (default ``$MEDMONAI_HOME/demo``, i.e. ``~/.medmonai/demo``: never the source tree).
        spatial_dims: 2 or 3.
        seed: phantom generator seed.
        quick: use the small phantom preset (for tests).
        progress: show progress bars.

    Returns:
        The summary dict (also written to ``out/summary.json``).
    """
    t0 = time.time()
    out = Path(out if out is not None else medmonai_home() / "demo").resolve()
    out.mkdir(parents=True, exist_ok=True)
    n = 8

    _step(1, n, f"generating {spatial_dims}D phantoms (NIfTI + DICOM) in {out / 'phantoms'}")
    config = PhantomConfig.small(spatial_dims) if quick else PhantomConfig(spatial_dims=spatial_dims)
    config.seed = seed
    written = generate_phantom_dataset(out / "phantoms", config, formats=("nifti", "dicom"), progress=progress)
    phantom_dl = load_datalist_file(written["dicom"])
    classes = class_names(phantom_dl) or []

    _step(2, n, "scanning the DICOM folder into series and joining a label sheet keyed by PatientID")
    subject_label: dict[str, int] = {}
    for e in phantom_dl["training"] + phantom_dl.get("test", []):
        subject_label[e["subject"]] = int(e["label"])
    labels_csv = out / "labels.csv"

    def _write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["PatientID", "label"])
            for s, lab in sorted(subject_label.items()):
                w.writerow([s, classes[lab]])

    atomic_write(labels_csv, _write_csv)
    datalist, problems = datalist_from_dicom_folder(
        out / "phantoms" / "dicom", labels_csv=labels_csv, key="PatientID", classes=classes, progress=progress
    )
    datalist_path = write_datalist(out / "datalist_dicom.json", datalist)
    print(f"      {len(datalist['training'])} series, classes {classes} -> {datalist_path}")
    errors = [p for p in problems if is_error(p)]
    if len(problems) > len(errors):
        print(f"      {len(problems) - len(errors)} non-image file(s) ignored")
    if errors:
        print(format_problems(errors))

    _step(3, n, "checking the datalist (files, labels, classes)")
    entries = load_datalist(datalist_path, "training")
    validate_entries(entries, classes=classes, source=str(datalist_path))
    print("      no problems found")

    _step(4, n, "dataset fingerprint -> preprocessing plan")
    result = fingerprint_datalist(datalist_path, key="training", progress=progress)
    fp_path = write_fingerprint(out / "fingerprint.json", result)
    plan = result["plan"]
    for r in plan.get("reasons", []):
        print(f"      - {r}")
    print(f"      -> {fp_path}")

    _step(5, n, "preprocessing every series with the planned transform chain")
    pre = build_preprocessing(keys=("image",), plan=plan)
    images, labels, groups = [], [], []
    for e in tqdm(entries, desc="preprocess", unit="series", disable=not progress):
        d = pre({"image": e["image"]})
        images.append(np.asarray(d["image"]))
        labels.append(int(e["label"]))
        groups.append(str(e["subject"]))
    shapes = sorted({tuple(im.shape) for im in images})
    print(f"      preprocessed shape(s): {shapes}")
    _save_preview(images, labels, classes, out / "preview.png")

    _step(
        6, n, f"baseline on these {spatial_dims}D phantoms: logistic regression on 16-voxel down-sampled images, "
        "subject-grouped 5-fold CV (a floor for this data set only)",
    )  # fmt: skip
    feats = np.stack([downsample_features(im, 16) for im in images])
    baseline = grouped_cv_baseline(feats, labels, groups, n_splits=5, seed=seed)
    atomic_write_json(out / "baseline.json", baseline)
    for m in ("accuracy", "balanced_accuracy", "auc"):
        if m in baseline:
            print(f"      {m:<18} {baseline[m]['mean']:.3f} ± {baseline[m]['std']:.3f}")

    _step(
        7, n, "a separate run: the 2D classification bundle on its own 2D phantom data set (not the data of steps "
        "1-6), early stopping on validation AUC",
    )  # fmt: skip
    bundle_root = out / "classification_2d"
    test_report = _train_and_evaluate_bundle(bundle_root, seed=seed, quick=quick)
    print(f"      TensorBoard: tensorboard --logdir {bundle_root / 'runs' / 'tensorboard'}")
    _step(
        8, n, "the 2D bundle's test-set report (threshold chosen on validation data, test used once; another "
        f"data set than the step-6 baseline{'' if spatial_dims == 2 else ' on 3D volumes'}: do not compare the two)",
    )  # fmt: skip
    for m in ("auc", "accuracy", "sensitivity", "specificity"):
        v = test_report["metrics"][m]
        if v["value"] is not None:
            print(f"      {m:<12} {v['value']:.3f}  (95% CI {v['ci_low']:.3f}-{v['ci_high']:.3f})")
    print(f"      report, ROC and confusion matrix in {bundle_root / 'runs' / 'eval'}")

    summary = {
        "spatial_dims": spatial_dims,
        "seed": seed,
        "n_series": len(entries),
        "classes": classes,
        "plan": {k: v for k, v in plan.items() if k != "reasons"},
        "baseline": {k: baseline[k] for k in ("accuracy", "balanced_accuracy", "auc") if k in baseline},
        "note": "baseline: the phantoms of steps 1-6 (spatial_dims above); classification_2d_test: the 2D bundle "
        "on its own 2D phantom data set; different data sets, not comparable",
        "classification_2d_test": {
            k: test_report["metrics"][k] for k in ("auc", "accuracy", "sensitivity", "specificity")
        },
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(out / "summary.json", summary)
    print(f"done in {summary['seconds']} s; outputs in {out}")
    return summary
