"""Where the tests find a bundle run: run names (``classification_2d``) -> the merged bundle + its ``spatial_dims``.

One bundle serves each task in 2D and 3D (``bundles/classification``, ``bundles/segmentation``); the tests name a
configuration by the name its runs record (:func:`medmonai.bundles.qualified_name`), e.g. ``segmentation_2d``.
"""

from __future__ import annotations

from pathlib import Path

from medmonai.bundles import ALIASES

REPO = Path(__file__).resolve().parents[1]


def bundle_of(name: str) -> tuple[Path, dict[str, int]]:
    """``(bundle folder, {"spatial_dims": d})`` of a run name; a plain bundle name gives ``(folder, {})``."""
    if name in ALIASES:
        bundle, dims = ALIASES[name]
        return REPO / "bundles" / bundle, {"spatial_dims": dims}
    return REPO / "bundles" / name, {}


def bundle_dir(name: str) -> Path:
    """The bundle folder serving a run name (``classification_3d`` -> ``bundles/classification``)."""
    return bundle_of(name)[0]


def config_files(name: str, *extra: str) -> list[str]:
    """``train.yaml`` then ``<extra>.yaml`` of the bundle serving ``name``."""
    cfg = bundle_dir(name) / "configs"
    return [str(cfg / "train.yaml")] + [str(cfg / f"{e}.yaml") for e in extra]


def run_args(name: str, root: Path | str, *extra: str, **overrides: object) -> dict[str, object]:
    """The ``monai.bundle.run`` arguments of a run ``name`` (its ``spatial_dims`` first, then ``overrides``)."""
    folder, dims = bundle_of(name)
    return {
        "config_file": config_files(name, *extra),
        "meta_file": str(folder / "configs" / "metadata.json"),
        "bundle_root": str(root),
        **dims,
        **overrides,
    }
