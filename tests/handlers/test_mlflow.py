"""MLflow tracking of the training bundles (docs/tracking.md): tiny runs read back from a local SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from monai.bundle import run

from medmonai.handlers.mlflow import default_run_name, flatten_params, log_files, report_metrics
from tests._bundles import bundle_dir, run_args
from tests.bundles.test_distributed import _torchrun, needs_gloo

REPO = Path(__file__).resolve().parents[2]
BUNDLES = ("classification", "segmentation", "gan_augmentation")
TINY_CLS = {"n_subjects": 16, "images_per_subject": [1, 2], "test_fraction": 0.25, "seed": 0}
TINY_SEG = {"n_subjects": 12, "images_per_subject": [1, 2], "test_fraction": 0.25, "seed": 0, "fov_mm": 40.0}
SEG_FAST = {"base_filters": 4, "num_samples": 1, "val_interval": 1, "val_fraction": 0.34}


def _cfg(name: str) -> Path:
    return bundle_dir(name) / "configs"


def _train(name: str, root: Path, tracking: str | None, **overrides) -> None:
    kwargs = {"tracking": tracking} if tracking else {}
    run(**run_args(name, root, **kwargs, **overrides))


def _only_run(uri: str, experiment: str):
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {uri}"
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def _artifacts(client, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id)}


def _epochs(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def cls2d_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_cls2d")
    uri = _sqlite(root / "store" / "mlruns.db")
    (root / "store").mkdir()
    _train(
        "classification_2d",
        root,
        str(_cfg("classification_2d") / "mlflow.yaml"),
        tracking_uri=uri,
        phantom=TINY_CLS,
        max_epochs=2,
        batch_size=8,
        spatial_size=[48, 48],
        learning_rate=0.002,
    )
    return root, uri


def test_classification_2d_logs_params_epoch_metrics_plan_and_reports(cls2d_run):
    root, uri = cls2d_run
    client, r = _only_run(uri, "classification_2d")
    assert r.info.status == "FINISHED"
    p = r.data.params
    assert p["seed"] == "0" and p["network"] == "small_cnn" and p["learning_rate"] == "0.002"
    assert p["max_epochs"] == "2" and p["plan.spatial_dims"] == "2" and p["plan.spatial_size"] == "[48, 48]"
    assert int(p["n_train"]) > 0 and int(p["n_val"]) > 0
    # one value per epoch, at the trainer's epoch: the validation metrics and the mean training loss
    for key in ("val_auc", "val_accuracy", "train_loss", "lr_group_0"):
        assert _epochs(client, r.info.run_id, key) == [1, 2], key
    files = _artifacts(client, r.info.run_id)
    assert {"fingerprint.json", "provenance.json", "training_domain.json", "model.pt"} <= files
    assert any(f.startswith("config_") and f.endswith(".json") for f in files)  # the executed config
    # artifacts of the SQLite store next to the database, inside the run's folder under tmp_path
    assert list((root / "store" / "mlruns").iterdir())


def test_segmentation_2d_logs_dice_per_epoch_and_plan(tmp_path):
    uri = _sqlite(tmp_path / "mlruns.db")
    _train(
        "segmentation_2d",
        tmp_path,
        str(_cfg("segmentation_2d") / "mlflow.yaml"),
        tracking_uri=uri,
        experiment_name="seg",
        phantom=TINY_SEG,
        max_epochs=2,
        **SEG_FAST,
    )
    client, r = _only_run(uri, "seg")
    assert r.data.params["network"] and r.data.params["seed"] == "0" and "plan.spatial_size" in r.data.params
    assert _epochs(client, r.info.run_id, "val_mean_dice") == [1, 2]
    assert _epochs(client, r.info.run_id, "train_loss") == [1, 2]
    assert {"fingerprint.json", "provenance.json", "training_domain.json"} <= _artifacts(client, r.info.run_id)
    # the evaluation, recorded by configs/mlflow_evaluate.yaml as a run of <experiment>_eval
    run(
        **run_args("segmentation_2d", tmp_path, "evaluate", "mlflow_evaluate"),
        tracking_uri=uri,
        experiment_name="seg",
        phantom=TINY_SEG,
        **SEG_FAST,
    )
    client, ev = _only_run(uri, "seg_eval")
    assert ev.data.params["eval_split"] == "test"
    assert "report.json" in _artifacts(client, ev.info.run_id)
    report = json.loads((tmp_path / "runs" / "eval" / "report.json").read_text())
    assert ev.data.metrics == report_metrics(report)
    assert ev.data.metrics["dice.lesion"] == pytest.approx(report["summary"]["dice"]["lesion"]["mean"])


@pytest.mark.slow
def test_default_store_is_in_the_output_folder_and_absent_without_tracking(tmp_path):
    tracked, plain = tmp_path / "tracked", tmp_path / "plain"
    common = {"phantom": TINY_CLS, "max_epochs": 1, "batch_size": 8, "spatial_size": [32, 32]}
    _train("classification_2d", plain, None, **common)
    assert (plain / "runs" / "fingerprint.json").is_file()
    assert not list(plain.rglob("mlruns*")) and not list(plain.rglob("config_*.json"))
    _train("classification_2d", tracked, str(_cfg("classification_2d") / "mlflow.yaml"), **common)
    db = tracked / "runs" / "mlruns.db"
    assert db.is_file()
    client, r = _only_run(_sqlite(db), "classification_2d")
    assert _epochs(client, r.info.run_id, "val_auc") == [1]


def test_monai_default_tracking_resolves_in_every_training_bundle():
    """MONAI's --tracking mlflow settings and ours name config ids that every training bundle has."""
    from monai.bundle import ConfigParser
    from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS

    for name in BUNDLES:
        parser = ConfigParser()
        parser.read_config(str(_cfg(name) / "train.yaml"))
        assert "output_dir" in parser and "is_not_rank0" in parser, name
        ids = DEFAULT_MLFLOW_SETTINGS["handlers_id"]
        assert parser.get(ids["trainer"]["id"]) is not None and parser.get(ids["trainer"]["handlers"]) is not None
        ours = yaml.safe_load((_cfg(name) / "mlflow.yaml").read_text())
        for role in ours["handlers_id"].values():
            assert parser.get(role["id"]) is not None and parser.get(role["handlers"]) is not None, (name, role)
        refs = [v for v in ours["configs"]["trainer"]["experiment_param"].values() if str(v).startswith("@")]
        for ref in refs:
            assert ref[1:] in parser, (name, ref)


