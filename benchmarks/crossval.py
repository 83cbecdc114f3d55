"""Cross-validation benchmark: k-fold CV + fold ensemble versus a single train/val split; leave-one-out timing.

Part 1 (``--methods`` ``single,cv``), per seed, on a MedMNIST ``.npz`` (default BreastMNIST):

* ``single``: the 2D classification bundle trained once on the official training split with early stopping on the
  official validation split (``train.yaml``), then the official test split evaluated once (``evaluate.yaml``,
  threshold chosen on validation);
* ``cv``: ``medmonai cv`` on the same bundle and settings, training + validation pooled (624 images for
  BreastMNIST) in stratified k-fold; each fold early-stops on its own validation part; the threshold is chosen on
  the out-of-fold predictions; the official test split is predicted by the mean of the k models (the ensemble);
* a paired comparison (``medmonai compare``: DeLong and paired bootstrap on the AUC, McNemar on the accuracy) of
  the ensemble against the single split of the same seed on the same test cases.

Both arms use the leakage guard with ``leakage=drop``: images identical to a test image are removed from the
training side (BreastMNIST has one such pair in the official splits; see ``docs/validation.md``).

Part 2 (``--loo N``): leave-one-out over a stratified subsample of ``N`` training images with the deep-features
path (ImageNet EfficientNet-Lite0 features extracted once + L2 logistic regression tuned by inner CV per fold),
timed — the "LOO must be practical" check.

    python benchmarks/crossval.py --npz ../shared/data/medmnist/breastmnist.npz --seeds 0,1,2 --loo 100 \\
        --out benchmarks/results/crossval_breastmnist.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing the package
    sys.path.insert(0, str(REPO))

from benchmarks.medmnist import build_datalist, derived_datalist  # noqa: E402
from medmonai.utils import atomic_write_json  # noqa: E402

BUNDLE = REPO / "bundles" / "classification"  # in 2D, its default
CONFIGS = BUNDLE / "configs"


def _overrides(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "network_name": args.network,
        "max_epochs": args.max_epochs,
        "patience": args.patience,
        "spatial_size": [args.size, args.size],
        "size_mode": "resize",
        "normalization": "scale255",
        "leakage": "drop",
        "resume": True,
    }


def _metrics(report_file: Path) -> dict[str, Any]:
    m = json.loads(report_file.read_text())["metrics"]
    return {k: {x: m[k].get(x) for x in ("value", "ci_low", "ci_high")} for k in ("auc", "accuracy")}


def run_single(datalist: Path, root: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train + evaluate the bundle once (official train/val split); reuses a finished run."""
    from monai.bundle import run

    report = root / "runs" / "eval" / "report.json"
    common = {"bundle_root": str(root), "datalist": str(datalist), "meta_file": str(CONFIGS / "metadata.json")}
    common.update(logging_file=str(CONFIGS / "logging.conf"), **overrides)
    t0 = time.perf_counter()
    if not report.is_file():
        run(config_file=[str(CONFIGS / "train.yaml")], **common)
        train_s = time.perf_counter() - t0
        run(config_file=[str(CONFIGS / "train.yaml"), str(CONFIGS / "evaluate.yaml")], **common)
        atomic_write_json(root / "train_seconds.json", {"seconds": train_s})
    train_s = json.loads((root / "train_seconds.json").read_text())["seconds"]
    return {"test": _metrics(report), "train_seconds": train_s, "eval_dir": str(report.parent)}


def run_cv(datalist: Path, root: Path, overrides: dict[str, Any], n_folds: int) -> dict[str, Any]:
    """``medmonai cv`` (k-fold, pooled train+val) on the bundle; resumes / reuses finished folds."""
    from medmonai.apps.crossval import run_crossval

    t0 = time.perf_counter()
    report = run_crossval(
        BUNDLE, bundle_root=root, scheme="kfold", n_folds=n_folds, overrides={"datalist": str(datalist), **overrides}
    )
    seconds = time.perf_counter() - t0
    timing = root / "cv_seconds.json"
    if not timing.is_file():  # the first (complete) run's time; a resumed run only adds to it
        atomic_write_json(timing, {"seconds": seconds})
    cv_dir = root / "runs" / "cv"
    return {
        "ensemble_test": _metrics(cv_dir / "ensemble" / "report.json"),
        "oof": _metrics(cv_dir / "oof" / "report.json"),
        "across_folds_test": report["across_folds"]["test"],
        "across_folds_validation": report["across_folds"]["validation"],
        "seconds": json.loads(timing.read_text())["seconds"],
        "cv_dir": str(cv_dir),
    }


