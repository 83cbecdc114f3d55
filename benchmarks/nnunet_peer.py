"""MSD Hippocampus: medmonai's segmentation bundle side by side with nnU-Net v2, same split, budget and scoring.

For every budget (CPU-minutes of training, ``--budgets 15,30,60``) and system, one JSON cell under
``benchmarks/results/nnunet_peer/`` as each finishes (finished cells are reused, so the grid survives across
sessions), then one table and ``benchmarks/results/nnunet_peer.json``:

- **data**: the fixed 80/20 subject split of ``benchmarks/results/hippocampus_splits.json`` (208 training / 52 test
  cases, the split of ``benchmarks/hippocampus.py``); the test cases are predicted once per cell;
- **medmonai**: ``bundles/segmentation`` (3D) with its planned defaults and only ``--time_budget_min`` set
  (``train.yaml``, then ``evaluate.yaml`` with ``save_predictions`` for the test masks);
- **nnU-Net v2** (``nnunetv2``, a benchmark-only extra in its own venv, see ``benchmarks/requirements-peer.txt``;
  never a medmonai dependency): the same training cases in nnU-Net's raw format, its own fingerprint → plan →
  preprocess (``nnUNetv2_plan_and_preprocess -c 3d_fullres``), ``nnUNetv2_train ... 3d_fullres all -device cpu`` with
  ``benchmarks/peer/nnUNetTrainerBudget.py`` (nnU-Net's trainer, epochs shortened and the poly schedule stretched
  to the budget), then ``nnUNetv2_predict`` (its default mirroring) of the test images from ``checkpoint_final``;
- **scoring**: both systems' test masks (NIfTI, original geometry) go through one function,
  :func:`medmonai.engines.segmentation_inference.evaluate_mask_files` (Dice and HD95 in mm per class, MONAI
  metrics), against the MSD reference masks.

Training time is the wall clock of each system's training loop (planning and preprocessing are timed separately);
both use the machine's 2 cores (torch threads 2; nnU-Net also runs its augmentation workers, ``nnUNet_n_proc_DA``,
default min(12, cores)).

    make peer                                   # .venv-peer: nnunetv2 beside torch==2.13.0 (once)
    python benchmarks/nnunet_peer.py --budgets 15,30,60
    python benchmarks/nnunet_peer.py --quick    # smoke test: 12 training / 4 test cases, 2-minute budget
    python benchmarks/nnunet_peer.py --report-only
    python benchmarks/nnunet_peer.py --budgets 15 --systems medmonai --override precision=fp32   # an ablation

Targets (issue 19; 2-core CPU): at 60 minutes mean test Dice >= nnU-Net's + 0.02 and >= 0.88 per class; at 15 and
30 minutes not below nnU-Net's.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing the package
    sys.path.insert(0, str(REPO))

from benchmarks.hippocampus import build_datalist, ensure_split  # noqa: E402
from medmonai.data.builders import datalist_from_msd  # noqa: E402
from medmonai.utils import atomic_write_json, read_json, shared_data_dir  # noqa: E402

__all__ = ["SYSTEMS", "nnunet_raw_dataset", "main"]

RESULTS = REPO / "benchmarks" / "results"
BUNDLE_CONFIGS = REPO / "bundles" / "segmentation" / "configs"
TRAINER_FILE = REPO / "benchmarks" / "peer" / "nnUNetTrainerBudget.py"
SYSTEMS = ("medmonai", "nnunet")
DATASET_ID = 4
DATASET_NAME = "Dataset004_Hippocampus"
TARGET_MARGIN = 0.02
TARGET_DICE = 0.88


def _cell_path(system: str, budget: float, cells_dir: Path) -> Path:
    return cells_dir / f"{system}_{budget:g}min.json"


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(Path(src).resolve())


def nnunet_raw_dataset(datalist: Path, raw: Path) -> dict[str, Any]:
    """nnU-Net's raw layout of a medmonai datalist: ``imagesTr``/``labelsTr`` (training), ``imagesTs`` (test).

    Files are symbolic links to the datalist's NIfTI files (nnU-Net's names: ``<case>_0000.nii.gz`` for the single
    channel, ``<case>.nii.gz`` for the label); ``dataset.json`` names the channel and the labels of the datalist.

    Returns:
        ``{"folder", "training": [case ids], "test": [{"case_id", "image", "ref"}]}``.
    """
    dl = read_json(datalist, "datalist")
    folder = raw / DATASET_NAME
    if folder.exists():
        shutil.rmtree(folder)
    train_ids = []
    for e in dl["training"]:
        case = e["subject"]
        _link(Path(e["image"]), folder / "imagesTr" / f"{case}_0000.nii.gz")
        _link(Path(e["mask"]), folder / "labelsTr" / f"{case}.nii.gz")
        train_ids.append(case)
    test = []
    for e in dl["test"]:
        case = e["subject"]
        _link(Path(e["image"]), folder / "imagesTs" / f"{case}_0000.nii.gz")
        test.append({"case_id": case, "image": e["image"], "ref": e["mask"]})
    labels = {str(name): int(v) for v, name in dl["mask_labels"].items()}
    modality = dl.get("modality", {"0": "MRI"})
    atomic_write_json(
        folder / "dataset.json",
        {
            "channel_names": {str(k): str(v) for k, v in modality.items()},
            "labels": labels,
            "numTraining": len(train_ids),
            "file_ending": ".nii.gz",
            "name": dl.get("name", "Hippocampus"),
        },
    )
    return {"folder": str(folder), "training": train_ids, "test": test}


def _class_names(datalist: Path) -> list[str]:
    labels = read_json(datalist, "datalist")["mask_labels"]
    return [labels[str(i)] for i in range(len(labels))]


def _score(cases: Sequence[dict[str, Any]], class_names: Sequence[str], out: Path, extra: dict) -> dict[str, Any]:
    from medmonai.engines.segmentation_inference import evaluate_mask_files

    report = evaluate_mask_files(cases, class_names, out, extra=extra)
    fg = list(class_names[1:])
    return {
        "dice": {c: report["summary"]["dice"][c] for c in [*fg, "mean"]},
        "hd95_mm": {c: report["summary"]["hd95"][c] for c in [*fg, "mean"]},
        "n_test": report["n_cases"],
        "report": str(out / "report.json"),
    }


# --------------------------------------------------------------------------------------------------------- medmonai
def _bundle_network_settings(runs: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The network and batch (3D) that a cell's run trained: the bundle's defaults with the cell's overrides, and the
    width of its network plan (``runs/network_plan.json``, written by the bundle with the reasons of the choice)."""
    from monai.bundle import ConfigParser

    from medmonai.bundles import dims_default

    cfg = ConfigParser.load_config_file(str(BUNDLE_CONFIGS / "train.yaml"))
    net_plan = runs / "network_plan.json"
    planned = read_json(net_plan, "network plan") if net_plan.is_file() else {}
    return {
        "network": settings.get("network_name", cfg["network_name"]),
        "base_filters": planned.get("base_filters", settings.get("base_filters", cfg["base_filters"])),
        "batch_size": settings.get("batch_size", dims_default("segmentation", 3, "batch_size")),
        "patches_per_image": settings.get("num_samples", cfg["num_samples"]),
        "network_plan": planned or None,
    }


