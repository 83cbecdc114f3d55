"""MSD Hippocampus benchmark: the 3D segmentation bundle on a fixed 80/20 subject split, Dice per class.

The script

1. builds a medmonai datalist from the Medical Segmentation Decathlon folder (``dataset.json``, ``imagesTr``,
   ``labelsTr``; classes background / Anterior / Posterior), one subject per case;
2. makes a fixed, seeded 80/20 subject split and saves it as ``splits.json`` (``--splits``, default
   ``benchmarks/results/hippocampus_splits.json``; reused when it exists, so every run trains and tests on the same
   cases), with an optional ``--cv-folds K`` subject k-fold assignment of the training part stored beside it;
3. trains ``bundles/segmentation`` (3D) through ``monai.bundle.run`` (``train.yaml``: fingerprint plan, patch training,
   sliding-window validation on a subject hold-out of the training part, early stopping, best weights restored),
   timing the wall clock (``--threads`` torch threads, 2 by default as on the reference 2-core CPU). Every training
   setting is the bundle's planned default except the time budget (``--time-budget-min``, default 60); a setting
   given on the command line (``--base-filters``, ``--batch-size``, ...) is an ablation and is recorded;
4. evaluates the test cases once in their original geometry (``train.yaml`` + ``evaluate.yaml``) and prints Dice per
   class mean ± std (and HD95) with the training minutes; writes everything to ``--out`` (JSON, atomically).

    PYTHONPATH=. python benchmarks/hippocampus.py --quick            # smoke test: 10 + 4 cases, 1 epoch
    PYTHONPATH=. python benchmarks/hippocampus.py                    # the bundle's defaults, a 60-minute budget
    PYTHONPATH=. python benchmarks/hippocampus.py --base-filters 32  # an ablation
    # the same run by hand (after the script wrote the datalist into --work):
    python -m monai.bundle run --config_file bundles/segmentation/configs/train.yaml \\
        --bundle_root /tmp/medmonai_hippocampus --datalist /tmp/medmonai_hippocampus/datalist.json --time_budget_min 60

Target (nnU-Net level, issue 6): mean Dice >= 0.89 for anterior and posterior within 60 minutes of 2-core CPU
training.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing the package
    sys.path.insert(0, str(REPO))

from medmonai.data.builders import datalist_from_msd  # noqa: E402
from medmonai.data.datalist import write_datalist  # noqa: E402
from medmonai.utils import atomic_write_json, read_json, shared_data_dir  # noqa: E402

__all__ = ["TARGET_DICE", "subject_split", "ensure_split", "build_datalist", "main"]

BUNDLE = REPO / "bundles" / "segmentation"  # in 3D, its default
CONFIGS = BUNDLE / "configs"
TARGET_DICE = 0.89
TARGET_MINUTES = 60.0


def subject_split(subjects: Sequence[str], test_fraction: float = 0.2, seed: int = 0) -> dict[str, list[str]]:
    """A seeded subject split: ``round(test_fraction * n)`` subjects for ``test``, the rest for ``training``.

    Both lists are sorted; the result depends only on the set of subjects, the fraction and the seed.
    """
    subs = sorted(set(subjects))
    if len(subs) < 2:
        raise ValueError(f"need at least 2 subjects, got {len(subs)}")
    n_test = max(1, int(round(test_fraction * len(subs))))
    order = np.random.default_rng(seed).permutation(len(subs))
    test = sorted(subs[i] for i in order[:n_test])
    train = sorted(subs[i] for i in order[n_test:])
    return {"training": train, "test": test}


def _kfold(subjects: Sequence[str], k: int, seed: int) -> list[list[str]]:
    order = np.random.default_rng(seed + 1).permutation(len(subjects))
    return [sorted(subjects[i] for i in order[f::k]) for f in range(k)]


def ensure_split(
    path: Path, subjects: Sequence[str], test_fraction: float, seed: int, cv_folds: int = 0
) -> dict[str, Any]:
    """The fixed split of ``path`` (created on first use); refused when it names subjects that are not in the data."""
    if path.is_file():
        split = read_json(path, "splits file")
        unknown = sorted((set(split["training"]) | set(split["test"])) - set(subjects))
        if unknown:
            raise ValueError(f"{path}: {len(unknown)} subject(s) not in the data, e.g. {unknown[:3]}")
        if cv_folds and len(split.get("folds", [])) != cv_folds:
            split["folds"] = _kfold(split["training"], cv_folds, int(split["seed"]))
            atomic_write_json(path, split)
        return split
    split = {"seed": seed, "test_fraction": test_fraction, **subject_split(subjects, test_fraction, seed)}
    if cv_folds:
        split["folds"] = _kfold(split["training"], cv_folds, seed)  # validation subjects of fold f
    atomic_write_json(path, split)
    return split


def build_datalist(
    data: Path, split: dict[str, Any], work: Path, limit: tuple[int, int] | None = None
) -> tuple[Path, dict[str, int]]:
    """Write ``work/datalist.json`` with the split's ``training`` and ``test`` cases (``limit``: first n of each)."""
    dl = datalist_from_msd(data)
    by_subject = {e["subject"]: e for e in dl["training"]}
    train = [by_subject[s] for s in split["training"]]
    test = [by_subject[s] for s in split["test"]]
    if limit:
        train, test = train[: limit[0]], test[: limit[1]]
    out = {k: v for k, v in dl.items() if k not in ("training", "test", "validation")}
    out.update({"training": train, "test": test})
    path = write_datalist(work / "datalist.json", out)
    return path, {"training": len(train), "test": len(test)}


def _run(configs: Sequence[str], **overrides: Any) -> None:
    from monai.bundle import run

    run(
        config_file=[str(CONFIGS / f"{c}.yaml") for c in configs],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        **overrides,
    )


