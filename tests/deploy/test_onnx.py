"""ONNX export of every bundle's network, checked against the checkpoint, and ``medmonai infer --runtime onnx``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort
import onnxscript  # noqa: F401 - the exporter needs it (the onnx extra, in dev): a broken install fails here
import pytest
import torch
from monai.bundle import ConfigParser

from medmonai.cli.main import main
from medmonai.data.dicom_output import read_classification_sr
from medmonai.deploy.models import load_clinical_model
from medmonai.deploy.onnx import OnnxRuntimeNetwork, export_generator_onnx, export_onnx, sample_inputs
from medmonai.deploy.pipeline import infer_dicom
from tests.deploy._clinical_data import (
    SEG_FAST,
    _run,
    bundle_dir,
    checksums,
    copy_study,
    subject_dirs,
    trained_segmenter,
)

CLS = bundle_dir("classification_2d")
SEG = bundle_dir("segmentation_2d")
TINY = {"n_subjects": 12, "images_per_subject": [1, 2], "test_fraction": 0.25, "seed": 0}
TINY_3D_SEG = {**TINY, "fov_mm": 32.0, "inplane_spacing_mm": [2.0, 2.0], "slice_spacing_mm": [2.0, 3.0]}
SEG_OVERRIDES = {"base_filters": SEG_FAST["base_filters"]}


def _checkpoint_reference(bundle: Path, root: Path, x: torch.Tensor, **overrides) -> np.ndarray:
    """The checkpoint's output, with the network loaded independently of medmonai.deploy (strict state dict)."""
    model = load_clinical_model(bundle, root, overrides=overrides or None, device="cpu")
    with torch.no_grad():
        return model.network(x).numpy()


def _check_export(bundle: Path, root: Path, out: Path, **overrides) -> dict:
    report = export_onnx(bundle, root, out, overrides=overrides or None)
    assert out.is_file() and json.loads(Path(f"{out}.json").read_text()) == report
    assert report["check"]["passed"] and report["check"]["inputs"]["source"] == "validation"
    assert report["opset"] == 18 and {"torch", "onnx", "onnxruntime"} <= set(report["versions"])
    model = load_clinical_model(bundle, root, overrides=overrides or None, device="cpu")
    x, _ = sample_inputs(model, 3)
    got = OnnxRuntimeNetwork(out)(x).numpy()
    expected = _checkpoint_reference(bundle, root, x, **overrides)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(OnnxRuntimeNetwork(out)(x[:1]).numpy(), expected[:1], atol=1e-4, rtol=1e-3)
    assert report["check"]["max_abs_diff"] <= 1e-4 + 1e-3 * np.abs(expected).max()
    return report


def test_classification_2d_export_matches_checkpoint(cls_root, tmp_path):
    before = checksums(cls_root)
    report = _check_export(CLS, cls_root, tmp_path / "model.onnx")
    assert checksums(cls_root) == before  # the run (and its data) only read
    assert report["input_shape"][0] == "batch" and report["check"]["same_argmax"]
    assert report["check"]["inputs"]["n"] == 3


def test_segmentation_2d_export_matches_checkpoint(tmp_path_factory, tmp_path):
    root = trained_segmenter(tmp_path_factory)
    report = _check_export(SEG, root, tmp_path / "seg.onnx", **SEG_OVERRIDES)
    assert report["input_shape"][1:] == [1, *report["segmentation"]["roi_size"]]  # the plan's patch


@pytest.mark.slow
def test_3d_bundles_export_matches_checkpoint(tmp_path):
    cls3d, seg3d = tmp_path / "cls3d", tmp_path / "seg3d"
    _run("classification_3d", cls3d, max_epochs=1, batch_size=4, phantom=TINY, spatial_size=[24, 24, 24])
    _check_export(bundle_dir("classification_3d"), cls3d, tmp_path / "cls3d.onnx")
    _run("segmentation_3d", seg3d, phantom=TINY_3D_SEG, max_epochs=1, **SEG_FAST)
    report = _check_export(bundle_dir("segmentation_3d"), seg3d, tmp_path / "seg3d.onnx", **SEG_OVERRIDES)
    assert len(report["segmentation"]["roi_size"]) == 3


def test_failed_check_writes_nothing(cls_root, tmp_path):
    out = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match="beyond the tolerance.*nothing written"):
        export_onnx(CLS, cls_root, out, atol=-1.0, rtol=0.0)  # a tolerance no output can meet
    assert list(tmp_path.iterdir()) == []  # no model, no report, no temporary file


def test_export_cli_onnx_and_torchscript(cls_root, tmp_path, capsys):
    for fmt, name in (("onnx", "m.onnx"), ("torchscript", "m.ts")):
        out = tmp_path / name
        argv = ["export", str(CLS), "--bundle-root", str(cls_root), "--out", str(out), "--format", fmt]
        assert main(argv) == 0
        assert "max |diff|" in capsys.readouterr().out
        assert json.loads(Path(f"{out}.json").read_text())["format"] == fmt
    model = load_clinical_model(CLS, cls_root, device="cpu")
    x, _ = sample_inputs(model, 2)
    with torch.no_grad():
        np.testing.assert_allclose(torch.jit.load(str(tmp_path / "m.ts"))(x).numpy(), model.network(x).numpy())


