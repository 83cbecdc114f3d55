"""Write the training-domain record of a run (:mod:`medmonai.data.domain`) when its training starts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from ignite.engine import Engine, Events

from medmonai.data.domain import (
    RECORD_FILE,
    entries_key,
    load_training_domain,
    training_domain_record,
    write_training_domain,
)
from medmonai.utils import PathLike

__all__ = ["TrainingDomainHandler"]

logger = logging.getLogger(__name__)


class TrainingDomainHandler:
    """Write ``output_dir/training_domain.json`` at ``STARTED``: attach to the *trainer*.

    The record (:func:`medmonai.data.domain.training_domain_record`) fingerprints the training images, raw and after
    ``preprocessing``; ``medmonai infer``/``watch`` and the bundles' inference and evaluation configs check every
    input against it. A record made from the same images and plan (a resumed run) is kept. Written atomically, only
    by rank 0 under ``torch.distributed``.

    Args:
        output_dir: the run's output folder (beside ``checkpoints/``).
        entries: the training entries (``image``).
        preprocessing: the deterministic preprocessing of the model (no augmentation).
        spatial_dims: the model's dimensionality.
        plan: the preprocessing plan (recorded, and part of the key that decides whether a record is current).
        max_images: at most this many training images are read.
        samples_per_image: voxels sampled per channel and image.
        seed: sampling seed.
        extra: further record fields.
    """

    def __init__(
        self,
        output_dir: PathLike,
        entries: Sequence[Mapping[str, Any]],
        preprocessing: Callable | None = None,
        spatial_dims: int | None = None,
        plan: Mapping[str, Any] | None = None,
        max_images: int = 200,
        samples_per_image: int = 5000,
        seed: int = 0,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.entries = list(entries)
        self.preprocessing = preprocessing
        self.spatial_dims = spatial_dims
        self.plan = dict(plan) if plan is not None else None
        self.max_images = int(max_images)
        self.samples_per_image = int(samples_per_image)
        self.seed = int(seed)
        self.extra = dict(extra or {})

    @property
    def record_file(self) -> Path:
        """``output_dir/training_domain.json``."""
        return self.output_dir / RECORD_FILE

    def attach(self, engine: Engine) -> None:
        """Write at ``STARTED``."""
        engine.add_event_handler(Events.STARTED, self._started)

    def __call__(self, engine: Engine | None = None) -> Path | None:
        """Write the record now (unless a current one exists); returns its path (None on ranks > 0)."""
        return self._started(engine)

    def _started(self, engine: Engine | None) -> Path | None:
        if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
            return None
        key = entries_key(self.entries, extra=[self.plan, self.max_images, self.samples_per_image, self.seed])
        try:
            old = load_training_domain(self.record_file)
        except ValueError:
            old = None
        if old is not None and old.get("key") == key:
            logger.info(f"training-domain record {self.record_file} is current")
            return self.record_file
        record = training_domain_record(
            self.entries, self.preprocessing, spatial_dims=self.spatial_dims, max_images=self.max_images,
            samples_per_image=self.samples_per_image, seed=self.seed,
            normalization=(self.plan or {}).get("normalization"), extra={"key": key, **self.extra},
        )  # fmt: skip
        write_training_domain(self.record_file, record)
        logger.info(f"wrote the training-domain record of {record['n_images']} image(s) to {self.record_file}")
        return self.record_file
