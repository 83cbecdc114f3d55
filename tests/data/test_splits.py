"""Cross-validation splits, splits.json persistence and the leakage guard (medmonai.data.splits)."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmonai.data import splits as sp
from medmonai.data.splits import (
    SCHEMES,
    LeakageError,
    SplitsError,
    case_id,
    check_leakage,
    content_hashes,
    cv_fold_entries,
    ensure_splits,
    image_hash,
    make_folds,
    train_val_entries,
)


def _entries(n_subjects: int = 20, per_subject: int = 3, minority_every: int = 4, **extra) -> list[dict]:
    """In-memory entries (no files): subject s has class 1 when s % minority_every == 0."""
    out = []
    for s in range(n_subjects):
        for k in range(per_subject):
            out.append(
                {"image": f"/data/s{s:02d}_{k}.png", "label": int(s % minority_every == 0), "subject": f"s{s:02d}"}
            )
            out[-1].update({key: fn(s) for key, fn in extra.items()})
    return out


def _png(path: Path, arr: np.ndarray, **save_kwargs) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path, **save_kwargs)
    return str(path)


def _image_entries(folder: Path, n_subjects: int, per_subject: int, seed: int = 0, prefix: str = "s") -> list[dict]:
    """Entries with real, all-different 8x8 PNGs."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_subjects):
        for k in range(per_subject):
            path = _png(folder / f"{prefix}{s:02d}_{k}.png", rng.integers(0, 256, (8, 8)))
            out.append({"image": path, "label": s % 2, "subject": f"{prefix}{s:02d}"})
    return out


def _sides(fold: dict, entries: list[dict], key: str = "subject") -> tuple[set, set]:
    return {entries[i][key] for i in fold["train"]}, {entries[i][key] for i in fold["val"]}


def _assert_partition(fold: dict, n: int) -> None:
    assert fold["train"] == sorted(fold["train"]) and fold["val"] == sorted(fold["val"])
    assert not set(fold["train"]) & set(fold["val"])
    assert sorted(fold["train"] + fold["val"]) == list(range(n))


# ------------------------------------------------------------------------------------------------ schemes


def test_loso_never_splits_a_subject_and_holds_out_each_once():
    entries = _entries(12, 3)
    folds = make_folds(entries, "loso")
    assert len(folds) == 12
    held_out = []
    for f in folds:
        _assert_partition(f, len(entries))
        tr, va = _sides(f, entries)
        assert len(va) == 1 and not tr & va
        assert len(f["val"]) == 3  # all images of the subject
        held_out += va
    assert sorted(held_out) == sorted({e["subject"] for e in entries})


def test_image_level_kfold_leaks_subjects_and_check_leakage_catches_it():
    from sklearn.model_selection import KFold

    entries = _entries(10, 3, minority_every=2)
    tr, va = next(KFold(5, shuffle=True, random_state=0).split(entries))
    train, val = [entries[i] for i in tr], [entries[i] for i in va]
    shared = sorted({e["subject"] for e in train} & {e["subject"] for e in val})
    assert shared  # image-level k-fold of multi-image subjects puts subjects on both sides
    with pytest.raises(LeakageError, match="subject") as err:
        check_leakage({"training": train, "validation": val})
    msg = str(err.value)
    assert "'training' and 'validation'" in msg and all(s in msg for s in shared)
    # the subject-grouped k-fold of the same data passes the guard on every fold
    for f in make_folds(entries, "kfold", n_folds=5):
        check_leakage({"training": [entries[i] for i in f["train"]], "validation": [entries[i] for i in f["val"]]})


def test_check_leakage_lists_at_most_ten_subjects_and_counts_the_rest():
    a = [{"image": f"a{i}.png", "subject": f"p{i:02d}"} for i in range(15)]
    b = [{"image": f"b{i}.png", "subject": f"p{i:02d}"} for i in range(15)]
    with pytest.raises(LeakageError) as err:
        check_leakage({"training": a, "test": b})
    msg = str(err.value)
    assert "15 subject(s)" in msg and "p09" in msg and "p10" not in msg and "and 5 more" in msg
    check_leakage({"training": a, "test": b}, group_key=None)  # no subject check asked