def _cell(s: dict[str, Any], nd: int = 4) -> str:
    return "-" if not s or s.get("mean") is None else f"{s['mean']:.{nd}f} ± {s['std']:.{nd}f}"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the result dict (also written to ``--out``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="MSD Task04 folder (default ../shared/data/msd_hippocampus)")
    p.add_argument("--splits", default=str(REPO / "benchmarks" / "results" / "hippocampus_splits.json"))
    p.add_argument("--seed", type=int, default=0, help="split seed (only used when the splits file is created)")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--cv-folds", type=int, default=0, help="also store a K-fold assignment of the training part")
    p.add_argument("--work", default="/tmp/medmonai_hippocampus", help="bundle_root: datalist, runs, checkpoints")
    p.add_argument(
        "--out", default=None, help="JSON output (default benchmarks/results/hippocampus.json; --quick: in --work)"
    )
    # training settings: None = the bundle's planned default (the comparison benchmarks run the defaults; a value
    # given here is an ablation and is recorded in the result's "settings")
    p.add_argument("--network", default=None, choices=("dynunet", "unet", "segresnet"))
    p.add_argument("--base-filters", type=int, default=None)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--val-interval", type=int, default=None)
    p.add_argument("--patience", type=int, default=None, help="validations without improvement before stopping")
    p.add_argument("--time-budget-min", type=float, default=60.0, help="stop training after this many minutes")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=None, help="patches per image and epoch")
    p.add_argument("--tta", action="store_true", help="mirror test-time augmentation along all axes")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target is 2-core CPU time)")
    p.add_argument("--quick", action="store_true", help="smoke test: --n-train/--n-test cases (10/4), 1 epoch")
    p.add_argument("--n-train", type=int, default=10, help="training cases of --quick")
    p.add_argument("--n-test", type=int, default=4, help="test cases of --quick")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    data = Path(args.data) if args.data else shared_data_dir() / "msd_hippocampus"
    if not (data / "dataset.json").is_file():
        raise SystemExit(f"{data}: no MSD dataset.json (give --data or set MEDMONAI_SHARED_DATA)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    subjects = [e["subject"] for e in datalist_from_msd(data)["training"]]
    split = ensure_split(Path(args.splits), subjects, args.test_fraction, args.seed, args.cv_folds)
    datalist, counts = build_datalist(data, split, work, (args.n_train, args.n_test) if args.quick else None)
    given = {
        "network_name": args.network,
        "base_filters": args.base_filters,
        "max_epochs": args.max_epochs,
        "val_interval": args.val_interval,
        "patience": args.patience,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "num_samples": args.num_samples,
    }
    settings: dict[str, Any] = {
        "bundle_root": str(work),
        "datalist": str(datalist),
        **{k: v for k, v in given.items() if v is not None},
        "time_budget_min": None if args.quick else args.time_budget_min,
        "resume": False,
    }
    if args.quick:
        settings.update(max_epochs=1, val_interval=1, sw_batch_size=2)
    t0 = time.perf_counter()
    _run(["train"], **settings)
    train_min = (time.perf_counter() - t0) / 60.0
    eval_settings = {k: v for k, v in settings.items() if k != "resume"}
    tta = [0, 1, 2] if args.tta else []
    t1 = time.perf_counter()
    _run(["train", "evaluate"], **eval_settings, tta_flip_axes=tta)
    eval_min = (time.perf_counter() - t1) / 60.0
    report = read_json(work / "runs" / "eval" / "report.json", "evaluation report")
    network = settings.get("network_name", "the bundle's default network")
    fp = read_json(work / "runs" / "fingerprint.json", "fingerprint")
    dice = report["summary"]["dice"]
    classes = report["classes"][1:]
    met = all((dice[c]["mean"] or 0) >= TARGET_DICE for c in classes) and train_min <= TARGET_MINUTES
    cmd = "PYTHONPATH=. python benchmarks/hippocampus.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "benchmark": "MSD Task04 Hippocampus, bundles/segmentation (3D)",
        "command": cmd.strip(),
        "quick": bool(args.quick),
        "splits_file": str(Path(args.splits)),
        "split_seed": split["seed"],
        "n_cases": counts,
        "settings": settings,
        "tta_flip_axes": tta,
        "plan": {k: fp["plan"].get(k) for k in ("target_spacing", "spatial_size", "normalization", "orientation")},
        "training_minutes": round(train_min, 2),
        "evaluation_minutes": round(eval_min, 2),
        "dice": {c: dice[c] for c in [*classes, "mean"]},
        "hd95_mm": {c: report["summary"]["hd95"][c] for c in [*classes, "mean"]},
        "target": {"dice_per_class": TARGET_DICE, "training_minutes": TARGET_MINUTES, "met": bool(met)},
        "machine": {
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        },
    }
    default_out = (
        work / "hippocampus_quick.json" if args.quick else REPO / "benchmarks" / "results" / "hippocampus.json"
    )
    out = Path(args.out) if args.out else default_out
    atomic_write_json(out, result)
    print(f"\nMSD Hippocampus ({counts['training']} training / {counts['test']} test cases), {network}")
    print(f"{'class':<12} {'Dice mean ± std':>18} {'HD95 mm':>16}")
    for c in [*classes, "mean"]:
        print(f"{c:<12} {_cell(dice[c]):>18} {_cell(report['summary']['hd95'][c], 2):>16}")
    print(f"training {train_min:.1f} min ({torch.get_num_threads()} threads), evaluation {eval_min:.1f} min")
    print(f"target (Dice >= {TARGET_DICE} per class within {TARGET_MINUTES:.0f} min): {'met' if met else 'not met'}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
