"""The throughput benchmark's FLOP accounting: a known convolution's forward + backward FLOPs, and a clear error."""

from __future__ import annotations

import pytest
import torch

from benchmarks.throughput import conv_flops_per_second, main, step_flops


def test_step_flops_counts_forward_and_backward_of_a_convolution():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 16, 16)
    y = torch.randn(2, 8, 16, 16)
    forward = 2 * 2 * 8 * 16 * 16 * 3 * 3 * 3  # 2 FLOPs per multiply-add, every output voxel, every input channel
    flops = step_flops(conv, torch.nn.functional.mse_loss, x, y)
    assert flops == 2 * forward  # forward + the weight gradient (the input needs no gradient)
    assert conv.weight.grad is None  # cleared again


def test_conv_reference_and_unknown_bundle():
    ref = conv_flops_per_second(2, repeats=1)
    assert ref["dtype"] == "float32"
    bf16 = conv_flops_per_second(2, repeats=1, dtype=torch.bfloat16)  # the reference of a bfloat16-autocast step
    assert bf16["dtype"] == "bfloat16" and bf16["flops"] == ref["flops"]  # the same operations, counted alike
    assert ref["flops"] > 0 and ref["seconds"] > 0 and ref["flop_per_s"] == pytest.approx(ref["flops"] / ref["seconds"])
    with pytest.raises(SystemExit, match="unknown bundle"):
        main(["--bundles", "detection"])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        main(["--set", "precision"])