def test_identical_pixels_in_another_file_are_caught_by_hash(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (16, 12))
    a = _png(tmp_path / "train" / "case_a.png", arr, compress_level=9)
    b = _png(tmp_path / "test" / "copy_b.png", arr, compress_level=0)  # same pixels, other bytes
    c = _png(tmp_path / "test" / "other_c.png", 255 - arr)
    assert Path(a).read_bytes() != Path(b).read_bytes()
    assert image_hash(a) == image_hash(b) != image_hash(c)
    train = [{"image": a, "label": 0, "subject": "p1"}]
    test = [{"image": b, "label": 0, "subject": "p2"}, {"image": c, "label": 1, "subject": "p3"}]
    check_leakage({"training": train, "test": test})  # different subjects: no subject leak
    hashes = {"training": content_hashes(train), "test": content_hashes(test)}
    with pytest.raises(LeakageError, match="identical image") as err:
        check_leakage({"training": train, "test": test}, hashes=hashes)
    assert "train/case_a.png = test/copy_b.png" in str(err.value) and "other_c" not in str(err.value)


def test_content_hash_cache_is_reused_and_refreshed_on_change(tmp_path, monkeypatch):
    entries = _image_entries(tmp_path / "img", 3, 2)
    cache = tmp_path / "cache" / "hashes.json"
    first = content_hashes(entries, cache_file=cache)
    assert len(set(first)) == 6 and cache.is_file()
    calls = []
    real = sp.image_hash
    monkeypatch.setattr(sp, "image_hash", lambda p: calls.append(p) or real(p))
    assert content_hashes(entries, cache_file=cache) == first and calls == []  # all from the cache
    # a rewritten file (other size/mtime) is hashed again
    _png(Path(entries[0]["image"]), np.zeros((8, 8)))
    os.utime(entries[0]["image"], ns=(1, 1))
    again = content_hashes(entries, cache_file=cache)
    assert calls == [entries[0]["image"]] and again[0] != first[0] and again[1:] == first[1:]


def test_kfold_is_stratified_within_one_per_class():
    entries = _entries(43, 1, minority_every=4)  # one image per subject: StratifiedKFold
    n_c = Counter(e["label"] for e in entries)
    for f in make_folds(entries, "kfold", n_folds=5, seed=3):
        got = Counter(entries[i]["label"] for i in f["val"])
        for c, n in n_c.items():
            assert abs(got[c] - n / 5) <= 1
    grouped = _entries(40, 2, minority_every=4)  # two images per subject: StratifiedGroupKFold
    subj_c = Counter(e["label"] for e in grouped[::2])
    for f in make_folds(grouped, "kfold", n_folds=5, seed=3):
        got = Counter(grouped[i]["label"] for i in f["val"][::2])  # subjects (2 consecutive images each)
        for c, n in subj_c.items():
            assert abs(got[c] - n / 5) <= 1


def test_kfold_repeated_kfold_groupkfold_sizes_and_seeds():
    entries = _entries(20, 3, site=lambda s: f"site{s % 5}")
    n = len(entries)
    folds = make_folds(entries, "kfold", n_folds=4, seed=0)
    assert len(folds) == 4
    for f in folds:
        _assert_partition(f, n)
        tr, va = _sides(f, entries)
        assert not tr & va
    assert sorted(i for f in folds for i in f["val"]) == list(range(n))  # each entry validated once
    assert make_folds(entries, "kfold", n_folds=4, seed=0) == folds  # deterministic
    assert make_folds(entries, "kfold", n_folds=4, seed=1) != folds

    rep = make_folds(entries, "repeated_kfold", n_folds=4, n_repeats=3, seed=7)
    assert len(rep) == 12
    for r in range(3):
        assert rep[4 * r : 4 * r + 4] == make_folds(entries, "kfold", n_folds=4, seed=7 + r)
    assert rep[:4] != rep[4:8]

    by_site = make_folds(entries, "groupkfold", n_folds=5, group_key="site")
    assert len(by_site) == 5
    for f in by_site:
        _assert_partition(f, n)
        tr, va = _sides(f, entries, "site")
        assert len(va) == 1 and not tr & va
    del entries[4]["site"]
    with pytest.raises(SplitsError, match="'site'"):
        make_folds(entries, "groupkfold", n_folds=5, group_key="site")
    # a missing key is fine for kfold: the entry is its own group
    assert len(make_folds(entries, "kfold", n_folds=5, group_key="site")) == 5

    # label_key=None: unstratified (segmentation data has no case class), still subject-disjoint and complete
    unlabelled = [{k: v for k, v in e.items() if k != "label"} for e in _entries(20, 3)]
    with pytest.raises(SplitsError, match="no 'label'"):
        make_folds(unlabelled, "kfold", n_folds=4)
    plain = make_folds(unlabelled, "kfold", n_folds=4, seed=0, label_key=None)
    assert len(plain) == 4 and sorted(i for f in plain for i in f["val"]) == list(range(len(unlabelled)))
    for f in plain:
        _assert_partition(f, len(unlabelled))
        tr, va = _sides(f, unlabelled)
        assert not tr & va and len(va) == 5


