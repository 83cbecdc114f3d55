"""A MONAI ``Compose`` whose random part (the training augmentation) runs on plain tensors, without metadata.

Why: MONAI's ``MetaTensor`` tracks metadata and ``applied_operations`` through every torch operation, and
``CacheDataset`` deep-copies each cached item (meta dict included) before the random transforms. On small 2D images
that bookkeeping, not the arithmetic, is the cost of an iteration: ``benchmarks/throughput.py`` measured the data part
at about half of the classification bundle's iteration (BreastMNIST, batch 32 of 32 x 32, 2-core CPU); with this
chain it is about a quarter (docs/benchmarks.md, "Where a training step's time goes").
A training batch needs no metadata after the deterministic preprocessing (geometry and intensities are final; nothing
is inverted), so :class:`UntrackedCompose` keeps it for the deterministic part and drops it from the first random
transform on. This is MONAI's own recipe for fast training (``monai.data.set_track_meta(False)`` after caching, see
MONAI's "fast model training" guide), scoped to the random part of one chain instead of the whole process.

The random transforms are the same objects, seeded the same way by ``Compose``; only the tensor type differs, so the
augmented values are the same as with a plain ``Compose`` of the same seed (``tests/transforms/test_compose.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai.data import MetaTensor, get_track_meta, set_track_meta
from monai.transforms import Compose, RandomizableTrait, Transform

__all__ = ["UntrackedCompose", "strip_meta"]


def strip_meta(data: Any) -> Any:
    """``data`` with every top-level :class:`~monai.data.MetaTensor` replaced by its plain tensor.

    Dicts are copied (the input is not modified); lists/tuples (e.g. the patches of ``RandCropByLabelClassesd``) are
    converted item by item; other values are returned as they are.
    """
    if isinstance(data, MetaTensor):
        return data.as_tensor()
    if isinstance(data, Mapping):
        return {k: v.as_tensor() if isinstance(v, MetaTensor) else v for k, v in data.items()}
    if isinstance(data, list | tuple):
        return type(data)(strip_meta(d) for d in data)
    return data


def _is_random(t: Any) -> bool:
    # CacheDataset's rule for where caching stops
    return isinstance(t, RandomizableTrait) or not isinstance(t, Transform)


class UntrackedCompose(Compose):
    """``Compose`` that turns MONAI metadata tracking off from its first random transform on.

    The transforms before the first random one (loading, orientation, spacing, normalization: what
    ``CacheDataset`` caches) run as in ``Compose``, with ``MetaTensor`` metadata. Their output is then converted to
    plain ``torch.Tensor`` s (:func:`strip_meta`, so a cache holds plain tensors), and the random transforms run with
    ``monai.data.set_track_meta(False)``; the previous setting is restored afterwards, also on an error. A chain
    without random transforms returns plain tensors at its end. Use it for a *training* chain whose output goes into
    a network and nowhere else (no ``inverse``, no metadata-based saving). From a bundle config::

        train:
          preprocessing:
            _target_: medmonai.transforms.compose.UntrackedCompose
            transforms: $list(@preprocessing.flatten().transforms) + @augmentation

    The tracking flag is process-global in MONAI: the random part must not run while another thread of the same
    process applies MONAI transforms that need metadata (DataLoader worker *processes*, and ``num_workers=0``, are
    fine; MONAI's ``ThreadDataLoader`` beside metadata-dependent transforms in the main thread is not).

    Args are those of :class:`monai.transforms.Compose`.
    """

    def _first_random(self) -> int:
        i = self.get_index_of_first(_is_random)
        return len(self.transforms) if i is None else int(i)

    def __call__(
        self, input_: Any, start: int = 0, end: int | None = None, threading: bool = False, lazy: bool | None = None
    ) -> Any:
        """Apply ``transforms[start:end]``: tracked up to the first random transform, untracked from there."""
        stop = len(self.transforms) if end is None else int(end)
        split = min(max(self._first_random(), int(start)), stop)
        out = input_
        if int(start) < split:
            out = super().__call__(out, start=start, end=split, threading=threading, lazy=lazy)
        out = strip_meta(out)  # a cache then holds plain tensors (cheap to deep-copy); a no-op on plain input
        if split < stop:
            previous = get_track_meta()
            set_track_meta(False)
            try:
                out = super().__call__(out, start=split, end=stop, threading=threading, lazy=lazy)
            finally:
                set_track_meta(previous)
        return out

    def flatten(self) -> UntrackedCompose:
        """The flattened chain (nested ``Compose`` unrolled), still an :class:`UntrackedCompose`."""
        flat = super().flatten()
        return UntrackedCompose(
            flat.transforms,
            map_items=self.map_items,
            unpack_items=self.unpack_items,
            log_stats=self.log_stats,
            lazy=self._lazy,
            overrides=self.overrides,
        )
