"""Read the tags a TensorBoard log folder holds (shared by the bundle tests)."""

from __future__ import annotations

from pathlib import Path


def tensorboard_tags(folder: str | Path) -> dict[str, set[str]]:
    """``{"images": {...}, "scalars": {...}}``: the tags of every event file in ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, set[str]] = {"images": set(), "scalars": set()}
    for ev in Path(folder).glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        for kind in tags:
            tags[kind] |= set(acc.Tags()[kind])
    return tags