def test_impossible_settings_raise_clear_errors():
    entries = _entries(12, 2, minority_every=4)  # class 1: subjects 0, 4, 8 -> 3 groups
    with pytest.raises(SplitsError, match="more than the 12 groups"):
        make_folds(entries, "kfold", n_folds=13)
    with pytest.raises(SplitsError, match=r"class 1 has 3 'subject' groups \(6 entries\)"):
        make_folds(entries, "kfold", n_folds=4)
    with pytest.raises(SplitsError, match="n_folds must be"):
        make_folds(entries, "kfold", n_folds=1)
    with pytest.raises(SplitsError, match="unknown split scheme"):
        make_folds(entries, "bootstrap")
    holdout = make_folds(entries, "holdout", val_fraction=0.25, seed=2)
    assert len(holdout) == 1
    tr, va = sp.holdout_split(entries, val_fraction=0.25, seed=2)
    assert [entries[i] for i in holdout[0]["val"]] == va and [entries[i] for i in holdout[0]["train"]] == tr


def test_loo_refuses_multi_image_subjects():
    with pytest.raises(SplitsError, match="use scheme 'loso'") as err:
        make_folds(_entries(5, 2), "loo")
    assert "s00 (2)" in str(err.value)
    single = _entries(6, 1)
    folds = make_folds(single, "loo")
    assert [f["val"] for f in folds] == [[i] for i in range(6)]
    # identical images under two subjects form one group: loo refuses them too
    with pytest.raises(SplitsError, match="loso"):
        make_folds(single, "loo", hashes=["h0", "h1", "h2", "h0", "h4", "h5"])


def test_hash_duplicates_stay_on_one_side_in_every_scheme():
    entries = _entries(16, 1, minority_every=2)
    hashes = [f"h{i}" for i in range(16)]
    hashes[9] = hashes[2]  # entries 2 and 9 hold the same image under different subjects
    for scheme in ("kfold", "repeated_kfold", "loso", "holdout"):
        folds = make_folds(entries, scheme, n_folds=4, n_repeats=2, hashes=hashes)
        for f in folds:
            assert (2 in f["val"]) == (9 in f["val"])
    assert len(make_folds(entries, "loso", hashes=hashes)) == 15


# ------------------------------------------------------------------------------------------------ splits.json


