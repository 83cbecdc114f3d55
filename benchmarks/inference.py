"""CPU inference latency of the bundles' networks: PyTorch eager, TorchScript and ONNX Runtime, in one run.

For each bundle configuration (classification_2d / _3d, segmentation_2d / _3d: ``bundles/classification`` and
``bundles/segmentation`` in 2D and 3D) the network is built from the bundle's own config
with its default settings and the preprocessing plan of its default phantom data set (generated and fingerprinted in
``--work``, a temporary folder by default; the plan fixes the input size: classification the planned image size,
segmentation the planned patch, which for the phantoms covers the median image), untrained (latency does not depend
on the weights). One input ``(1, C, *planned size)``, i.e. one preprocessed 2D image or 3D volume, is run

* ``torch``: PyTorch eager, ``torch.no_grad()``;
* ``torchscript``: ``torch.jit.trace`` of the same network;
* ``onnxruntime``: the network exported by :func:`medmonai.deploy.onnx.export_network_onnx` (opset 18, dynamic
  batch), ONNX Runtime's CPUExecutionProvider;

``--warmup`` times untimed, then ``--repeats`` rounds that time each runtime once (``time.perf_counter`` around
one forward pass; the order rotates from round to round, so that other load on the machine hits every runtime
alike); the table gives the median and the 90th percentile in ms, the threads used (``torch.set_num_threads`` and ONNX
Runtime's ``intra_op_num_threads``, both ``--threads``), and the largest difference of each runtime's output from
eager's. Preprocessing (reading DICOM, resampling) and sliding-window overhead are not included: only the network.

    PYTHONPATH=. python benchmarks/inference.py                    # writes benchmarks/results/inference.json
    PYTHONPATH=. python benchmarks/inference.py --quick --out /tmp/inference.json
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from medmonai.bundles import ALIASES  # noqa: E402
from medmonai.deploy.onnx import DEFAULT_OPSET, OnnxRuntimeNetwork, _versions, export_network_onnx  # noqa: E402
from medmonai.utils import atomic_write_json  # noqa: E402

__all__ = ["BUNDLES", "RUNTIMES", "build_network", "time_forward", "table", "main"]

BUNDLES: tuple[str, ...] = ("classification_2d", "classification_3d", "segmentation_2d", "segmentation_3d")
RUNTIMES: tuple[str, ...] = ("torch", "torchscript", "onnxruntime")
#: --quick: a few phantom subjects (the plan's image size does not depend on how many)
QUICK_PHANTOM = {"n_subjects": 6, "images_per_subject": [1, 1], "test_fraction": 0.34, "seed": 0}


def build_network(bundle: str, work: Path, phantom: dict[str, Any] | None = None) -> tuple[torch.nn.Module, dict]:
    """The bundle's default network for its default phantom plan (untrained), and a description."""
    from monai.bundle import ConfigParser

    folder, dims = ALIASES[bundle]
    cfg = REPO / "bundles" / folder / "configs"
    parser = ConfigParser()
    parser.read_config(str(cfg / "train.yaml"))
    parser.read_meta(str(cfg / "metadata.json"))
    parser["bundle_root"] = str(work / bundle)
    parser["spatial_dims"] = dims
    if phantom is not None:
        parser["phantom"] = phantom
    plan = parser.get_parsed_content("plan")
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    shape = [int(parser.get_parsed_content("in_channels")), *(int(s) for s in plan["spatial_size"])]
    info = {
        "bundle": bundle,
        "network": str(parser.get_parsed_content("network_name")),
        "spatial_dims": int(parser.get_parsed_content("spatial_dims")),
        "input_shape": [1, *shape],
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "phantom": dict(parser.get_parsed_content("phantom")),
    }
    return net, info


def _stats(times_ms: Sequence[float], warmup: int) -> dict[str, float]:
    a = np.asarray(times_ms)
    return {
        "median_ms": float(np.median(a)),
        "p90_ms": float(np.percentile(a, 90)),
        "min_ms": float(a.min()),
        "mean_ms": float(a.mean()),
        "repeats": int(a.size),
        "warmup": warmup,
    }


