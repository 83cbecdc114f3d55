from __future__ import annotations

import pytest
import torch
from ignite.metrics import Metric
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator, SupervisedTrainer

from medmonai.handlers.attached import attached, evaluators
from medmonai.handlers.checkpoint import (
    LOCK_FILE,
    EarlyStopOnValidation,
    OutputDirLockedError,
    RestoreBestWeights,
    ResumableCheckpoint,
    ResumeSettingsError,
    TrainingState,
    compare_settings,
    latest_checkpoint,
    lock_output_dir,
    release_output_dir,
)


class _Scripted(Metric):
    """A validation metric whose value at validation i is values[i] (to script improvements)."""

    def __init__(self, values):
        self.values = list(values)
        self.calls = 0
        super().__init__()

    def reset(self):
        pass

    def update(self, output):
        pass

    def compute(self):
        v = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return v


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    return [{"image": x[i], "label": torch.tensor(int(x[i, 0] > 0))} for i in range(16)]


def _engines(values, max_epochs, handlers_fn, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(_data(), batch_size=4, shuffle=False)
    evaluator = SupervisedEvaluator(
        device="cpu", val_data_loader=loader, network=net, key_val_metric={"val_auc": _Scripted(values)}
    )
    from monai.handlers import ValidationHandler

    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=net,
        optimizer=opt,
        loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=[ValidationHandler(validator=evaluator, interval=1, epoch_level=True)]
        + handlers_fn(net, opt, evaluator),
    )
    return net, opt, trainer, evaluator


def test_early_stop_and_restore_best_weights():
    snapshots = {}
    values = [0.5, 0.8, 0.7, 0.6, 0.9, 0.95]

    def handlers(net, opt, evaluator):
        from ignite.engine import Events

        def grab(engine):
            snapshots[engine.state.epoch] = {k: v.clone() for k, v in net.state_dict().items()}

        class _Grab:
            def attach(self, engine):
                engine.add_event_handler(Events.EPOCH_COMPLETED, grab)

        return [
            _Grab(),
            EarlyStopOnValidation(evaluator, metric="val_auc", patience=2),
            RestoreBestWeights(net, evaluator),
        ]

    net, _, trainer, evaluator = _engines(values, max_epochs=6, handlers_fn=handlers)
    trainer.run()
    # best at epoch 2 (0.8); epochs 3 and 4 do not improve -> stop after epoch 4
    assert trainer.state.epoch == 4
    assert evaluator.state.best_metric_epoch == 2
    for k, v in net.state_dict().items():
        assert torch.equal(v, snapshots[2][k]), k
    assert not torch.equal(net.weight, snapshots[4]["weight"])


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    values = [0.1 * i for i in range(1, 10)]

    def plain(net, opt, evaluator):
        return []

    full_net, _, full, _ = _engines(values, 4, plain)
    full.run()

    ckpt = tmp_path / "ckpt"

    def resumable(net, opt, evaluator):
        return [ResumableCheckpoint(str(ckpt), {"network": net, "optimizer": opt})]

    _, _, first, _ = _engines(values, 2, resumable, seed=0)  # same start, "killed" after 2 epochs
    first.run()
    assert latest_checkpoint(str(ckpt)).endswith("checkpoint_epoch=2.pt")
    net2, _, second, _ = _engines(values, 4, resumable, seed=2)  # fresh objects, other init
    second.run()
    assert second.state.epoch == 4 and second.state.iteration == 16
    for k, v in full_net.state_dict().items():
        assert torch.allclose(v, net2.state_dict()[k], atol=1e-6), k
    assert latest_checkpoint(str(ckpt)).endswith("checkpoint_epoch=4.pt")
    assert len(list(ckpt.glob("*.pt"))) == 1  # n_saved=1


def test_no_checkpoint_starts_fresh(tmp_path):
    h = ResumableCheckpoint(str(tmp_path / "none"), {})
    net, _, trainer, _ = _engines([0.5], 1, lambda n, o, e: [h])
    trainer.run()
    assert h.loaded_from is None and trainer.state.epoch == 1


def test_explicit_settings_are_saved_and_a_mismatch_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt"

    def with_settings(settings, resume=True):
        return lambda net, opt, ev: [ResumableCheckpoint(str(ckpt), {"network": net}, resume=resume, settings=settings)]

    _, _, first, _ = _engines([0.5], 1, with_settings({"seed": 0, "lr": 0.1}))
    first.run()
    saved = torch.load(latest_checkpoint(str(ckpt)), weights_only=True)["run_settings"]
    assert '"seed": 0' in saved["json"]
    _, _, same, _ = _engines([0.5], 2, with_settings({"seed": 0, "lr": 0.1}))
    same.run()  # same settings: resumes, one more epoch
    assert same.state.epoch == 2
    _, _, other, _ = _engines([0.5], 3, with_settings({"seed": 1, "lr": 0.1}))
    with pytest.raises(ResumeSettingsError, match=r"seed: checkpoint 0, now 1"):
        other.run()
    _, _, fresh, _ = _engines([0.5], 1, with_settings({"seed": 1, "lr": 0.1}, resume=False))
    fresh.run()  # resume false: starts over, the old checkpoint is removed
    assert sorted(p.name for p in ckpt.glob("checkpoint_epoch=*.pt")) == ["checkpoint_epoch=1.pt"]


def test_compare_settings_names_each_differing_key():
    diffs = compare_settings({"a": 1, "b": [1, 2], "old": 0}, {"a": 1, "b": [1, 3], "new": 0})
    assert diffs == ["b: checkpoint [1, 2], now [1, 3]"]  # keys on one side only are not compared


def test_lock_is_reentrant_in_a_process_and_skipped_on_other_ranks(tmp_path, monkeypatch):
    folder = tmp_path / "out"
    assert lock_output_dir(folder) == str(folder) and (folder / LOCK_FILE).is_file()
    assert lock_output_dir(str(folder)) == str(folder)  # this process holds it already
    assert '"pid"' in (folder / LOCK_FILE).read_text()
    assert release_output_dir(folder) and not release_output_dir(folder)
    monkeypatch.setenv("RANK", "1")
    other = tmp_path / "rank1"
    assert lock_output_dir(other) == str(other) and not other.exists()  # ranks > 0 neither lock nor write
    assert issubclass(OutputDirLockedError, RuntimeError)


def test_training_state_finds_the_handlers_that_registered_themselves(tmp_path):
    """No private ignite handler lists: the handlers record themselves when they attach."""
    ckpt = ResumableCheckpoint(str(tmp_path), {})

    def handlers(net, opt, evaluator):
        stop = EarlyStopOnValidation(evaluator, metric="val_auc", patience=2)
        return [ckpt, stop, RestoreBestWeights(net, evaluator)]

    _, _, trainer, evaluator = _engines([0.5], 1, handlers)
    assert evaluators(trainer) == [evaluator]
    assert attached(trainer, ResumableCheckpoint) == [ckpt]
    assert sorted(TrainingState(trainer)._components()) == [
        "evaluator0/EarlyStopHandler0",
        "evaluator0/best_metric",
        "trainer/RestoreBestWeights0",
    ]
