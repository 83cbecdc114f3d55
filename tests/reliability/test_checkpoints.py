"""Atomic writes and exact resume at the handler level (no bundle)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.handlers import Checkpoint
from ignite.metrics import Metric
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import ValidationHandler
from monai.transforms import Compose, RandGaussianNoised, RandScaleIntensityd
from monai.utils import set_determinism

from medmonai.handlers.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    CheckpointError,
    EarlyStopOnValidation,
    RestoreBestWeights,
    ResumableCheckpoint,
    latest_checkpoint,
)
from medmonai.utils import atomic_write_text
from tests.reliability._bundle import assert_same_tensors


class _ByEpoch(Metric):
    """A validation metric whose value at (trainer) epoch e is values[e - 1], whatever the evaluator object."""

    def __init__(self, values):
        self.values = list(values)
        super().__init__()

    def reset(self):
        pass

    def update(self, output):
        pass

    def compute(self):
        return 0.0

    def completed(self, engine, name):
        engine.state.metrics[name] = self.values[engine.state.epoch - 1]


class _Unpicklable:
    def __reduce__(self):
        raise pickle.PicklingError("killed while writing")


def test_atomic_write_never_leaves_a_partial_file(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_text(target, "old")

    names = []

    def crash(tmp):
        names.append(Path(tmp).name)
        with open(tmp, "w") as f:
            f.write("half of the new con")
        raise KeyboardInterrupt  # as a kill would, mid-write

    from medmonai.utils import atomic_write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    assert names[0].startswith(".report.") and names[0].endswith(".tmp"), names  # never matches *.json


def test_a_killed_checkpoint_write_leaves_no_file_that_looks_like_a_checkpoint(tmp_path, monkeypatch):
    from medmonai.utils import atomic_torch_save, remove_stale_temp_files

    seen = []

    def killed_save(obj, f):  # the process dies mid-write: a partial temporary file stays behind
        seen.append(Path(f).name)
        Path(f).write_bytes(b"PK\x03\x04partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"w": 1}, tmp_path / "checkpoint_epoch=2.pt")
    assert seen and seen[0].startswith(".checkpoint_epoch=2.") and seen[0].endswith(".tmp"), seen
    (tmp_path / seen[0]).write_bytes(b"PK\x03\x04partial")  # as SIGKILL would leave it (no cleanup ran)
    assert list(tmp_path.glob("*.pt")) == []
    assert [p.name for p in remove_stale_temp_files(tmp_path)] == seen


def test_disk_saver_deletes_the_old_checkpoint_only_after_the_new_one_is_complete(tmp_path):
    saver = AtomicDiskSaver(tmp_path)
    saver({"w": torch.ones(2)}, "checkpoint_epoch=1.pt")
    saver.remove("checkpoint_epoch=1.pt")  # ignite releases the old file before writing the new one
    assert (tmp_path / "checkpoint_epoch=1.pt").is_file()
    with pytest.raises(pickle.PicklingError):
        saver({"w": _Unpicklable()}, "checkpoint_epoch=2.pt")  # the write fails: the old file is still there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=1.pt"]
    saver({"w": torch.zeros(2)}, "checkpoint_epoch=2.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=2.pt"]
    # a fixed name (the best model) is replaced in place, never deleted
    fixed = AtomicDiskSaver(tmp_path, filename="model.pt")
    fixed({"w": torch.ones(1)}, "whatever.pt")
    fixed.remove("whatever.pt")
    fixed({"w": torch.full((1,), 2.0)}, "whatever.pt")
    assert torch.load(tmp_path / "model.pt", weights_only=True)["w"].item() == 2.0


def test_atomic_checkpoint_saver_writes_through_atomic_handlers(tmp_path):
    net = torch.nn.Linear(2, 2)
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True, key_metric_filename="model.pt",
        save_interval=1, epoch_level=True,
    )  # fmt: skip
    for ck in (saver._key_metric_checkpoint, saver._interval_checkpoint):
        assert isinstance(ck, Checkpoint) and isinstance(ck.save_handler, AtomicDiskSaver)
    assert saver._key_metric_checkpoint.save_handler.filename == "model.pt"


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "checkpoint_epoch=3.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    trainer = _trainer(tmp_path, max_epochs=1)[0]
    with pytest.raises(CheckpointError, match="cannot load checkpoint") as err:
        trainer.run()
    assert str(bad) in str(err.value)


# ----------------------------------------------------------------------------- exact resume with randomness


def _trainer(ckpt_dir, max_epochs, values=(0.5, 0.6, 0.55, 0.7, 0.65, 0.64, 0.63, 0.62), patience=2, seed=0):
    """A trainer with random augmentation, dropout, shuffling, early stopping and best-weight restore."""
    set_determinism(seed)
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(4, generator=g), "label": torch.tensor(i % 2)} for i in range(24)]
    aug = Compose([RandGaussianNoised("image", prob=0.5, std=0.3), RandScaleIntensityd("image", 0.2, prob=0.5)])
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    evaluator = SupervisedEvaluator(
        device="cpu", val_data_loader=DataLoader(data[:8], batch_size=4), network=net,
        key_val_metric={"val_auc": _ByEpoch(values)},
    )  # fmt: skip
    restore = RestoreBestWeights(net, evaluator)
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=max_epochs, network=net, optimizer=opt, loss_function=torch.nn.CrossEntropyLoss(),
        train_data_loader=DataLoader(Dataset(data, transform=aug), batch_size=4, shuffle=True),
        train_handlers=[
            ResumableCheckpoint(str(ckpt_dir), {"network": net, "optimizer": opt}),
            ValidationHandler(validator=evaluator, interval=1, epoch_level=True),
            EarlyStopOnValidation(evaluator, metric="val_auc", patience=patience),
            restore,
        ],
    )  # fmt: skip
    return trainer, net, evaluator, restore


def _weights(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_interrupted_and_resumed_training_equals_an_uninterrupted_one(tmp_path):
    full, net_full, ev_full, _ = _trainer(tmp_path / "full", max_epochs=8)
    full.run()
    assert full.state.epoch == 6  # early stop: best 0.7 at epoch 4, no improvement in 5 and 6
    # "killed" after epoch 3: a run limited to 3 epochs leaves exactly the checkpoint a kill would
    first, *_ = _trainer(tmp_path / "resumed", max_epochs=3)
    first.run()
    assert latest_checkpoint(str(tmp_path / "resumed")).endswith("checkpoint_epoch=3.pt")
    # the RNGs are in another state now (other seed): the checkpoint restores them
    second, net, ev, restore = _trainer(tmp_path / "resumed", max_epochs=8, seed=123)
    second.run()
    assert second.state.epoch == 6 and ev.state.best_metric_epoch == 4 == ev_full.state.best_metric_epoch
    for k, v in _weights(net_full).items():
        assert torch.equal(v, net.state_dict()[k]), k
    last_full = torch.load(latest_checkpoint(str(tmp_path / "full")), weights_only=True)
    last = torch.load(latest_checkpoint(str(tmp_path / "resumed")), weights_only=True)
    for k in last_full["network"]:
        assert torch.equal(last_full["network"][k], last["network"][k]), k
    for part in ("components", "rng", "generators"):
        assert_same_tensors(last_full["training_state"][part], last["training_state"][part], part)
    assert np.isclose(restore.best_metric, 0.7)
    # running the finished (early-stopped) run again trains nothing and ends with the same best weights
    third, net3, _, _ = _trainer(tmp_path / "resumed", max_epochs=8, seed=7)
    third.run()
    assert third.state.epoch == 6 and third.state.iteration == second.state.iteration
    for k, v in _weights(net_full).items():
        assert torch.equal(v, net3.state_dict()[k]), k


def test_resume_without_training_state_still_works(tmp_path):
    """A checkpoint from before the training state existed: weights and counters resume, with a warning."""
    first, net, _, _ = _trainer(tmp_path, max_epochs=2)
    first.run()
    path = latest_checkpoint(str(tmp_path))
    state = torch.load(path, weights_only=True)
    del state["training_state"]
    torch.save(state, path)
    second, *_ = _trainer(tmp_path, max_epochs=3)
    second.run()
    assert second.state.epoch == 3


def test_bundles_write_checkpoints_only_through_atomic_savers():
    import yaml

    from tests.reliability._bundle import REPO

    targets = []

    def walk(node):
        if isinstance(node, dict):
            if "_target_" in node:
                targets.append(str(node["_target_"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for path in (REPO / "bundles").glob("*/configs/*.yaml"):
        walk(yaml.safe_load(path.read_text()))
    assert "medmonai.handlers.checkpoint.AtomicCheckpointSaver" in targets
    assert not [t for t in targets if t.split(".")[-1] in ("CheckpointSaver", "DiskSaver")]


def test_checkpoints_are_saved_with_cpu_tensors_and_keep_their_structure(tmp_path, monkeypatch):
    from collections import OrderedDict

    from medmonai.utils import atomic_torch_save, to_cpu

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    shared = torch.ones(2)
    ckpt = {"network": net.state_dict(), "optimizer": opt.state_dict(), "pair": (shared, shared), "n": 3, "s": "x"}
    out = to_cpu(ckpt)
    assert out["network"] is not ckpt["network"] and isinstance(out["network"], OrderedDict)
    assert out["network"]._metadata == ckpt["network"]._metadata  # load_state_dict reads it (BatchNorm versions)
    assert out["network"]["0.weight"] is ckpt["network"]["0.weight"]  # CPU tensors are not copied
    assert out["pair"][0] is out["pair"][1] and out["n"] == 3 and out["s"] == "x"
    # a tensor on another device is moved once, and stays shared (a stand-in that claims to be on cuda:0 and records
    # its .cpu() calls: this machine has no GPU; tests/bundles/test_gpu.py checks real CUDA checkpoints)
    moved = []

    class OnGpu(torch.Tensor):
        @property
        def device(self):
            return torch.device("cuda", 0)

        def cpu(self, *args, **kwargs):
            moved.append(self)
            return torch.Tensor.cpu(self)

    gpu = torch.zeros(2).as_subclass(OnGpu)
    res = to_cpu({"a": gpu, "b": [gpu]})
    assert len(moved) == 1 and res["a"] is res["b"][0] and res["a"] is not gpu
    # saved and loaded with plain torch.load: the network and optimizer load back
    path = atomic_torch_save(ckpt, tmp_path / "checkpoint_epoch=1.pt")
    back = torch.load(path, weights_only=True)
    net2 = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    net2.load_state_dict(back["network"])
    torch.optim.Adam(net2.parameters()).load_state_dict(back["optimizer"])
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values()))
