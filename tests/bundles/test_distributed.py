"""Distributed training: the bundles' multi_gpu_train.yaml under ``torchrun --nproc_per_node=2`` on CPU (gloo).

The processes here never see a GPU (``CUDA_VISIBLE_DEVICES=""``), so these tests also run on a one-GPU machine; NCCL on
a GPU is tested in ``test_gpu.py``.

Also the pieces of :mod:`medmonai.handlers.distributed` in two gloo processes, and config checks that hold for every
bundle (writers disabled on ranks > 0, ``initialize`` kept in step with train.yaml).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import yaml
from monai.bundle import ConfigParser

from tests._bundles import bundle_dir, bundle_of
from tests._tensorboard import tensorboard_tags

pytestmark = pytest.mark.slow  # the whole module: multi-process runs

REPO = Path(__file__).resolve().parents[2]
TRAINING_BUNDLES = ["classification", "segmentation", "gan_augmentation"]
TINY = {"n_subjects": 16, "images_per_subject": [1, 2], "test_fraction": 0.25, "seed": 0}
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
SEG_FAST = {"base_filters": 4, "num_samples": 1, "val_interval": 1, "val_fraction": 0.34}
GAN_SMALL = {"spatial_size": [16, 16], "g_channels": 4, "d_channels": 4, "latent_dim": 8, "batch_size": 4}
# the handlers that write files or the console (TensorBoard, checkpoint/metric savers, statistics, progress bars):
# built on rank 0 only
WRITER = re.compile(r"TensorBoard|Saver|StatsHandler|ProgressBar|ClassSamples")

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this PyTorch build",
)


def _cfg(bundle: str) -> Path:
    return bundle_dir(bundle) / "configs"


def _env(cpu: bool = True) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU processes with gloo, even where a GPU is present
    if sys.platform.startswith("linux") and Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only, whatever the host name resolves to
    return env


def _engine_logging_conf(cfg: Path, root: Path) -> Path:
    """The bundle's ``logging.conf`` with ignite's engine loggers at INFO (their "Got new best metric" lines).

    The bundles keep those loggers at WARNING (one line per epoch on rank 0); these tests read every rank's evaluator
    messages to check that both ranks computed the same metrics.
    """
    text = (cfg / "logging.conf").read_text()
    section = "[logger_ignite_engines]\nlevel=WARNING"  # absent in gan_augmentation's (it logs per iteration)
    out = root / "logging_engines_info.conf"
    root.mkdir(parents=True, exist_ok=True)
    out.write_text(text.replace(section, "[logger_ignite_engines]\nlevel=INFO"))
    return out


def _torchrun(bundle: str, root: Path, timeout: float = 240, nproc: int = 2, cpu: bool = True, **overrides: Any) -> str:
    """``torchrun --standalone --nproc_per_node=<nproc> -m monai.bundle run`` of train.yaml + multi_gpu_train.yaml.

    Returns the output; fails the test with its tail when the run fails or does not end within ``timeout`` (a rank
    left waiting in a collective), after killing every process of the run. ``cpu``: hide the GPUs (gloo).
    """
    cfg = _cfg(bundle)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "monai.bundle", "run", "--config_file"]
    cmd += [json.dumps([str(cfg / "train.yaml"), str(cfg / "multi_gpu_train.yaml")])]
    cmd += ["--meta_file", str(cfg / "metadata.json"), "--bundle_root", str(root)]
    cmd += ["--logging_file", str(_engine_logging_conf(cfg, root))]
    for k, v in {**bundle_of(bundle)[1], **overrides}.items():
        cmd += [f"--{k}", json.dumps(v)]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=_env(cpu),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks
        out, _ = proc.communicate()
        pytest.fail(
            f"torchrun {bundle} did not finish within {timeout} s (a rank waiting for another?):\n{out[-6000:]}"
        )
    assert proc.returncode == 0, f"torchrun {bundle} exited with {proc.returncode}:\n{out[-6000:]}"
    return out


def _event_file_pids(folder: Path) -> set[str]:
    """The process ids in the TensorBoard event file names (``events.out.tfevents.TIME.HOST.PID.N``)."""
    return {p.name.rsplit(".", 2)[1] for p in folder.glob("events.out.tfevents.*")}


def _network_from_checkpoint(bundle: str, root: Path, ckpt: Path, **overrides: Any) -> torch.nn.Module:
    """The plain ``network_def`` of the single-process config with the checkpoint's weights (strict)."""
    parser = ConfigParser()
    parser.read_config(str(_cfg(bundle) / "train.yaml"))
    parser.update({"bundle_root": str(root), **bundle_of(bundle)[1], **overrides})
    net = parser.get_parsed_content("network_def")
    state = torch.load(ckpt, weights_only=True)
    net.load_state_dict(state["network"] if "network" in state else state)
    return net


