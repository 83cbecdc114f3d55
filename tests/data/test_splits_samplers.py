from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from medmonai.data.samplers import class_balanced_sampler, class_counts, class_weights
from medmonai.data.splits import holdout_split, train_val_entries


def _entries(n_subjects=30, per_subject=3, minority_every=4):
    out = []
    for s in range(n_subjects):
        label = int(s % minority_every == 0)
        for k in range(per_subject):
            out.append({"image": f"s{s}_{k}.png", "label": label, "subject": f"s{s}"})
    return out


def test_holdout_is_subject_grouped_and_stratified():
    entries = _entries()
    tr, va = holdout_split(entries, val_fraction=0.2, seed=1)
    assert len(tr) + len(va) == len(entries)
    assert not {e["subject"] for e in tr} & {e["subject"] for e in va}
    frac_all = np.mean([e["label"] for e in entries])
    frac_val = np.mean([e["label"] for e in va])
    assert abs(frac_val - frac_all) < 0.15 and {e["label"] for e in va} == {0, 1}
    assert holdout_split(entries, 0.2, seed=1) == (tr, va)  # seeded
    with pytest.raises(ValueError, match="val_fraction"):
        holdout_split(entries, 0.9)


def test_train_val_entries_prefers_the_datalists_validation_split(tmp_path):
    entries = _entries(10, 1, 2)
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"classes": ["a", "b"], "training": entries, "validation": entries[:2]}))
    s = train_val_entries(str(p))
    assert len(s["training"]) == 10 and len(s["validation"]) == 2
    p.write_text(json.dumps({"classes": ["a", "b"], "training": entries, "test": entries[:3]}))
    s = train_val_entries(str(p), val_fraction=0.2)
    assert len(s["training"]) + len(s["validation"]) == 10  # test split untouched


def test_class_weights_and_counts():
    entries = [{"label": 0}] * 6 + [{"label": 1}] * 2
    assert class_counts(entries, 2).tolist() == [6, 2]
    # scikit-learn's "balanced" rule: n / (k * n_c)
    np.testing.assert_allclose(class_weights(entries, 2, "balanced").numpy(), [8 / 12, 8 / 4])
    assert class_weights(entries, 2, None) is None
    np.testing.assert_allclose(class_weights(entries, 2, [1.0, 3.0]).numpy(), [1.0, 3.0])
    with pytest.raises(ValueError, match="no training entries"):
        class_weights([{"label": 0}], 2, "balanced")


def test_balanced_sampler_draws_classes_equally():
    entries = [{"label": 0}] * 90 + [{"label": 1}] * 10
    sampler = class_balanced_sampler(entries, 2, num_samples=4000, seed=0)
    counts = Counter(entries[i]["label"] for i in sampler)
    assert abs(counts[0] - counts[1]) < 300
    first = list(class_balanced_sampler(entries, 2, num_samples=50, seed=0))
    assert first == list(class_balanced_sampler(entries, 2, num_samples=50, seed=0))  # seeded
    assert isinstance(sampler, torch.utils.data.WeightedRandomSampler)
