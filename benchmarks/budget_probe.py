"""The budget-aware width plan on this machine: the probe's step times and the width chosen per budget.

Times the segmentation bundle's candidate widths (``medmonai.engines.budget_plan``) for the MSD Hippocampus plan
(patch 40×56×40, 1 mm, 3 classes, batch 4 images × 2 patches, the bundle's precision ``auto``), every width (the
bundle's own plan stops at the first width that falls short), and prints which width the rule takes at each budget:

    python benchmarks/budget_probe.py                       # budgets 15, 30, 60, 90 minutes
    python benchmarks/budget_probe.py --budgets 5,15 --threads 2

Writes ``benchmarks/results/budget_probe.json``. Step times drift with the machine's load; run it on a quiet CPU.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medmonai.utils import atomic_write_json  # noqa: E402

PLAN = {"patch_size": [40, 56, 40], "spacing": [1.0, 1.0, 1.0], "in_channels": 1, "out_channels": 3, "batch_size": 8}


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", default="15,30,60,90", help="minutes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--probe-steps", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "budget_probe.json"))
    args = p.parse_args(argv)

    import torch

    from medmonai.engines.budget_plan import MIN_ITERATIONS, WIDTH_FACTORS, plan_width, probe_step_seconds
    from medmonai.networks.segmentation import build_segmentation_network

    torch.set_num_threads(args.threads)
    widths = sorted({round(16 * f) for f in WIDTH_FACTORS})
    seconds = {}
    for w in widths:
        net = build_segmentation_network(
            "dynunet", 3, PLAN["in_channels"], PLAN["out_channels"], PLAN["patch_size"], PLAN["spacing"], base_filters=w
        )
        seconds[w] = probe_step_seconds(
            net, PLAN["batch_size"], PLAN["in_channels"], PLAN["out_channels"], PLAN["patch_size"],
            probe_steps=args.probe_steps,
        )  # fmt: skip
        print(f"{w:>3} filters: {seconds[w]:.3f} s / step")
    rows = []
    print(f"\n| budget min | chosen base_filters | steps it buys (min_iterations {MIN_ITERATIONS}) |\n|---|---|---|")
    for b in [float(x) for x in args.budgets.split(",")]:
        d = plan_width(b, widths, seconds.__getitem__)
        rows.append({"budget_min": b, "base_filters": d["base_filters"], "iterations": d["iterations"]})
        print(f"| {b:g} | {d['base_filters']} | {d['iterations'][str(d['base_filters'])]} |")
    out = {
        "command": "python benchmarks/budget_probe.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "plan": PLAN,
        "threads": args.threads,
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "step_seconds": {str(w): round(s, 4) for w, s in seconds.items()},
        "min_iterations": MIN_ITERATIONS,
        "rows": rows,
    }
    atomic_write_json(args.out, out)
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
