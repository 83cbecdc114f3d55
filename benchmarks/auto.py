"""``medmonai train`` on MedMNIST, side by side with the best single method of ``benchmarks/medmnist.py``.

For each seed, in the same run: (1) ``medmonai train`` (:func:`medmonai.apps.auto.train_auto`) on the official
train + val images with the given wall-clock budget (selection by cross-validation inside them), the official test
split scored once at the end; (2) the best single method of the recorded ``benchmarks/results/medmnist_<name>.json``
(by mean test AUC), trained as ``benchmarks/medmnist.py`` trains it (same settings, model selection and threshold on
the official val split). One JSON per (data set, arm, seed) cell under ``benchmarks/results/auto/`` as each finishes
(a grid survives across sessions; finished cells are reused), then the table and ``--out``.

    python benchmarks/auto.py --npz ../shared/data/medmnist/breastmnist.npz --budget-min 30 --seeds 0,1,2
    python benchmarks/auto.py --npz ../shared/data/medmnist/pneumoniamnist.npz --budget-min 60 --seeds 0,1,2
    python benchmarks/auto.py --npz ... --report-only   # the table of the finished cells, nothing trained

Targets (issue 18; mean of 3 seeds, 2-core CPU): BreastMNIST AUC >= 0.94 and ACC >= 0.89 within 30 min per seed,
PneumoniaMNIST AUC >= 0.975 and ACC >= 0.92 within 60 min per seed.
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

from benchmarks.medmnist import build_datalist  # noqa: E402
from benchmarks.medmnist import run_bundle as run_single  # noqa: E402
from medmonai.apps.auto import train_auto  # noqa: E402
from medmonai.utils import atomic_write_json  # noqa: E402

__all__ = ["TARGETS", "best_single_method", "main"]

RESULTS = REPO / "benchmarks" / "results"
#: issue 18's targets: (test AUC, test ACC, minutes per seed)
TARGETS: dict[str, tuple[float, float, float]] = {
    "breastmnist": (0.94, 0.89, 30.0),
    "pneumoniamnist": (0.975, 0.92, 60.0),
}


def best_single_method(dataset: str) -> tuple[str, dict[str, Any]]:
    """The method with the best mean test AUC in the recorded ``medmnist_<dataset>.json``, and that run's settings."""
    path = RESULTS / f"medmnist_{dataset}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run benchmarks/medmnist.py first (it names the best single method)")
    rec = json.loads(path.read_text())
    rows = [r for r in rec["summary"] if r.get("fraction", 1.0) == 1.0 and r["method"] != "deep_features_logreg"]
    best = max(rows, key=lambda r: r["auc"]["mean"])
    return best["method"], rec["settings"]


def _value(m: Any) -> float | None:
    return None if m is None else float(m["value"] if isinstance(m, dict) else m)


def _cell_path(dataset: str, arm: str, seed: int) -> Path:
    return RESULTS / "auto" / f"{dataset}_{arm}_seed{seed}.json"


def run_auto_cell(datalist: Path, work: Path, dataset: str, seed: int, budget: float, n_folds: int) -> dict[str, Any]:
    out = work / f"auto_{dataset}_seed{seed}"
    t0 = time.perf_counter()
    # BreastMNIST has a training image identical to a test image (with another label): left out of training
    rep = train_auto(datalist, out, budget_min=budget, n_folds=n_folds, seed=seed, leakage="drop")
    return {
        "arm": "medmonai_train",
        "dataset": dataset,
        "seed": seed,
        "budget_min": budget,
        "wall_minutes": (time.perf_counter() - t0) / 60,
        "minutes_spent": rep["minutes"]["spent"],
        "selected": rep["selected"],
        "selection_reason": rep["selection_reason"],
        "rung0_fold0_oof_auc": rep["rung0_fold0_oof_auc"],
        "survivors": rep["survivors"],
        "oof_auc_per_candidate": rep["oof_auc"],
        "calibration": {k: rep["calibration"][k] for k in ("calibrate", "temperature", "reason")},
        "threshold": rep["threshold"],
        "oof": {k: rep["oof"].get(k) for k in ("auc", "accuracy")},
        "test": {k: (rep["test"] or {}).get(k) for k in ("auc", "accuracy", "sensitivity", "specificity")},
        "n_test": rep["n_test"],
        "auto_report": str(out / "auto_report.json"),
    }


