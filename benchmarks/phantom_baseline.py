"""How hard is the embedded phantom task? Runs the demo pipeline for 2D and 3D over several seeds.

For each (dims, seed): generate the default phantom data set, scan its DICOM folder into a datalist, fingerprint and
plan, preprocess, then a subject-grouped 5-fold CV of a logistic-regression baseline on down-sampled images.
Prints a table (mean ± std across seeds of the per-seed CV means) and writes JSON.

    python benchmarks/phantom_baseline.py --out benchmarks/results/phantom_baseline.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from medmonai.apps.demo import run_demo
from medmonai.utils import atomic_write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", default="2,3")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default="benchmarks/results/phantom_baseline.json")
    args = p.parse_args()
    rows = []
    for dims in [int(d) for d in args.dims.split(",")]:
        per_seed = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                s = run_demo(Path(tmp) / "run", spatial_dims=dims, seed=seed)
            per_seed.append(s)
        row = {"dims": dims, "n_series": [s["n_series"] for s in per_seed], "seconds": [s["seconds"] for s in per_seed]}
        for m in ("accuracy", "balanced_accuracy", "auc"):
            vals = [s["baseline"][m]["mean"] for s in per_seed if m in s["baseline"]]
            row[m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "per_seed": vals}
        rows.append(row)
    print("\n| dims | series/seed | accuracy | balanced acc. | AUC | seconds/seed |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[m]['mean']:.3f} ± {r[m]['std']:.3f}" for m in ("accuracy", "balanced_accuracy", "auc")]
        print(f"| {r['dims']}D | {r['n_series'][0]} | {' | '.join(cells)} | {np.mean(r['seconds']):.0f} |")
    atomic_write_json(args.out, {"benchmark": "phantom_baseline", "rows": rows})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
