"""Synthetic samples added to training only: counts per mode and the guards against misuse."""

from __future__ import annotations

import json
import os

import pytest

from medmonai.data.synthetic import SyntheticDataError, add_synthetic, case_key, synthetic_counts

CLASSES = ["benign", "malignant"]


def _real(tmp_path, n0, n1, prefix="real"):
    entries = []
    for c, n in enumerate((n0, n1)):
        for i in range(n):
            p = tmp_path / f"{prefix}_{c}_{i}.png"
            p.write_bytes(b"x")
            entries.append({"image": str(p), "label": c, "subject": f"{prefix}{c}-{i}"})
    return entries


def _synthetic(tmp_path, n_per_class, trained_on, classes=CLASSES, record=True):
    folder = tmp_path / "synthetic"
    folder.mkdir(exist_ok=True)
    entries = []
    for c, n in enumerate(n_per_class):
        for i in range(n):
            p = folder / f"s_{c}_{i}.png"
            p.write_bytes(b"y")
            entries.append({"image": p.name, "label": c, "synthetic": True})
    doc = {"classes": classes, "training": entries}
    if record:
        doc["gan_training_cases"] = sorted(case_key(e) for e in trained_on)
    path = folder / "datalist.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("real", "mode", "ratio", "expected"),
    [
        ([100, 10], "balance", 1.0, [0, 90]),
        ([100, 10], "balance", 0.5, [0, 40]),
        ([100, 60], "balance", 0.5, [0, 0]),
        ([30, 10], "fraction", 0.5, [15, 5]),
        ([1, 2], "fraction", 1.0, [1, 2]),
        ([100, 10], "none", 3.0, [0, 0]),
    ],
)
def test_counts_per_mode(real, mode, ratio, expected):
    assert synthetic_counts(real, mode, ratio) == expected


def test_bad_mode_and_ratio_are_refused():
    with pytest.raises(ValueError, match="not one of"):
        synthetic_counts([1, 2], "oversample", 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        synthetic_counts([1, 2], "balance", -1.0)


def test_balance_adds_exactly_the_minority_gap_and_is_seeded(tmp_path):
    train = _real(tmp_path, 12, 3)
    held = _real(tmp_path, 2, 2, prefix="val")
    syn = _synthetic(tmp_path, [5, 20], trained_on=train)
    out = add_synthetic(train, syn, CLASSES, mode="balance", ratio=1.0, seed=3, held_out=held)
    assert out[: len(train)] == train  # real entries first and unchanged
    added = out[len(train) :]
    assert [e["label"] for e in added] == [1] * 9
    assert all(set(e) == {"image", "label"} for e in added)
    assert all(os.path.isabs(e["image"]) and "synthetic" in e["image"] for e in added)
    again = add_synthetic(train, syn, CLASSES, mode="balance", ratio=1.0, seed=3, held_out=held)
    other = add_synthetic(train, syn, CLASSES, mode="balance", ratio=1.0, seed=4, held_out=held)
    assert again == out
    assert other != out


def test_mode_none_needs_no_file_and_returns_the_real_entries(tmp_path):
    train = _real(tmp_path, 3, 1)
    assert add_synthetic(train, "", CLASSES, mode="none") == train


def test_a_gan_trained_on_a_validation_case_is_refused(tmp_path):
    train = _real(tmp_path, 6, 2)
    held = _real(tmp_path, 2, 1, prefix="val")
    syn = _synthetic(tmp_path, [0, 10], trained_on=train + held[:1])
    with pytest.raises(SyntheticDataError, match=r"trained on 1 validation/test case.*val_0_0\.png"):
        add_synthetic(train, syn, CLASSES, mode="balance", held_out=held)


def test_synthetic_entries_in_validation_are_refused(tmp_path):
    train = _real(tmp_path, 6, 2)
    held = [{**_real(tmp_path, 1, 0, prefix="val")[0], "synthetic": True}]
    with pytest.raises(SyntheticDataError, match="validation/test entries are synthetic"):
        add_synthetic(train, "", CLASSES, mode="none", held_out=held)


def test_missing_provenance_record_is_refused_unless_waived(tmp_path):
    train = _real(tmp_path, 6, 2)
    syn = _synthetic(tmp_path, [0, 10], trained_on=train, record=False)
    with pytest.raises(SyntheticDataError, match="gan_training_cases"):
        add_synthetic(train, syn, CLASSES, mode="balance")
    out = add_synthetic(train, syn, CLASSES, mode="balance", check_provenance=False)
    assert len(out) == len(train) + 4


def test_too_few_samples_wrong_classes_and_unflagged_entries_are_refused(tmp_path):
    train = _real(tmp_path, 10, 2)
    syn = _synthetic(tmp_path, [0, 3], trained_on=train)
    with pytest.raises(SyntheticDataError, match="malignant: 8 wanted, 3 available"):
        add_synthetic(train, syn, CLASSES, mode="balance")
    syn = _synthetic(tmp_path, [0, 10], trained_on=train, classes=["a", "b"])
    with pytest.raises(SyntheticDataError, match=r"classes \['a', 'b'\] differ"):
        add_synthetic(train, syn, CLASSES, mode="balance")
    syn = _synthetic(tmp_path, [0, 10], trained_on=train)
    doc = json.loads(syn.read_text())
    del doc["training"][0]["synthetic"]
    syn.write_text(json.dumps(doc))
    with pytest.raises(SyntheticDataError, match="not flagged 'synthetic: true'"):
        add_synthetic(train, syn, CLASSES, mode="balance")
    with pytest.raises(SyntheticDataError, match="not found"):
        add_synthetic(train, tmp_path / "nope.json", CLASSES, mode="balance")