def test_gan_bundle_logs_generator_and_discriminator_losses_per_epoch(tmp_path):
    uri = _sqlite(tmp_path / "mlruns.db")
    _train(
        "gan_augmentation",
        tmp_path,
        str(_cfg("gan_augmentation") / "mlflow.yaml"),
        tracking_uri=uri,
        phantom=TINY_CLS,
        max_epochs=2,
        epoch_length=2,
        batch_size=4,
        spatial_size=[16, 16],
        g_channels=8,
        d_channels=8,
        latent_dim=8,
    )
    client, r = _only_run(uri, "gan_augmentation")
    assert r.data.params["latent_dim"] == "8" and r.data.params["epoch_length"] == "2"
    for key in ("g_loss", "d_loss"):
        assert _epochs(client, r.info.run_id, key) == [1, 2], key
    assert {"fingerprint.json", "provenance.json"} <= _artifacts(client, r.info.run_id)


def test_log_files_records_a_report_as_its_own_run(tmp_path):
    report = tmp_path / "eval" / "report.json"
    report.parent.mkdir()
    report.write_text('{"metrics": {"auc": {"value": 0.9}}}')
    (tmp_path / "eval" / "roc.png").write_bytes(b"png")
    uri = _sqlite(tmp_path / "store" / "mlruns.db")
    (tmp_path / "store").mkdir()
    run_id = log_files(
        [tmp_path / "eval", tmp_path / "missing.json"], uri, "evaluation", params={"a": {"b": 1}}, metrics={"auc": 0.9}
    )
    client = mlflow.MlflowClient(tracking_uri=uri)
    r = client.get_run(run_id)
    assert r.info.status == "FINISHED" and r.data.params == {"a.b": "1"} and r.data.metrics == {"auc": 0.9}
    assert _artifacts(client, run_id) == {"report.json", "roc.png"}


def test_flatten_params_and_run_names():
    flat = flatten_params({"plan": {"spatial_size": [4, 4], "normalization": {"preset": "z"}}, "x": None})
    assert flat == {"plan.spatial_size": "[4, 4]", "plan.normalization.preset": "z", "x": "None"}
    assert len(flatten_params({"long": "a" * 10_000})["long"]) == 500
    assert default_run_name("cls").startswith("cls_")


