"""Helpers for distributed data-parallel training of the bundles (``torchrun`` + ``multi_gpu_train.yaml``).

The bundles' ``multi_gpu_train.yaml`` files (merged after ``train.yaml``) use these pieces:

- :func:`init_distributed` joins the process group that ``torchrun`` describes in the environment: NCCL when CUDA
  is available, gloo on CPU; :func:`local_device` is the device of this process (``cuda:LOCAL_RANK`` or CPU).
- :func:`is_not_rank0` is what ``train.yaml`` puts in the ``_disabled_`` field of the handlers that write
  (TensorBoard, console statistics, progress bar, best-model checkpoint), so that they are not even built on
  ranks > 0 (a ``SummaryWriter`` creates its event file when it is built). It is False outside ``torchrun``.
- :func:`rank0_first_start` / :func:`rank0_first_end` let rank 0 prepare the shared files (embedded phantoms,
  fingerprint, content-hash cache) before the other ranks read them.
- :class:`BroadcastTerminate` (on the trainer) makes every rank follow rank 0's decision to stop (early stopping,
  time budget), so that no rank waits forever in a collective operation of a rank that has left.
- :class:`AverageGradients` is data parallelism without a ``DistributedDataParallel`` wrapper, for engines that
  DDP does not fit (the GAN trainer freezes the discriminator during the generator step): the gradients are
  averaged over the ranks before every optimizer step and the models start from rank 0's state.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import ignite.distributed as idist
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.utils import set_determinism

__all__ = [
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_not_rank0",
    "local_device",
    "init_distributed",
    "destroy_distributed",
    "seed_ranks",
    "rank0_first_start",
    "rank0_first_end",
    "BroadcastTerminate",
    "AverageGradients",
]

logger = logging.getLogger(__name__)

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def is_distributed() -> bool:
    """True inside an initialised ``torch.distributed`` process group."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """The number of processes (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_not_rank0() -> bool:
    """True on ranks > 0 of an initialised process group: the ``_disabled_`` flag of handlers that write."""
    return get_rank() > 0


def local_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available (``LOCAL_RANK`` set by ``torchrun``, default 0), else CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_distributed(backend: str | None = None) -> torch.device:
    """Join the process group that ``torchrun`` set up in the environment (idempotent); return this rank's device.

    Args:
        backend: ``"nccl"``, ``"gloo"``...; default NCCL when CUDA is available, else gloo (CPU).

    Returns:
        The device of this process (:func:`local_device`).

    Raises:
        RuntimeError: when ``torch.distributed`` is unavailable or the ``torchrun`` environment is missing.
    """
    if not dist.is_available():
        raise RuntimeError("multi_gpu_train.yaml: this PyTorch build has no torch.distributed support")
    device = local_device()
    if dist.is_initialized():
        return device
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"multi_gpu_train.yaml must be started by torchrun (environment variables {', '.join(missing)} are not "
            "set), e.g. torchrun --nproc_per_node=2 -m monai.bundle run --config_file \"['train.yaml', "
            "'multi_gpu_train.yaml']\""
        )
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    # ignite's idist (used by CheckpointSaver, metrics...) sets itself up from the process group on its first use with
    # a collective call (new_group); do it now on every rank, or the first use on rank 0 only (a checkpoint saver)
    # waits forever for the other ranks
    idist.sync()
    logger.info(f"rank {dist.get_rank()} of {dist.get_world_size()} ({backend}) on {device}")
    return device


def destroy_distributed() -> None:
    """Leave the process group (no-op outside one)."""
    if is_distributed():
        dist.destroy_process_group()


def seed_ranks(seed: int, epoch: int = 0) -> None:
    """Seed each rank differently: ``monai.utils.set_determinism(seed + 1000 * epoch + rank)``.

    For engines whose ranks should draw different random numbers (the GAN's latents and DiffAugment), at the start
    and again when the trainer starts (``epoch`` > 0 after a resume, where every rank loaded rank 0's random state).
    """
    set_determinism(seed=int(seed) + 1000 * int(epoch) + get_rank())


def _barrier() -> None:
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def rank0_first_start() -> None:
    """Ranks > 0 wait here until rank 0 reaches :func:`rank0_first_end` (no-op outside a process group).

    Config use (``initialize`` of ``multi_gpu_train.yaml``): ``rank0_first_start()``, then the items that write shared
    files (``@plan``, ``@split``), then ``rank0_first_end()``: rank 0 writes them, the others then find them ready.
    """
    if is_distributed() and get_rank() > 0:
        _barrier()


