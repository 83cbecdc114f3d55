from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from medmonai.networks.classifier import batchnorm_layers
from medmonai.networks.efficientnet_lite import lite_preprocess
from medmonai.networks.factory import build_network
from medmonai.networks.transfer import (
    STRATEGIES,
    apply_transfer_strategy,
    bn_layer_similarities,
    choose_strategy,
    domain_similarity,
    trainable_parameter_report,
)

NETS = ["small_cnn", "resnet10", "efficientnet_lite0"]


def ids(params) -> set[int]:
    return {id(p) for p in params}


def expected_trainable(model, strategy, n_late=1) -> set[int]:
    head = ids(model.head.parameters())
    stages = [ids(s.parameters()) for s in model.stages]
    everything = ids(model.parameters())
    return {
        "scratch": everything,
        "finetune_all": everything,
        "feature_extractor": head,
        "finetune_head": head | ids(model.feature_block.parameters()),
        "finetune_late": head.union(*stages[-n_late:]),
        "finetune_all_but_early": everything - stages[0] - stages[1],
    }[strategy]


def bn_snapshot(model) -> dict[str, torch.Tensor]:
    return {n: m.running_mean.clone() for n, m in batchnorm_layers(model)}


def train_step(model, size=32):
    model.train()
    x = torch.randn(4, model.in_channels, size, size)
    model(x).sum().backward()


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "auto"])
def test_strategy_trainable_parameters_groups_and_batchnorm(name, strategy):
    model = build_network(name, num_classes=3)
    groups = apply_transfer_strategy(model, strategy, lr=0.01, backbone_lr_scale=0.1)
    expected = expected_trainable(model, strategy)
    # exactly the expected parameters require gradients
    assert ids(p for p in model.parameters() if p.requires_grad) == expected
    # ... and exactly those are in the optimizer groups, each once, with the right learning rates
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(ids(grouped)) and ids(grouped) == expected
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == 0.01 and ids(by_name["head"]["params"]) == ids(model.head.parameters())
    if strategy == "feature_extractor":
        assert set(by_name) == {"head"}
    else:
        assert by_name["backbone"]["lr"] == pytest.approx(0.01 if strategy == "scratch" else 0.001)

    # BatchNorm statistics: frozen exactly where the parameters are frozen, whatever model.train() says
    trainable_bn = {n for n, m in batchnorm_layers(model) if all(p.requires_grad for p in m.parameters())}
    frozen_bn = {n for n, _ in batchnorm_layers(model)} - trainable_bn
    assert set(model.frozen_batchnorm_names()) == frozen_bn
    before = bn_snapshot(model)
    train_step(model)
    after = bn_snapshot(model)
    for n in frozen_bn:
        assert torch.equal(before[n], after[n]), f"{n} running stats changed although frozen"
    for n in trainable_bn:
        assert not torch.equal(before[n], after[n]), f"{n} running stats did not update"
    if strategy in ("scratch", "finetune_all"):
        assert not frozen_bn
    else:
        assert frozen_bn

    # an optimizer step only moves the trainable parameters
    frozen = [p for p in model.parameters() if not p.requires_grad]
    frozen_before = [p.detach().clone() for p in frozen]
    torch.optim.SGD(groups, lr=0.01).step()
    assert all(torch.equal(a, b) for a, b in zip(frozen_before, frozen))
    assert all(p.grad is None for p in frozen)

    info = model.transfer_info
    assert info["strategy"] == strategy and info["requested"] == strategy
    assert info["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert info["features_cacheable"] == (strategy == "feature_extractor")


def test_finetune_head_definition_per_family():
    lite = build_network("efficientnet_lite0")
    apply_transfer_strategy(lite, "finetune_head")
    trainable_backbone = {n for n, p in lite.backbone.named_parameters() if p.requires_grad}
    assert trainable_backbone == {"_conv_head.weight", "_bn1.weight", "_bn1.bias"}
    assert lite.backbone._bn1.training is True and lite.backbone._bn0.training is False  # BN of the head conv adapts
    resnet = build_network("resnet10")
    apply_transfer_strategy(resnet, "finetune_head")
    trainable_backbone = {n for n, p in resnet.backbone.named_parameters() if p.requires_grad}
    assert trainable_backbone == {n for n, _ in resnet.backbone.named_parameters() if n.startswith("layer4.0.")}


@pytest.mark.parametrize("n_late", [1, 2, 3])
def test_finetune_late_n_stages(n_late):
    model = build_network("resnet10")
    apply_transfer_strategy(model, "finetune_late", n_late_stages=n_late)
    assert ids(p for p in model.parameters() if p.requires_grad) == expected_trainable(model, "finetune_late", n_late)
    assert model.transfer_info["frozen_stages"] == model.stage_names[: 5 - n_late]
    with pytest.raises(ValueError, match="n_late_stages must be in \\[1, 5\\]"):
        apply_transfer_strategy(model, "finetune_late", n_late_stages=6)


def test_feature_extractor_features_are_deterministic_in_train_mode():
    model = build_network("efficientnet_lite0", pretrained="imagenet", dropout=0.5)
    apply_transfer_strategy(model, "feature_extractor")
    x = torch.randn(3, 1, 48, 48)
    model.train()
    assert model.training and model.head.training  # the head trains (dropout active)
    assert not model.backbone.training and not any(m.training for m in model.backbone.modules())
    with torch.no_grad():
        f_train = model.features(x)
        f_eval = model.eval().features(x)
    torch.testing.assert_close(f_train, f_eval)  # no BN batch statistics, no stochastic depth: cacheable


def test_switching_strategy_unfreezes_first():
    model = build_network("small_cnn")
    apply_transfer_strategy(model, "feature_extractor")
    apply_transfer_strategy(model, "finetune_all")
    assert all(p.requires_grad for p in model.parameters())
    assert model.frozen_batchnorm_names() == []
    model.train()
    assert all(m.training for m in model.modules())


def test_unknown_strategy_and_wrong_model():
    with pytest.raises(ValueError, match="unknown transfer strategy 'frozen'.*feature_extractor"):
        apply_transfer_strategy(build_network("small_cnn"), "frozen")
    with pytest.raises(TypeError, match="Classifier"):
        apply_transfer_strategy(torch.nn.Linear(2, 2), "scratch")


def test_scratch_on_pretrained_warns(caplog):
    model = build_network("efficientnet_lite0", pretrained="imagenet")
    with caplog.at_level(logging.WARNING, logger="medmonai.networks.transfer"):
        apply_transfer_strategy(model, "scratch")
    assert "not re-initialised" in caplog.text


@pytest.mark.parametrize(
    "n_train,similarity,expected",
    [
        (200, 0.9, "feature_extractor"),
        (200, 0.2, "finetune_late"),
        (5000, 0.9, "finetune_all_but_early"),
        (5000, 0.2, "finetune_all"),
    ],
)
def test_choose_strategy_quadrants(n_train, similarity, expected):
    strategy, reason = choose_strategy(n_train, similarity)
    assert strategy == expected
    assert f"n_train={n_train}" in reason and f"similarity={similarity:.3f}" in reason and expected in reason


def test_choose_strategy_thresholds_are_arguments():
    assert choose_strategy(999, 0.6)[0] == "feature_extractor"  # defaults: small < 1000, similar >= 0.6
    assert choose_strategy(1000, 0.6)[0] == "finetune_all_but_early"
    assert choose_strategy(200, 0.59)[0] == "finetune_late"
    assert choose_strategy(200, 0.59, small_data_max=100, similarity_threshold=0.5)[0] == "finetune_all_but_early"
    with pytest.raises(ValueError):
        choose_strategy(10, 1.5)


@pytest.fixture(scope="module")
def lite_rgb():
    return build_network("efficientnet_lite0", in_channels=3, pretrained="imagenet")


@pytest.fixture(scope="module")
def natural_sample():
    g = torch.Generator().manual_seed(0)
    crops = []
    for img in (skimage_data.chelsea(), skimage_data.astronaut(), skimage_data.coffee(), skimage_data.rocket()):
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        h, w = (int(0.6 * s) for s in x.shape[1:])
        for _ in range(6):
            y0 = int(torch.randint(0, x.shape[1] - h + 1, (1,), generator=g))
            x0 = int(torch.randint(0, x.shape[2] - w + 1, (1,), generator=g))
            crops.append(lite_preprocess(x[:, y0 : y0 + h, x0 : x0 + w], size=128))
    return torch.stack(crops)


def test_domain_similarity_natural_vs_noise(lite_rgb, natural_sample):
    natural = domain_similarity(lite_rgb, natural_sample)
    noise = domain_similarity(lite_rgb, torch.randn(16, 3, 128, 128) * 0.5)
    assert 0.75 < natural <= 1.0  # measured 0.88
    assert 0.0 <= noise < 0.2  # measured 0.08
    # batches, dict batches and (image, label) tuples give the same number
    batches = [{"image": natural_sample[:12]}, {"image": natural_sample[12:]}]
    assert domain_similarity(lite_rgb, batches) == pytest.approx(natural, rel=1e-6)
    assert domain_similarity(lite_rgb, [(natural_sample, None)]) == pytest.approx(natural, rel=1e-6)
    per_layer = bn_layer_similarities(lite_rgb, natural_sample, n_layers=3)
    assert list(per_layer) == ["_bn0", "_blocks.0._bn1", "_blocks.0._bn2"]  # the first three to run
    assert all(0 <= v <= 1 for v in per_layer.values())


def test_domain_similarity_leaves_the_model_untouched(lite_rgb, natural_sample):
    before = bn_snapshot(lite_rgb)
    lite_rgb.train()
    domain_similarity(lite_rgb, natural_sample[:4])
    assert lite_rgb.training
    assert all(torch.equal(before[n], v) for n, v in bn_snapshot(lite_rgb).items())


def test_domain_similarity_needs_pretrained_statistics():
    with pytest.raises(ValueError, match="not pretrained"):
        domain_similarity(build_network("efficientnet_lite0"), torch.randn(2, 1, 32, 32))


def test_auto_similar_small_data_is_feature_extractor(natural_sample, caplog):
    model = build_network("efficientnet_lite0", in_channels=3, num_classes=2, pretrained="imagenet")
    with caplog.at_level(logging.INFO, logger="medmonai.networks.transfer"):
        groups = apply_transfer_strategy(model, "auto", n_train=300, sample=natural_sample)
    info = model.transfer_info
    assert info["requested"] == "auto" and info["strategy"] == "feature_extractor"
    assert "n_train=300" in info["reason"] and "similarity=" in info["reason"]
    assert info["similarity"] > 0.6 and len(info["similarity_per_layer"]) == len(batchnorm_layers(model.backbone))
    assert [g["name"] for g in groups] == ["head"]
    assert "transfer strategy auto: n_train=300" in caplog.text


def test_auto_dissimilar_data(lite_rgb):
    model = build_network("efficientnet_lite0", in_channels=3, pretrained="imagenet")
    noise = torch.randn(8, 3, 64, 64) * 0.5
    apply_transfer_strategy(model, "auto", n_train=300, sample=noise)
    assert model.transfer_info["strategy"] == "finetune_late"
    apply_transfer_strategy(model, "auto", n_train=20000, sample=noise)
    assert model.transfer_info["strategy"] == "finetune_all"
    apply_transfer_strategy(model, "auto", n_train=20000, similarity=0.95)
    assert model.transfer_info["strategy"] == "finetune_all_but_early"


def test_auto_without_pretrained_weights_is_scratch():
    model = build_network("small_cnn")
    apply_transfer_strategy(model, "auto", n_train=100)
    assert model.transfer_info["strategy"] == "scratch" and "no pretrained weights" in model.transfer_info["reason"]


def test_auto_needs_n_train_and_data():
    model = build_network("efficientnet_lite0", pretrained="imagenet")
    with pytest.raises(ValueError, match="n_train"):
        apply_transfer_strategy(model, "auto", sample=torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="sample"):
        apply_transfer_strategy(model, "auto", n_train=10)


def test_trainable_parameter_report():
    model = build_network("resnet10", num_classes=2)
    apply_transfer_strategy(model, "finetune_all_but_early")
    rep = trainable_parameter_report(model)
    assert rep["total"] == sum(p.numel() for p in model.parameters())
    assert rep["stages"]["stem"]["trainable"] == 0 and rep["stages"]["layer1"]["trainable"] == 0
    assert rep["stages"]["layer2"]["trainable"] == rep["stages"]["layer2"]["params"] > 0
    assert rep["head"] == {"params": 512 * 2 + 2, "trainable": 512 * 2 + 2}
    assert rep["trainable"] + rep["frozen"] == rep["total"]
    assert rep["frozen_batchnorm_layers"] == 1 + 2  # stem BN + the two BN of layer1's block


@pytest.mark.shared_data
def test_medmnist_is_less_similar_than_natural_photos(shared_data, lite_rgb, natural_sample):
    path = shared_data / "medmnist" / "breastmnist.npz"
    if not path.is_file():
        pytest.skip(f"real data not available: {path} does not exist")
    images = torch.from_numpy(np.load(path)["train_images"][:32]).float()[:, None]
    gray = build_network("efficientnet_lite0", in_channels=1, pretrained="imagenet")
    medical = domain_similarity(gray, lite_preprocess(images, size=128))
    assert medical < 0.6 < domain_similarity(lite_rgb, natural_sample)  # measured 0.46 vs 0.88


def test_deepcopy_keeps_freezing_and_stage_views():
    import copy

    model = build_network("resnet10")
    apply_transfer_strategy(model, "finetune_late")
    clone = copy.deepcopy(model)
    own = ids(clone.parameters())
    assert all(id(p) in own for s in clone.stages for p in s.parameters())
    assert clone.frozen_batchnorm_names() == model.frozen_batchnorm_names()
    clone.train()
    assert not clone.backbone.layer1.training and clone.backbone.layer4.training


def test_strategy_from_a_bundle_config():
    from monai.bundle import ConfigParser

    config = {
        "network": {
            "_target_": "medmonai.networks.factory.build_network",
            "name": "resnet10",
            "num_classes": 2,
        },
        "optimizer": {
            "_target_": "torch.optim.AdamW",
            "params": {
                "_target_": "medmonai.networks.transfer.apply_transfer_strategy",
                "model": "@network",
                "strategy": "finetune_late",
                "lr": 0.001,
                "backbone_lr_scale": 0.2,
            },
            "lr": 0.001,
        },
    }
    parser = ConfigParser(config)
    optimizer = parser.get_parsed_content("optimizer")
    network = parser.get_parsed_content("network")
    assert [(g["name"], g["lr"]) for g in optimizer.param_groups] == [
        ("head", 0.001),
        ("backbone", pytest.approx(2e-4)),
    ]
    # no weight_decay in the groups unless asked: the optimizer's own value (AdamW default 0.01) applies
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.01]
    assert network.transfer_info["strategy"] == "finetune_late"
    assert not any(p.requires_grad for p in network.backbone.layer3.parameters())


def test_weight_decay_per_group_when_given():
    groups = apply_transfer_strategy(build_network("small_cnn"), "finetune_all", weight_decay=0.05)
    optimizer = torch.optim.AdamW(groups, lr=1.0, weight_decay=0.0)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.05]
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, pytest.approx(1e-4)]
