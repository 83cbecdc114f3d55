"""Access to the medmonai bundles: where they are, their config files, parsing, task type, default run folders.

The one place that knows the layout of ``bundles/<name>/configs`` (used by ``medmonai cv``, ``infer``, ``watch``,
``export``, the demo and the benchmarks). One bundle serves each task in 2D and 3D through ``spatial_dims``
(``classification``, ``segmentation``, ``gan_augmentation``); the pre-merge names ``classification_2d``,
``classification_3d``, ``segmentation_2d`` and ``segmentation_3d`` still resolve, for one release, to the merged
bundle plus the ``spatial_dims`` override (with a deprecation warning).

Run outputs never go into the source tree by default: a bundle's default ``bundle_root`` is
``$MEDMONAI_HOME/<bundle>_<spatial_dims>d`` (``MEDMONAI_HOME`` defaults to ``~/.medmonai``), see
:func:`default_bundle_root`.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, run

from medmonai.utils import PathLike

__all__ = [
    "ALIASES",
    "DIMS_DEFAULTS",
    "TASKS",
    "dims_default",
    "qualified_name",
    "bundles_dir",
    "resolve_bundle",
    "bundle_configs",
    "parse_bundle",
    "task_type",
    "medmonai_home",
    "default_bundle_root",
    "run_bundle",
]

logger = logging.getLogger(__name__)

#: the task bundles and the task each serves
TASKS: dict[str, str] = {
    "classification": "classification",
    "segmentation": "segmentation",
    "gan_augmentation": "gan",
}

#: pre-merge bundle names -> (merged bundle, spatial_dims); kept for one release
ALIASES: dict[str, tuple[str, int]] = {
    "classification_2d": ("classification", 2),
    "classification_3d": ("classification", 3),
    "segmentation_2d": ("segmentation", 2),
    "segmentation_3d": ("segmentation", 3),
}

#: the settings of the task bundles that depend on ``spatial_dims`` (their train.yaml reads them with
#: :func:`dims_default`; each stays a plain config id that ``--<id>`` overrides)
DIMS_DEFAULTS: dict[str, dict[int, dict[str, Any]]] = {
    "classification": {
        2: {"batch_size": 32, "phantom": {"n_subjects": 80, "images_per_subject": [1, 3]}},
        3: {"batch_size": 8, "phantom": {"n_subjects": 60, "images_per_subject": [1, 3]}},
    },
    "segmentation": {
        2: {"batch_size": 8, "sw_batch_size": 8, "phantom": {"n_subjects": 40, "images_per_subject": [1, 3]}},
        3: {"batch_size": 4, "sw_batch_size": 4, "phantom": {"n_subjects": 30, "images_per_subject": [1, 2]}},
    },
}

_announced: set[str] = set()


def dims_default(bundle: str, spatial_dims: int, key: str) -> Any:
    """A task bundle's default for ``key`` at ``spatial_dims`` (a copy), from :data:`DIMS_DEFAULTS`.

    The ``phantom`` default (the embedded synthetic data set) also gets ``test_fraction 0.25`` and ``seed 0``.

    Raises:
        ValueError: for an unknown bundle, dimensionality or key, naming the valid ones.
    """
    if bundle not in DIMS_DEFAULTS:
        raise ValueError(f"no per-dimensionality defaults for bundle {bundle!r}; known: {sorted(DIMS_DEFAULTS)}")
    table = DIMS_DEFAULTS[bundle]
    if spatial_dims not in table or isinstance(spatial_dims, bool):
        raise ValueError(f"{bundle}: spatial_dims must be one of {sorted(table)}, got {spatial_dims!r}")
    if key not in table[spatial_dims]:
        raise ValueError(f"{bundle}: no default {key!r}; known: {sorted(table[spatial_dims])}")
    value = table[spatial_dims][key]
    if key == "phantom":
        return {**value, "test_fraction": 0.25, "seed": 0}
    return list(value) if isinstance(value, list) else value


def qualified_name(bundle: str, spatial_dims: int | None = None) -> str:
    """The name a run of ``bundle`` records (model info, reports, experiment names): ``classification_2d``, ...

    The run names are the pre-merge bundle names, so records written before the merge stay comparable.
    """
    if bundle in ALIASES:
        bundle, spatial_dims = ALIASES[bundle]
    return bundle if spatial_dims is None else f"{bundle}_{int(spatial_dims)}d"


def bundles_dir() -> Path:
    """The repository's ``bundles/`` folder (medmonai installed from a checkout, e.g. ``pip install -e .``).

    Raises:
        FileNotFoundError: when medmonai is not installed from a checkout (no ``bundles/`` beside the package).
    """
    path = Path(__file__).resolve().parents[1] / "bundles"
    if not (path / "gan_augmentation" / "configs" / "train.yaml").is_file():
        raise FileNotFoundError(f"{path}: bundles not found; run from a checkout of the medmonai repository")
    return path


def resolve_bundle(bundle: PathLike) -> tuple[Path, dict[str, Any]]:
    """The bundle folder of a name or path, and the overrides an old (alias) name implies.

    Args:
        bundle: a bundle folder (``bundles/classification``), a bundle name (``classification``), or a pre-merge name
            or path (``classification_2d``, ``bundles/segmentation_3d``), which maps to the merged bundle with
            ``{"spatial_dims": 2|3}``.

    Returns:
        ``(folder, overrides)``; ``overrides`` is empty unless an alias was given.

    Raises:
        FileNotFoundError: for a name or folder that is not a bundle, naming it.
    """
    path = Path(bundle)
    if (path / "configs").is_dir():
        return path, {}
    name = path.name
    if name in ALIASES and not path.exists():
        target, dims = ALIASES[name]
        folder = path.parent / target if (path.parent / target / "configs").is_dir() else bundles_dir() / target
        warnings.warn(
            f"bundle '{name}' is now '{target}' with spatial_dims={dims} (the old name works for one release: "
            f"use {folder} --spatial_dims {dims})",
            FutureWarning,
            stacklevel=2,
        )
        return folder, {"spatial_dims": dims}
    if len(path.parts) == 1:
        try:
            candidate = bundles_dir() / name
        except FileNotFoundError:
            candidate = None
        if candidate is not None and (candidate / "configs").is_dir():
            return candidate, {}
    raise FileNotFoundError(f"{bundle}: not a bundle folder (no configs/ inside) and not a bundle name")


def bundle_configs(bundle: PathLike, names: Sequence[str] = ("train",)) -> dict[str, Path]:
    """The config files of a bundle: each of ``names`` (required) plus ``meta`` and ``logging`` when present.

    Args:
        bundle: bundle folder (already resolved, see :func:`resolve_bundle`).
        names: config file stems that must exist (``train``, ``crossval``, ``inference``, ``evaluate``, ...).

    Returns:
        ``{name: path}`` for ``names``, plus ``"meta"`` (``metadata.json``) and ``"logging"`` (``logging.conf``)
        paths (which may not exist).

    Raises:
        FileNotFoundError: for a missing required config, naming the file and the bundle.
    """
    cfg = Path(bundle) / "configs"
    files: dict[str, Path] = {}
    for name in names:
        found = [cfg / f"{name}{ext}" for ext in (".yaml", ".json", ".yml") if (cfg / f"{name}{ext}").is_file()]
        if not found:
            raise FileNotFoundError(f"{cfg / (name + '.yaml')}: not found; is {bundle} a bundle with a {name} config?")
        files[name] = found[0]
    files["meta"] = cfg / "metadata.json"
    files["logging"] = cfg / "logging.conf"
    return files


def parse_bundle(
    bundle: PathLike, names: Sequence[str] = ("train",), overrides: Mapping[str, Any] | None = None
) -> ConfigParser:
    """A MONAI ``ConfigParser`` over the bundle's configs ``names`` (in order) with the metadata and ``overrides``.

    Args:
        bundle: bundle folder or name (aliases resolve, their ``spatial_dims`` applied before ``overrides``).
        names: config file stems read in order (later ones override earlier ones).
        overrides: ``{id: value}`` set on the parser.

    Returns:
        The parser (nothing instantiated yet).
    """
    folder, implied = resolve_bundle(bundle)
    files = bundle_configs(folder, names)
    parser = ConfigParser()
    parser.read_config([str(files[n]) for n in names])
    if files["meta"].is_file():
        parser.read_meta(str(files["meta"]))
    for key, value in {**implied, **(overrides or {})}.items():
        parser[key] = value
    return parser


def task_type(bundle_or_parser: PathLike | ConfigParser) -> str:
    """``"classification"``, ``"segmentation"`` or ``"gan"``: from the bundle's configs.

    A config with ``label_names`` is segmentation, one with a ``generator_def`` GAN, one with ``classes``
    classification.

    Raises:
        ValueError: for a bundle that is none of these.
    """
    parser = bundle_or_parser if isinstance(bundle_or_parser, ConfigParser) else parse_bundle(bundle_or_parser)
    if parser.get("label_names") is not None:
        return "segmentation"
    if parser.get("generator_def") is not None:
        return "gan"
    if parser.get("classes") is not None:
        return "classification"
    raise ValueError("the bundle config has neither label_names (segmentation), classes nor a generator (GAN)")


def medmonai_home() -> Path:
    """Where runs with the default ``bundle_root`` write: ``$MEDMONAI_HOME``, default ``~/.medmonai``."""
    env = os.environ.get("MEDMONAI_HOME")
    return Path(env).expanduser() if env else Path.home() / ".medmonai"


def default_bundle_root(bundle: str, spatial_dims: int | None = None, announce: bool = True) -> str:
    """The default ``bundle_root`` of a bundle run: ``$MEDMONAI_HOME/<bundle>[_<spatial_dims>d]``, outside the source.

    Args:
        bundle: bundle name (``classification``, ``segmentation``, ``gan_augmentation``; aliases map).
        spatial_dims: 2 or 3, appended so that 2D and 3D runs of one bundle do not share a folder.
        announce: log the folder once per process, so a user sees where the run writes.

    Returns:
        The folder as a string (config expressions concatenate it).
    """
    root = str(medmonai_home() / qualified_name(bundle, spatial_dims))
    if announce and root not in _announced:
        _announced.add(root)
        msg = f"medmonai: outputs of this run go to {root} (set bundle_root or MEDMONAI_HOME to change)"
        logger.debug(msg)  # console: printed once (a bundle run's logging.conf shows INFO, not DEBUG)
        print(msg, flush=True)
    return root


def run_bundle(config_file: PathLike | Sequence[PathLike], **overrides: Any) -> Any:
    """``monai.bundle.run`` of configs; MONAI's "only from a source you trust" warning silenced for our own bundles.

    A config from anywhere but this package's ``bundles/`` still warns.

    The demo and ``medmonai cv`` run the shipped bundles several times in one process; MONAI warns at each run that
    ``_target_`` and ``$`` expressions are evaluated, which for the package's own configs only repeats noise.

    Args:
        config_file: one config file or several (later ones override earlier ones).
        overrides: passed to ``monai.bundle.run`` (``bundle_root``, ``meta_file``, config ids, ...).

    Returns:
        What ``monai.bundle.run`` returns.
    """
    files = [str(config_file)] if isinstance(config_file, (str, os.PathLike)) else [str(f) for f in config_file]
    try:
        ours = all(Path(f).resolve().is_relative_to(bundles_dir().resolve()) for f in files)
    except FileNotFoundError:
        ours = False
    with warnings.catch_warnings():
        if ours:
            warnings.filterwarnings("ignore", message=re.escape("parsing config_file "), category=UserWarning)
        return run(config_file=files if len(files) > 1 else files[0], **overrides)
