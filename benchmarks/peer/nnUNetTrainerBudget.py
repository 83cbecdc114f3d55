"""nnU-Net v2's trainer with a wall-clock budget, for ``benchmarks/nnunet_peer.py`` (runs in the peer venv only).

nnU-Net's fixed-epoch trainer variants (``nnUNetTrainer_5epochs`` ...) keep 250 iterations per epoch, more than a
2-core CPU runs in an hour, so this variant keeps everything of ``nnUNetTrainer`` (plan, network, loss with deep
supervision, SGD + Nesterov, augmentation, sampling, checkpoints) and changes only the length of the run:

- an epoch is ``MEDMONAI_PEER_ITERS_PER_EPOCH`` training iterations (default 25, nnU-Net: 250) and
  ``MEDMONAI_PEER_VAL_ITERS_PER_EPOCH`` validation iterations (default 5, nnU-Net: 50);
- after every epoch the number of epochs is set to what fits ``MEDMONAI_PEER_BUDGET_MIN`` minutes at the pace of
  the epochs so far, and the poly learning-rate schedule is stretched over that number, so it decays to zero at the
  end of the budget as it does at the end of a full nnU-Net run; the run stops when the next epoch would not fit;
- nnU-Net's final validation (a full prediction of the validation cases, outside the budget, not used by the
  benchmark) is skipped; the benchmark predicts the test cases with ``nnUNetv2_predict`` from ``checkpoint_final``.

``budget_stats.json`` in the output folder records the epochs, iterations and seconds. nnU-Net finds trainer classes
inside its own package, so the benchmark copies this file to ``nnunetv2/training/nnUNetTrainer/`` (the top level,
searched first).
"""

from __future__ import annotations

import json
import os
import time
from os.path import join

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerBudget(nnUNetTrainer):  # noqa: N801 - nnU-Net's naming
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):  # noqa: B008
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget_s = float(os.environ.get("MEDMONAI_PEER_BUDGET_MIN", "60")) * 60.0
        self.num_iterations_per_epoch = int(os.environ.get("MEDMONAI_PEER_ITERS_PER_EPOCH", "25"))
        self.num_val_iterations_per_epoch = int(os.environ.get("MEDMONAI_PEER_VAL_ITERS_PER_EPOCH", "5"))
        self.num_epochs = 10_000  # replaced by what fits the budget after the first epoch

    def run_training(self):
        self.on_train_start()
        t0 = time.perf_counter()
        epoch_seconds: list[float] = []
        train_seconds = 0.0
        iterations = 0
        while self.current_epoch < self.num_epochs:
            te = time.perf_counter()
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = []
            for _ in range(self.num_iterations_per_epoch):
                outputs.append(self.train_step(next(self.dataloader_train)))
            iterations += len(outputs)
            train_seconds += time.perf_counter() - te
            self.on_train_epoch_end(outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                n_val = self.num_val_iterations_per_epoch
                val = [self.validation_step(next(self.dataloader_val)) for _ in range(n_val)]
                self.on_validation_epoch_end(val)
            self.on_epoch_end()  # advances current_epoch
            epoch_seconds.append(time.perf_counter() - te)
            elapsed = time.perf_counter() - t0
            pace = sum(epoch_seconds[-5:]) / len(epoch_seconds[-5:])
            self.num_epochs = self.current_epoch + max(0, int((self.budget_s - elapsed) // pace))
            self.lr_scheduler.max_steps = max(self.num_epochs, 1)
        self.on_train_end()
        if self.local_rank == 0:
            stats = {
                "budget_min": self.budget_s / 60.0,
                "epochs": self.current_epoch,
                "iterations": iterations,
                "iterations_per_epoch": self.num_iterations_per_epoch,
                "val_iterations_per_epoch": self.num_val_iterations_per_epoch,
                "batch_size": self.configuration_manager.batch_size,
                "patch_size": list(self.configuration_manager.patch_size),
                "training_seconds": time.perf_counter() - t0,
                "train_step_seconds": train_seconds,
                "seconds_per_iteration": train_seconds / max(iterations, 1),
                "epoch_seconds": epoch_seconds,
                "torch_threads": torch.get_num_threads(),
            }
            with open(join(self.output_folder, "budget_stats.json"), "w") as f:
                json.dump(stats, f, indent=2)

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("final validation skipped (benchmarks/nnunet_peer.py predicts the test cases)")