def run_single_cell(datalist: Path, work: Path, dataset: str, method: str, settings: dict, seed: int) -> dict:
    size = settings["pretrained_size"] if method.startswith("lite0") else settings["size"]
    rec = run_single(
        method, datalist, work / f"single_{dataset}_{method}_seed{seed}", seed, size, settings["max_epochs"],
        settings["patience"], settings["learning_rate"], leakage=settings.get("leakage", "off"),
    )  # fmt: skip
    return {
        "arm": method,
        "dataset": dataset,
        "seed": seed,
        "wall_minutes": (rec["train_seconds"] + rec["eval_seconds"]) / 60,
        "settings": {k: settings[k] for k in ("max_epochs", "patience", "learning_rate", "size", "pretrained_size")},
        "test": {"auc": rec["auc"], "accuracy": rec["accuracy"]},
        "report": rec["report"],
    }


def summarise(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for arm in dict.fromkeys(c["arm"] for c in cells):
        mine = sorted((c for c in cells if c["arm"] == arm), key=lambda c: c["seed"])
        row: dict[str, Any] = {"arm": arm, "seeds": [c["seed"] for c in mine]}
        for m in ("auc", "accuracy"):
            vals = [_value(c["test"].get(m)) for c in mine]
            vals = [v for v in vals if v is not None]
            row[m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "per_seed": vals} if vals else None
        row["minutes"] = [round(c["wall_minutes"], 1) for c in mine]
        if arm == "medmonai_train":
            row["selected"] = [" + ".join(c["selected"]) for c in mine]
        rows.append(row)
    return rows


def print_table(dataset: str, rows: Sequence[dict[str, Any]]) -> None:
    def cell(v: dict[str, Any] | None) -> str:
        return "n/a" if not v else f"{v['mean']:.3f} ± {v['std']:.3f}"

    auc_t, acc_t, min_t = TARGETS.get(dataset, (None, None, None))
    print(f"\n{dataset}: test split scored once per seed")
    print("| arm | seeds | test AUC | test ACC | wall minutes per seed | selected |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        sel = "; ".join(r.get("selected", [])) or "–"
        mins = " / ".join(f"{m:.1f}" for m in r["minutes"])
        print(f"| {r['arm']} | {len(r['seeds'])} | {cell(r['auc'])} | {cell(r['accuracy'])} | {mins} | {sel} |")
    if auc_t is not None:
        print(f"| target | 3 | >= {auc_t} | >= {acc_t} | <= {min_t:g} | |")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--npz", required=True, help="MedMNIST .npz file")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget-min", type=float, default=None, help="budget per seed (default: the issue's target)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--arms", default="auto,single", help="auto (medmonai train), single (best single method)")
    p.add_argument("--work", default=None, help="work folder (default /tmp/medmonai_auto_bench)")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/auto_<name>.json)")
    p.add_argument("--report-only", action="store_true", help="table of the finished cells; nothing is trained")
    args = p.parse_args(argv)
    npz = Path(args.npz)
    dataset = npz.stem.lower().split("_")[0]
    budget = args.budget_min if args.budget_min is not None else TARGETS.get(dataset, (0, 0, 30.0))[2]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    work = Path(args.work or "/tmp/medmonai_auto_bench")
    method, settings = best_single_method(dataset)
    cells = []
    datalist = None
    for seed in seeds:
        for arm in arms:
            name = "medmonai_train" if arm == "auto" else method
            path = _cell_path(dataset, name, seed)
            if path.is_file():
                cells.append(json.loads(path.read_text()))
                continue
            if args.report_only:
                continue
            if not npz.is_file():
                raise FileNotFoundError(f"{npz}: MedMNIST file missing (see docs/data.md)")
            datalist = datalist or build_datalist(npz, work)
            print(f"== {dataset} seed {seed}: {name}", flush=True)
            if arm == "auto":
                cell = run_auto_cell(datalist, work, dataset, seed, budget, args.folds)
            else:
                cell = run_single_cell(datalist, work, dataset, method, settings, seed)
            atomic_write_json(path, cell)
            cells.append(cell)
    rows = summarise(cells)
    print_table(dataset, rows)
    result = {
        "benchmark": "auto",
        "dataset": dataset,
        "npz": str(npz),
        "budget_min": budget,
        "folds": args.folds,
        "best_single_method": method,
        "targets": dict(zip(("auc", "accuracy", "minutes"), TARGETS.get(dataset, ()), strict=False)),
        "summary": rows,
        "cells": [str(_cell_path(dataset, c["arm"], c["seed"]).relative_to(REPO)) for c in cells],
        "machine": "2-core CPU" if not __import__("torch").cuda.is_available() else "GPU",
    }
    out = Path(args.out) if args.out else RESULTS / f"auto_{dataset}.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