def run_loo(base: Path, work: Path, n: int, seed: int) -> dict[str, Any]:
    """Leave-one-out over ``n`` training images with deep features + logistic regression; timed."""
    from medmonai.apps.crossval import run_crossval
    from medmonai.data.datalist import load_datalist, load_datalist_file, write_datalist

    sub, n_train = derived_datalist(base, 1.0, seed, n=n)
    raw = load_datalist_file(sub)
    loo_list = work / "loo" / "datalist.json"
    write_datalist(
        loo_list,
        {"classes": raw["classes"], "training": load_datalist(sub, "training"), "test": load_datalist(sub, "test")},
    )
    overrides = {
        "datalist": str(loo_list),
        "network_name": "efficientnet_lite0",
        "pretrained": "imagenet",
        "input_affine": [2, -1],
        "spatial_size": [64, 64],
        "size_mode": "resize",
        "normalization": "scale255",
        "leakage": "drop",
        "seed": seed,
    }
    t0 = time.perf_counter()
    report = run_crossval(BUNDLE, bundle_root=work / "loo", scheme="loo", overrides=overrides, classifier="logreg_l2")
    seconds = time.perf_counter() - t0
    oof = report["oof"]["metrics"]
    return {
        "n_cases": n_train,
        "n_folds": report["n_folds"],
        "seconds_total": seconds,
        "oof_auc": {k: oof["auc"].get(k) for k in ("value", "ci_low", "ci_high")},
        "ensemble_test": {k: report["ensemble"]["metrics"][k]["value"] for k in ("auc", "accuracy")},
    }


def _mean_std(values: Sequence[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; returns the JSON-able result."""
    from medmonai.metrics.compare import compare_runs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--npz", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="single,cv", help="single and/or cv")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--network", default="small_cnn")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--loo", type=int, default=0, help="also time leave-one-out over this many images (0: skip)")
    p.add_argument("--work", default="/tmp/medmonai_bench/crossval")
    p.add_argument("--out", default="benchmarks/results/crossval.json")
    args = p.parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = build_datalist(Path(args.npz).resolve(), work)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result: dict[str, Any] = {"benchmark": "crossval", "npz": str(Path(args.npz).resolve()), "settings": vars(args)}
    result["runs"] = []
    out = Path(args.out)
    for seed in seeds:
        rec: dict[str, Any] = {"seed": seed}
        ov = _overrides(args, seed)
        if "single" in methods:
            print(f"\n=== single split, seed {seed}", flush=True)
            rec["single"] = run_single(base, work / f"single_seed{seed}", ov)
        if "cv" in methods:
            print(f"\n=== {args.folds}-fold CV + ensemble, seed {seed}", flush=True)
            rec["cv"] = run_cv(base, work / f"cv_seed{seed}", ov, args.folds)
        if "single" in rec and "cv" in rec:
            rec["compare"] = compare_runs(rec["single"]["eval_dir"], Path(rec["cv"]["cv_dir"]) / "ensemble")
        result["runs"].append(rec)
        atomic_write_json(out, result)
    if args.loo:
        print(f"\n=== leave-one-out over {args.loo} images, deep features + logistic regression", flush=True)
        result["loo"] = run_loo(base, work, args.loo, seeds[0])
        atomic_write_json(out, result)

    print("\n| arm | test AUC (mean ± std over seeds) | test ACC | CPU minutes per seed |")
    print("|---|---|---|---|")
    runs = result["runs"]
    if runs and "single" in runs[0]:
        s = [r["single"] for r in runs]
        print(
            f"| single split | {_mean_std([x['test']['auc']['value'] for x in s])} | "
            f"{_mean_std([x['test']['accuracy']['value'] for x in s])} | "
            f"{np.mean([x['train_seconds'] for x in s]) / 60:.1f} |"
        )
    if runs and "cv" in runs[0]:
        c = [r["cv"] for r in runs]
        print(
            f"| {args.folds}-fold ensemble | {_mean_std([x['ensemble_test']['auc']['value'] for x in c])} | "
            f"{_mean_std([x['ensemble_test']['accuracy']['value'] for x in c])} | "
            f"{np.mean([x['seconds'] for x in c]) / 60:.1f} |"
        )
    for r in runs:
        if "compare" in r:
            print(f"seed {r['seed']}: {r['compare'].get('conclusion')}")
    if "loo" in result:
        lo = result["loo"]
        print(
            f"LOO over {lo['n_cases']} images: {lo['seconds_total'] / 60:.1f} min, OOF AUC {lo['oof_auc']['value']:.3f}"
        )
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