def test_log_report_takes_the_metrics_and_the_files_beside_the_report(tmp_path):
    out = tmp_path / "cv"
    (out / "fold0").mkdir(parents=True)
    (out / "fold0" / "model.pt").write_bytes(b"x")  # subfolders are not logged
    (out / "cv_report.json").write_text('{"metrics": {"auc": {"value": 0.8}, "n": 12, "per_class": {"a": 1}}}')
    (out / "oof.csv").write_text("a,b\n")
    uri = _sqlite(tmp_path / "mlruns.db")
    from medmonai.handlers.mlflow import log_report

    run_id = log_report(out / "cv_report.json", uri, "cv", params={"folds": 2})
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).data.metrics == {"auc": 0.8, "n": 12.0}
    assert _artifacts(client, run_id) == {"cv_report.json", "oof.csv"}
    with pytest.raises(FileNotFoundError, match="missing.json"):
        log_report(tmp_path / "missing.json", uri, "cv")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json: a report must be a JSON object"):
        log_report(tmp_path / "bad.json", uri, "cv")


def test_demo_cli_logs_its_summary_to_mlflow(tmp_path, monkeypatch, capsys):
    import medmonai.cli.main
    from medmonai.cli.main import main

    def fake_demo(out, **kwargs):
        Path(out).mkdir(parents=True)
        (Path(out) / "summary.json").write_text('{"metrics": {"baseline_auc": 0.7}}')
        (Path(out) / "preview.png").write_bytes(b"png")

    monkeypatch.setattr(medmonai.cli.main, "run_demo", fake_demo)  # the function the CLI calls
    uri = _sqlite(tmp_path / "mlruns.db")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--dims", "2", "--mlflow-uri", uri]) == 0
    assert "MLflow: run" in capsys.readouterr().out
    client, r = _only_run(uri, "demo")
    assert r.data.params["spatial_dims"] == "2" and r.data.metrics == {"baseline_auc": 0.7}
    assert _artifacts(client, r.info.run_id) == {"summary.json", "preview.png"}


def test_missing_mlflow_names_the_extra(monkeypatch):
    import sys

    from medmonai.handlers.mlflow import MLflowTrainingHandler, require_mlflow

    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ImportError, match=r"medmonai\[mlflow\]"):
        require_mlflow()
    with pytest.raises(ImportError, match=r"medmonai\[mlflow\]"):
        MLflowTrainingHandler(tracking_uri="sqlite:///x.db")


@pytest.mark.slow
@needs_gloo
def test_torchrun_logs_one_run_from_rank_0(tmp_path):
    db = tmp_path / "mlruns.db"
    settings = str(_cfg("classification_2d") / "mlflow.yaml")
    _torchrun(
        "classification_2d",
        tmp_path,
        tracking=settings,
        tracking_uri=_sqlite(db),
        max_epochs=2,
        phantom=TINY_CLS,
        batch_size=8,
        spatial_size=[32, 32],
    )
    client, r = _only_run(_sqlite(db), "classification_2d")  # one run: rank 1 builds no MLflow handler
    assert r.info.status == "FINISHED"
    assert _epochs(client, r.info.run_id, "val_auc") == [1, 2]
    assert _epochs(client, r.info.run_id, "train_loss") == [1, 2]
    assert "fingerprint.json" in _artifacts(client, r.info.run_id)


def test_cv_cli_logs_the_cv_report_with_oof_metrics(tmp_path):
    from medmonai.cli.main import main

    uri = _sqlite(tmp_path / "mlruns.db")
    args = ["cv", str(REPO / "bundles" / "classification"), "--bundle-root", str(tmp_path / "run"), "--folds", "2"]
    args += ["--classifier", "logreg_l2", "--no-export", "--n-boot", "20", "--set", f"phantom={json.dumps(TINY_CLS)}"]
    args += ["--set", "spatial_size=[32, 32]", "--mlflow-uri", uri]
    assert main(args) == 0
    client, r = _only_run(uri, "cv_classification_2d")  # the bundle and its spatial_dims
    assert r.data.params["folds"] == "2" and r.data.params["classifier"] == "logreg_l2"
    assert {"oof.auc", "across_folds.test.auc"} <= set(r.data.metrics)
    assert {"cv_report.json", "splits.json"} <= _artifacts(client, r.info.run_id)