def _assert_same_metric_on_both_ranks(out: str, metric: str) -> None:
    """Every rank's evaluator logs its new best metrics: computed over all shards, each value comes from both ranks."""
    values = re.findall(rf"Got new best metric of {metric}: (\S+)", out)
    assert values, out[-3000:]
    assert all(values.count(v) % 2 == 0 for v in values), values


def _trainer_epochs(ckpt: Path) -> int:
    state = torch.load(ckpt, weights_only=True)["trainer"]
    return state["iteration"] // state["epoch_length"]


# --------------------------------------------------------------------------------------- config checks, no processes
@pytest.mark.parametrize("bundle", TRAINING_BUNDLES)
def test_writer_handlers_are_disabled_on_ranks_above_0(bundle):
    config = yaml.safe_load((_cfg(bundle) / "train.yaml").read_text())
    assert config["is_not_rank0"] == "$medmonai.handlers.distributed.is_not_rank0()"
    lists = [config["train"]["handlers"]] + ([config["validate"]["handlers"]] if "validate" in config else [])
    targets = [h["_target_"] for hs in lists for h in hs]
    assert any(WRITER.search(t) for t in targets), targets
    for h in (h for hs in lists for h in hs):
        if WRITER.search(h["_target_"]):
            assert h.get("_disabled_") == "@is_not_rank0", f"{bundle}: {h['_target_']} is not disabled on ranks > 0"
        else:  # handlers every rank needs (validation, early stopping, resume, lr schedule, ...)
            assert "_disabled_" not in h, f"{bundle}: {h['_target_']} must run on every rank"


@pytest.mark.parametrize("bundle", TRAINING_BUNDLES)
def test_multi_gpu_config_keeps_train_initialize_and_run(bundle):
    """multi_gpu_train.yaml replaces ``initialize`` (and the GAN's ``run``): it must still do what train.yaml does."""
    train = yaml.safe_load((_cfg(bundle) / "train.yaml").read_text())
    multi = yaml.safe_load((_cfg(bundle) / "multi_gpu_train.yaml").read_text())
    assert multi["initialize"][0] == "$medmonai.handlers.distributed.init_distributed()"
    assert "$medmonai.handlers.distributed.destroy_distributed()" in multi["finalize"]
    for step in train.get("initialize", []):
        if "set_determinism" not in step:  # the GAN seeds each rank differently
            assert step in multi["initialize"], f"{bundle}: train.yaml initialize step {step!r} missing"
    for step in train["run"]:  # the same steps (the GAN saves its generator on rank 0 only)
        assert any(step.removeprefix("$") in s for s in multi.get("run", train["run"])), f"{bundle}: {step!r} missing"
    assert "BroadcastTerminate" in multi["train#trainer#train_handlers"]
    assert multi["train#sampler"]["_target_"] == "DistributedSampler"