def time_forward(calls: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> dict[str, dict[str, float]]:
    """Latency statistics in ms (median, p90, min, mean) of each callable, timed interleaved.

    Every callable is called ``warmup`` times untimed, then ``repeats`` rounds time each callable once, in an order
    rotated from round to round, so that a load change on a shared machine affects every runtime alike.
    """
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - t0) * 1000.0)
    return {n: _stats(times[n], warmup) for n in names}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_bundle(bundle: str, work: Path, threads: int, warmup: int, repeats: int, phantom: dict | None) -> list[dict]:
    """The three runtimes on one bundle's network; one row per runtime."""
    net, info = build_network(bundle, work, phantom)
    x = torch.randn(info["input_shape"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants: fixed shape
        ref = net(x).numpy()
        traced = torch.jit.trace(net, x, check_trace=False)
    onnx_file = work / f"{bundle}.onnx"
    export_network_onnx(net, torch.cat([x, x]), onnx_file, DEFAULT_OPSET)
    ort_net = OnnxRuntimeNetwork(onnx_file, threads=threads)
    calls = {"torch": lambda: net(x), "torchscript": lambda: traced(x), "onnxruntime": lambda: ort_net(x)}
    rows = []
    with torch.no_grad():
        diffs = {r: float(np.abs(calls[r]().numpy() - ref).max()) for r in RUNTIMES}
        timed = time_forward(calls, warmup, repeats)
    for runtime in RUNTIMES:
        stats, diff = timed[runtime], diffs[runtime]
        kind = "2D image" if info["spatial_dims"] == 2 else "3D volume"
        rows.append({**info, "per": kind, "runtime": runtime, **stats, "max_abs_diff_vs_torch": diff})
        print(f"  {bundle:18s} {runtime:12s} median {stats['median_ms']:8.2f} ms  p90 {stats['p90_ms']:8.2f} ms")
    return rows


def table(rows: Sequence[dict]) -> str:
    """Markdown table of the rows."""
    lines = [
        "| bundle | network | per | input | runtime | median ms | p90 ms | max abs diff vs eager |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        shape = "×".join(str(s) for s in r["input_shape"][1:])
        lines.append(
            f"| {r['bundle']} | {r['network']} | {r['per']} | {shape} | {r['runtime']} | {r['median_ms']:.2f} | "
            f"{r['p90_ms']:.2f} | {r['max_abs_diff_vs_torch']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundles", default=",".join(BUNDLES), help="comma-separated (default: all four)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="untimed forward passes (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=50, help="timed forward passes (default: %(default)s)")
    p.add_argument("--work", default=None, help="phantom data and plans (default: a temporary folder)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "inference.json"), help="JSON output")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny phantom sets, 1 warm-up, 3 repeats")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")
    warmup, repeats = (1, 3) if args.quick else (args.warmup, args.repeats)
    phantom = QUICK_PHANTOM if args.quick else None
    torch.set_num_threads(args.threads)
    bundles = [b.strip() for b in args.bundles.split(",") if b.strip()]
    unknown = sorted(set(bundles) - set(BUNDLES))
    if unknown:
        p.error(f"unknown bundle(s) {unknown}; choose from {list(BUNDLES)}")
    t0 = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="medmonai_bench_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for bundle in bundles:
            rows.extend(bench_bundle(bundle, work, args.threads, warmup, repeats, phantom))
    result = {
        "benchmark": "inference latency per preprocessed 2D image / 3D volume (network forward pass only), CPU",
        "command": "python benchmarks/inference.py" + (" --quick" if args.quick else ""),
        "quick": bool(args.quick),
        "threads": args.threads,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "versions": _versions(),
        "opset": DEFAULT_OPSET,
        "warmup": warmup,
        "repeats": repeats,
        "batch_size": 1,
        "timing": "interleaved: each repeat times every runtime once, in a rotated order",
        "load_average_1min": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
        "weights": "untrained (random init, seed 0): latency does not depend on the weights",
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(args.out, result)
    print(
        f"\nCPU: {result['cpu']} ({os.cpu_count()} cores), {args.threads} thread(s), {warmup} warm-up, {repeats} "
        f"repeats, batch 1, load average {load_before} -> {result['load_average_1min']['after']}\n"
    )
    print(table(rows))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
