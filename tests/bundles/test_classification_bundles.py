"""The classification bundles end to end on tiny phantoms, through MONAI's bundle entry points."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ckpt_export, run, verify_net_in_out

from medmonai.metrics.report import summary_line
from tests._bundles import bundle_dir, bundle_of, run_args
from tests._tensorboard import tensorboard_tags

REPO = Path(__file__).resolve().parents[2]
TINY = {"n_subjects": 16, "images_per_subject": [1, 2], "test_fraction": 0.25, "seed": 0}


def _run(name, root, *extra, **overrides):
    run(**run_args(name, root, *extra, phantom=TINY, **overrides))


@pytest.fixture(scope="module")
def trained_2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls2d")
    _run("classification_2d", root, max_epochs=2, batch_size=8, spatial_size=[48, 48], image_log_interval=1)
    return root


def test_2d_train_writes_checkpoints_tensorboard_and_plan(trained_2d):
    runs = trained_2d / "runs"
    assert (runs / "checkpoints" / "model.pt").is_file()
    assert (runs / "checkpoints" / "checkpoint_epoch=2.pt").is_file()
    tags = tensorboard_tags(runs / "tensorboard")
    assert "train_input_images" in tags["images"]
    assert {"train_loss", "val_auc"} <= tags["scalars"] and any(t.startswith("lr/") for t in tags["scalars"])
    plan = json.loads((runs / "fingerprint.json").read_text())["plan"]
    assert plan["spatial_dims"] == 2
    state = torch.load(runs / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    assert {"network", "optimizer", "trainer"} <= set(state)
    assert state["trainer"]["iteration"] // state["trainer"]["epoch_length"] == 2


def test_2d_resume_continues_from_the_last_epoch(trained_2d, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(trained_2d, root)
    _run("classification_2d", root, max_epochs=3, batch_size=8, spatial_size=[48, 48])
    ckpts = sorted(p.name for p in (root / "runs" / "checkpoints").glob("checkpoint_epoch=*.pt"))
    assert ckpts == ["checkpoint_epoch=3.pt"]  # epoch 3 only was trained, the older checkpoint pruned
    state = torch.load(root / "runs" / "checkpoints" / "checkpoint_epoch=3.pt", weights_only=True)
    assert state["trainer"]["iteration"] // state["trainer"]["epoch_length"] == 3


def test_2d_evaluate_and_inference(trained_2d, capsys):
    _run("classification_2d", trained_2d, "evaluate", batch_size=8, spatial_size=[48, 48], n_boot=200)
    ev = trained_2d / "runs" / "eval"
    report = json.loads((ev / "report.json").read_text())
    # evaluate.yaml ends with the report's one-line summary on the console
    assert summary_line(report, ev / "report.json") in capsys.readouterr().out.splitlines()
    for m in ("accuracy", "auc", "sensitivity", "specificity", "ppv", "npv", "f1", "balanced_accuracy"):
        assert m in report["metrics"]
    auc = report["metrics"]["auc"]
    assert auc["ci_low"] <= auc["value"] <= auc["ci_high"]
    assert report["threshold"]["method"] == "youden"
    for f in ("predictions.csv", "roc.png", "confusion_matrix.png"):
        assert (ev / f).is_file()
    datalist = trained_2d / "data" / "phantoms_2d" / "datalist.json"
    n_test = len(json.loads(datalist.read_text())["test"])
    _run("classification_2d", trained_2d, "inference", input=str(datalist), input_key="test", spatial_size=[48, 48])
    out = trained_2d / "runs" / "inference"
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == n_test
    pred = json.loads((out / "predictions.json").read_text())
    assert pred["threshold"] == report["threshold"]["threshold"]  # chosen on validation, reused
    assert pred["model"]["bundle"] == "classification_2d"


def test_2d_verify_net_and_torchscript_export_match_checkpoint(trained_2d, tmp_path):
    cfg = bundle_dir("classification_2d") / "configs"
    common = {"meta_file": str(cfg / "metadata.json"), "config_file": str(cfg / "train.yaml"), "num_classes": 2}
    common |= {"in_channels": 1, "input_range": [0, 1]}  # like num_classes: given, not planned from data in the cwd
    verify_net_in_out(net_id="network_def", device="cpu", **common)
    ts = tmp_path / "model.ts"
    ckpt = trained_2d / "runs" / "checkpoints" / "model.pt"
    shape = [1, 1, 48, 48]
    ckpt_export("network_def", filepath=str(ts), ckpt_file=str(ckpt), use_trace=True, input_shape=shape, **common)
    exported = torch.jit.load(str(ts))
    from medmonai.networks.factory import build_network

    net = build_network("small_cnn", spatial_dims=2, in_channels=1, num_classes=2, dropout=0.2)
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    net.eval()
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        np.testing.assert_allclose(exported(x).numpy(), net(x).numpy(), atol=1e-5)
    scripted = tmp_path / "scripted.ts"  # the default (scripting) export works for the small CNN too
    ckpt_export("network_def", filepath=str(scripted), ckpt_file=str(ckpt), **common)
    with torch.no_grad():
        np.testing.assert_allclose(torch.jit.load(str(scripted))(x).numpy(), net(x).numpy(), atol=1e-5)


@pytest.mark.slow
def test_3d_bundle_trains_and_evaluates(tmp_path):
    _run("classification_3d", tmp_path, max_epochs=1, batch_size=4, spatial_size=[24, 24, 24])
    _run("classification_3d", tmp_path, "evaluate", batch_size=4, spatial_size=[24, 24, 24], n_boot=100)
    report = json.loads((tmp_path / "runs" / "eval" / "report.json").read_text())
    assert report["n"] > 0 and "auc" in report["metrics"]


@pytest.mark.slow
def test_bundle_cli_entry_point(tmp_path):
    """The documented command line works (a separate process, the real `python -m monai.bundle run`)."""
    cfg = bundle_dir("classification_2d") / "configs"  # bundles/classification, 2D by default
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(cfg / "train.yaml")]
    cmd += ["--bundle_root", str(tmp_path), "--max_epochs", "1", "--spatial_size", "[32, 32]"]
    cmd += ["--phantom", json.dumps(TINY)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    assert (tmp_path / "runs" / "checkpoints" / "checkpoint_epoch=1.pt").is_file()


def test_2d_pretrained_lite0_with_auto_strategy(tmp_path, capsys):
    _run(
        "classification_2d",
        tmp_path,
        max_epochs=1,
        batch_size=8,
        spatial_size=[64, 64],
        network_name="efficientnet_lite0",
        pretrained="imagenet",
        strategy="auto",
        input_affine=[2, -1],
    )
    assert (tmp_path / "runs" / "checkpoints" / "checkpoint_epoch=1.pt").is_file()
    text = capsys.readouterr().out  # the bundle's logging.conf logs to stdout
    assert "auto" in text and "similarity" in text, text[-3000:]


def test_2d_training_batches_are_plain_tensors_without_metadata(tmp_path):
    """The training chain drops MONAI metadata at its first random transform (UntrackedCompose), caching plain
    tensors; validation keeps its MetaTensors, and the process-wide tracking flag is left on."""
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor, get_track_meta

    from medmonai.transforms.compose import UntrackedCompose

    folder, dims = bundle_of("classification_2d")
    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "train.yaml"))
    parser.read_meta(str(folder / "configs" / "metadata.json"))
    parser.update({"bundle_root": str(tmp_path), "phantom": TINY, "spatial_size": [48, 48], **dims})
    assert isinstance(parser.get_parsed_content("train#preprocessing"), UntrackedCompose)
    batch = next(iter(parser.get_parsed_content("train#dataloader")))
    assert type(batch["image"]) is torch.Tensor and batch["image"].shape[1:] == (1, 48, 48)
    assert get_track_meta()
    assert isinstance(parser.get_parsed_content("validate#dataset")[0]["image"], MetaTensor)
