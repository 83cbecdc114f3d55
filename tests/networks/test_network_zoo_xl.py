"""EfficientNet-B5..B7 (the slowest to build), with both channel and class counts in 2D and 3D."""

from __future__ import annotations

import pytest

from medmonai.networks.factory import NETWORKS
from tests.networks.test_factory import check_builds

NAMES = ["efficientnet-b5", "efficientnet-b6", "efficientnet-b7"]
CASES = [(name, dims) for name in NAMES for dims in NETWORKS[name].spatial_dims]


@pytest.mark.parametrize("name,dims", CASES)
def test_xl_network_builds_and_outputs_logits(name, dims):
    check_builds(name, dims)
