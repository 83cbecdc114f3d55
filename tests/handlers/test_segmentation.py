"""Segmentation overlays for TensorBoard and the training time budget."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from medmonai.handlers.segmentation import TensorBoardSegmentationOverlay, overlay_rgb
from medmonai.handlers.time_budget import TimeBudget


def test_overlay_colours_reference_green_prediction_red_on_the_most_labelled_slice():
    image = torch.zeros(1, 8, 6, 4)
    label = torch.zeros(1, 8, 6, 4)
    label[0, 1:3, 1:3, 2] = 1  # reference only on slice 2
    pred = torch.zeros(2, 8, 6, 4)
    pred[0] = 1.0
    pred[1, 1:2, 1:2, 2] = 2.0  # predicted (arg-max class 1) at one reference voxel
    pred[1, 5, 4, 2] = 2.0  # and one false positive
    rgb = overlay_rgb(image, label, pred, alpha=1.0)
    assert rgb.shape == (3, 6, 8)  # rows = the second array axis
    assert rgb[:, 1, 1].tolist() == [1.0, 1.0, 0.0]  # agreement: yellow
    assert rgb[:, 2, 2].tolist() == [0.0, 1.0, 0.0]  # missed reference: green
    assert rgb[:, 4, 5].tolist() == [1.0, 0.0, 0.0]  # false positive: red
    assert rgb[:, 0, 0].tolist() == [0.0, 0.0, 0.0]  # background: the (constant) grey image


def test_overlay_handler_logs_decollated_outputs(tmp_path):
    written = []

    class Writer:
        def add_images(self, tag, images, step, dataformats):
            written.append((tag, tuple(images.shape), step, dataformats))

        def flush(self):
            pass

    engine = Engine(lambda e, b: [{"image": torch.rand(1, 16, 12), "label": torch.ones(1, 16, 12)}] * 3)
    TensorBoardSegmentationOverlay(summary_writer=Writer(), max_images=2, interval=2).attach(engine)
    for _ in range(3):
        engine.run([0], max_epochs=1)
    assert written == [("val_overlay", (2, 3, 12, 16), 1, "NCHW"), ("val_overlay", (2, 3, 12, 16), 3, "NCHW")]


def test_time_budget_terminates_and_completes():
    engine = Engine(lambda e, b: None)
    completed = []
    engine.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.iteration))
    budget = TimeBudget(minutes=1e-9)
    budget.attach(engine)
    engine.run(range(10), max_epochs=5)
    assert engine.state.iteration == 1 and completed == [1] and budget.stopped_at_epoch == 1
    TimeBudget(None).attach(Engine(lambda e, b: None))  # no budget: nothing attached
    with pytest.raises(ValueError, match="positive"):
        TimeBudget(0)
