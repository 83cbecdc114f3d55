"""Are the plain bundle defaults as good as hand settings? ``classification_2d`` on the default phantoms, per seed.

Each arm trains ``bundles/classification`` in 2D (train.yaml, then evaluate.yaml once on the phantoms' held-out test
subjects) with MONAI's bundle runner; the arms differ only in the overrides they pass:

- ``defaults``: nothing (what the plan and the bundle choose by themselves);
- ``native80``: the input size the plan chose before its 2D classification budget, 80 x 80 at the median spacing
  (the whole field of view);
- ``crop48``: the hand settings the README demo used before (``spatial_size [48, 48]``: a centre crop of the
  field of view, ``max_epochs 40``, ``patience 8``);
- ``resize32`` / ``resize48`` / ``resize64``: the whole field of view resized to that size (``size_mode resize``).

Settings are compared by their **validation** AUC (``validation_auc`` of the report: the validation part of the
training split, which early stopping and the threshold also use); the test AUC is reported beside it, never used to
choose.

One JSON per (arm, seed) under ``benchmarks/results/bundle_defaults/`` as it finishes (a finished cell is skipped on
re-run), then a table of test AUC / accuracy / sensitivity / specificity (mean ± std over seeds) and the summary JSON.

    python benchmarks/bundle_defaults.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from medmonai.bundles import bundles_dir, run_bundle
from medmonai.utils import atomic_write_json

ARMS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "native80": {"spatial_size": [80, 80]},
    "crop48": {"spatial_size": [48, 48], "max_epochs": 40, "patience": 8},
    "resize32": {"spatial_size": [32, 32], "size_mode": "resize"},
    "resize48": {"spatial_size": [48, 48], "size_mode": "resize"},
    "resize64": {"spatial_size": [64, 64], "size_mode": "resize"},
}
METRICS = ("auc", "accuracy", "sensitivity", "specificity", "balanced_accuracy")


def run_cell(arm: str, seed: int, work: Path) -> dict[str, Any]:
    """Train + evaluate one arm with one seed (phantoms and model seeded alike); return the result record."""
    cfg = bundles_dir() / "classification" / "configs"
    overrides = dict(ARMS[arm])
    common = {"meta_file": str(cfg / "metadata.json"), "bundle_root": str(work), "seed": seed}
    phantom = {"n_subjects": 80, "images_per_subject": [1, 3], "test_fraction": 0.25, "seed": seed}
    t0 = time.time()
    train_only = {k: v for k, v in overrides.items() if k in ("max_epochs", "patience")}
    shared = {k: v for k, v in overrides.items() if k not in train_only}
    run_bundle([str(cfg / "train.yaml")], **common, phantom=phantom, **shared, **train_only)
    run_bundle([str(cfg / "train.yaml"), str(cfg / "evaluate.yaml")], **common, phantom=phantom, **shared)
    report = json.loads((work / "runs" / "eval" / "report.json").read_text(encoding="utf-8"))
    plan = json.loads((work / "runs" / "fingerprint.json").read_text(encoding="utf-8"))["plan"]
    return {
        "benchmark": "bundle_defaults",
        "bundle": "classification",
        "spatial_dims": 2,
        "arm": arm,
        "seed": seed,
        "overrides": overrides,
        "planned_spatial_size": plan.get("spatial_size"),
        "n_test": report.get("n"),
        "n_validation": report.get("extra", {}).get("n_validation"),
        "validation_auc": report.get("extra", {}).get("validation_auc"),
        "metrics": {m: report["metrics"][m] for m in METRICS if m in report["metrics"]},
        "seconds": round(time.time() - t0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--results", default="benchmarks/results/bundle_defaults")
    args = p.parse_args()
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    rows = []
    for arm in args.arms.split(","):
        cells = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            path = results / f"phantom2d_{arm}_seed{seed}.json"
            if path.is_file():
                cell = json.loads(path.read_text(encoding="utf-8"))
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    cell = run_cell(arm, seed, Path(tmp))
                atomic_write_json(path, cell)
            print(
                f"{arm} seed {seed}: validation AUC {cell.get('validation_auc') or float('nan'):.3f}, "
                f"test AUC {cell['metrics']['auc']['value']:.3f} ({cell['seconds']:.0f} s)"
            )
            cells.append(cell)
        row: dict[str, Any] = {"arm": arm, "seeds": [c["seed"] for c in cells], "overrides": ARMS[arm]}
        for m in METRICS:
            vals = [c["metrics"][m]["value"] for c in cells if c["metrics"].get(m, {}).get("value") is not None]
            row[m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "per_seed": vals}
        val = [c["validation_auc"] for c in cells if c.get("validation_auc") is not None]
        row["validation_auc"] = {
            "mean": float(np.mean(val)) if val else None,
            "std": float(np.std(val)) if val else None,
        }
        row["planned_spatial_size"] = cells[0].get("planned_spatial_size")
        row["seconds"] = float(np.mean([c["seconds"] for c in cells]))
        rows.append(row)
    print("\n| arm | input | validation AUC | test AUC | accuracy | sensitivity | specificity | s/seed |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        v = r["validation_auc"]
        val_txt = "n/a" if v["mean"] is None else f"{v['mean']:.3f} ± {v['std']:.3f}"
        cells_txt = [f"{r[m]['mean']:.3f} ± {r[m]['std']:.3f}" for m in METRICS[:4]]
        size = "x".join(str(s) for s in r["overrides"].get("spatial_size") or r["planned_spatial_size"] or [])
        print(f"| {r['arm']} | {size} | {val_txt} | {' | '.join(cells_txt)} | {r['seconds']:.0f} |")
    atomic_write_json(results.parent / "bundle_defaults.json", {"benchmark": "bundle_defaults", "rows": rows})
    print(f"\nwrote {results.parent / 'bundle_defaults.json'}")


if __name__ == "__main__":
    main()
