from __future__ import annotations

import pytest
import torch

from medmonai.engines.losses import L1Penalty, classification_loss, training_class_prior


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(4, 3)
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.backbone(x))


def test_weighted_cross_entropy_matches_hand_computation():
    entries = [{"label": 0}] * 3 + [{"label": 1}]
    loss = classification_loss(2, class_weights="balanced", entries=entries)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([[0], [1]])  # (B, 1) as MONAI batches give them
    w = torch.tensor([4 / 6, 4 / 2])
    lp = torch.log_softmax(logits, 1)
    expected = -(w[0] * lp[0, 0] + w[1] * lp[1, 1]) / (w[0] + w[1])
    assert torch.allclose(loss(logits, labels), expected)


def test_l1_penalty_on_head_only():
    net = _Net()
    base = classification_loss(2)
    loss = classification_loss(2, l1=0.5, model=net)
    assert isinstance(loss, L1Penalty)
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 1])
    expected = base(net(x), y) + 0.5 * net.head.weight.abs().sum()
    assert torch.allclose(loss(net(x), y), expected)
    all_w = L1Penalty(base, net, l1=1.0, scope="all")
    assert torch.allclose(all_w.penalty(), net.head.weight.abs().sum() + net.backbone.weight.abs().sum())
    net.head.weight.requires_grad_(False)  # frozen weights are not penalised
    assert float(loss.penalty()) == 0.0
    with pytest.raises(ValueError, match="needs the model"):
        classification_loss(2, l1=0.1)


def test_training_class_prior_of_weights_and_sampler():
    entries = [{"label": 0}] * 6 + [{"label": 1}] * 3 + [{"label": 2}] + [{"label": 2, "synthetic": True}]
    plain = training_class_prior(entries, 3)
    assert plain["class_priors"] == pytest.approx([0.6, 0.3, 0.1])  # real entries only
    assert plain["training_prior"] == pytest.approx([6 / 11, 3 / 11, 2 / 11]) and plain["class_weights"] is None
    balanced = training_class_prior(entries, 3, "balanced")
    assert balanced["training_prior"] == pytest.approx([1 / 3] * 3)  # balanced weights: a uniform prior
    sampled = training_class_prior(entries, 3, [1.0, 2.0, 1.0], balanced_sampler=True)
    assert sampled["training_prior"] == pytest.approx([0.25, 0.5, 0.25]) and sampled["sampler"] == "class_balanced"
    with pytest.raises(ValueError, match="no training entries"):
        training_class_prior([{"label": 0}], 2)