def test_ensure_splits_writes_reuses_and_refuses_stale_files(tmp_path):
    entries = _entries(15, 2, minority_every=3)
    path = tmp_path / "out" / "splits.json"
    data = ensure_splits(path, entries, "kfold", n_folds=3, seed=5)
    stored = json.loads(path.read_text())
    assert stored == data
    assert {k: stored[k] for k in ("scheme", "n_folds", "n_repeats", "seed", "group_key", "label_key")} == {
        "scheme": "kfold",
        "n_folds": 3,
        "n_repeats": 1,
        "seed": 5,
        "group_key": "subject",
        "label_key": "label",
    }
    ids = [case_id(e) for e in entries]
    assert stored["case_ids"] == ids and len(stored["folds"]) == 3
    expected = make_folds(entries, "kfold", n_folds=3, seed=5)
    assert stored["folds"] == [
        {"train": [ids[i] for i in f["train"]], "val": [ids[i] for i in f["val"]]} for f in expected
    ]

    before, text = path.stat().st_mtime_ns, path.read_text()
    assert ensure_splits(path, list(reversed(entries)), "kfold", n_folds=3, seed=5) == data  # reused, any order
    assert path.stat().st_mtime_ns == before and path.read_text() == text

    with pytest.raises(SplitsError, match=r"splits\.json.*n_folds: file has 3, requested 5.*delete"):
        ensure_splits(path, entries, "kfold", n_folds=5, seed=5)
    with pytest.raises(SplitsError, match=r"splits\.json.*seed"):
        ensure_splits(path, entries, "kfold", n_folds=3, seed=6)
    with pytest.raises(SplitsError, match=r"splits\.json.*scheme is 'kfold', requested 'loso'"):
        ensure_splits(path, entries, "loso")
    with pytest.raises(SplitsError, match=r"splits\.json.*case ids differ.*2 no longer in the data") as err:
        ensure_splits(path, entries[2:], "kfold", n_folds=3, seed=5)
    assert str(path) in str(err.value)
    # a fold that would separate two images now known to be identical: the data changed
    hashes = [case_id(e) for e in entries]
    i, j = ids.index(stored["folds"][0]["val"][0]), ids.index(stored["folds"][0]["train"][0])
    hashes[j] = hashes[i]
    with pytest.raises(SplitsError, match="both sides"):
        ensure_splits(path, entries, "kfold", n_folds=3, seed=5, hashes=hashes)
    path.write_text("{not json")
    with pytest.raises(SplitsError, match=r"splits\.json: not valid JSON"):
        ensure_splits(path, entries, "kfold", n_folds=3, seed=5)


def test_ensure_splits_loso_and_duplicate_ids(tmp_path):
    entries = _entries(6, 2)
    data = ensure_splits(tmp_path / "s.json", entries, "loso", n_folds=5, seed=1)
    assert data["n_folds"] == 6 and len(data["folds"]) == 6
    assert ensure_splits(tmp_path / "s.json", entries, "loso", n_folds=3, seed=9) == data  # irrelevant settings
    with pytest.raises(SplitsError, match="occur more than once"):
        ensure_splits(tmp_path / "d.json", entries + entries[:1], "loso")
    assert case_id({"id": 7, "image": "x.png"}) == "7" and case_id({"image": Path("/a/b.png")}) == "/a/b.png"


# ------------------------------------------------------------------------------------------------ datalists


@pytest.fixture
def leaky_datalist(tmp_path):
    """A datalist whose test split shares one subject and one image (under another name) with training."""
    train = _image_entries(tmp_path / "train", 10, 2, seed=0)
    test = _image_entries(tmp_path / "test", 4, 1, seed=1, prefix="t")
    dup = tmp_path / "test" / "renamed_copy.png"
    _png(dup, np.asarray(Image.open(train[6]["image"])), compress_level=1)
    test.append({"image": str(dup), "label": train[6]["label"], "subject": "t99"})
    test.append({"image": _png(tmp_path / "test" / "s01_x.png", np.full((8, 8), 7)), "label": 1, "subject": "s01"})
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"classes": ["a", "b"], "training": train, "test": test}))
    return path, train, test


def test_cv_fold_entries_leakage_error_drop_off(leaky_datalist, tmp_path, caplog):
    path, train, test = leaky_datalist
    with pytest.raises(LeakageError) as err:
        cv_fold_entries(path, tmp_path / "e" / "splits.json", n_folds=3)
    msg = str(err.value)
    assert "s01" in msg and "train/s03_0.png = test/renamed_copy.png" in msg and "leakage='drop'" in msg
    assert not (tmp_path / "e" / "splits.json").exists()

    with caplog.at_level(logging.WARNING, logger="medmonai.data.splits"):
        dropped = cv_fold_entries(path, tmp_path / "d" / "splits.json", fold=1, n_folds=3, leakage="drop")
    assert "removed 3 of 20 'training' entries" in caplog.text and "s03_0.png" in caplog.text
    kept = dropped["training"] + dropped["validation"]
    assert len(kept) == 17 and {e["subject"] for e in kept}.isdisjoint({"s01"})
    assert train[6]["image"] not in {e["image"] for e in kept}
    assert (tmp_path / "d" / "content_hashes.json").is_file()
    stored = json.loads((tmp_path / "d" / "splits.json").read_text())
    assert set(stored["case_ids"]) == {e["image"] for e in kept} and stored["folds"][1]["val"] == [
        e["image"] for e in dropped["validation"]
    ]
    order = [e["image"] for e in train]
    assert [e["image"] for e in dropped["training"]] == [
        p for p in order if p in {e["image"] for e in dropped["training"]}
    ]

    off = cv_fold_entries(path, tmp_path / "o" / "splits.json", n_folds=3, leakage="off")
    assert len(off["training"]) + len(off["validation"]) == 20
    assert not (tmp_path / "o" / "content_hashes.json").exists()
    with pytest.raises(SplitsError, match="has 3 folds"):
        cv_fold_entries(path, tmp_path / "o" / "splits.json", fold=3, n_folds=3, leakage="off")
    with pytest.raises(ValueError, match="leakage must be one of"):
        cv_fold_entries(path, tmp_path / "o" / "splits.json", leakage="warn")