def rank0_first_end() -> None:
    """Rank 0 releases the ranks waiting in :func:`rank0_first_start`."""
    if is_distributed() and get_rank() == 0:
        _barrier()


def _flag_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


_TERMINATE_CODES: dict[Any, int] = {False: 0, True: 1, "skip_completed": 2}
_TERMINATE_VALUES: dict[int, Any] = {v: k for k, v in _TERMINATE_CODES.items()}


class BroadcastTerminate:
    """Make every rank follow rank 0's decision to stop training: attach to the *trainer*, last.

    Early stopping (:class:`~medmonai.handlers.checkpoint.EarlyStopOnValidation`) or a time budget
    (:class:`~medmonai.handlers.time_budget.TimeBudget`) calls ``trainer.terminate()`` on the rank where it decides
    to stop. Should the ranks disagree (a clock, a floating-point difference), a rank that stops while the others go on
    leaves them waiting forever in the next gradient all-reduce. This handler broadcasts rank 0's ``should_terminate``
    after every iteration and every epoch, and sets it on every rank, so all ranks stop at the same iteration (a
    rank's own decision that rank 0 does not share is dropped, with a log line). Attach it after the handlers that may
    stop training (ignite runs the handlers of an event in the order they were added). Outside a process group it
    does nothing.

    Args:
        iteration_level: also synchronise after every iteration (needed for decisions taken inside an epoch, such as
            the time budget; one tiny broadcast per iteration). Epoch ends are always synchronised.
    """

    def __init__(self, iteration_level: bool = True) -> None:
        self.iteration_level = iteration_level
        self.overridden = 0

    def attach(self, engine: Engine) -> None:
        """Synchronise at ``ITERATION_COMPLETED`` (optional) and ``EPOCH_COMPLETED``."""
        if self.iteration_level:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Replace ``engine.should_terminate`` by rank 0's value."""
        if not is_distributed():
            return
        mine = engine.should_terminate
        flag = torch.tensor([_TERMINATE_CODES.get(mine, 1)], dtype=torch.int64, device=_flag_device())
        dist.broadcast(flag, src=0)
        decided = _TERMINATE_VALUES.get(int(flag.item()), True)
        if bool(mine) != bool(decided):
            self.overridden += 1
            what = "stopping" if decided else "going on"
            logger.info(f"rank {get_rank()}: {what} with rank 0 at epoch {engine.state.epoch}")
        engine.should_terminate = decided


class AverageGradients:
    """Data-parallel training without ``DistributedDataParallel``: attach to the trainer, give it the models/optimizers.

    Before every ``optimizer.step()`` (an optimizer step pre-hook) the gradients of the optimizer's parameters are
    averaged over the ranks (one all-reduce of the flattened gradients per step), so that every rank applies the same
    update. When the trainer starts (after a checkpoint was loaded: attach this handler after
    :class:`~medmonai.handlers.checkpoint.ResumableCheckpoint`) the parameters and buffers of ``modules`` are
    broadcast from rank 0, so all ranks start from the same weights; they stay equal because the updates are equal.
    Buffers that change in training mode (batch-norm statistics) may drift apart between ranks; only rank 0 saves.
    Outside a process group it does nothing.

    Args:
        modules: the models trained (e.g. generator, discriminator and the generator's EMA copy).
        optimizers: their optimizers.
    """

    def __init__(self, modules: Sequence[torch.nn.Module], optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.modules = list(modules)
        self.optimizers = list(optimizers)
        self._hooks: list[Any] = []

    def attach(self, engine: Engine) -> None:
        """Register the gradient averaging and the start-of-training broadcast."""
        if not is_distributed():
            return
        for opt in self.optimizers:
            self._hooks.append(opt.register_step_pre_hook(self._average))
        engine.add_event_handler(Events.STARTED, self.broadcast_state)

    def broadcast_state(self, _: Engine | None = None) -> None:
        """Copy rank 0's parameters and buffers to every rank.

        Under NCCL, tensors kept on the CPU (e.g. the ``n_averaged`` counter of an ``AveragedModel``) travel through
        the process's GPU.
        """
        staging = _flag_device()
        for module in self.modules:
            for t in [*module.parameters(), *module.buffers()]:
                if t.device.type == staging.type:
                    dist.broadcast(t.data, src=0)
                else:
                    on_staging = t.data.to(staging)
                    dist.broadcast(on_staging, src=0)
                    t.data.copy_(on_staging)

    @staticmethod
    def _grads(optimizer: torch.optim.Optimizer) -> Iterable[torch.Tensor]:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield p.grad

    def _average(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        grads = list(self._grads(optimizer))
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= get_world_size()
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n
