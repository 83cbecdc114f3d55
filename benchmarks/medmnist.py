"""MedMNIST benchmark: the 2D classification bundle and a deep-feature baseline on the official splits.

For one MedMNIST ``.npz`` (binary or multi-class, one label per image) the script builds a medmonai datalist with
the official ``training``/``validation``/``test`` splits, then for each method, training-set fraction and seed:

* CNN methods (``small_cnn``, ``resnet18``, ``lite0_feature_extractor``, ``lite0_finetune_all``) are trained **through
  the MONAI bundle** ``bundles/classification`` (2D) (``train.yaml``: early stopping and model selection on the
  datalist's ``validation`` split), then evaluated once on ``test`` (``train.yaml`` + ``evaluate.yaml``: threshold
  chosen on ``validation``); test AUC / accuracy with bootstrap 95 % CIs are read from ``runs/eval/report.json``.
* ``deep_features_logreg``: frozen ImageNet EfficientNet-Lite0 features (extracted once per split, cached), an
  L2 logistic regression with ``C`` tuned by cross-validation on the training part only, the threshold chosen on
  ``validation`` (Youden, binary problems), and the test report of :func:`write_classification_report`.

Fractions below 1 subsample the **training** split only (stratified, seeded by the run seed); validation and test
are unchanged. Prints a Markdown table (mean ± std over seeds) followed by the MedMNIST v2 reference rows of
``../shared/data/README.md`` for the same data set, and writes every run plus the summary to ``--out`` (atomically,
after each run, so an interrupted benchmark keeps what it finished; finished runs are reused on a re-run with the
same ``--work``).

    PYTHONPATH=. python benchmarks/medmnist.py --npz ../shared/data/medmnist/breastmnist.npz --quick
    PYTHONPATH=. python benchmarks/medmnist.py --npz ../shared/data/medmnist/breastmnist.npz --size 64 \\
        --methods deep_features_logreg,small_cnn --seeds 0,1,2 --out benchmarks/results/medmnist_breastmnist.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing the package
    sys.path.insert(0, str(REPO))

from medmonai.data.builders import datalist_from_medmnist  # noqa: E402
from medmonai.data.datalist import load_datalist, load_datalist_file, write_datalist  # noqa: E402
from medmonai.utils import atomic_write_json, shared_data_dir  # noqa: E402

__all__ = ["METHODS", "CNN_METHODS", "stratified_subsample", "reference_rows", "main"]

BUNDLE = REPO / "bundles" / "classification"  # in 2D, its default
CONFIGS = BUNDLE / "configs"

#: Bundle overrides of the CNN methods.
CNN_METHODS: dict[str, dict[str, Any]] = {
    "small_cnn": {"network_name": "small_cnn", "pretrained": None, "strategy": "scratch", "input_affine": None},
    "resnet18": {"network_name": "resnet18", "pretrained": None, "strategy": "scratch", "input_affine": None},
    "lite0_feature_extractor": {
        "network_name": "efficientnet_lite0",
        "pretrained": "imagenet",
        "strategy": "feature_extractor",
        "input_affine": "auto",
    },
    "lite0_finetune_all": {
        "network_name": "efficientnet_lite0",
        "pretrained": "imagenet",
        "strategy": "finetune_all",
        "input_affine": "auto",
    },
}
METHODS: tuple[str, ...] = (*CNN_METHODS, "deep_features_logreg")
#: Training images fingerprinted to choose the deep-features channels (grey or RGB).
FINGERPRINT_SAMPLE = 500
#: Methods on ImageNet weights (their input size is ``--pretrained-size``).
PRETRAINED_METHODS = frozenset(m for m, o in CNN_METHODS.items() if o["pretrained"]) | {"deep_features_logreg"}


# ------------------------------------------------------------------------------------------------------------- data
def build_datalist(npz: Path, work: Path) -> Path:
    """Write the images and the official-split datalist of ``npz`` under ``work/data/<name>`` (once)."""
    name = re.sub(r"_\d+$", "", npz.stem.lower())
    folder = work / "data" / npz.stem.lower()
    path = folder / "datalist.json"
    if path.is_file():
        with np.load(npz) as z:
            expected = {k: len(z[f"{s}_labels"]) for s, k in (("train", "training"), ("val", "validation"))}
        raw = load_datalist_file(path)
        if all(len(raw.get(k, [])) == n for k, n in expected.items()):
            return path
    print(f"building the {name} datalist in {folder}")
    write_datalist(path, datalist_from_medmnist(npz, folder, progress=False))
    return path


def stratified_subsample(labels: Sequence[int], fraction: float, seed: int, n: int | None = None) -> np.ndarray:
    """Sorted indices of a stratified random subsample (each class keeps ``round(fraction * n_c)``, at least 1).

    Args:
        labels: class index per item.
        fraction: kept fraction in ``(0, 1]`` (ignored when ``n`` is given).
        seed: random seed.
        n: total size wanted instead of a fraction (split over the classes proportionally).
    """
    labels = np.asarray(labels)
    if n is not None:
        fraction = min(1.0, n / len(labels))
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(len(idx), max(1, int(round(fraction * len(idx)))))
        keep.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(keep))


def derived_datalist(base: Path, fraction: float, seed: int, n: int | None = None) -> tuple[Path, int]:
    """A datalist beside ``base`` whose ``training`` is a stratified subsample (other splits unchanged)."""
    raw = load_datalist_file(base)
    train = load_datalist(base, "training")
    if fraction >= 1 and n is None:
        return base, len(train)
    idx = stratified_subsample([e["label"] for e in train], fraction, seed, n=n)
    out = dict(raw)
    out["training"] = [train[i] for i in idx]
    for split in ("validation", "test"):
        if isinstance(raw.get(split), list):
            out[split] = load_datalist(base, split)
    out["description"] = f"{raw.get('description', '')} Training: stratified subsample ({len(idx)}), seed {seed}."
    tag = f"n{n}" if n is not None else f"f{fraction:g}"
    path = base.with_name(f"datalist_{tag}_seed{seed}.json")
    write_datalist(path, out)
    return path, len(idx)


# ------------------------------------------------------------------------------------------------------------- runs
def _metric(report: dict[str, Any], name: str) -> dict[str, Any]:
    m = report["metrics"].get(name) or {}
    return {k: m.get(k) for k in ("value", "ci_low", "ci_high")}


def run_bundle(
    method: str,
    datalist: Path,
    run_dir: Path,
    seed: int,
    size: int,
    max_epochs: int,
    patience: int,
    lr: float,
    leakage: str = "off",
) -> dict[str, Any]:
    """Train and evaluate one CNN method through the bundle; returns the run record."""
    from monai.bundle import run

    overrides = dict(CNN_METHODS[method])
    common = {
        "bundle_root": str(run_dir),
        "meta_file": str(CONFIGS / "metadata.json"),
        "logging_file": str(CONFIGS / "logging.conf"),
        "datalist": str(datalist),
        "seed": seed,
        "max_epochs": max_epochs,
        "patience": patience,
        "spatial_size": [size, size],
        "size_mode": "resize",
        "normalization": "scale255",
        "learning_rate": lr,
        "resume": False,
        "leakage": leakage,
        **overrides,
    }
    if (run_dir / "runs").exists():
        shutil.rmtree(run_dir / "runs")
    t0 = time.perf_counter()
    run(config_file=[str(CONFIGS / "train.yaml")], **common)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run(config_file=[str(CONFIGS / "train.yaml"), str(CONFIGS / "evaluate.yaml")], **common)
    eval_s = time.perf_counter() - t0
    report = json.loads((run_dir / "runs" / "eval" / "report.json").read_text())
    return {
        "auc": _metric(report, "auc"),
        "accuracy": _metric(report, "accuracy"),
        "balanced_accuracy": _metric(report, "balanced_accuracy"),
        "threshold": report.get("threshold"),
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        "bundle_overrides": {k: v for k, v in common.items() if k not in ("meta_file", "logging_file")},
        "report": str(run_dir / "runs" / "eval" / "report.json"),
    }


class DeepFeatures:
    """EfficientNet-Lite0 ImageNet features of every split, extracted once (and cached on disk)."""

    def __init__(self, datalist: Path, size: int, work: Path) -> None:
        import torch

        from medmonai.data.fingerprint import compute_fingerprint, plan_from_fingerprint
        from medmonai.engines.features import extract_features
        from medmonai.networks.factory import build_network
        from medmonai.transforms.intensity import normalized_range
        from medmonai.transforms.preprocessing import build_preprocessing

        # channels from the data (MedMNIST has grey and colour sets): a fingerprint of the first training images
        entries = load_datalist(datalist, "training")[:FINGERPRINT_SAMPLE]
        plan = plan_from_fingerprint(compute_fingerprint(entries, progress=False))
        self.in_channels = int(plan["in_channels"])
        print(next(r for r in plan["reasons"] if r.startswith("channels")))
        net = build_network(
            "efficientnet_lite0", pretrained="imagenet", in_channels=self.in_channels,
            input_affine="auto", input_range=normalized_range("scale255"),
        )  # fmt: skip
        transform = build_preprocessing(
            keys=("image",), spatial_dims=2, spatial_size=[size, size], size_mode="resize", normalization="scale255",
            channels=self.in_channels,
        )  # fmt: skip
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.features: dict[str, np.ndarray] = {}
        self.labels: dict[str, np.ndarray] = {}
        self.ids: dict[str, list[str]] = {}
        self.seconds: dict[str, float] = {}
        for split in ("training", "validation", "test"):
            entries = load_datalist(datalist, split)
            t0 = time.perf_counter()
            feats, _ = extract_features(
                net, entries, transform, batch_size=64, device=device, cache_dir=work / "features", progress=False
            )
            self.seconds[split] = time.perf_counter() - t0
            self.features[split] = feats
            self.labels[split] = np.array([e["label"] for e in entries])
            self.ids[split] = [str(e.get("subject", i)) for i, e in enumerate(entries)]
        self.classes = load_datalist_file(datalist)["classes"]
        print(f"deep features {self.features['training'].shape[1]}-D, extraction seconds {self.seconds}")


def run_deep_features(
    df: DeepFeatures, train_idx: np.ndarray, seed: int, out_dir: Path, n_boot: int = 1000
) -> dict[str, Any]:
    """L2 logistic regression on deep features (C by CV on the training part), threshold on validation, test once."""
    from medmonai.engines.classical import fit_classical
    from medmonai.metrics.report import write_classification_report
    from medmonai.metrics.threshold import choose_threshold

    t0 = time.perf_counter()
    x_train, y_train = df.features["training"][train_idx], df.labels["training"][train_idx]
    clf = fit_classical(x_train, y_train, model="logreg_l2", seed=seed)
    fit_s = time.perf_counter() - t0
    p_val = clf.predict_proba(df.features["validation"])
    p_test = clf.predict_proba(df.features["test"])
    binary = len(df.classes) == 2
    threshold = choose_threshold(df.labels["validation"], p_val, method="youden") if binary else None
    report = write_classification_report(
        out_dir,
        df.labels["test"],
        p_test,
        case_ids=df.ids["test"],
        classes=df.classes,
        threshold=threshold,
        n_boot=n_boot,
        seed=seed,
        extra={"method": "deep_features_logreg", "C": clf.best_params_, "cv_score": clf.cv_score_},
    )
    # the training split's extraction is shared by every run: count it in each (it is what a single run would cost)
    extract_s = df.seconds["training"] * len(train_idx) / len(df.labels["training"])
    return {
        "auc": _metric(report, "auc"),
        "accuracy": _metric(report, "accuracy"),
        "balanced_accuracy": _metric(report, "balanced_accuracy"),
        "threshold": report.get("threshold"),
        "train_seconds": fit_s + extract_s,
        "fit_seconds": fit_s,
        "feature_seconds": extract_s,
        "C": clf.best_params_,
        "cv_score": clf.cv_score_,
        "report": str(out_dir / "report.json"),
    }


# --------------------------------------------------------------------------------------------------------- summary
def reference_rows(dataset: str) -> list[dict[str, str]]:
    """MedMNIST v2 reference rows (method, AUC / ACC) for ``dataset`` from the shared data README, if present."""
    try:
        text = (shared_data_dir() / "README.md").read_text()
    except OSError:
        return []
    rows: list[dict[str, str]] = []
    col = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if not cells:
            col = None
            continue
        if cells[0] == "method":
            col = next((i for i, c in enumerate(cells) if c.lower() == dataset.lower()), None)
        elif col is not None and not set(cells[0]) <= set("-: "):
            rows.append({"method": cells[0], "auc_acc": cells[col]})
    return rows


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean/std over seeds per (method, fraction)."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["method"], r["fraction"]), []).append(r)
    rows = []
    for (method, fraction), rs in groups.items():
        row: dict[str, Any] = {"method": method, "fraction": fraction, "n_train": rs[0]["n_train"]}
        row["size"] = rs[0].get("size")
        row["seeds"] = [r["seed"] for r in rs]
        for m in ("auc", "accuracy"):
            vals = [r[m]["value"] for r in rs if r[m]["value"] is not None]
            row[m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "per_seed": vals} if vals else None
        row["train_minutes"] = float(np.mean([r["train_seconds"] for r in rs])) / 60
        rows.append(row)
    return rows


def print_table(dataset: str, rows: list[dict[str, Any]], refs: list[dict[str, str]]) -> None:
    def cell(v: dict[str, Any] | None) -> str:
        return "n/a" if v is None else f"{v['mean']:.3f} ± {v['std']:.3f}"

    print("\n| data set | method | size | train fraction (n) | seeds | test AUC | test ACC | train min |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {dataset} | {r['method']} | {r['size']} | {r['fraction']:g} ({r['n_train']}) | {len(r['seeds'])} | "
            f"{cell(r['auc'])} | {cell(r['accuracy'])} | {r['train_minutes']:.1f} |"
        )
    for ref in refs:
        auc, _, acc = ref["auc_acc"].partition("/")
        print(f"| {dataset} | ref: {ref['method']} | | 1 (official) | | {auc.strip()} | {acc.strip()} | |")


# -------------------------------------------------------------------------------------------------------------- cli
def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; returns the JSON-able result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--npz", required=True, help="MedMNIST .npz file (e.g. ../shared/data/medmnist/breastmnist.npz)")
    p.add_argument("--methods", default="small_cnn,deep_features_logreg", help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--fractions", default="1.0", help="training-set fractions, e.g. 0.25,0.5,1.0")
    p.add_argument("--size", type=int, default=28, choices=(28, 64, 128), help="input size (resize)")
    p.add_argument(
        "--pretrained-size", type=int, default=None, choices=(28, 64, 128),
        help="input size of the ImageNet methods (Lite0 and deep features; default --size)",
    )  # fmt: skip
    p.add_argument(
        "--curve-methods", default=None,
        help="methods run at fractions below 1 (default: all --methods); fractions run in the order given",
    )  # fmt: skip
    p.add_argument("--max-epochs", type=int, default=60)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the deep-feature test report")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/medmnist_<name>.json)")
    p.add_argument("--work", default=None, help="work folder for images, runs and caches (default /tmp/...)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 epoch, 64 training images")
    p.add_argument(
        "--report-only", action="store_true",
        help="train nothing: table and JSON of the runs already finished in --work (a partial benchmark)",
    )  # fmt: skip
    p.add_argument(
        "--leakage", default="off", choices=("off", "drop", "error"),
        help="the bundles' leakage guard; 'off' keeps the official splits as published (BreastMNIST has one "
        "train/test pair of identical images, PneumoniaMNIST 8 train/val groups; see docs/validation.md)",
    )  # fmt: skip
    args = p.parse_args(argv)

    npz = Path(args.npz).resolve()
    dataset = re.sub(r"_\d+$", "", npz.stem.lower())
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    fractions = [1.0] if args.quick else _floats(args.fractions)
    if any(not 0 < f <= 1 for f in fractions):
        p.error(f"fractions must be in (0, 1]: {fractions}")
    pretrained_size = args.pretrained_size or args.size
    curve_methods = methods if args.curve_methods is None else [m.strip() for m in args.curve_methods.split(",")]
    max_epochs, patience = (1, 1) if args.quick else (args.max_epochs, args.patience)
    n_quick = 64 if args.quick else None
    suffix = "_quick" if args.quick else ""
    out = Path(args.out or f"benchmarks/results/medmnist_{dataset}{suffix}.json")
    work = Path(args.work or f"/tmp/medmonai_bench/medmnist_{dataset}{suffix}").resolve()
    work.mkdir(parents=True, exist_ok=True)

    base = build_datalist(npz, work)
    result: dict[str, Any] = {
        "benchmark": "medmnist",
        "dataset": dataset,
        "npz": str(npz),
        "settings": {
            "methods": methods,
            "seeds": seeds,
            "fractions": fractions,
            "size": args.size,
            "pretrained_size": pretrained_size,
            "curve_methods": curve_methods,
            "max_epochs": max_epochs,
            "patience": patience,
            "learning_rate": args.learning_rate,
            "quick": args.quick,
            "leakage": args.leakage,
            "splits": "official MedMNIST train/val/test; model selection and threshold on val; test used once",
            "report_only": args.report_only,
        },  # fmt: skip
        "runs": [],
        "summary": [],
    }
    deep: DeepFeatures | None = None
    for fraction in fractions:
        for method in methods if fraction >= 1 else [m for m in methods if m in curve_methods]:
            size = pretrained_size if method in PRETRAINED_METHODS else args.size
            for seed in seeds:
                datalist, n_train = derived_datalist(base, fraction, seed, n=n_quick)
                run_dir = work / "runs" / f"{method}_s{size}_f{fraction:g}_seed{seed}{suffix}"
                key = {"method": method, "fraction": fraction, "seed": seed, "size": size}
                key.update({"max_epochs": max_epochs, "patience": patience, "lr": args.learning_rate, "n": n_train})
                done = run_dir / "result.json"
                if done.is_file() and json.loads(done.read_text()).get("key") == key:
                    rec = json.loads(done.read_text())["record"]
                    print(f"reusing {done}")
                elif args.report_only:
                    print(f"not run yet (left out of the report): {method} size {size} seed {seed}")
                    continue
                else:
                    print(f"\n=== {dataset} {method} size {size} fraction {fraction:g} (n={n_train}) seed {seed}")
                    if method == "deep_features_logreg":
                        if deep is None:
                            deep = DeepFeatures(base, size, work)
                        train_ids = {e["subject"] for e in load_datalist(datalist, "training")}
                        idx = np.array([i for i, s in enumerate(deep.ids["training"]) if s in train_ids])
                        rec = run_deep_features(deep, idx, seed, run_dir / "eval", n_boot=args.n_boot)
                    else:
                        rec = run_bundle(
                            method, datalist, run_dir, seed, size, max_epochs, patience, args.learning_rate,
                            leakage=args.leakage,
                        )  # fmt: skip
                    atomic_write_json(done, {"key": key, "record": rec})
                rec = {"method": method, "fraction": fraction, "seed": seed, "n_train": n_train, "size": size, **rec}
                print(
                    f"--> {method} f={fraction:g} seed {seed}: test AUC {rec['auc']['value']}, "
                    f"ACC {rec['accuracy']['value']}, train {rec['train_seconds']:.0f} s"
                )
                result["runs"].append(rec)
                result["summary"] = summarise(result["runs"])
                atomic_write_json(out, result)
    refs = reference_rows(dataset)
    result["reference"] = {"source": "MedMNIST v2 (Yang et al., Sci. Data 2023), via ../shared/data/README.md"}
    result["reference"]["rows"] = refs
    atomic_write_json(out, result)
    print_table(dataset, result["summary"], refs)
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
