from __future__ import annotations

import logging

import torch
from ignite.engine import Engine, Events

from medmonai.handlers.epoch_log import EpochStatsHandler, epoch_line


def _evaluator(values):
    ev = Engine(lambda e, b: None)
    ev.state.key_metric_name = "val_auc"
    ev.state.best_metric, ev.state.best_metric_epoch = -1.0, -1

    @ev.on(Events.EPOCH_COMPLETED)
    def _metrics(engine):
        value = values[engine.state.epoch - 1]
        engine.state.metrics = {"val_auc": value, "val_accuracy": 0.5}
        if value > engine.state.best_metric:
            engine.state.best_metric, engine.state.best_metric_epoch = value, engine.state.epoch

    return ev


def test_one_line_per_epoch_with_mean_loss_validation_and_best(caplog):
    losses = iter([1.0, 3.0, 0.5, 0.5, 0.2, 0.4])
    trainer = Engine(lambda e, b: [{"loss": torch.tensor(next(losses))}])
    evaluator = _evaluator([0.7, 0.9, 0.8])

    @trainer.on(Events.EPOCH_COMPLETED)
    def _validate(engine):  # what MONAI's ValidationHandler does: the evaluator runs at the trainer's epoch
        evaluator.run([0], max_epochs=engine.state.epoch)

    EpochStatsHandler(evaluator).attach(trainer)
    caplog.set_level(logging.INFO, logger="medmonai.train")
    trainer.run([0, 1], max_epochs=3)
    lines = [r.getMessage() for r in caplog.records if r.name == "medmonai.train"]
    assert len(lines) == 3  # one per epoch
    assert lines[0].startswith("epoch 1/3: train loss 2.0000 | val_auc 0.7000 val_accuracy 0.5000")
    assert "best val_auc 0.9000 (epoch 2)" in lines[2] and lines[2].startswith("epoch 3/3: train loss 0.3000")


def test_epoch_line_without_validation_or_loss():
    line = epoch_line(2, 10, None, None, None, 1.25)
    assert line == "epoch 2/10: train loss n/a | no validation this epoch | 1.2 s"
