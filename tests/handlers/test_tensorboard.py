from __future__ import annotations

from types import SimpleNamespace

import torch

from medmonai.handlers.tensorboard import TensorBoardInputImages, TensorBoardLearningRate


class _Writer:
    def __init__(self):
        self.images, self.scalars = [], []

    def add_images(self, tag, img, step, dataformats):
        self.images.append((tag, img, step, dataformats))

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass


def _engine(batch, epoch=3):
    return SimpleNamespace(state=SimpleNamespace(batch=batch, epoch=epoch))


def test_input_images_from_collated_and_decollated_batches():
    w = _Writer()
    h = TensorBoardInputImages(summary_writer=w, max_images=2)
    imgs = torch.rand(4, 1, 8, 6)
    h(_engine({"image": imgs}))
    h(_engine([{"image": imgs[i], "label": 0} for i in range(4)]))  # MONAI engines decollate the batch
    vol = torch.rand(3, 1, 8, 6, 5)
    h(_engine({"image": vol}))
    assert [im.shape for _, im, _, _ in w.images] == [(2, 1, 6, 8)] * 3  # rows = j
    grid = w.images[0][1]
    assert float(grid.min()) == 0.0 and float(grid.max()) == 1.0  # per-image min-max
    torch.testing.assert_close(w.images[2][1][0, 0], TensorBoardInputImages.to_grid_images(vol[:1])[0, 0])


def test_learning_rates_are_logged_per_group():
    w = _Writer()
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1], "lr": 0.1, "name": "head"}, {"params": [p2], "lr": 0.01}], lr=0.1)
    TensorBoardLearningRate(opt, summary_writer=w)(_engine(None, epoch=2))
    assert w.scalars == [("lr/head", 0.1, 2), ("lr/group_1", 0.01, 2)]
