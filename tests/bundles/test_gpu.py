"""The bundles on a CUDA GPU: training, resuming, NCCL under torchrun, and GPU-trained checkpoints used on a CPU.

Skipped where there is no CUDA GPU (CI has none). On a GPU machine: ``python -m pytest tests/bundles/test_gpu.py``.
Every bundle picks ``cuda:0`` by itself when CUDA is available (``device`` in train.yaml); these tests check that the
whole path works there and that what it writes is usable on a machine without a GPU (hospital inference servers).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from monai.bundle import run

from medmonai.data.datalist import load_datalist
from tests._bundles import run_args
from tests.bundles.test_distributed import GAN_SMALL, SEG_FAST, TINY, TINY_3D, _network_from_checkpoint, _torchrun

REPO = Path(__file__).resolve().parents[2]
CLS = {"phantom": TINY, "batch_size": 8, "spatial_size": [32, 32]}
CPU = "$torch.device('cpu')"

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here; CI has none)")
needs_nccl = pytest.mark.skipif(
    not (dist.is_available() and dist.is_nccl_available()), reason="this PyTorch build has no NCCL backend"
)


def _run(bundle: str, root: Path, *extra: str, **overrides: Any) -> None:
    run(**run_args(bundle, root, *extra, **overrides))


def _probabilities(path: Path) -> np.ndarray:
    rows = list(csv.DictReader(open(path)))
    return np.array([[float(r[k]) for k in r if k.startswith("prob_")] for r in rows])


@pytest.fixture(scope="module")
def trained_on_gpu(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls2d_gpu")
    _run("classification_2d", root, max_epochs=2, **CLS)
    return root


def test_classification_trains_on_the_gpu_and_records_it(trained_on_gpu):
    runs = trained_on_gpu / "runs"
    env = json.loads((runs / "provenance.json").read_text())["environment"]
    assert env["cuda_available"] and env["gpus"], env
    # trained on the GPU, saved with CPU tensors: a plain torch.load (no map_location) gives CPU tensors
    state = torch.load(runs / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    assert state["network"] and not any(t.is_cuda for t in state["network"].values())
    model = torch.load(runs / "checkpoints" / "model.pt", weights_only=True)
    assert model and not any(t.is_cuda for t in model.values())


def test_gpu_checkpoint_evaluates_on_cpu_with_the_gpu_probabilities(trained_on_gpu):
    ev = trained_on_gpu / "runs" / "eval"
    _run("classification_2d", trained_on_gpu, "evaluate", n_boot=50, **CLS)
    on_gpu = _probabilities(ev / "predictions.csv")
    report_gpu = json.loads((ev / "report.json").read_text())
    _run("classification_2d", trained_on_gpu, "evaluate", n_boot=50, device=CPU, **CLS)
    on_cpu = _probabilities(ev / "predictions.csv")
    assert on_gpu.shape == on_cpu.shape and on_gpu.shape[0] > 0
    np.testing.assert_allclose(on_cpu, on_gpu, atol=1e-4)
    t_cpu, t_gpu = (json.loads((ev / "report.json").read_text())["threshold"], report_gpu["threshold"])
    assert t_cpu["method"] == t_gpu["method"] and abs(t_cpu["threshold"] - t_gpu["threshold"]) < 1e-4, (t_cpu, t_gpu)


def test_gpu_training_resumes_on_the_gpu(trained_on_gpu, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(trained_on_gpu, root)
    _run("classification_2d", root, max_epochs=3, **CLS)
    ckpts = sorted(p.name for p in (root / "runs" / "checkpoints").glob("checkpoint_epoch=*.pt"))
    assert ckpts == ["checkpoint_epoch=3.pt"]
    state = torch.load(root / "runs" / "checkpoints" / "checkpoint_epoch=3.pt", weights_only=True)
    assert state["trainer"]["iteration"] // state["trainer"]["epoch_length"] == 3


def test_segmentation_3d_trains_on_the_gpu_and_infers_on_cpu(tmp_path):
    common = {"phantom": TINY_3D, **SEG_FAST}
    _run("segmentation_3d", tmp_path, max_epochs=1, **common)
    _run("segmentation_3d", tmp_path, "evaluate", **common)
    gpu = json.loads((tmp_path / "runs" / "eval" / "report.json").read_text())
    _run("segmentation_3d", tmp_path, "evaluate", device=CPU, **common)
    cpu = json.loads((tmp_path / "runs" / "eval" / "report.json").read_text())
    assert gpu["n_cases"] == cpu["n_cases"] > 0
    a, b = gpu["summary"]["dice"]["lesion"]["mean"], cpu["summary"]["dice"]["lesion"]["mean"]
    assert a is not None and abs(a - b) < 1e-3, (a, b)  # the same sliding-window prediction on either device


def test_gan_trains_and_generates_on_the_gpu(tmp_path):
    common = {"phantom": TINY, **GAN_SMALL}
    _run("gan_augmentation", tmp_path, max_epochs=1, epoch_length=2, **common)
    _run("gan_augmentation", tmp_path, "generate", n_per_class=2, **common)
    entries = load_datalist(tmp_path / "runs" / "synthetic" / "datalist.json")
    assert [e["label"] for e in entries] == [0, 0, 1, 1] and all(e["synthetic"] is True for e in entries)


@needs_nccl
@pytest.mark.parametrize(
    ("bundle", "common", "files"),
    [
        ("classification_2d", CLS, ["checkpoint_epoch=2.pt", "model.pt"]),
        ("segmentation_3d", {"phantom": TINY_3D, **SEG_FAST}, ["checkpoint_epoch=2.pt", "model.pt"]),
        (
            "gan_augmentation",
            {"phantom": TINY, **GAN_SMALL, "epoch_length": 2},
            ["checkpoint_epoch=2.pt", "generator.pt"],
        ),
    ],
)
def test_torchrun_with_nccl_on_one_gpu(tmp_path, bundle, common, files):
    """multi_gpu_train.yaml as on a GPU node: NCCL, one process per GPU (here one), the checkpoint loads plainly."""
    out = _torchrun(bundle, tmp_path, nproc=1, cpu=False, max_epochs=2, **common)
    assert "(gloo)" not in out, out[-3000:]  # init_distributed picks NCCL where the process has a GPU
    ckpts = tmp_path / "runs" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == files
    state = torch.load(ckpts / files[0], weights_only=True)
    weights = state["network" if "network" in state else "generator"]
    assert all(t.is_cuda for t in weights.values())  # trained on the GPU
    if bundle != "gan_augmentation":
        net = _network_from_checkpoint(bundle, tmp_path, ckpts / "model.pt", **common)
        assert not any(k.startswith("module.") for k in net.state_dict())
