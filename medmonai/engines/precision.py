"""Mixed-precision training and validation on CPU and GPU: an inferer that runs the network under ``torch.autocast``.

MONAI's engines take ``amp=True`` for CUDA only (``torch.autocast("cuda")`` with a float16 ``GradScaler``). On a CPU
with native bfloat16 arithmetic (x86 AVX512-BF16 or AMX, which oneDNN uses for convolutions and matrix products) the
forward and backward pass of a 3D U-Net run about 2.5 times faster in bfloat16 autocast than in float32 (measured
with ``benchmarks/throughput.py``); bfloat16 has float32's exponent range, so no loss scaling is needed. The weights,
their gradients, the optimizer state and the loss stay float32: :class:`AutocastInferer` wraps any MONAI inferer
(``SimpleInferer`` for training, ``SlidingWindowInferer`` for validation), runs it under autocast and returns float32
outputs, so the loss, the metrics and the sliding-window aggregation are computed in float32 and nothing else in the
bundle changes (checkpoints keep the network's own keys).

``precision``:

* ``"auto"``: bfloat16 where the device computes it natively (a CPU for which oneDNN reports bfloat16 support, a
  CUDA device with ``torch.cuda.is_bf16_supported()``), else float32;
* ``"bf16"``: bfloat16 autocast on any device (emulated, hence slower, on CPUs without native support);
* ``"fp32"``: no autocast.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["PRECISIONS", "AutocastInferer", "autocast_dtype", "native_bf16"]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 convolutions natively (oneDNN's check on CPU, CUDA's on GPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN's check: float32, the safe side
            return False
    return False


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype that ``precision`` means on ``device`` (None: float32, no autocast).

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16" or native_bf16(device):
        return torch.bfloat16
    return None


def _to_float32(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
    if isinstance(out, Mapping):
        return type(out)({k: _to_float32(v) for k, v in out.items()})
    if isinstance(out, Sequence) and not isinstance(out, str):
        return type(out)(_to_float32(v) for v in out)
    return out


class AutocastInferer(Inferer):
    """Run another inferer under ``torch.autocast`` (see the module docstring) and return float32 outputs.

    Args:
        inferer: the MONAI inferer to wrap (``SimpleInferer``, ``SlidingWindowInferer``, ...).
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"``.
        device: the device the network runs on (its type is autocast's ``device_type``).
    """

    def __init__(self, inferer: Inferer, precision: str = "auto", device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.inferer = inferer
        self.device = torch.device(device)
        self.dtype = autocast_dtype(precision, self.device)
        self.precision = precision
        logger.info(
            f"precision {precision!r} on {self.device.type}: "
            + (f"{self.dtype} autocast" if self.dtype is not None else "float32")
        )

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        """The wrapped inferer's output for ``inputs``, computed under autocast, as float32."""
        if self.dtype is None:
            return self.inferer(inputs, network, *args, **kwargs)
        with torch.autocast(self.device.type, dtype=self.dtype):
            out = self.inferer(inputs, network, *args, **kwargs)
        return _to_float32(out)
