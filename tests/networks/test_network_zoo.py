"""The larger members of each network family (separate files: building them takes most of the time)."""

from __future__ import annotations

import pytest

from medmonai.networks.factory import NETWORKS
from tests.networks.test_factory import LARGE, check_builds

NAMES = ["resnet34", "resnet50", "efficientnet-b1", "efficientnet-b2", "efficientnet-b3", "efficientnet-b4"]
CASES = [(name, dims) for name in NAMES for dims in NETWORKS[name].spatial_dims]


def test_large_set_is_covered():
    from tests.networks.test_network_zoo_xl import NAMES as XL

    assert set(NAMES) | set(XL) == LARGE


@pytest.mark.parametrize("name,dims", CASES)
def test_large_network_builds_and_outputs_logits(name, dims):
    check_builds(name, dims)
