from __future__ import annotations

from pathlib import Path

import pytest

from medmonai.bundles import (
    ALIASES,
    bundle_configs,
    bundles_dir,
    default_bundle_root,
    parse_bundle,
    resolve_bundle,
    task_type,
)

REPO = Path(__file__).resolve().parents[1]


def test_bundles_dir_and_task_types():
    assert bundles_dir() == REPO / "bundles"
    assert task_type(bundles_dir() / "classification_2d") == "classification"
    assert task_type(bundles_dir() / "segmentation_3d") == "segmentation"
    assert task_type(bundles_dir() / "gan_augmentation") == "gan"


def test_resolve_bundle_folders_names_and_errors(tmp_path):
    folder = bundles_dir() / "gan_augmentation"
    assert resolve_bundle(folder) == (folder, {})
    assert resolve_bundle("gan_augmentation") == (folder, {})
    with pytest.raises(FileNotFoundError, match="not a bundle"):
        resolve_bundle(tmp_path / "nothing_here")
    # an old name whose folder no longer exists maps to the merged bundle plus its spatial_dims
    merged = tmp_path / "classification"
    (merged / "configs").mkdir(parents=True)
    with pytest.warns(FutureWarning, match="spatial_dims=3"):
        assert resolve_bundle(tmp_path / "classification_3d") == (merged, {"spatial_dims": 3})
    assert ALIASES["segmentation_2d"] == ("segmentation", 2)


def test_bundle_configs_names_the_missing_file():
    files = bundle_configs(bundles_dir() / "classification_2d", ("train", "evaluate"))
    assert files["train"].name == "train.yaml" and files["meta"].is_file()
    with pytest.raises(FileNotFoundError, match="crossval"):
        bundle_configs(bundles_dir() / "gan_augmentation", ("train", "crossval"))


@pytest.mark.parametrize("bundle", ["classification_2d", "classification_3d", "segmentation_2d", "segmentation_3d"])
def test_default_outputs_and_data_go_outside_the_source_tree(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMONAI_HOME", str(tmp_path / "home"))
    parser = parse_bundle(bundles_dir() / bundle)
    out, data = Path(parser.get_parsed_content("output_dir")), Path(parser.get_parsed_content("dataset_dir"))
    assert out == tmp_path / "home" / bundle / "runs"
    assert data.is_relative_to(tmp_path / "home" / bundle)
    assert not out.resolve().is_relative_to(REPO) and not data.resolve().is_relative_to(REPO)
    assert default_bundle_root(bundle, announce=False) == str(tmp_path / "home" / bundle)


def test_gan_bundle_root_has_the_dimensions(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDMONAI_HOME", str(tmp_path))
    parser = parse_bundle(bundles_dir() / "gan_augmentation", overrides={"spatial_dims": 3})
    assert parser.get_parsed_content("output_dir") == str(tmp_path / "gan_augmentation_3d" / "runs")
    assert str(tmp_path / "gan_augmentation_3d") in capsys.readouterr().out  # the run says where it writes
