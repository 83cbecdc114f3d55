"""Where a training step's time goes, and how close it comes to the CPU's convolution throughput (issue 19 item 2).

For each bundle (``segmentation``: 3D, MSD Hippocampus when ``../shared/data`` has it, else the bundle's phantoms;
``classification``: 2D, BreastMNIST when present, else phantoms) the script builds the bundle's own training objects
from ``train.yaml`` (its planned defaults; nothing overridden but the data and the output folder) and measures, in
one process on ``--threads`` torch threads:

- **cache**: building the ``CacheDataset`` (load + deterministic preprocessing, once per run);
- per iteration, **data** (``next()`` of the training loader: the random transforms (patch sampling, augmentation)
  applied to cached items, and collation), **forward** (network + loss), **backward** and **optimizer** (step and
  ``zero_grad``), as median milliseconds over ``--iterations`` after ``--warmup``;
- **validation**: one run of the bundle's validation evaluator, and its share of training time at the bundle's
  ``val_interval``;
- **FLOP/s**: floating-point operations of one forward + backward (``torch.utils.flop_counter``: convolutions and
  matrix products) over the forward + backward time, against a plain convolution of the same dimensionality measured
  in the same run (``Conv3d`` / ``Conv2d``, 32 channels, 3×3(×3) kernel, forward + backward), the machine's
  reachable convolution throughput.

One table and ``benchmarks/results/throughput.json``:

    python benchmarks/throughput.py                      # both bundles
    python benchmarks/throughput.py --bundles segmentation --iterations 10
    python benchmarks/throughput.py --bundles segmentation --set precision=fp32 --out /tmp/throughput_fp32.json

Targets (issue 19; 2-core CPU): training step (forward + backward) >= 60 % of the measured convolution throughput;
data + augmentation <= 15 % of the iteration time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing the package
    sys.path.insert(0, str(REPO))

from medmonai.utils import atomic_write_json, shared_data_dir  # noqa: E402

__all__ = ["BUNDLES", "conv_flops_per_second", "step_flops", "profile_bundle", "main"]

BUNDLES = ("segmentation", "classification")
TARGET_FLOP_FRACTION = 0.60
TARGET_DATA_FRACTION = 0.15


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def step_flops(
    network: torch.nn.Module,
    loss_fn: Callable,
    image: torch.Tensor,
    label: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """FLOPs of one forward + backward pass (``torch.utils.flop_counter.FlopCounterMode``; gradients cleared).

    ``forward``: how the step calls the network (e.g. through the bundle's inferer); default ``network(image)``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    network.train()
    with FlopCounterMode(display=False) as counter:
        loss = loss_fn((forward or network)(image), label)
        loss.backward()
    network.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def conv_flops_per_second(spatial_dims: int, repeats: int = 5, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Forward + backward FLOP/s of a plain 32-channel 3×3(×3) convolution: the machine's reachable conv throughput.

    ``dtype``: run it under CPU autocast to this dtype (``torch.bfloat16``: the reference of a bfloat16 step); None:
    float32.
    """
    import contextlib

    from torch.utils.flop_counter import FlopCounterMode

    if spatial_dims == 3:
        conv: torch.nn.Module = torch.nn.Conv3d(32, 32, 3, padding=1)
        x = torch.randn(2, 32, 32, 32, 32, requires_grad=True)
    else:
        conv = torch.nn.Conv2d(32, 32, 3, padding=1)
        x = torch.randn(32, 32, 64, 64, requires_grad=True)

    def step() -> None:
        ctx = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with ctx:
            out = conv(x)
        out.float().sum().backward()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = int(counter.get_total_flops())
    for _ in range(2):
        step()
    times = [_timed(step)[1] for _ in range(repeats)]
    sec = statistics.median(times)
    return {
        "shape": list(x.shape),
        "dtype": str(dtype or torch.float32).replace("torch.", ""),
        "flops": flops,
        "seconds": sec,
        "flop_per_s": flops / sec,
    }


def _data_for(bundle: str, work: Path) -> tuple[str, str]:
    """(datalist path or '' for the bundle's phantoms, a description)."""
    shared = shared_data_dir()
    if bundle == "segmentation" and (shared / "msd_hippocampus" / "dataset.json").is_file():
        from benchmarks.hippocampus import build_datalist, ensure_split
        from medmonai.data.builders import datalist_from_msd

        data = shared / "msd_hippocampus"
        subjects = [e["subject"] for e in datalist_from_msd(data)["training"]]
        split = ensure_split(REPO / "benchmarks" / "results" / "hippocampus_splits.json", subjects, 0.2, 0)
        path, counts = build_datalist(data, split, work / "hippocampus")
        return str(path), f"MSD Hippocampus ({counts['training']} training cases of the fixed split)"
    if bundle == "classification" and (shared / "medmnist" / "breastmnist.npz").is_file():
        from benchmarks.medmnist import build_datalist

        return str(build_datalist(shared / "medmnist" / "breastmnist.npz", work)), "BreastMNIST (official splits)"
    return "", "the bundle's phantoms (no shared data)"


def profile_bundle(
    bundle: str, work: Path, iterations: int = 20, warmup: int = 3, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Profile one bundle's training step (see the module docstring); returns the record.

    ``overrides``: bundle settings changed from the defaults (e.g. ``{"precision": "fp32"}``), recorded in the row.
    """
    from monai.bundle import ConfigParser

    configs = REPO / "bundles" / bundle / "configs"
    datalist, described = _data_for(bundle, work)
    parser = ConfigParser()
    parser.read_config(str(configs / "train.yaml"))
    parser.read_meta(str(configs / "metadata.json"))
    root = work / f"{bundle}_root"
    parser.update({"bundle_root": str(root), "datalist": datalist, "resume": False})
    if bundle == "classification" and datalist:
        parser.update({"leakage": "drop"})  # BreastMNIST has one training image identical to a test image
    parser.update(dict(overrides or {}))
    device = parser.get_parsed_content("device")
    torch.manual_seed(0)
    dataset, cache_s = _timed(lambda: parser.get_parsed_content("train#dataset"))
    loader = parser.get_parsed_content("train#dataloader")
    network = parser.get_parsed_content("network")
    optimizer = parser.get_parsed_content("optimizer")
    loss_fn = parser.get_parsed_content("loss")
    inferer = parser.get_parsed_content("train#inferer")  # the bundle's (e.g. AutocastInferer: its precision)
    dtype = getattr(inferer, "dtype", None)

    def forward(image: torch.Tensor) -> torch.Tensor:
        return inferer(image, network)

    phases: dict[str, list[float]] = {"data": [], "forward": [], "backward": [], "optimizer": []}
    first = next(iter(loader))
    batch_shape = list(first["image"].shape)
    flops = step_flops(network, loss_fn, first["image"].to(device), first["label"].to(device), forward)
    it = iter(loader)
    for i in range(warmup + iterations):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        image, label = batch["image"].to(device), batch["label"].to(device)
        t1 = time.perf_counter()
        loss = loss_fn(forward(image), label)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if i >= warmup:
            for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                phases[k].append(v)
    med = {k: statistics.median(v) for k, v in phases.items()}
    total = sum(med.values())
    evaluator = parser.get_parsed_content("validate#evaluator")
    _, val_s = _timed(evaluator.run)
    val_interval = int(parser.get_parsed_content("val_interval")) if "val_interval" in parser else 1
    epoch_iters = len(loader)
    spatial_dims = int(parser.get_parsed_content("spatial_dims"))
    conv = conv_flops_per_second(spatial_dims, dtype=dtype)  # the reference in the step's own precision
    conv32 = conv if dtype is None else conv_flops_per_second(spatial_dims)
    compute_s = med["forward"] + med["backward"]
    achieved = flops / compute_s if compute_s else 0.0
    return {
        "bundle": bundle,
        "spatial_dims": spatial_dims,
        "data": described,
        "network": parser.get_parsed_content("network_name"),
        "precision": str(dtype or torch.float32).replace("torch.", ""),
        "batch_shape": batch_shape,
        "n_training_items": len(dataset),
        "iterations_per_epoch": epoch_iters,
        "cache_seconds": cache_s,
        "median_ms": {k: 1000 * v for k, v in med.items()},
        "iteration_ms": 1000 * total,
        "fraction": {k: v / total for k, v in med.items()},
        "validation_seconds": val_s,
        "val_interval": val_interval,
        "validation_fraction_of_training": val_s / (val_s + val_interval * epoch_iters * total),
        "step_gflops": flops / 1e9,
        "step_gflop_per_s": achieved / 1e9,
        "conv_reference": {**conv, "gflop_per_s": conv["flop_per_s"] / 1e9},
        "fraction_of_conv_throughput": achieved / conv["flop_per_s"],
        "conv_reference_float32": {**conv32, "gflop_per_s": conv32["flop_per_s"] / 1e9},
        "fraction_of_float32_conv_throughput": achieved / conv32["flop_per_s"],
        "iterations_timed": iterations,
        "overrides": dict(overrides or {}),
    }


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print(
        "\n| bundle | precision | batch | iteration ms | data % | forward % | backward % | optimizer % | "
        "step GFLOP/s | conv GFLOP/s | of conv | validation s (share) | cache s |"
    )
    print("|---" * 13 + "|")
    for r in rows:
        f = r["fraction"]
        print(
            f"| {r['bundle']} | {r.get('precision', 'float32')} | {'×'.join(map(str, r['batch_shape']))} | "
            f"{r['iteration_ms']:.0f} | "
            f"{100 * f['data']:.0f} | {100 * f['forward']:.0f} | {100 * f['backward']:.0f} | "
            f"{100 * f['optimizer']:.0f} | {r['step_gflop_per_s']:.1f} | {r['conv_reference']['gflop_per_s']:.1f} | "
            f"{100 * r['fraction_of_conv_throughput']:.0f} % | {r['validation_seconds']:.1f} "
            f"({100 * r['validation_fraction_of_training']:.0f} %) | {r['cache_seconds']:.1f} |"
        )
    print(
        f"targets: step >= {100 * TARGET_FLOP_FRACTION:.0f} % of the conv throughput, "
        f"data <= {100 * TARGET_DATA_FRACTION:.0f} % of the iteration"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundles", default=",".join(BUNDLES))
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads (the reference machine has 2 cores)")
    p.add_argument("--work", default=None, help="work folder (default: a temporary folder)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "throughput.json"))
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="bundle setting changed from the defaults, repeatable (e.g. precision=fp32: the float32 step)",
    )
    args = p.parse_args(argv)
    from medmonai.cli.main import _key_values  # the parser of medmonai's own --set

    try:
        overrides: dict[str, Any] = _key_values(args.set, "--set")
    except ValueError as e:
        raise SystemExit(str(e)) from None
    bundles = [b.strip() for b in args.bundles.split(",") if b.strip()]
    unknown = sorted(set(bundles) - set(BUNDLES))
    if unknown:
        raise SystemExit(f"unknown bundle(s) {unknown}; choose from {BUNDLES}")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="medmonai_throughput_") as tmp:
        work = Path(args.work or tmp)
        rows = [profile_bundle(b, work, args.iterations, args.warmup, overrides) for b in bundles]
    print_table(rows)
    result = {
        "benchmark": "training-step profile of the bundles' defaults",
        "command": "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rows": rows,
        "targets": {"fraction_of_conv_throughput": TARGET_FLOP_FRACTION, "data_fraction": TARGET_DATA_FRACTION},
        "machine": {
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        },
    }
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
