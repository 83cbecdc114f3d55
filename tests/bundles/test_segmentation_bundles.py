"""The segmentation bundles end to end on tiny phantoms (and MSD Hippocampus), through MONAI's bundle entry points."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ckpt_export, run, verify_net_in_out

from medmonai.metrics.report import summary_line
from tests._bundles import bundle_dir, run_args
from tests._tensorboard import tensorboard_tags
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
TINY_3D = {
    "n_subjects": 12,
    "images_per_subject": [1, 2],
    "test_fraction": 0.25,
    "seed": 0,
    "fov_mm": 32.0,
    "inplane_spacing_mm": [1.0, 2.0],
    "slice_spacing_mm": [2.0, 4.0],
    "oblique_max_deg": 10.0,
}
TINY_2D = {"n_subjects": 12, "images_per_subject": [1, 2], "test_fraction": 0.25, "seed": 0, "fov_mm": 40.0}
FAST = {"base_filters": 4, "num_samples": 1, "val_interval": 1, "val_fraction": 0.34}


def _cfg(name):
    return bundle_dir(name) / "configs"


def _run(name, root, *extra, phantom=TINY_3D, **overrides):
    run(**run_args(name, root, *extra, phantom=phantom, **{**FAST, **overrides}))


@pytest.fixture(scope="module")
def trained_3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg3d")
    _run("segmentation_3d", root, max_epochs=2)
    return root


def test_3d_train_writes_checkpoints_tensorboard_overlays_and_plan(trained_3d):
    runs = trained_3d / "runs"
    assert (runs / "checkpoints" / "model.pt").is_file()
    state = torch.load(runs / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    assert {"network", "optimizer", "lr_scheduler", "trainer"} <= set(state)
    tags = tensorboard_tags(runs / "tensorboard")
    assert "val_image_label_pred" in tags["images"]
    assert {"train_loss", "val_mean_dice"} <= tags["scalars"]
    plan = json.loads((runs / "fingerprint.json").read_text())["plan"]
    assert plan["spatial_dims"] == 3 and plan["orientation"] == "RAS" and len(plan["spatial_size"]) == 3
    net_plan = json.loads((runs / "network_plan.json").read_text())
    assert net_plan["base_filters"] == 4 and "set in the config" in net_plan["reasons"][0]


def test_3d_time_budget_plans_the_width_and_later_runs_build_that_network(tmp_path):
    """With a budget and no width set, the bundle times the widths and trains the one chosen; evaluation (no
    budget, no width given) builds the same network from output_dir/network_plan.json."""
    _run("segmentation_3d", tmp_path, max_epochs=1, base_filters="$None", time_budget_min=30)
    runs = tmp_path / "runs"
    plan = json.loads((runs / "network_plan.json").read_text())
    width = plan["base_filters"]
    assert width in (16, 32) and plan["time_budget_min"] == 30 and "30 min" in plan["reasons"][0]
    assert set(plan["step_seconds"]) <= {"16", "32"} and plan["batch_size"] == 4  # 4 images x 1 patch
    assert plan["iterations"][str(width)] >= plan["min_iterations"] or width == 16
    weights = torch.load(runs / "checkpoints" / "model.pt", weights_only=True)
    first = next(v for k, v in weights.items() if k.endswith("weight") and v.ndim == 5)
    assert first.shape[0] == width
    _run("segmentation_3d", tmp_path, "evaluate", base_filters="$None")
    assert json.loads((runs / "eval" / "report.json").read_text())["n_cases"] > 0
    assert json.loads((runs / "network_plan.json").read_text()) == plan


def test_3d_evaluate_reports_per_class_metrics_that_match_the_saved_masks(trained_3d, capsys):
    _run("segmentation_3d", trained_3d, "evaluate", save_predictions=True)
    ev = trained_3d / "runs" / "eval"
    report = json.loads((ev / "report.json").read_text())
    assert summary_line(report, ev / "report.json") in capsys.readouterr().out.splitlines()  # the closing line
    test = json.loads((trained_3d / "data" / "phantoms_3d" / "datalist.json").read_text())["test"]
    assert report["classes"] == ["background", "lesion"] and report["n_cases"] == len(test)
    assert {"mean", "std", "n"} <= set(report["summary"]["dice"]["lesion"])
    rows = list(csv.DictReader(open(ev / "per_case.csv")))
    assert len(rows) == len(test) and "hd95_lesion" in rows[0]
    # Dice recomputed by hand from the written prediction and the reference mask of the first test case
    entry = test[0]
    case = report["cases"][0]
    pred = np.asarray(nib.load(ev / "predictions" / f"{case['case_id']}_seg.nii.gz").dataobj) > 0
    ref = np.asarray(nib.load(trained_3d / "data" / "phantoms_3d" / entry["mask"]).dataobj) > 0
    dice = 2 * (pred & ref).sum() / (pred.sum() + ref.sum())
    assert case["dice"]["lesion"] == pytest.approx(dice, rel=1e-6, abs=1e-9)


def test_3d_inference_gives_nifti_in_input_geometry_and_dicom_seg(trained_3d):
    data = trained_3d / "data" / "phantoms_3d"
    out = trained_3d / "runs" / "inference"
    _run("segmentation_3d", trained_3d, "inference", input=str(data / "datalist_dicom.json"), input_key="test")
    pred = json.loads((out / "predictions.json").read_text())
    entries = json.loads((data / "datalist_dicom.json").read_text())["test"]
    assert pred["n_cases"] == len(entries) and pred["model"]["bundle"] == "segmentation_3d"
    for rec, entry in zip(pred["predictions"], entries):
        truth = nib.load(data / entry["mask"])  # the mask written with the DICOM geometry
        nii = nib.load(rec["nifti"])
        assert nii.shape == truth.shape
        np.testing.assert_allclose(nii.affine, truth.affine, atol=1e-4)
        source = pydicom.dcmread(next((data / entry["image"]).glob("*.dcm")), stop_before_pixels=True)
        seg = hd.seg.segread(rec["dicom_seg"])
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
        assert seg.StudyInstanceUID == source.StudyInstanceUID
    # NIfTI input: the output has the input's affine bit for bit
    _run("segmentation_3d", trained_3d, "inference", input=str(data / "datalist_nifti.json"), input_key="test")
    rec = json.loads((out / "predictions.json").read_text())["predictions"][0]
    src = nib.load(rec["image"])
    nii = nib.load(rec["nifti"])
    assert nii.shape == src.shape and np.array_equal(nii.affine, src.affine)


@pytest.mark.slow
def test_3d_verify_net_and_torchscript_export(trained_3d, tmp_path):
    cfg = _cfg("segmentation_3d")
    plan = json.loads((trained_3d / "runs" / "fingerprint.json").read_text())["plan"]
    common = {
        "meta_file": str(cfg / "metadata.json"),
        "config_file": str(cfg / "train.yaml"),
        "num_classes": 2,
        "in_channels": 1,  # like num_classes: given, not planned from data in the cwd
        "network_spacing": plan["target_spacing"],
        "base_filters": 4,
    }
    verify_net_in_out(net_id="network_def", device="cpu", roi_size=[32, 32, 32], **common)
    ckpt = trained_3d / "runs" / "checkpoints" / "model.pt"
    ts = tmp_path / "model.ts"
    ckpt_export("network_def", filepath=str(ts), ckpt_file=str(ckpt), roi_size=plan["spatial_size"], **common)
    from medmonai.networks.segmentation import build_segmentation_network

    net = build_segmentation_network("dynunet", 3, 1, 2, plan["spatial_size"], plan["target_spacing"], base_filters=4)
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    x = torch.rand(1, 1, *plan["spatial_size"])
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(ts))(x), net.eval()(x))


def test_3d_crossval_runner_trains_every_fold_and_aggregates_dice(trained_3d, tmp_path):
    """`medmonai cv` on a segmentation bundle: folds through monai.bundle.run, then the per-fold and OOF Dice."""
    import shutil

    from medmonai.apps.crossval import run_crossval

    root = tmp_path / "cv"
    shutil.copytree(trained_3d / "data", root / "data")
    overrides = {"phantom": TINY_3D, **FAST, "max_epochs": 1}
    report = run_crossval(bundle_dir("segmentation_3d"), bundle_root=root, n_folds=2, overrides=overrides)
    cv_dir = root / "runs" / "cv"
    splits = json.loads((cv_dir / "splits.json").read_text())
    assert len(splits["folds"]) == 2
    folds = [json.loads((cv_dir / f"fold{k}" / "eval_validation" / "report.json").read_text()) for k in (0, 1)]
    for k, fold in enumerate(folds):
        assert fold["fold"] == k and fold["n_cases"] == len(splits["folds"][k]["val"])
    # the aggregate is the fold reports' numbers, recomputed here by hand
    per_fold = [f["summary"]["dice"]["lesion"]["mean"] for f in folds]
    assert report["task"] == "segmentation" and report["classes"] == folds[0]["classes"]
    assert report["across_folds"]["dice"]["lesion"]["mean"] == pytest.approx(np.mean(per_fold))
    assert report["across_folds"]["dice"]["lesion"]["std"] == pytest.approx(np.std(per_fold))
    case_dice = [c["dice"]["lesion"] for f in folds for c in f["cases"] if c["dice"]["lesion"] is not None]
    assert report["oof"]["n"] == sum(f["n_cases"] for f in folds)
    assert report["oof"]["summary"]["dice"]["lesion"]["mean"] == pytest.approx(np.mean(case_dice))
    assert json.loads((cv_dir / "cv_report.json").read_text())["oof"]["n"] == report["oof"]["n"]
    assert (cv_dir / "oof" / "per_case.csv").is_file()
    # classification-only options are refused, naming the option
    with pytest.raises(ValueError, match="classifier"):
        run_crossval(bundle_dir("segmentation_3d"), bundle_root=root, n_folds=2, overrides=overrides,
                     classifier="logreg_l2")  # fmt: skip


@pytest.mark.slow
def test_2d_bundle_cli_train_then_evaluate_and_inference(tmp_path):
    """`python -m monai.bundle run` in a separate process, then evaluation and inference on the PNG test split."""
    cfg = _cfg("segmentation_2d")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(cfg / "train.yaml")]
    cmd += [
        "--bundle_root",
        str(tmp_path),
        "--spatial_dims",
        "2",
        "--max_epochs",
        "1",
        "--phantom",
        json.dumps(TINY_2D),
    ]
    for k, v in FAST.items():
        cmd += [f"--{k}", str(v)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert (tmp_path / "runs" / "checkpoints" / "checkpoint_epoch=1.pt").is_file()
    _run("segmentation_2d", tmp_path, "evaluate", phantom=TINY_2D)
    report = json.loads((tmp_path / "runs" / "eval" / "report.json").read_text())
    assert report["n_cases"] > 0 and "lesion" in report["summary"]["dice"]
    datalist = tmp_path / "data" / "phantoms_2d" / "datalist.json"
    _run("segmentation_2d", tmp_path, "inference", phantom=TINY_2D, input=str(datalist), input_key="test")
    pred = json.loads((tmp_path / "runs" / "inference" / "predictions.json").read_text())
    from PIL import Image

    for rec in pred["predictions"]:
        w, h = Image.open(rec["image"]).size
        assert tuple(rec["shape"]) == (w, h)  # MONAI's [i, j] = [column, row] order of the input's pixel grid
        assert nib.load(rec["nifti"]).shape == (w, h)


@pytest.mark.slow
def test_3d_bundle_on_msd_hippocampus(shared_data, tmp_path):
    """The benchmark's smoke mode: MSD cases through the 3D bundle (train, then evaluate in original geometry)."""
    require(shared_data / "msd_hippocampus" / "dataset.json")
    sys.path.insert(0, str(REPO / "benchmarks"))
    import hippocampus

    out = tmp_path / "result.json"
    args = ["--quick", "--n-train", "6", "--n-test", "2", "--base-filters", "4", "--work", str(tmp_path / "work")]
    args += ["--splits", str(tmp_path / "splits.json"), "--out", str(out)]
    result = hippocampus.main(args)
    split = json.loads((tmp_path / "splits.json").read_text())
    assert len(split["test"]) == 52 and len(split["training"]) == 208  # 80/20 of 260 subjects
    assert set(result["dice"]) == {"Anterior", "Posterior", "mean"}
    assert result["n_cases"] == {"training": 6, "test": 2} and result["training_minutes"] > 0
    assert json.loads(out.read_text())["plan"]["orientation"] == "RAS"


