"""The nnU-Net peer benchmark's data conversion: nnU-Net's raw layout of the same split, nothing copied."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from benchmarks.nnunet_peer import SYSTEMS, main, nnunet_raw_dataset
from medmonai.data.datalist import write_datalist


def _datalist(tmp_path):
    entries = {"training": [], "test": []}
    for split, n in (("training", 3), ("test", 2)):
        for i in range(n):
            case = f"hippocampus_{split[:2]}{i}"
            img, lab = tmp_path / f"{case}.nii.gz", tmp_path / f"{case}_lab.nii.gz"
            nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), img)
            nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), lab)
            entries[split].append({"image": str(img), "mask": str(lab), "subject": case})
    meta = {"mask_labels": {"0": "background", "1": "Anterior", "2": "Posterior"}, "modality": {"0": "MRI"}}
    return write_datalist(tmp_path / "datalist.json", {**meta, **entries})


def test_raw_dataset_links_the_split_in_nnunet_names(tmp_path):
    raw = nnunet_raw_dataset(_datalist(tmp_path), tmp_path / "raw")
    folder = tmp_path / "raw" / "Dataset004_Hippocampus"
    assert raw["training"] == ["hippocampus_tr0", "hippocampus_tr1", "hippocampus_tr2"]
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        f"hippocampus_tr{i}_0000.nii.gz" for i in range(3)
    ]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [f"hippocampus_tr{i}.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [
        "hippocampus_te0_0000.nii.gz",
        "hippocampus_te1_0000.nii.gz",
    ]
    assert all(p.is_symlink() for p in (folder / "imagesTr").iterdir())  # links, not copies of the data
    ds = json.loads((folder / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert ds["channel_names"] == {"0": "MRI"} and ds["numTraining"] == 3 and ds["file_ending"] == ".nii.gz"
    assert [c["case_id"] for c in raw["test"]] == ["hippocampus_te0", "hippocampus_te1"]
    assert all(c["ref"].endswith("_lab.nii.gz") for c in raw["test"])


def test_unknown_system_and_missing_peer_are_clear_errors(tmp_path):
    assert SYSTEMS == ("medmonai", "nnunet")
    with pytest.raises(SystemExit, match="unknown system"):
        main(["--systems", "nnformer", "--work", str(tmp_path)])
    out = main(["--report-only", "--work", str(tmp_path), "--budgets", "7", "--out", str(tmp_path / "r.json")])
    assert out["summary"] == []  # no finished cell for a 7-minute budget: nothing trained, an empty table


def test_ablation_overrides_name_their_cells_and_bad_ones_are_refused():
    from benchmarks.nnunet_peer import _parse_overrides, _system_label

    overrides = _parse_overrides(["precision=fp32", "base_filters=8"])
    assert overrides == {"precision": "fp32", "base_filters": 8}  # JSON values where they parse, else strings
    assert _system_label(overrides) == "medmonai+precision=fp32+base_filters=8"
    assert _system_label({}) == "medmonai"  # the defaults: the cell the comparison with nnU-Net uses
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        _parse_overrides(["precision"])
