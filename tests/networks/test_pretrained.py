from __future__ import annotations

import logging

import pytest
import torch
from monai.networks.nets import DenseNet121, resnet10

from medmonai.networks.factory import build_network
from medmonai.networks.pretrained import CheckpointError, extract_state_dict, load_pretrained, read_checkpoint


def _x(in_channels=1, size=32):
    return torch.randn(2, in_channels, size, size, generator=torch.Generator().manual_seed(0))


def test_roundtrip_into_a_model_with_other_num_classes(tmp_path, caplog):
    src = build_network("resnet10", num_classes=2).eval()
    path = tmp_path / "model.pt"
    torch.save(src.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="medmonai.networks.pretrained"):
        dst = build_network("resnet10", num_classes=5, pretrained=path).eval()
    report = dst.load_report
    assert dst.pretrained_source == str(path)
    assert {k for k, _, _ in report.shape_mismatched} == {"head.fc.weight", "head.fc.bias"}
    assert ("head.fc.weight", (2, 512), (5, 512)) in report.shape_mismatched
    assert set(report.loaded) == {k for k in dst.state_dict() if k.startswith("backbone.")}
    assert report.missing == [] and report.unexpected == [] and report.key_transform == ""
    assert not report.ok
    with torch.no_grad():
        torch.testing.assert_close(dst.features(_x()), src.features(_x()))
    assert "shape mismatch" in caplog.text and "head.fc.weight checkpoint [2, 512] vs model [5, 512]" in caplog.text


def test_bare_monai_resnet_state_dict_loads_including_its_fc(tmp_path):
    bare = resnet10(spatial_dims=2, n_input_channels=1, num_classes=3).eval()
    path = tmp_path / "bare.pth"
    torch.save(bare.state_dict(), path)
    model = build_network("resnet10", num_classes=3).eval()
    report = load_pretrained(model, path)
    assert report.ok, report.summary()
    assert report.key_transform == "'' -> 'backbone.'"
    assert "head.fc.weight" in report.loaded  # MONAI's `fc` is matched with the classifier's head
    with torch.no_grad():
        torch.testing.assert_close(model(_x()), bare(_x()))


def test_classifier_checkpoint_loads_back_into_a_bare_monai_network():
    model = build_network("densenet121", num_classes=4).eval()
    bare = DenseNet121(spatial_dims=2, in_channels=1, out_channels=4).eval()
    report = load_pretrained(bare, model.state_dict())
    assert report.ok, report.summary()
    assert "class_layers.out.weight" in report.loaded
    with torch.no_grad():
        torch.testing.assert_close(bare(_x()), model(_x()))


@pytest.mark.parametrize("nest_key", ["state_dict", "model", "network", "net"])
def test_nested_checkpoint_with_ddp_prefixes(tmp_path, nest_key):
    src = build_network("small_cnn", num_classes=2).eval()
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    path = tmp_path / "ckpt.pt"
    torch.save({nest_key: state, "epoch": 7, "optimizer": {"state": {}, "param_groups": []}}, path)
    dst = build_network("small_cnn", num_classes=2).eval()
    report = load_pretrained(dst, path, strict=True)
    assert report.ok and len(report.loaded) == len(dst.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(dst(_x()), src(_x()))


def test_foreign_prefix_is_aligned_and_prefix_map_works():
    src = build_network("small_cnn", num_classes=2)
    state = {
        k.replace("backbone.", "encoder.").replace("head.fc.", "classifier."): v for k, v in src.state_dict().items()
    }
    auto = build_network("small_cnn", num_classes=2)
    report = load_pretrained(auto, state)
    assert report.ok, report.summary()
    assert report.key_transform == "'encoder.' -> 'backbone.'"
    explicit = build_network("small_cnn", num_classes=2)
    report = load_pretrained(explicit, state, prefix_map={"encoder.": "backbone.", "classifier.": "head.fc."})
    assert report.ok and report.key_transform == ""
    torch.testing.assert_close(explicit.head.fc.weight, src.head.fc.weight)


def test_first_conv_adapted_to_other_input_channels():
    rgb = build_network("resnet10", in_channels=3, num_classes=2)
    gray = build_network("resnet10", in_channels=1, num_classes=2)
    report = load_pretrained(gray, rgb.state_dict())
    assert report.adapted == [("backbone.conv1.weight", (64, 3, 7, 7), (64, 1, 7, 7))]
    torch.testing.assert_close(gray.backbone.conv1.weight, rgb.backbone.conv1.weight.sum(1, keepdim=True))
    assert report.ok
    off = build_network("resnet10", in_channels=1, num_classes=2)
    report = load_pretrained(off, rgb.state_dict(), adapt_input_channels=False)
    assert [k for k, _, _ in report.shape_mismatched] == ["backbone.conv1.weight"]


def test_strict_refuses_partial_loads_and_leaves_the_model_untouched():
    src = build_network("small_cnn", num_classes=2)
    dst = build_network("small_cnn", num_classes=5)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(RuntimeError, match="strict loading failed.*head.fc.weight"):
        load_pretrained(dst, src.state_dict(), strict=True)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


def test_torchscript_file_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 3)), path)
    with pytest.raises(CheckpointError, match=r"scripted\.pt: this is a TorchScript archive"):
        load_pretrained(build_network("small_cnn"), path)


def test_pickled_objects_are_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(torch.nn.Linear(2, 3), path)  # a pickled module, not a state dict
    with pytest.raises(CheckpointError, match=r"whole_model\.pt: refused by torch.load\(weights_only=True\)"):
        read_checkpoint(path)


def test_other_unreadable_inputs(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable PyTorch weights file"):
        read_checkpoint(junk)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        read_checkpoint(tmp_path / "missing.pt")
    no_state = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "note": "x"}, no_state)
    with pytest.raises(CheckpointError, match="meta.pt: no state dict found"):
        read_checkpoint(no_state)
    with pytest.raises(CheckpointError, match="no tensor of the checkpoint matches"):
        load_pretrained(build_network("small_cnn"), {"foo.bar": torch.zeros(3)})


def test_extract_state_dict_drops_non_tensors_and_compile_prefix():
    state = extract_state_dict({"model": {"_orig_mod.a.weight": torch.zeros(1), "b": torch.ones(1), "meta": "x"}})
    assert set(state) == {"a.weight", "b"}


def test_report_to_dict_is_json_friendly():
    import json

    report = load_pretrained(build_network("small_cnn", num_classes=3), build_network("small_cnn").state_dict())
    d = report.to_dict()
    assert json.loads(json.dumps(d))["shape_mismatched"][0][0] == "head.fc.weight"
    assert "loaded" in report.summary()
