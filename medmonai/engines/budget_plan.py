"""Budget-aware network plan: the widest segmentation network whose measured training step buys enough iterations.

nnU-Net plans its network for the GPU memory it has; a CPU run with a wall-clock budget (``time_budget_min``) is
limited by time instead. A wider network learns more per iteration but runs fewer of them: on MSD Hippocampus
(2-core CPU, ``benchmarks/nnunet_peer.py``, docs/benchmarks.md) the default width gains little beyond about two
thousand iterations, and a network that gets only a few hundred has not converged. So, given a budget, the plan

1. builds the candidate widths (``base_filters``: the default and twice the default, narrowest first) with the
   planned patch, spacing and channels;
2. times each one's training step on the run's device and precision (forward, loss, backward and AdamW step on a
   random batch of the training batch's shape, after one warm-up step; the fastest of ``probe_steps`` timed steps);
3. takes the widest width whose step the budget buys at least ``min_iterations`` times (budget ÷ step time: pure
   step time, so the real run, which also loads data and validates, does somewhat fewer), else the narrowest (the
   default). A narrower network than the default is not a candidate: with half the width and 1.5 times the
   iterations, 15 minutes on MSD Hippocampus gave the same test Dice.

The probe's seconds are taken off the training budget (:func:`training_minutes`), and it runs with the random number
generators forked, so the run's seeded initialisation and sampling are those of a run without a probe.

The decision is written to ``out`` (``output_dir/network_plan.json``) with its reasons and measurements, and a file
already there is used as it was made (a resumed, evaluated or exported run builds the network it was trained with;
delete the file to plan again). Without a budget the plan is the default width, and a width set in the config
(``--base_filters N``) is used as set; both are recorded the same way in a folder without a plan (a set width that
differs from the folder's plan is used with a warning, and the file is not changed).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.losses import DiceCELoss

from medmonai.engines.precision import autocast_dtype
from medmonai.networks.segmentation import build_segmentation_network
from medmonai.utils import PathLike, atomic_write_json, read_json

__all__ = [
    "MIN_ITERATIONS",
    "WIDTH_FACTORS",
    "ensure_network_plan",
    "plan_width",
    "probe_step_seconds",
    "training_minutes",
]

logger = logging.getLogger(__name__)

#: iterations (at the probe's step time) the budget must buy for a width to be chosen (docs/segmentation.md)
MIN_ITERATIONS = 1600
#: candidate widths as multiples of the default ``base_filters`` (not narrower: half the width gained nothing at
#: 15 minutes on MSD Hippocampus, docs/segmentation.md)
WIDTH_FACTORS = (1.0, 2.0)
VERSION = 1

#: seconds this process spent probing, per plan (its JSON; taken off the training budget by :func:`training_minutes`)
_PROBE_SECONDS: dict[str, float] = {}


def _key(plan: dict[str, Any]) -> str:
    return json.dumps(plan, sort_keys=True, default=str)


def probe_step_seconds(
    network: torch.nn.Module,
    batch_size: int,
    in_channels: int,
    out_channels: int,
    patch_size: Sequence[int],
    precision: str = "auto",
    device: torch.device | str = "cpu",
    probe_steps: int = 2,
) -> float:
    """Seconds of one training step of ``network`` on a random batch (the fastest of ``probe_steps``, after a warm-up).

    The step is the bundle's: forward under the precision's autocast, Dice + cross-entropy loss in float32,
    backward, AdamW step. The network's weights are changed by the steps: probe a network built for the purpose.
    The random number generators are left as they were.

    Args:
        network: the network (moved to ``device``).
        batch_size: samples per step (images × patches per image).
        in_channels: input channels.
        out_channels: classes including background.
        patch_size: spatial size of a sample.
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"`` (:mod:`medmonai.engines.precision`).
        device: where the step runs.
        probe_steps: timed steps (at least 1).

    Returns:
        The step time in seconds.
    """
    device = torch.device(device)
    dtype = autocast_dtype(precision, device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        gen = torch.Generator().manual_seed(0)
        shape = (int(batch_size), int(in_channels), *(int(s) for s in patch_size))
        x = torch.randn(shape, generator=gen).to(device)
        y = torch.randint(0, int(out_channels), (shape[0], 1, *shape[2:]), generator=gen).to(device)
        net = network.to(device).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)

        def step() -> float:
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            if dtype is None:
                out = net(x)
            else:
                with torch.autocast(device.type, dtype=dtype):
                    out = net(x)
            out = out[0] if isinstance(out, list | tuple) else out
            loss = loss_fn(out.float(), y)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - t0

        step()  # warm-up: oneDNN / cuDNN choose their kernels on the first call
        return min(step() for _ in range(max(1, int(probe_steps))))


def plan_width(
    time_budget_min: float,
    widths: Sequence[int],
    step_seconds: Callable[[int], float],
    min_iterations: int = MIN_ITERATIONS,
) -> dict[str, Any]:
    """The widest of ``widths`` whose step the budget buys ``min_iterations`` times, else the narrowest.

    Widths are measured narrowest first and the search stops at the first one that falls short (a wider network is
    not faster).

    Args:
        time_budget_min: the training budget in minutes.
        widths: candidate ``base_filters``.
        step_seconds: the measured step time of a width.
        min_iterations: the iterations a chosen width must get.

    Returns:
        ``{"base_filters", "reasons", "step_seconds", "iterations"}`` (the last two per measured width).
    """
    budget_s = float(time_budget_min) * 60.0
    ordered = sorted({int(w) for w in widths})
    seconds: dict[str, float] = {}
    iterations: dict[str, int] = {}
    chosen = ordered[0]
    for width in ordered:
        s = max(float(step_seconds(width)), 1e-9)
        seconds[str(width)] = round(s, 4)
        iterations[str(width)] = math.floor(budget_s / s)
        if iterations[str(width)] < min_iterations:
            break
        chosen = width
    measured = ", ".join(f"{w} filters {seconds[w]:.2f} s/step -> {iterations[w]} steps" for w in seconds)
    if iterations[str(chosen)] >= min_iterations:
        why = f"the widest of {ordered} whose step the budget buys >= {min_iterations} times"
    else:
        why = f"the narrowest of {ordered}: no wider one gets {min_iterations} steps in the budget"
    reason = f"base_filters {chosen}: {why} ({float(time_budget_min):g} min; {measured})"
    return {"base_filters": chosen, "reasons": [reason], "step_seconds": seconds, "iterations": iterations}


def training_minutes(time_budget_min: float | None, plan: dict[str, Any]) -> float | None:
    """The training budget left after the probe that made ``plan`` in this process (None: no budget).

    Meant for the bundle's :class:`~medmonai.handlers.time_budget.TimeBudget` (``minutes:``), so the probe's seconds
    count against the budget the user gave. A plan read from its file costs nothing.
    """
    if time_budget_min is None:
        return None
    spent = _PROBE_SECONDS.get(_key(plan), 0.0)
    return max(float(time_budget_min) - spent / 60.0, 1.0 / 60.0)


def ensure_network_plan(
    out: PathLike,
    time_budget_min: float | None = None,
    base_filters: int | None = None,
    network: str = "dynunet",
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 2,
    patch_size: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    batch_size: int = 1,
    dropout: float = 0.0,
    precision: str = "auto",
    device: torch.device | str = "cpu",
    default_base_filters: int = 16,
    width_factors: Sequence[float] = WIDTH_FACTORS,
    min_iterations: int = MIN_ITERATIONS,
    probe_steps: int = 2,
) -> dict[str, Any]:
    """The run's network width (``base_filters``), planned once and cached in ``out`` (see the module docstring).

    Args:
        out: the plan file (``output_dir/network_plan.json``); used as it is when it exists.
        time_budget_min: the training budget; None plans the default width.
        base_filters: a width set in the config (used as set), or None to plan it.
        network: :func:`~medmonai.networks.segmentation.build_segmentation_network`'s ``name``.
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes including background.
        patch_size: the training patch.
        spacing: the planned voxel spacing (DynUNet's kernels and strides).
        batch_size: samples per training step (images × patches per image).
        dropout: the network's dropout.
        precision: the training precision.
        device: the training device.
        default_base_filters: the width without a budget; the candidates are its multiples ``width_factors``.
        width_factors: candidate widths as multiples of ``default_base_filters``.
        min_iterations: the steps a chosen width must get (:func:`plan_width`).
        probe_steps: timed steps per width.

    Returns:
        ``{"base_filters", "reasons", "time_budget_min", ...}`` (the file's content; with a probe also
        ``step_seconds``, ``iterations``, ``probe_seconds``, ``min_iterations``, ``device``, ``precision``).

    Raises:
        ValueError: ``out`` exists but is not a network plan (naming the file).
    """
    out = Path(out)
    fixed = [f"base_filters {base_filters}: set in the config"]
    if out.is_file():
        cached = read_json(out, "network plan")
        if not isinstance(cached, dict) or not isinstance(cached.get("base_filters"), int):
            raise ValueError(f"{out}: not a network plan (no integer 'base_filters'); delete it to plan again")
        if base_filters is not None and int(base_filters) != cached["base_filters"]:
            logger.warning(
                f"{out}: this run folder was planned with base_filters {cached['base_filters']}, the config sets "
                f"{int(base_filters)}; the config's width is used and the file is left as it is (a checkpoint of the "
                "other width will not load; delete the file when this run replaces the folder's training)"
            )
            return {"version": VERSION, "base_filters": int(base_filters), "reasons": fixed, "time_budget_min": None}
        if time_budget_min is not None and cached.get("time_budget_min") != time_budget_min:
            logger.info(
                f"{out}: network plan made for time_budget_min={cached.get('time_budget_min')} is kept "
                f"(base_filters {cached['base_filters']}, the width this run folder trains); delete it to plan again"
            )
        return cached
    if base_filters is not None:
        return _record(out, int(base_filters), fixed, time_budget_min)
    if time_budget_min is None:
        reason = f"base_filters {int(default_base_filters)}: the default width (no time budget)"
        return _record(out, int(default_base_filters), [reason], None)
    if patch_size is None:
        raise ValueError("ensure_network_plan: patch_size is needed to time the candidate widths")
    widths = sorted({max(1, round(default_base_filters * f)) for f in width_factors})

    def seconds(width: int) -> float:
        net = build_segmentation_network(
            network, spatial_dims, in_channels, out_channels, patch_size=patch_size, spacing=spacing,
            base_filters=width, dropout=dropout,
        )  # fmt: skip
        return probe_step_seconds(
            net, batch_size, in_channels, out_channels, patch_size, precision=precision, device=device,
            probe_steps=probe_steps,
        )  # fmt: skip

    t0 = time.perf_counter()
    dev = torch.device(device)
    # the candidates' initialisation draws from the global generator too: the run's seeded state is kept as it was
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        decision = plan_width(time_budget_min, widths, seconds, min_iterations=min_iterations)
    spent = time.perf_counter() - t0
    extra = {
        "step_seconds": decision["step_seconds"],
        "iterations": decision["iterations"],
        "min_iterations": int(min_iterations),
        "probe_seconds": round(spent, 2),
        "batch_size": int(batch_size),
        "patch_size": [int(s) for s in patch_size],
        "device": str(device),
        "precision": precision,
    }
    plan = _record(out, decision["base_filters"], decision["reasons"], time_budget_min, **extra)
    _PROBE_SECONDS[_key(plan)] = spent
    logger.info(f"network plan ({out}): {decision['reasons'][0]}; probe {spent:.1f} s, taken off the budget")
    return plan


def _record(out: Path, width: int, reasons: list[str], time_budget_min: float | None, **extra: Any) -> dict[str, Any]:
    plan = {"version": VERSION, "base_filters": int(width), "reasons": reasons, "time_budget_min": time_budget_min}
    plan.update(extra)
    atomic_write_json(out, plan)
    return plan
