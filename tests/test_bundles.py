from __future__ import annotations

from pathlib import Path

import pytest

from medmonai.bundles import (
    ALIASES,
    bundle_configs,
    bundles_dir,
    default_bundle_root,
    dims_default,
    parse_bundle,
    qualified_name,
    resolve_bundle,
    task_type,
)

REPO = Path(__file__).resolve().parents[1]


def test_bundles_dir_and_task_types():
    assert bundles_dir() == REPO / "bundles"
    assert task_type(bundles_dir() / "classification") == "classification"
    assert task_type(bundles_dir() / "segmentation") == "segmentation"
    assert task_type(bundles_dir() / "gan_augmentation") == "gan"
    # one bundle per task: the pre-merge folders are gone
    assert sorted(p.name for p in bundles_dir().iterdir() if (p / "configs").is_dir()) == [
        "classification",
        "gan_augmentation",
        "segmentation",
    ]


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
    # the shipped bundles: the old names resolve to the merged folders
    for old, (new, dims) in ALIASES.items():
        with pytest.warns(FutureWarning, match=f"now '{new}'"):
            assert resolve_bundle(old) == (bundles_dir() / new, {"spatial_dims": dims})
        with pytest.warns(FutureWarning):
            assert resolve_bundle(bundles_dir() / old) == (bundles_dir() / new, {"spatial_dims": dims})


def test_bundle_configs_names_the_missing_file():
    files = bundle_configs(bundles_dir() / "classification", ("train", "evaluate"))
    assert files["train"].name == "train.yaml" and files["meta"].is_file()
    with pytest.raises(FileNotFoundError, match="crossval"):
        bundle_configs(bundles_dir() / "gan_augmentation", ("train", "crossval"))


@pytest.mark.parametrize("run_name", ["classification_2d", "classification_3d", "segmentation_2d", "segmentation_3d"])
def test_default_outputs_and_data_go_outside_the_source_tree(run_name, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMONAI_HOME", str(tmp_path / "home"))
    bundle, dims = ALIASES[run_name]
    parser = parse_bundle(bundles_dir() / bundle, overrides={"spatial_dims": dims})
    out, data = Path(parser.get_parsed_content("output_dir")), Path(parser.get_parsed_content("dataset_dir"))
    assert out == tmp_path / "home" / run_name / "runs"  # the run folders of the pre-merge bundles, unchanged
    assert data == tmp_path / "home" / run_name / "data" / f"phantoms_{dims}d"
    assert not out.resolve().is_relative_to(REPO) and not data.resolve().is_relative_to(REPO)
    assert default_bundle_root(bundle, dims, announce=False) == str(tmp_path / "home" / run_name)
    assert default_bundle_root(run_name, announce=False) == str(tmp_path / "home" / run_name)
    assert parser.get_parsed_content("bundle_name") == qualified_name(bundle, dims) == run_name


@pytest.mark.parametrize(
    ("bundle", "dims"), [("classification", 2), ("classification", 3), ("segmentation", 2), ("segmentation", 3)]
)
def test_settings_per_dimensionality_come_from_the_table_and_stay_overridable(bundle, dims, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMONAI_HOME", str(tmp_path))
    parser = parse_bundle(bundles_dir() / bundle, overrides={"spatial_dims": dims})
    assert parser.get_parsed_content("batch_size") == dims_default(bundle, dims, "batch_size")
    assert parser.get_parsed_content("phantom") == dims_default(bundle, dims, "phantom")
    # the values of the pre-merge bundles
    expected = {("classification", 2): 32, ("classification", 3): 8, ("segmentation", 2): 8, ("segmentation", 3): 4}
    assert parser.get_parsed_content("batch_size") == expected[bundle, dims]
    subjects = {("classification", 2): 80, ("classification", 3): 60, ("segmentation", 2): 40, ("segmentation", 3): 30}
    assert parser.get_parsed_content("phantom")["n_subjects"] == subjects[bundle, dims]
    parser = parse_bundle(bundles_dir() / bundle, overrides={"spatial_dims": dims, "batch_size": 3})
    assert parser.get_parsed_content("batch_size") == 3


def test_dims_default_errors_name_the_problem():
    with pytest.raises(ValueError, match="spatial_dims must be one of"):
        dims_default("classification", 4, "batch_size")
    with pytest.raises(ValueError, match="no per-dimensionality defaults"):
        dims_default("gan_augmentation", 2, "batch_size")
    with pytest.raises(ValueError, match="no default 'patience'"):
        dims_default("segmentation", 3, "patience")


def test_gan_bundle_root_has_the_dimensions(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDMONAI_HOME", str(tmp_path))
    parser = parse_bundle(bundles_dir() / "gan_augmentation", overrides={"spatial_dims": 3})
    assert parser.get_parsed_content("output_dir") == str(tmp_path / "gan_augmentation_3d" / "runs")
    assert str(tmp_path / "gan_augmentation_3d") in capsys.readouterr().out  # the run says where it writes
