"""AutocastInferer: bfloat16 autocast around any MONAI inferer, float32 outputs and gradients, keys unchanged."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer

from medmonai.engines.precision import AutocastInferer, autocast_dtype


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        self.seen.append(out.dtype)
        return out


def test_bf16_runs_the_network_in_bfloat16_and_returns_float32_with_float32_gradients():
    net = _Net()
    x = torch.randn(2, 1, 8, 8, 8)
    out = AutocastInferer(SimpleInferer(), "bf16", "cpu")(x, net)
    assert net.seen == [torch.bfloat16] and out.dtype == torch.float32
    out.mean().backward()
    assert net.conv.weight.grad is not None and net.conv.weight.grad.dtype == torch.float32
    assert net.conv.weight.dtype == torch.float32  # the master weights stay float32
    ref = SimpleInferer()(x, net)
    assert torch.allclose(out, ref, atol=0.05)  # bfloat16 rounding only


def test_sliding_window_under_autocast_matches_float32():
    net = _Net().eval()
    x = torch.randn(1, 1, 12, 12, 12)
    sw = SlidingWindowInferer(roi_size=(8, 8, 8), sw_batch_size=2, overlap=0.25, mode="gaussian")
    with torch.no_grad():
        out = AutocastInferer(sw, "bf16", "cpu")(x, net)
        ref = sw(x, net)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert torch.allclose(out, ref, atol=0.05)


def test_fp32_is_the_plain_inferer_and_auto_follows_the_device():
    net = _Net()
    out = AutocastInferer(SimpleInferer(), "fp32", "cpu")(torch.randn(1, 1, 4, 4, 4), net)
    assert net.seen == [torch.float32] and out.dtype == torch.float32
    assert autocast_dtype("fp32", "cpu") is None
    assert autocast_dtype("bf16", "cpu") == torch.bfloat16
    assert autocast_dtype("auto", "cpu") in (None, torch.bfloat16)  # bfloat16 exactly where oneDNN supports it
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("fp16", "cpu")