@pytest.mark.slow
def test_infer_runtime_onnx_gives_the_same_results_as_torch(cls_root, tmp_path):
    study = copy_study(subject_dirs(cls_root)[0], tmp_path / "study")
    onnx_file = tmp_path / "model.onnx"
    export_onnx(CLS, cls_root, onnx_file)
    outs = {k: tmp_path / k for k in ("torch", "onnx", "onnx_fly")}
    common = [str(CLS), str(study), "--bundle-root", str(cls_root), "--device", "cpu"]
    assert main(["infer", *common, "--out", str(outs["torch"])]) == 0
    assert (
        main(["infer", *common, "--out", str(outs["onnx"]), "--runtime", "onnx", "--onnx-model", str(onnx_file)]) == 0
    )
    assert main(["infer", *common, "--out", str(outs["onnx_fly"]), "--runtime", "onnx"]) == 0  # exported on the fly
    res = {k: json.loads((v / "results.json").read_text()) for k, v in outs.items()}
    assert res["torch"]["model"]["runtime"] == "torch" and res["onnx"]["model"]["runtime"] == "onnx"
    assert res["onnx"]["model"]["weights"] == str(onnx_file)
    ref = {r["SeriesInstanceUID"]: r for r in res["torch"]["results"]}
    assert len(ref) >= 2
    for key in ("onnx", "onnx_fly"):
        assert res[key]["threshold"] == res["torch"]["threshold"]
        assert {r["SeriesInstanceUID"] for r in res[key]["results"]} == set(ref)
        for rec in res[key]["results"]:
            r0 = ref[rec["SeriesInstanceUID"]]
            assert rec["predicted"] == r0["predicted"]
            for c, p in rec["probabilities"].items():
                assert p == pytest.approx(r0["probabilities"][c], abs=1e-5)
            sr = read_classification_sr(outs[key] / rec["outputs"]["sr"])
            sr0 = read_classification_sr(outs["torch"] / r0["outputs"]["sr"])
            assert sr["predicted"] == sr0["predicted"]


def test_infer_runtime_onnx_segmentation_same_masks(tmp_path_factory, tmp_path):
    root = trained_segmenter(tmp_path_factory)
    study = copy_study(subject_dirs(root)[0], tmp_path / "study")
    masks = {}
    for runtime in ("torch", "onnx"):
        model = load_clinical_model(SEG, root, overrides=SEG_OVERRIDES, device="cpu", runtime=runtime)
        result = infer_dicom(model, study, tmp_path / runtime)
        masks[runtime] = {
            r["SeriesInstanceUID"]: np.asarray(nib.load(tmp_path / runtime / r["outputs"]["nifti"]).dataobj)
            for r in result["results"]
        }
    assert masks["onnx"].keys() == masks["torch"].keys() and masks["torch"]
    for uid, mask in masks["torch"].items():
        assert np.mean(masks["onnx"][uid] == mask) >= 0.999  # identical up to voxels on a 0.5 probability tie


def test_onnx_model_errors(cls_root, tmp_path_factory, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        load_clinical_model(CLS, cls_root, device="cpu", runtime="onnx", onnx_model=tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="runtime"):
        load_clinical_model(CLS, cls_root, device="cpu", runtime="tensorrt")
    seg_onnx = tmp_path / "seg.onnx"  # another bundle's model: refused, not run on the wrong inputs
    export_onnx(SEG, trained_segmenter(tmp_path_factory), seg_onnx, overrides=SEG_OVERRIDES)
    with pytest.raises(ValueError, match="another model"):
        load_clinical_model(CLS, cls_root, device="cpu", runtime="onnx", onnx_model=seg_onnx)


def test_gan_generator_export_matches_checkpoint(tmp_path):
    small = {"spatial_size": [16, 16], "g_channels": 4, "d_channels": 4, "latent_dim": 8}
    root = tmp_path / "gan"
    _run("gan_augmentation", root, max_epochs=1, epoch_length=2, batch_size=4, phantom=TINY, **small)
    out = tmp_path / "generator.onnx"
    report = export_generator_onnx(bundle_dir("gan_augmentation"), root, out, overrides=small)
    assert report["check"]["passed"] and json.loads(Path(f"{out}.json").read_text()) == report
    parser = ConfigParser()  # the reference: the generator built and loaded here, independently of medmonai.deploy
    parser.read_config(str(bundle_dir("gan_augmentation") / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(root), **small, "num_classes": len(report["classes"])})
    net = parser.get_parsed_content("generator_def")
    net.load_state_dict(torch.load(root / "runs" / "checkpoints" / "generator.pt", weights_only=True))
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 1, 0, 1])
    with torch.no_grad():
        expected = net.eval()(z, y).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"z": z.numpy(), "label": y.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)
    assert got.shape == (5, 1, 16, 16)


def test_onnx_model_of_another_checkpoint_is_refused(cls_root, tmp_path):
    onnx_file = tmp_path / "model.onnx"
    report = export_onnx(CLS, cls_root, onnx_file)
    ckpt = Path(report["model"]["weights"])
    other = tmp_path / "other.pt"  # same network and plan, other weights: the ONNX file does not belong to it
    state = torch.load(ckpt, weights_only=True)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, other)
    with pytest.raises(ValueError, match="another checkpoint"):
        load_clinical_model(CLS, cls_root, model=other, device="cpu", runtime="onnx", onnx_model=onnx_file)
    model = load_clinical_model(CLS, cls_root, device="cpu", runtime="onnx", onnx_model=onnx_file)
    assert model.runtime == "onnx" and model.weights == str(onnx_file)