def _system_label(overrides: dict[str, Any]) -> str:
    """``medmonai``, or ``medmonai+key=value...`` for an ablation run with bundle overrides."""
    return "medmonai" + "".join(f"+{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items())


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--override KEY=VALUE`` items as bundle settings (the parser of ``medmonai``'s own ``--set``)."""
    from medmonai.cli.main import _key_values

    try:
        return _key_values(list(items), "--override")
    except ValueError as e:
        raise SystemExit(str(e)) from None


def run_medmonai(
    datalist: Path,
    work: Path,
    budget: float,
    class_names: Sequence[str],
    quick: bool,
    overrides: dict[str, Any] | None = None,
) -> dict:
    """Train ``bundles/segmentation`` with its defaults and the budget, predict the test cases, score their masks.

    ``overrides``: bundle settings changed for an ablation (the cell is named by :func:`_system_label`).
    """
    import torch
    from monai.bundle import run

    overrides = dict(overrides or {})
    label = _system_label(overrides)
    root = work / f"{label}_{budget:g}min"
    settings: dict[str, Any] = {"bundle_root": str(root), "datalist": str(datalist), "time_budget_min": budget}
    settings.update(overrides)
    if quick:
        settings.update(max_epochs=2, val_interval=1)

    def bundle(configs: Sequence[str], **kw: Any) -> None:
        run(
            config_file=[str(BUNDLE_CONFIGS / f"{c}.yaml") for c in configs],
            meta_file=str(BUNDLE_CONFIGS / "metadata.json"),
            logging_file=str(BUNDLE_CONFIGS / "logging.conf"),
            **settings,
            **kw,
        )

    # a cell starts over: its width is planned again (the bundle would keep a network plan found in the folder)
    (root / "runs" / "network_plan.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    bundle(["train"], resume=False)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    bundle(["train", "evaluate"], save_predictions=True)
    predict_s = time.perf_counter() - t1
    ckpts = sorted(glob.glob(str(root / "runs" / "checkpoints" / "checkpoint_epoch=*.pt")), key=os.path.getmtime)
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)["trainer"] if ckpts else {}
    fp = read_json(root / "runs" / "fingerprint.json", "fingerprint")
    dl = read_json(datalist, "datalist")
    pred_dir = root / "runs" / "eval" / "predictions"
    cases = [
        {"case_id": e["subject"], "pred": str(pred_dir / f"{e['subject']}_seg.nii.gz"), "ref": e["mask"]}
        for e in dl["test"]
    ]
    scored = _score(cases, class_names, work / f"score_{label}_{budget:g}min", {"system": label})
    iterations = int(state.get("iteration", 0))
    plan = fp["plan"]
    return {
        "system": label,
        "budget_min": budget,
        "wall_minutes_training": train_s / 60.0,
        "minutes_predicting_test": predict_s / 60.0,
        "iterations": iterations,
        "epochs": iterations // int(state["epoch_length"]) if state.get("epoch_length") else None,
        "seconds_per_iteration": train_s / iterations if iterations else None,
        "plan": {k: plan.get(k) for k in ("target_spacing", "spatial_size", "normalization", "orientation")}
        | _bundle_network_settings(root / "runs", settings),
        "iterations_note": "iterations of the completed epochs (the last checkpoint); a budget stop mid-epoch adds a "
        "few that are not counted, so seconds_per_iteration is an upper bound (benchmarks/throughput.py times steps)",
        "settings": {k: v for k, v in settings.items() if k not in ("bundle_root", "datalist")},
        **scored,
    }


# ----------------------------------------------------------------------------------------------------------- nnU-Net
def _peer_env(work: Path, results: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        nnUNet_raw=str(work / "nnUNet_raw"),
        nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
        nnUNet_results=str(results),
        OMP_NUM_THREADS=str(os.cpu_count() or 1),
    )
    return env


def _peer_cmd(peer_bin: Path, tool: str, *args: str, env: dict[str, str], log: Path) -> float:
    exe = peer_bin / tool
    if not exe.is_file():
        raise SystemExit(f"{exe}: nnU-Net v2 is not installed there (run `make peer`, or give --peer-bin)")
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {tool} {' '.join(args)}\n")
        f.flush()
        proc = subprocess.run([str(exe), *args], env=env, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def install_trainer(peer_bin: Path) -> Path:
    """Copy the budget trainer into the peer venv's nnunetv2 package (where nnU-Net looks for trainer classes)."""
    py = peer_bin / "python"
    out = subprocess.run(
        [str(py), "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{py}: cannot import nnunetv2 ({out.stderr.strip()[-300:]}); run `make peer`")
    # top level of nnU-Net's trainer folder: its class search imports those modules before any subpackage (some of
    # which, e.g. the Primus trainers, need timm, which the peer venv leaves out)
    dst = Path(out.stdout.strip()) / "training" / "nnUNetTrainer" / TRAINER_FILE.name
    shutil.copyfile(TRAINER_FILE, dst)
    return dst


def nnunet_plan(work: Path, peer_bin: Path, datalist: Path) -> dict[str, Any]:
    """Raw dataset + nnU-Net's fingerprint, plan and 3d_fullres preprocessing (once per work folder)."""
    marker = work / "nnunet_preprocessed.json"
    if marker.is_file():
        return read_json(marker, "nnU-Net preprocessing record")
    raw = nnunet_raw_dataset(datalist, work / "nnUNet_raw")
    env = _peer_env(work, work / "nnUNet_results_unused")
    seconds = _peer_cmd(
        peer_bin, "nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "2",
        "--verify_dataset_integrity", env=env, log=work / "nnunet_logs" / "plan_and_preprocess.log",
    )  # fmt: skip
    plans = read_json(work / "nnUNet_preprocessed" / DATASET_NAME / "nnUNetPlans.json", "nnU-Net plans")
    cfg = plans["configurations"]["3d_fullres"]
    arch = cfg.get("architecture", {}).get("arch_kwargs", {})
    rec = {
        "raw": raw,
        "plan_and_preprocess_minutes": seconds / 60.0,
        "plan": {
            "spacing": cfg.get("spacing"),
            "patch_size": cfg.get("patch_size"),
            "batch_size": cfg.get("batch_size"),
            "median_image_size_in_voxels": cfg.get("median_image_size_in_voxels"),
            "normalization_schemes": cfg.get("normalization_schemes"),
            "network": cfg.get("architecture", {}).get("network_class_name"),
            "features_per_stage": arch.get("features_per_stage"),
            "n_stages": arch.get("n_stages"),
            "strides": arch.get("strides"),
        },
    }
    atomic_write_json(marker, rec)
    return rec


def run_nnunet(
    datalist: Path, work: Path, budget: float, class_names: Sequence[str], peer_bin: Path, quick: bool
) -> dict[str, Any]:
    """nnU-Net v2 3d_fullres, fold ``all``, trained for the budget on CPU; test cases predicted and scored."""
    install_trainer(peer_bin)
    prep = nnunet_plan(work, peer_bin, datalist)
    results = work / f"nnUNet_results_{budget:g}min"
    if results.exists():
        shutil.rmtree(results)  # a cell starts over: nnU-Net would otherwise resume (or refuse) an older run
    env = _peer_env(work, results)
    env["MEDMONAI_PEER_BUDGET_MIN"] = str(budget)
    if quick:
        env.update(MEDMONAI_PEER_ITERS_PER_EPOCH="2", MEDMONAI_PEER_VAL_ITERS_PER_EPOCH="1")
    logs = work / "nnunet_logs"
    train_s = _peer_cmd(
        peer_bin, "nnUNetv2_train", str(DATASET_ID), "3d_fullres", "all", "-tr", "nnUNetTrainerBudget",
        "-device", "cpu", env=env, log=logs / f"train_{budget:g}min.log",
    )  # fmt: skip
    out_folder = results / DATASET_NAME / "nnUNetTrainerBudget__nnUNetPlans__3d_fullres" / "fold_all"
    stats = read_json(out_folder / "budget_stats.json", "nnU-Net budget trainer record")
    pred_dir = work / f"nnunet_pred_{budget:g}min"
    if pred_dir.exists():
        shutil.rmtree(pred_dir)
    predict_s = _peer_cmd(
        peer_bin, "nnUNetv2_predict", "-i", str(Path(prep["raw"]["folder"]) / "imagesTs"), "-o", str(pred_dir),
        "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "all", "-tr", "nnUNetTrainerBudget",
        "-chk", "checkpoint_final.pth", "-device", "cpu", "-npp", "1", "-nps", "1",
        env=env, log=logs / f"predict_{budget:g}min.log",
    )  # fmt: skip
    cases = [{"case_id": c["case_id"], "pred": str(pred_dir / f"{c['case_id']}.nii.gz"), "ref": c["ref"]}
             for c in prep["raw"]["test"]]  # fmt: skip
    scored = _score(cases, class_names, work / f"score_nnunet_{budget:g}min", {"system": "nnunet"})
    return {
        "system": "nnunet",
        "budget_min": budget,
        "wall_minutes_training": stats["training_seconds"] / 60.0,
        "wall_minutes_nnunetv2_train_command": train_s / 60.0,
        "minutes_predicting_test": predict_s / 60.0,
        "plan_and_preprocess_minutes": prep["plan_and_preprocess_minutes"],
        "iterations": stats["iterations"],
        "epochs": stats["epochs"],
        "seconds_per_iteration": stats["seconds_per_iteration"],
        "plan": prep["plan"],
        "trainer": {k: stats[k] for k in ("iterations_per_epoch", "val_iterations_per_epoch", "torch_threads")}
        | {"name": "nnUNetTrainerBudget", "checkpoint": "checkpoint_final.pth", "fold": "all"},
        **scored,
    }


# ------------------------------------------------------------------------------------------------------------ table
def _fmt(s: dict[str, Any] | None, nd: int = 3) -> str:
    return "–" if not s or s.get("mean") is None else f"{s['mean']:.{nd}f} ± {s['std']:.{nd}f}"


def print_table(cells: Sequence[dict[str, Any]], class_names: Sequence[str]) -> None:
    fg = list(class_names[1:])
    head = " | ".join(f"Dice {c}" for c in fg)
    print(f"\n| budget | system | {head} | Dice mean | HD95 mm mean | iterations | s / iteration | training min |")
    print("|---" * (7 + len(fg)) + "|")
    for c in sorted(cells, key=lambda c: (c["budget_min"], c["system"])):
        dice = " | ".join(_fmt(c["dice"].get(k)) for k in fg)
        spi = c.get("seconds_per_iteration")
        print(
            f"| {c['budget_min']:g} | {c['system']} | {dice} | {_fmt(c['dice']['mean'])} | "
            f"{_fmt(c['hd95_mm']['mean'], 2)} | {c['iterations']} | {'–' if spi is None else f'{spi:.2f}'} | "
            f"{c['wall_minutes_training']:.1f} |"
        )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="MSD Task04 folder (default ../shared/data/msd_hippocampus)")
    p.add_argument("--splits", default=str(RESULTS / "hippocampus_splits.json"))
    p.add_argument("--budgets", default="15,30,60", help="training minutes per cell")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--peer-bin", default=str(REPO / ".venv-peer" / "bin"), help="bin folder of the nnunetv2 venv")
    p.add_argument("--work", default="/tmp/medmonai_nnunet_peer")
    p.add_argument("--threads", type=int, default=2, help="torch threads of medmonai's run")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="KEY=VALUE bundle setting of medmonai's run, repeatable: an ablation, whose cells are named "
        "medmonai+KEY=VALUE (the comparison with nnU-Net uses the defaults, no --override)",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 12 training / 4 test cases, --budgets 2")
    p.add_argument("--report-only", action="store_true", help="table of the finished cells; nothing is trained")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/nnunet_peer.json)")
    args = p.parse_args(argv)
    budgets = [float(b) for b in ("2" if args.quick else args.budgets).split(",") if b.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"unknown system(s) {unknown}; choose from {SYSTEMS}")
    overrides = _parse_overrides(args.override)
    import torch

    torch.set_num_threads(args.threads)
    data = Path(args.data) if args.data else shared_data_dir() / "msd_hippocampus"
    work = Path(args.work) / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    # the smoke test's cells stay in the work folder; the benchmark's go to benchmarks/results/nnunet_peer/
    cells_dir = work / "cells" if args.quick else RESULTS / "nnunet_peer"
    cells: list[dict[str, Any]] = []
    datalist = class_names = None
    for budget in budgets:
        for system in systems:
            name = _system_label(overrides) if system == "medmonai" else system
            path = _cell_path(name, budget, cells_dir)
            if path.is_file():
                cells.append(json.loads(path.read_text()))
                continue
            if args.report_only:
                continue
            if datalist is None:
                if not (data / "dataset.json").is_file():
                    raise SystemExit(f"{data}: no MSD dataset.json (give --data or set MEDMONAI_SHARED_DATA)")
                subjects = [e["subject"] for e in datalist_from_msd(data)["training"]]
                split = ensure_split(Path(args.splits), subjects, 0.2, 0)
                datalist, _ = build_datalist(data, split, work, (12, 4) if args.quick else None)
                class_names = _class_names(datalist)
            print(f"== {name}, {budget:g} training minutes", flush=True)
            if system == "medmonai":
                cell = run_medmonai(datalist, work, budget, class_names, args.quick, overrides)
            else:
                cell = run_nnunet(datalist, work, budget, class_names, Path(args.peer_bin), args.quick)
            cell["quick"] = bool(args.quick)
            atomic_write_json(path, cell)
            cells.append(cell)
    # every other cell recorded at these budgets (the defaults, nnU-Net, medmonai's --override ablations) joins the
    # table, whichever run this is
    have = {(c["system"], c["budget_min"]) for c in cells}
    for extra in sorted(cells_dir.glob("*min.json")) if cells_dir.is_dir() else []:
        cell = json.loads(extra.read_text())
        if cell.get("budget_min") in budgets and (cell.get("system"), cell.get("budget_min")) not in have:
            cells.append(cell)
    cells.sort(key=lambda c: (c["budget_min"], c["system"] != "medmonai", c["system"]))
    names = class_names or ["background", "Anterior", "Posterior"]
    print_table(cells, names)
    result = {
        "benchmark": "MSD Task04 Hippocampus: medmonai bundles/segmentation vs nnU-Net v2, same split/budget/scoring",
        "splits_file": _rel(Path(args.splits)),
        "budgets_min": budgets,
        "quick": bool(args.quick),
        "cells": [_rel(_cell_path(c["system"], c["budget_min"], cells_dir)) for c in cells],
        "summary": cells,
        "targets": {"margin_at_60_min": TARGET_MARGIN, "dice_per_class_at_60_min": TARGET_DICE},
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__},
    }
    if not args.quick or args.out:
        out = Path(args.out) if args.out else RESULTS / "nnunet_peer.json"
        atomic_write_json(out, result)
        print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