# ------------------------------------------------------------------------------------ handlers in two gloo processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _handlers_worker(rank: int, world: int, port: int, out: str) -> None:
    """Rank ``rank`` of the handler checks (run by ``torch.multiprocessing.spawn``); results go to ``out``."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU and gloo, also on a GPU machine (CUDA is not initialized yet)
    torch.set_num_threads(1)
    from ignite.engine import Engine, Events

    from medmonai.handlers.distributed import (
        AverageGradients,
        BroadcastTerminate,
        destroy_distributed,
        init_distributed,
        is_not_rank0,
    )

    assert init_distributed() == torch.device("cpu")
    result: dict[str, Any] = {"is_not_rank0": is_not_rank0()}

    # early stopping decided at epoch end: rank 0 stops after epoch 2; rank 1 would stop after epoch 1 on its own
    engine = Engine(lambda e, b: None)
    stop_at = {0: 2, 1: 1}[rank]
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.terminate() if e.state.epoch == stop_at else None)
    sync = BroadcastTerminate()
    sync.attach(engine)
    engine.run(range(3), max_epochs=10)
    result["epoch_stop"] = (engine.state.epoch, engine.state.iteration, sync.overridden)

    # a decision inside an epoch (a time budget): rank 0 stops after iteration 5
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: e.terminate() if rank == 0 and e.state.iteration == 5 else None
    )
    BroadcastTerminate().attach(engine)
    engine.run(range(3), max_epochs=10)
    result["iteration_stop"] = (engine.state.epoch, engine.state.iteration)

    # gradient averaging: different initial weights and data per rank, 2 SGD steps
    torch.manual_seed(rank)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.arange(6, dtype=torch.float32).view(2, 3) + 10 * rank

    def step(_: Engine, __: Any) -> None:
        opt.zero_grad()
        model(data).pow(2).mean().backward()
        opt.step()

    engine = Engine(step)
    AverageGradients([model], [opt]).attach(engine)
    engine.run([0], max_epochs=2)
    result["weights"] = [p.detach().clone() for p in model.parameters()]
    destroy_distributed()
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))


@needs_gloo
def test_broadcast_terminate_and_average_gradients_in_two_processes(tmp_path):
    torch.multiprocessing.spawn(_handlers_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert (r0["is_not_rank0"], r1["is_not_rank0"]) == (False, True)
    # both ranks stop where rank 0 stops: epoch 2 (rank 1's own stop after epoch 1 is overridden)
    assert r0["epoch_stop"] == (2, 6, 0) and r1["epoch_stop"] == (2, 6, 2)  # rank 1 followed rank 0 twice
    assert r0["iteration_stop"] == r1["iteration_stop"] == (2, 5)
    # the same weights on both ranks: rank 0's start, updated with the mean gradient of both ranks' data
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [torch.arange(6, dtype=torch.float32).view(2, 3) + 10 * r for r in (0, 1)]
    for _ in range(2):
        opt.zero_grad()
        (sum(model(d).pow(2).mean() for d in data) / 2).backward()
        opt.step()
    for a, b, ref in zip(r0["weights"], r1["weights"], model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, ref.detach())


# ---------------------------------------------------------------------------------------------- bundles via torchrun
@needs_gloo
def test_classification_2d_torchrun_trains_resumes_and_stops_early(tmp_path):
    common = {"phantom": TINY, "batch_size": 8, "spatial_size": [32, 32], "image_log_interval": 1}
    out = _torchrun("classification_2d", tmp_path, max_epochs=2, **common)
    _assert_same_metric_on_both_ranks(out, "val_auc")
    ckpts = tmp_path / "runs" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint_epoch=2.pt", "model.pt"]
    assert _trainer_epochs(ckpts / "checkpoint_epoch=2.pt") == 2
    # the checkpoints hold the plain network (DDP unwrapped): they load into network_def, strictly
    net = _network_from_checkpoint("classification_2d", tmp_path, ckpts / "model.pt", **common)
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 2)
    _network_from_checkpoint("classification_2d", tmp_path, ckpts / "checkpoint_epoch=2.pt", **common)
    tb = tmp_path / "runs" / "tensorboard"
    assert len(_event_file_pids(tb)) == 1  # every event file written by the same process: rank 0
    tags = tensorboard_tags(tb)
    assert {"train_loss", "val_auc", "val_accuracy"} <= tags["scalars"] and "train_input_images" in tags["images"]

    # resume under DDP with early stopping that triggers at the first validation without improvement (min_delta 1):
    # every rank stops at the same epoch and exits (no rank left waiting in an all-reduce)
    out = _torchrun("classification_2d", tmp_path, max_epochs=8, patience=1, min_delta=1.0, **common)
    assert len(re.findall(r"resum\w* from .*checkpoint_epoch=2\.pt", out)) == 2, out[-3000:]  # on both ranks
    last = sorted(ckpts.glob("checkpoint_epoch=*.pt"))
    assert len(last) == 1
    stopped = _trainer_epochs(last[0])
    assert 2 < stopped < 8, f"early stopping did not stop the resumed run (stopped at epoch {stopped})"
    assert out.count(f"Epoch[{stopped}] Complete") >= 2 and f"Epoch[{stopped + 1}]" not in out


@needs_gloo
def test_segmentation_3d_torchrun_trains_on_two_ranks(tmp_path):
    common = {"phantom": TINY_3D, **SEG_FAST}
    out = _torchrun("segmentation_3d", tmp_path, max_epochs=2, **common)
    _assert_same_metric_on_both_ranks(out, "val_mean_dice")
    ckpts = tmp_path / "runs" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint_epoch=2.pt", "model.pt"]
    assert _trainer_epochs(ckpts / "checkpoint_epoch=2.pt") == 2
    state = torch.load(ckpts / "checkpoint_epoch=2.pt", weights_only=True)
    assert {"network", "optimizer", "lr_scheduler", "trainer"} <= set(state)
    net = _network_from_checkpoint("segmentation_3d", tmp_path, ckpts / "model.pt", **common)
    assert not any(k.startswith("module.") for k in net.state_dict())
    tb = tmp_path / "runs" / "tensorboard"
    assert len(_event_file_pids(tb)) == 1
    tags = tensorboard_tags(tb)
    assert {"train_loss", "val_mean_dice"} <= tags["scalars"] and "val_image_label_pred" in tags["images"]


@needs_gloo
def test_gan_torchrun_averages_gradients_and_saves_on_rank0(tmp_path):
    common = {"phantom": TINY, **GAN_SMALL}
    _torchrun("gan_augmentation", tmp_path, max_epochs=2, epoch_length=2, **common)
    ckpts = tmp_path / "runs" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint_epoch=2.pt", "generator.pt"]
    state = torch.load(ckpts / "checkpoint_epoch=2.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 4
    parser = ConfigParser()
    parser.read_config(str(_cfg("gan_augmentation") / "train.yaml"))
    parser.update({"bundle_root": str(tmp_path), **common})
    generator = parser.get_parsed_content("generator_def")
    generator.load_state_dict(torch.load(ckpts / "generator.pt", weights_only=True))
    tb = tmp_path / "runs" / "tensorboard"
    assert len(_event_file_pids(tb)) == 1
    assert {"g_loss", "d_loss"} <= tensorboard_tags(tb)["scalars"]


@needs_gloo
@pytest.mark.parametrize(
    ("bundle", "common", "metric"),
    [
        ("classification_3d", {"phantom": TINY, "batch_size": 4, "spatial_size": [24, 24, 24]}, "val_auc"),
        ("segmentation_2d", {"phantom": {**TINY, "fov_mm": 40.0}, **SEG_FAST}, "val_mean_dice"),
    ],
)
def test_the_other_training_bundles_run_under_torchrun(tmp_path, bundle, common, metric):
    """One epoch on two ranks: a checkpoint written once (rank 0) that loads into the plain network."""
    out = _torchrun(bundle, tmp_path, max_epochs=1, **common)
    _assert_same_metric_on_both_ranks(out, metric)
    ckpts = tmp_path / "runs" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint_epoch=1.pt", "model.pt"]
    net = _network_from_checkpoint(bundle, tmp_path, ckpts / "model.pt", **common)
    assert not any(k.startswith("module.") for k in net.state_dict())
    assert len(_event_file_pids(tmp_path / "runs" / "tensorboard")) == 1
