"""TorchScript export (``monai.bundle ckpt_export``) of the bundles that tests elsewhere do not export.

The 2D classification and 3D segmentation configurations (tests/bundles/test_classification_bundles.py,
tests/bundles/test_segmentation_bundles.py) are exported there. Here: ``bundles/classification`` with
``spatial_dims 3``, ``bundles/segmentation`` with ``spatial_dims 2`` and the GAN generator, each trained for one
tiny epoch, exported with the arguments of the bundle's docs/README.md, and compared with the checkpoint loaded into
the bundle's own network definition (``torch.load(weights_only=True)``, strict) on a real input: a preprocessed
validation image (through the bundle's sliding-window inferer for segmentation), or real class labels for the
generator.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, run

from tests._bundles import bundle_dir, bundle_of, run_args

pytestmark = pytest.mark.slow  # the whole module: several training runs

REPO = Path(__file__).resolve().parents[2]
TINY = {"n_subjects": 16, "images_per_subject": [1, 2], "test_fraction": 0.25, "seed": 0}
TINY_SEG_2D = {"n_subjects": 12, "images_per_subject": [1, 2], "test_fraction": 0.25, "seed": 0, "fov_mm": 40.0}


def _cfg(bundle: str) -> Path:
    return bundle_dir(bundle) / "configs"


def _train(bundle: str, root: Path, **overrides: Any) -> None:
    run(**run_args(bundle, root, **overrides))


def _parser(bundle: str, root: Path, **overrides: Any) -> ConfigParser:
    """The bundle's training config with the run's overrides (what the export resolves too)."""
    cfg = _cfg(bundle)
    parser = ConfigParser()
    parser.read_config(str(cfg / "train.yaml"))
    parser.read_meta(str(cfg / "metadata.json"))
    parser.update({"bundle_root": str(root), **bundle_of(bundle)[1], **overrides})
    return parser


def _export(bundle: str, out: Path, ckpt: Path, net_id: str = "network_def", **overrides: Any):
    """The documented ``python -m monai.bundle ckpt_export NET_ID --filepath OUT --ckpt_file CKPT --meta_file
    configs/metadata.json --config_file configs/train.yaml --OVERRIDE VALUE...`` (docs/README.md of the bundle)."""
    cfg = _cfg(bundle)
    ckpt_export(
        net_id,
        filepath=str(out),
        ckpt_file=str(ckpt),
        meta_file=str(cfg / "metadata.json"),
        config_file=str(cfg / "train.yaml"),
        **bundle_of(bundle)[1],
        **overrides,
    )
    with zipfile.ZipFile(out) as z:  # the bundle's metadata and config travel inside the TorchScript file
        names = {Path(n).name for n in z.namelist()}
    assert {"metadata.json", "train.json"} <= names, names
    return torch.jit.load(str(out))


def _checkpoint_net(parser: ConfigParser, ckpt: Path, net_id: str = "network_def") -> torch.nn.Module:
    net = parser.get_parsed_content(net_id)
    net.load_state_dict(torch.load(ckpt, weights_only=True))  # strict
    return net.eval()


@pytest.fixture(scope="module")
def cls3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls3d_export")
    overrides = {"phantom": TINY, "spatial_size": [24, 24, 24]}
    _train("classification_3d", root, max_epochs=1, batch_size=4, **overrides)
    return root, overrides


def test_classification_3d_export_matches_checkpoint(cls3d, tmp_path):
    root, overrides = cls3d
    ckpt = root / "runs" / "checkpoints" / "model.pt"
    shape = [1, 1, 24, 24, 24]  # the documented tracing export, then the default (scripting)
    given = {"num_classes": 2, "in_channels": 1, "input_range": [0, 1]}  # not planned from data in the cwd
    traced = _export("classification_3d", tmp_path / "model.ts", ckpt, use_trace=True, input_shape=shape, **given)
    scripted = _export("classification_3d", tmp_path / "scripted.ts", ckpt, **given)
    parser = _parser("classification_3d", root, **overrides)
    net = _checkpoint_net(parser, ckpt)
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    x = torch.stack([torch.as_tensor(preprocessing(e)["image"]) for e in parser.get_parsed_content("val_entries")[:3]])
    assert x.shape[1:] == (1, 24, 24, 24)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(traced(x), expected)
        torch.testing.assert_close(scripted(x), expected)
    assert expected.shape == (3, 2)


def test_segmentation_2d_export_matches_checkpoint_in_sliding_window_inference(tmp_path):
    root = tmp_path / "bundle"
    overrides = {"phantom": TINY_SEG_2D, "base_filters": 4}
    _train("segmentation_2d", root, max_epochs=1, num_samples=1, val_interval=1, val_fraction=0.34, **overrides)
    ckpt = root / "runs" / "checkpoints" / "model.pt"
    parser = _parser("segmentation_2d", root, **overrides)
    plan = parser.get_parsed_content("plan")  # the documented overrides: the plan's patch size and spacing
    export_args = {"roi_size": plan["spatial_size"], "network_spacing": plan["target_spacing"], "base_filters": 4}
    export_args["in_channels"] = 1  # like num_classes: given, not planned from data in the cwd
    exported = _export("segmentation_2d", tmp_path / "model.ts", ckpt, num_classes=2, **export_args)
    net = _checkpoint_net(parser, ckpt)
    entry = parser.get_parsed_content("val_entries")[0]
    x = torch.as_tensor(parser.get_parsed_content("validate#preprocessing")(entry)["image"])[None]
    # the validation's sliding window over the whole image, in float32 (validation wraps it in AutocastInferer)
    inferer = parser.get_parsed_content("validate#inferer#inferer")
    with torch.no_grad():
        expected = inferer(x, net)
        torch.testing.assert_close(inferer(x, exported), expected)
    assert expected.shape[:2] == (1, 2) and expected.shape[2:] == x.shape[2:]


def test_gan_generator_export_matches_checkpoint(tmp_path):
    small = {"phantom": TINY, "spatial_size": [16, 16], "g_channels": 4, "d_channels": 4, "latent_dim": 8}
    root = tmp_path / "bundle"
    _train("gan_augmentation", root, max_epochs=1, epoch_length=2, batch_size=4, **small)
    ckpt = root / "runs" / "checkpoints" / "generator.pt"  # the EMA generator saved when training ends
    net_args = {k: small[k] for k in ("spatial_size", "g_channels", "latent_dim")}  # what the generator was built with
    exported = _export("gan_augmentation", tmp_path / "generator.ts", ckpt, "generator_def", num_classes=2, **net_args)
    parser = _parser("gan_augmentation", root, **small)
    net = _checkpoint_net(parser, ckpt, "generator_def")
    y = torch.tensor([int(e["label"]) for e in parser.get_parsed_content("train_entries")[:6]])
    z = torch.randn(len(y), 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(z, y)
        torch.testing.assert_close(exported(z, y), expected)
    assert expected.shape == (len(y), 1, 16, 16) and expected.abs().max() <= 1.0
