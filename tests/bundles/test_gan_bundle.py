"""The GAN augmentation bundle end to end on tiny data, through MONAI's bundle entry points."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, run

from medmonai.data.datalist import check_entries, load_datalist, load_datalist_file
from tests._tensorboard import tensorboard_tags
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
CFG = REPO / "bundles" / "gan_augmentation" / "configs"
TINY = {"n_subjects": 16, "images_per_subject": [1, 2], "test_fraction": 0.25, "seed": 0}
# tiny networks and a few iterations: this checks the wiring, not image quality
SMALL = {"spatial_size": [16, 16], "g_channels": 4, "d_channels": 4, "latent_dim": 8, "batch_size": 4}


def _run(root, *extra, **overrides):
    overrides = {"phantom": TINY, **SMALL, **overrides}
    run(
        config_file=[str(CFG / "train.yaml")] + [str(CFG / f"{e}.yaml") for e in extra],
        meta_file=str(CFG / "metadata.json"),
        bundle_root=str(root),
        **overrides,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("gan2d")
    _run(root, max_epochs=1, epoch_length=2, sample_interval=1)
    return root


def test_train_writes_checkpoints_generator_and_tensorboard(trained):
    runs = trained / "runs"
    state = torch.load(runs / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=True)
    assert {"generator", "discriminator", "g_ema", "g_optimizer", "d_optimizer", "trainer"} <= set(state)
    assert state["trainer"]["iteration"] == 2
    assert (runs / "checkpoints" / "generator.pt").is_file()
    tags = tensorboard_tags(runs / "tensorboard")
    assert {"g_loss", "d_loss", "d_real", "d_fake"} <= tags["scalars"]
    assert {"samples/benign", "samples/malignant", "train_real_images"} <= tags["images"]


def test_gan_sees_only_the_training_part(trained):
    parser = ConfigParser()
    parser.read_config(str(CFG / "train.yaml"))
    parser.update({"bundle_root": str(trained), "phantom": TINY, **SMALL})
    split = parser.get_parsed_content("split")
    dataset = parser.get_parsed_content("train#dataset")
    assert len(dataset) == len(split["training"]) and len(split["validation"]) > 0
    datalist = parser.get_parsed_content("datalist_file")
    held_out = load_datalist(datalist, "test") + split["validation"]
    train_images = {e["image"] for e in split["training"]}
    assert not train_images & {e["image"] for e in held_out}
    assert not {e["subject"] for e in split["training"]} & {e["subject"] for e in held_out}


def test_resume_continues_from_the_last_epoch(trained, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(trained, root)
    _run(root, max_epochs=2, epoch_length=2)
    ckpts = sorted(p.name for p in (root / "runs" / "checkpoints").glob("checkpoint_epoch=*.pt"))
    assert ckpts == ["checkpoint_epoch=2.pt"]
    state = torch.load(root / "runs" / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 4  # 2 iterations resumed + 2 new, not 4 new


@pytest.mark.slow
def test_generate_through_the_bundle_command_line(trained):
    """``python -m monai.bundle run`` with train.yaml + generate.yaml (a separate process, the documented command)."""
    configs = json.dumps([str(CFG / "train.yaml"), str(CFG / "generate.yaml")])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs, "--bundle_root", str(trained)]
    cmd += ["--meta_file", str(CFG / "metadata.json"), "--phantom", json.dumps(TINY), "--n_per_class", "[3, 2]"]
    for k, v in SMALL.items():
        cmd += [f"--{k}", json.dumps(v)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600, cwd=str(REPO))
    path = trained / "runs" / "synthetic" / "datalist.json"
    raw = load_datalist_file(path)
    entries = load_datalist(path)
    assert raw["classes"] == ["benign", "malignant"] and raw["synthetic"] is True
    assert check_entries(entries, raw["classes"]) == []
    assert [e["label"] for e in entries] == [0, 0, 0, 1, 1]
    assert all(e["synthetic"] is True and e["subject"].startswith("synthetic-") for e in entries)
    assert raw["generator_checkpoint"].endswith("generator.pt")


def test_3d_volumes_train_and_generate(tmp_path):
    small3d = {"spatial_dims": 3, "spatial_size": [16, 16, 16], "batch_size": 2}
    _run(tmp_path, max_epochs=1, epoch_length=1, **small3d)
    _run(tmp_path, "generate", n_per_class=1, **small3d)
    entries = load_datalist(tmp_path / "runs" / "synthetic" / "datalist.json")
    assert len(entries) == 2 and all(e["image"].endswith(".nii.gz") for e in entries)
    assert check_entries(entries, ["benign", "malignant"]) == []


@pytest.mark.slow
@pytest.mark.shared_data
def test_breastmnist_trains_and_generates(shared_data, tmp_path):
    from medmonai.data.builders import datalist_from_medmnist
    from medmonai.data.datalist import write_datalist

    npz = require(shared_data / "medmnist" / "breastmnist.npz")
    datalist = write_datalist(tmp_path / "breast" / "datalist.json", datalist_from_medmnist(npz, tmp_path / "breast"))
    common = {"datalist": str(datalist), "spatial_size": [28, 28], "leakage": "drop"}  # BreastMNIST has duplicates
    _run(tmp_path, max_epochs=1, epoch_length=2, **common)
    _run(tmp_path, "generate", n_per_class=2, **common)
    path = tmp_path / "runs" / "synthetic" / "datalist.json"
    raw = load_datalist_file(path)
    assert raw["classes"] == ["malignant", "normal_benign"] and raw["name"] == "breastmnist_synthetic"
    assert check_entries(load_datalist(path), raw["classes"]) == []