def test_cv_fold_entries_keeps_pool_duplicates_together_and_pools_validation(tmp_path):
    train = _image_entries(tmp_path / "img", 12, 1, seed=2)
    val = _image_entries(tmp_path / "val", 4, 1, seed=3, prefix="v")
    copy = _png(tmp_path / "img" / "copy.png", np.asarray(Image.open(train[0]["image"])), compress_level=0)
    train.append({"image": copy, "label": train[0]["label"], "subject": "other"})
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"classes": ["a", "b"], "training": train, "validation": val}))
    n_val_seen = 0
    for fold in range(4):
        out = cv_fold_entries(path, tmp_path / "cv" / "splits.json", fold=fold, n_folds=4)
        assert len(out["training"]) + len(out["validation"]) == 17  # validation pooled
        names = {Path(e["image"]).name for e in out["validation"]}
        assert ("s00_0.png" in names) == ("copy.png" in names)
        n_val_seen += "copy.png" in names
    assert n_val_seen == 1
    alone = cv_fold_entries(path, tmp_path / "cv2" / "splits.json", n_folds=4, pool_validation=False)
    assert len(alone["training"]) + len(alone["validation"]) == 13


def test_train_val_entries_leakage_modes(leaky_datalist, tmp_path, caplog):
    path, train, test = leaky_datalist
    with pytest.raises(LeakageError, match=r"(?s)s01.*renamed_copy.*leakage='drop'"):
        train_val_entries(str(path), leakage="error")
    with caplog.at_level(logging.WARNING, logger="medmonai.data.splits"):
        s = train_val_entries(str(path), leakage="drop", hash_cache=tmp_path / "h.json")
    assert len(s["training"]) + len(s["validation"]) == 17 and "removed 3" in caplog.text
    check_leakage({**s, "test": test})
    assert (tmp_path / "h.json").is_file()
    off = train_val_entries(str(path))  # default: no check (as before the guard existed)
    assert len(off["training"]) + len(off["validation"]) == 20
    assert off == train_val_entries(str(path), leakage="off")
    # with the datalist's own validation split: a validation/test duplicate is dropped from validation
    raw = json.loads(path.read_text())
    raw["training"], raw["validation"] = train[:16], train[16:] + [train[6]]
    path.write_text(json.dumps(raw))
    with pytest.raises(LeakageError, match="'training' and 'validation'"):
        train_val_entries(str(path), leakage="error")
    s = train_val_entries(str(path), leakage="drop")
    assert train[6]["image"] not in {e["image"] for e in s["training"] + s["validation"]}
    assert all(e["subject"] != "s01" for e in s["training"])


def test_schemes_constant():
    assert SCHEMES == ("holdout", "kfold", "repeated_kfold", "loo", "loso", "groupkfold")


def test_train_val_entries_guard_keeps_the_holdout_of_clean_data(tmp_path):
    train = _image_entries(tmp_path / "img", 15, 2, seed=4)
    test = _image_entries(tmp_path / "test", 4, 1, seed=5, prefix="t")
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"classes": ["a", "b"], "training": train, "test": test}))
    checked = train_val_entries(str(path), seed=3, leakage="error")
    assert checked == train_val_entries(str(path), seed=3, leakage="drop") == train_val_entries(str(path), seed=3)
    tr, va = sp.holdout_split(train, seed=3)
    assert [e["image"] for e in checked["validation"]] == [e["image"] for e in va] and len(tr) == 24
