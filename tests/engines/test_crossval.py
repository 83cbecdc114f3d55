"""Fold predictions, their aggregation (OOF, across-fold statistics, ensemble) and the TorchScript ensemble."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from medmonai.engines.crossval import (
    FoldEnsemble,
    aggregate_crossval,
    export_ensemble,
    fold_dir,
    fold_done,
    load_fold_predictions,
    write_fold_predictions,
)
from medmonai.utils import atomic_write_json, read_json


def _write_cv(tmp_path, n_folds=3, n_pool=12, n_test=8, seed=0):
    """A fake cross-validation folder: splits.json plus per-fold predictions with known probabilities."""
    rng = np.random.default_rng(seed)
    ids = [f"img_{i:02d}.png" for i in range(n_pool)]
    y_pool = np.array([i % 2 for i in range(n_pool)])
    y_test = np.array([i % 2 for i in range(n_test)])
    folds, test_probs = [], []
    for k in range(n_folds):
        val = [i for i in range(n_pool) if i % n_folds == k]
        folds.append({"train": [ids[i] for i in range(n_pool) if i % n_folds != k], "val": [ids[i] for i in val]})
        p1 = np.clip(0.3 + 0.4 * y_pool[val] + rng.normal(0, 0.15, len(val)), 0.01, 0.99)
        t1 = np.clip(0.3 + 0.4 * y_test + rng.normal(0, 0.2, n_test), 0.01, 0.99)
        test_probs.append(np.stack([1 - t1, t1], 1))
        out = fold_dir(tmp_path, k)
        out.mkdir(parents=True)
        write_fold_predictions(
            out, [ids[i] for i in val], y_pool[val], np.stack([1 - p1, p1], 1),
            [f"case_{i:05d}" for i in range(n_test)], y_test, test_probs[-1],
        )  # fmt: skip
    atomic_write_json(tmp_path / "splits.json", {"scheme": "kfold", "case_ids": ids, "folds": folds})
    return ids, y_pool, y_test, test_probs


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fold_predictions_roundtrip(tmp_path):
    assert not fold_done(tmp_path, 0)
    out = fold_dir(tmp_path, 0)
    out.mkdir()
    write_fold_predictions(out, ["a", "b"], np.array([0, 1]), np.array([[0.8, 0.2], [0.1, 0.9]]))
    assert fold_done(tmp_path, 0)
    p = load_fold_predictions(out / "fold_predictions.npz")
    assert p["val_ids"].tolist() == ["a", "b"]
    np.testing.assert_allclose(p["val_probs"], [[0.8, 0.2], [0.1, 0.9]])
    assert p["test_probs"].shape == (0, 2)


def test_ensemble_is_the_mean_of_fold_probabilities(tmp_path):
    ids, y_pool, y_test, test_probs = _write_cv(tmp_path)
    report = aggregate_crossval(tmp_path, ["neg", "pos"], n_boot=50)
    rows = _csv_rows(tmp_path / "ensemble" / "predictions.csv")
    expected = np.mean(test_probs, axis=0)  # hand-computed: mean over the 3 folds
    got = np.array([[float(r["prob_neg"]), float(r["prob_pos"])] for r in rows])
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert [int(r["true_index"]) for r in rows] == y_test.tolist()
    # threshold chosen on OOF predictions, and the ensemble's decisions use it
    thr = report["threshold"]["threshold"]
    assert [int(r["pred_index"]) for r in rows] == (expected[:, 1] >= thr).astype(int).tolist()
    assert report["ensemble"]["n"] == len(y_test)
    assert read_json(tmp_path / "cv_report.json")["n_folds"] == 3


def test_oof_predictions_cover_the_pool_once(tmp_path):
    ids, y_pool, _, _ = _write_cv(tmp_path)
    report = aggregate_crossval(tmp_path, ["neg", "pos"], n_boot=50)
    rows = _csv_rows(tmp_path / "oof" / "predictions.csv")
    assert len(rows) == len(ids) == report["oof"]["n"]
    assert [int(r["true_index"]) for r in rows] == y_pool.tolist()  # splits order


def test_across_fold_statistics_match_numpy(tmp_path):
    from sklearn.metrics import roc_auc_score

    _, _, y_test, test_probs = _write_cv(tmp_path)
    report = aggregate_crossval(tmp_path, ["neg", "pos"], n_boot=50)
    aucs = [roc_auc_score(y_test, p[:, 1]) for p in test_probs]
    stats = report["across_folds"]["test"]["auc"]
    assert stats["mean"] == pytest.approx(np.mean(aucs))
    assert stats["std"] == pytest.approx(np.std(aucs))
    assert [f["test"]["auc"] for f in report["folds"]] == pytest.approx(aucs)


def test_repeated_folds_average_oof(tmp_path):
    ids = ["a", "b", "c", "d"]
    atomic_write_json(
        tmp_path / "splits.json",
        {
            "scheme": "repeated_kfold",
            "case_ids": ids,
            "folds": [{"train": ["c", "d"], "val": ["a", "b"]}, {"train": ["a", "b"], "val": ["c", "d"]}] * 2,
        },
    )
    vals = [[0.2, 0.6], [0.3, 0.8], [0.4, 0.5], [0.1, 0.9]]
    for k in range(4):
        fold_dir(tmp_path, k).mkdir()
        case = ["a", "b"] if k % 2 == 0 else ["c", "d"]
        p = np.array(vals[k])
        write_fold_predictions(fold_dir(tmp_path, k), case, np.array([0, 1]), np.stack([1 - p, p], 1))
    aggregate_crossval(tmp_path, ["neg", "pos"], n_boot=20)
    rows = _csv_rows(tmp_path / "oof" / "predictions.csv")
    got = [float(r["prob_pos"]) for r in rows]
    np.testing.assert_allclose(got, [(0.2 + 0.4) / 2, (0.6 + 0.5) / 2, (0.3 + 0.1) / 2, (0.8 + 0.9) / 2])
    assert not (tmp_path / "ensemble").exists()  # no test split


def test_missing_fold_is_named(tmp_path):
    _write_cv(tmp_path)
    (fold_dir(tmp_path, 1) / "fold_predictions.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"folds \[1\] of 3"):
        aggregate_crossval(tmp_path, ["neg", "pos"])


def _tiny_net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2)
    )


def test_fold_ensemble_and_export(tmp_path):
    nets = [_tiny_net(s).eval() for s in range(3)]
    x = torch.randn(4, 1, 12, 12)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(n(x), 1) for n in nets]).mean(0)
        np.testing.assert_allclose(FoldEnsemble(nets)(x).numpy(), expected.numpy(), atol=1e-6)
        flipped = torch.stack([torch.softmax(n(v), 1) for n in nets for v in (x, torch.flip(x, dims=[2]))]).mean(0)
        np.testing.assert_allclose(FoldEnsemble(nets, flip_axes=[0])(x).numpy(), flipped.numpy(), atol=1e-6)
    path = export_ensemble(nets, tmp_path / "model.ts", x)
    with torch.no_grad():
        got = torch.jit.load(str(path))(x)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6)
    assert got.sum(1).numpy() == pytest.approx(np.ones(4))