def _colour_segmentation_set(folder: Path, n: int = 10) -> Path:
    """Tiny 2D colour segmentation data: a red disk (the lesion) on a green-blue background, grey 0/1 masks.

    The lesion differs from the background in hue, not in brightness: made grey, it would barely be visible.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    yy, xx = np.mgrid[:32, :32]
    for k in range(n):
        cy, cx, r = rng.integers(10, 22), rng.integers(10, 22), rng.integers(4, 8)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.uint8)
        rgb = np.stack([np.full((32, 32), 60.0), np.full((32, 32), 150.0), np.full((32, 32), 120.0)], -1)
        rgb[mask == 1] = [200.0, 60.0, 40.0]
        rgb = np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
        Image.fromarray(rgb, "RGB").save(folder / f"img{k}.png")
        Image.fromarray(mask, "L").save(folder / f"img{k}_seg.png")
        entries.append({"image": f"img{k}.png", "mask": f"img{k}_seg.png", "subject": f"s{k}", "case_id": f"c{k}"})
    datalist = {"mask_labels": {"0": "background", "1": "lesion"}, "training": entries[:-2], "test": entries[-2:]}
    (folder / "datalist.json").write_text(json.dumps(datalist))
    return folder / "datalist.json"


def test_2d_bundle_trains_colour_images_with_three_input_channels(tmp_path):
    """Colour input: the plan's in_channels (3) reaches the network and the preprocessing, not a hard-coded 1."""
    datalist = _colour_segmentation_set(tmp_path / "colour")
    root = tmp_path / "root"
    _run("segmentation_2d", root, datalist=str(datalist), max_epochs=1, val_fraction=0.25)
    plan = json.loads((root / "runs" / "fingerprint.json").read_text())["plan"]
    assert plan["in_channels"] == 3 and plan["channels"] == 3
    assert any(r.startswith("channels:") and "in_channels 3" in r for r in plan["reasons"])
    weights = torch.load(root / "runs" / "checkpoints" / "model.pt", weights_only=True)
    first = next(v for k, v in weights.items() if k.endswith("weight") and v.ndim == 4)
    assert first.shape[1] == 3  # the first convolution takes the three colour channels
    _run("segmentation_2d", root, "evaluate", datalist=str(datalist), val_fraction=0.25)
    rows = list(csv.DictReader(open(root / "runs" / "eval" / "per_case.csv")))
    assert len(rows) == 2 and all(r["out_of_distribution"] == "false" for r in rows)
    # converting to grey is a choice the user makes explicitly (and is then done consistently)
    grey = tmp_path / "grey"
    _run("segmentation_2d", grey, datalist=str(datalist), max_epochs=1, val_fraction=0.25, in_channels=1)
    weights = torch.load(grey / "runs" / "checkpoints" / "model.pt", weights_only=True)
    assert next(v for k, v in weights.items() if k.endswith("weight") and v.ndim == 4).shape[1] == 1


def test_time_budget_refits_the_bundles_learning_rate_schedule():
    """The bundle wires its scheduler into the time budget (the refit itself: tests/handlers/test_time_budget.py)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(_cfg("segmentation") / "train.yaml"))
    budgets = [h for h in parser["train"]["handlers"] if h["_target_"].endswith("TimeBudget")]
    assert len(budgets) == 1 and budgets[0]["lr_scheduler"] == "@lr_scheduler"
    assert parser["lr_scheduler"]["_target_"].endswith("PolynomialLR")  # the one kind of schedule it can refit
