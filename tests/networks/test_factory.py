from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser
from monai.networks.nets import EfficientNetBN

from medmonai.networks.classifier import Classifier
from medmonai.networks.factory import NETWORKS, build_network, canonical_name, list_networks

EXPECTED_NAMES = {
    "small_cnn",
    "resnet10",
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
    "efficientnet_lite0",
    *(f"efficientnet-b{i}" for i in range(8)),
}
# the large members of each family are built in test_network_zoo.py (kept in a separate file for speed)
LARGE = {"resnet34", "resnet50", *(f"efficientnet-b{i}" for i in range(1, 8))}
CASES = [(name, dims) for name, spec in NETWORKS.items() for dims in spec.spatial_dims if name not in LARGE]


def input_size(name: str, dims: int) -> int:
    return max(NETWORKS[name].min_size, 16 if dims == 2 else 8)


def check_builds(name: str, dims: int) -> None:
    # (in_channels, num_classes) = (1, 2) and (3, 5): both channel counts and both class counts are covered
    for in_channels, num_classes in ((1, 2), (3, 5)):
        model = build_network(name, spatial_dims=dims, in_channels=in_channels, num_classes=num_classes).eval()
        assert isinstance(model, Classifier)
        assert model.name == name and model.pretrained_source is None
        x = torch.randn(2, in_channels, *([input_size(name, dims)] * dims))
        with torch.no_grad():
            feats = model.features(x)
            out = model(x)
        assert feats.shape == (2, model.feature_dim)
        assert out.shape == (2, num_classes)
        assert torch.isfinite(out).all()
        assert model.head.fc.in_features == model.feature_dim and model.head.fc.out_features == num_classes


def test_registry_lists_every_network():
    assert set(list_networks()) == EXPECTED_NAMES
    assert NETWORKS["efficientnet_lite0"].spatial_dims == (2,)
    assert NETWORKS["efficientnet_lite0"].pretrained == ("imagenet",)
    assert all(spec.spatial_dims == (2, 3) for n, spec in NETWORKS.items() if n != "efficientnet_lite0")


@pytest.mark.parametrize("name,dims", CASES)
def test_every_network_builds_and_outputs_logits(name, dims):
    check_builds(name, dims)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "densenet121", "efficientnet-b0", "efficientnet_lite0"])
def test_stages_partition_the_backbone(name):
    model = build_network(name)
    backbone = {id(p) for p in model.backbone.parameters()}
    per_stage = [{id(p) for p in s.parameters()} for s in model.stages]
    assert set().union(*per_stage) == backbone  # every backbone parameter is in a stage
    assert sum(map(len, per_stage)) == len(backbone)  # ... in exactly one
    assert len(model.stage_names) == len(model.stages) >= 4 and model.stage_names[0] == "stem"
    block = {id(p) for p in model.feature_block.parameters()}
    assert block and block <= per_stage[-1]
    # stages are views, not extra registered modules: no duplicated state dict keys
    assert all(k.startswith(("backbone.", "head.")) for k in model.state_dict())


def test_stage_layout_of_known_networks():
    r = build_network("resnet18")
    assert r.stage_names == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert r.stages[1] is r.backbone.layer1 and r.feature_block is r.backbone.layer4[-1]
    e = build_network("efficientnet-b0")
    assert len(e.stages) == 8  # stem + 7 MBConv stages (the 1x1 head conv belongs to the last one)
    assert list(e.feature_block) == [e.backbone._conv_head, e.backbone._bn1]
    lite = build_network("efficientnet_lite0")
    assert len(lite.stages) == 8 and lite.feature_dim == 1280


@pytest.mark.parametrize("size", [8, 28, 61])
def test_monai_efficientnet_accepts_small_inputs(size):
    # MONAI's static padding (computed for 224 px) fails below ~33 px; the factory makes it follow the input
    model = build_network("efficientnet-b0", in_channels=1, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, size, size)).shape == (2, 3)


def test_dynamic_padding_equals_monai_at_the_nominal_size():
    model = build_network("efficientnet-b0", in_channels=1).eval()
    ref = EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=1, num_classes=1).eval()
    ref._fc = torch.nn.Identity()
    ref.load_state_dict(model.backbone.state_dict())
    x = torch.randn(1, 1, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), ref(x))


def test_kwargs_reach_the_constructor():
    model = build_network("small_cnn", channels=(8, 16), num_classes=3)
    assert model.feature_dim == 16 and len(model.stages) == 2
    r = build_network("resnet10", no_max_pool=True, conv1_t_stride=2)
    assert r.backbone.no_max_pool and r.backbone.conv1.stride == (2, 2)


def test_names_are_case_and_separator_insensitive():
    assert canonical_name("EfficientNet-Lite0") == "efficientnet_lite0"
    assert canonical_name("efficientnet_b3") == "efficientnet-b3"
    assert build_network("Small-CNN").name == "small_cnn"


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown network 'vgg16'.*resnet18"):
        build_network("vgg16")
    with pytest.raises(ValueError, match="supports spatial_dims \\(2,\\)"):
        build_network("efficientnet_lite0", spatial_dims=3)
    with pytest.raises(ValueError, match="'imagenet' is not available for 'resnet18'.*efficientnet_lite0"):
        build_network("resnet18", pretrained="imagenet")
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        build_network("resnet18", pretrained="/nowhere.pt")
    with pytest.raises(ValueError, match="not True"):
        build_network("resnet18", pretrained=True)
    with pytest.raises(ValueError, match="dropout"):
        build_network("small_cnn", dropout=1.5)


def test_dropout_goes_to_the_head():
    model = build_network("efficientnet-b0", dropout=0.3)
    assert model.head.dropout.p == 0.3
    assert isinstance(model.backbone._dropout, torch.nn.Identity)


def test_buildable_from_a_bundle_config():
    config = {
        "network_def": {
            "_target_": "medmonai.networks.factory.build_network",
            "name": "resnet10",
            "spatial_dims": 3,
            "in_channels": 1,
            "num_classes": 4,
            "dropout": 0.1,
        }
    }
    parser = ConfigParser(config)
    model = parser.get_parsed_content("network_def")
    assert isinstance(model, Classifier) and model.spatial_dims == 3
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 16, 16, 16)).shape == (1, 4)


def test_input_affine_maps_inputs_before_the_backbone():
    import torch

    from medmonai.networks.factory import build_network as bn

    torch.manual_seed(0)
    plain = bn("small_cnn", spatial_dims=2, in_channels=1, num_classes=2).eval()
    mapped = bn("small_cnn", spatial_dims=2, in_channels=1, num_classes=2, input_affine=(2, -1)).eval()
    mapped.load_state_dict(plain.state_dict())  # same keys: the affine is not in the state dict
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(mapped(x), plain(x * 2 - 1))
        torch.testing.assert_close(mapped.features(x), plain.features(x * 2 - 1))
