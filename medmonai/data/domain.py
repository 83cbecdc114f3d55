"""The training domain of a model, and the check that an input at inference lies inside it.

A model answers confidently whatever it is given: a classifier trained on 8-bit PNG images (0..255) and run on a
DICOM copy of the same case stored in another intensity scale (values in the thousands) gives a confident wrong
answer. :func:`training_domain_record` therefore fingerprints the training inputs once, when training starts
(:class:`medmonai.handlers.domain.TrainingDomainHandler` writes it as ``<output_dir>/training_domain.json``):

- spatial dimensionality, channel counts (as stored and after preprocessing);
- modality (with where it came from: the DICOM reader, the datalist entry, the datalist, or a heuristic);
- spacing and shape ranges per axis;
- per channel, over a sample of voxels of every image (at most ``max_images`` images, evenly spread), the pooled
  0.5/5/50/95/99.5 percentiles, mean, standard deviation, minimum and maximum, and the range over the images of
  each image's own 0.5th/50th/99.5th percentile and spread (99.5th minus 0.5th percentile), both of the **raw**
  intensities (as loaded) and **after** the bundle's deterministic preprocessing.

:func:`check_input_domain` compares one input with the record and returns the problems (an empty list: inside the
domain). An input is out of the training domain when (tolerances: :class:`DomainTolerances`, recorded with the
record):

1. its spatial dimensionality differs;
2. its channel count (as stored, or after preprocessing) is not one of the training ones;
3. its modality differs from the training modalities, when both are known from the data (DICOM Modality, the
   datalist) rather than guessed; ``8bit`` is an intensity scale, not an acquisition modality, and ``OT`` (other)
   says nothing, so neither is compared;
4. (when the normalization depends on the absolute intensities: ``scale255``, CT windows, CT clip + z-score with
   fixed statistics, none; not for the per-image ``zscore`` / ``percentile``, which an affine change of the raw
   scale does not reach) the bulk of its raw intensities lies outside the training range: more than
   ``max_outside_fraction`` (50 %) of its voxels of a channel are outside the training [p0.5, p99.5] range widened
   on both sides by ``raw_widen`` (0.5) times its width;
5. (likewise) its raw intensity spread (p99.5 - p0.5) is more than ``spread_factor`` (10) times smaller or larger
   than the spread of every training image (a 0..1 image for a 0..255 model);
6. the same as 4. after preprocessing, with the range widened by ``post_widen`` (1.0) times its width.

A spacing outside the training range by more than ``spacing_factor`` (3) is logged as a warning only (the
preprocessing resamples, and PNG/JPEG files carry no spacing).

These tolerances let every phantom test case (the same domain, other subjects) pass while an input in another
intensity scale is refused; :func:`screen_inputs` applies the check to a list of inputs and raises
:class:`OutOfDistributionError` naming each refused input and the statistic out of range, unless
``allow_out_of_distribution``, when the problems are returned for the outputs to carry.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import Compose

from medmonai.data.fingerprint import image_fingerprint
from medmonai.data.reader import load_image_transforms
from medmonai.utils import PathLike, atomic_write_json, read_json

__all__ = [
    "RECORD_FILE",
    "RECORD_VERSION",
    "PERCENTILES",
    "DomainTolerances",
    "OutOfDistributionError",
    "training_domain_record",
    "input_statistics",
    "check_input_domain",
    "load_training_domain",
    "write_training_domain",
    "screen_inputs",
    "screen_for_report",
    "out_of_distribution_columns",
    "entries_key",
    "SCALE_INVARIANT_PRESETS",
]

logger = logging.getLogger(__name__)

#: file name of the record in a training run's output folder
RECORD_FILE = "training_domain.json"
#: version of the record layout
RECORD_VERSION = 1
#: percentiles of the pooled per-channel statistics
PERCENTILES: tuple[float, ...] = (0.5, 5.0, 50.0, 95.0, 99.5)
#: modalities that are intensity scales or say nothing about the acquisition: never compared
_UNCOMPARED_MODALITIES = frozenset({"8bit", "OT", "SC"})
#: sources of a modality that come from the data (a heuristic guess is not compared)
_KNOWN_SOURCES = frozenset({"reader", "entry", "datalist"})
#: intensity presets computed from each image itself: an affine change of the raw scale does not reach the model
SCALE_INVARIANT_PRESETS = frozenset({"zscore", "percentile"})


class OutOfDistributionError(ValueError):
    """An input lies outside the training domain of the model; the message names the input and the statistic."""


@dataclass(frozen=True)
class DomainTolerances:
    """How far an input may lie from the training domain (see the module docstring).

    Attributes:
        raw_widen: the training raw [p0.5, p99.5] range is widened on each side by this times its width.
        post_widen: likewise for the intensities after preprocessing.
        max_outside_fraction: the largest fraction of an input's voxels (per channel) allowed outside the widened
            range.
        spread_factor: the input's p99.5 - p0.5 spread may be at most this many times smaller than the smallest
            or larger than the largest training image's spread.
        spacing_factor: spacings outside the training range by more than this factor are logged as a warning.
    """

    raw_widen: float = 0.5
    post_widen: float = 1.0
    max_outside_fraction: float = 0.5
    spread_factor: float = 10.0
    spacing_factor: float = 3.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> DomainTolerances:
        """Tolerances from a record's ``tolerances`` (unknown keys ignored, missing ones defaulted)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: float(v) for k, v in dict(values or {}).items() if k in names})


# ------------------------------------------------------------------------------------------------ statistics
def _pct_key(p: float) -> str:
    return "p" + f"{p:g}".replace(".", "_")


def _as_array(image: Any) -> np.ndarray:
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    return np.asarray(arr, dtype=np.float64)


def _channel_samples(arr: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per channel, ``n`` voxels drawn without replacement (all of them when there are fewer)."""
    out = []
    for c in range(arr.shape[0]):
        v = arr[c].reshape(-1)
        v = v[np.isfinite(v)]
        out.append(v if v.size <= n else v[rng.choice(v.size, size=n, replace=False)])
    return out


def _pooled(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    p = np.percentile(values, PERCENTILES)
    out = {_pct_key(q): float(v) for q, v in zip(PERCENTILES, p, strict=True)}
    out.update(
        mean=float(values.mean()), std=float(values.std()), min=float(values.min()), max=float(values.max()),
        n_samples=int(values.size),
    )  # fmt: skip
    return out


def _per_image(samples: Sequence[np.ndarray]) -> dict[str, list[float]]:
    """Range over the images of each image's p0.5, median, p99.5 and spread."""
    rows = [np.percentile(s, (0.5, 50.0, 99.5)) for s in samples if s.size]
    if not rows:
        return {}
    a = np.asarray(rows)
    spread = a[:, 2] - a[:, 0]
    return {
        "p0_5": [float(a[:, 0].min()), float(a[:, 0].max())],
        "p50": [float(a[:, 1].min()), float(a[:, 1].max())],
        "p99_5": [float(a[:, 2].min()), float(a[:, 2].max())],
        "spread": [float(spread.min()), float(spread.max())],
    }


def _channel_record(per_image: Sequence[list[np.ndarray]]) -> list[dict[str, Any]]:
    """Pooled and per-image statistics per channel index (images lacking a channel are left out of it)."""
    n_channels = max((len(s) for s in per_image), default=0)
    out = []
    for c in range(n_channels):
        samples = [s[c] for s in per_image if len(s) > c]
        rec = _pooled(np.concatenate(samples) if samples else np.empty(0))
        rec["per_image"] = _per_image(samples)
        rec["n_images"] = len(samples)
        out.append(rec)
    return out


def _loader(image_key: str) -> Callable:
    return Compose(load_image_transforms(image_key))


def _name(image: Any) -> str:
    if isinstance(image, list | tuple):
        return f"{image[0]} (+{len(image) - 1} files)" if len(image) > 1 else str(image[0]) if image else "<empty>"
    return str(image)


def input_statistics(
    entry: Mapping[str, Any] | Any,
    preprocessing: Callable | None = None,
    samples: int = 20000,
    seed: int = 0,
    image_key: str = "image",
    loader: Callable | None = None,
) -> dict[str, Any]:
    """What the domain check looks at, for one input.

    Args:
        entry: a datalist entry (``image``, optional ``modality``), or an image path / list of DICOM files.
        preprocessing: the model's deterministic preprocessing (a callable on ``{image_key: image}``); None: the
            statistics after preprocessing are left out.
        samples: voxels sampled per channel.
        seed: sampling seed.
        image_key: the image key.
        loader: the raw loader (default: the medmonai readers, channel first).

    Returns:
        ``{"name", "spatial_dims", "channels", "spacing", "shape", "modality", "modality_source", "raw": [per
        channel samples], "preprocessed": [per channel samples] or None, "preprocessed_channels"}``.
    """
    e = dict(entry) if isinstance(entry, Mapping) else {image_key: entry}
    image = e[image_key]
    rng = np.random.default_rng(seed)
    raw = (loader or _loader(image_key))({image_key: image})[image_key]
    arr = _as_array(raw)
    rec, _, _ = image_fingerprint(raw, entry=e, samples_per_image=1, rng=np.random.default_rng(seed))
    out: dict[str, Any] = {
        "name": _name(image),
        "spatial_dims": int(rec["spatial_dims"]),
        "channels": int(rec["channels"]),
        "spacing": [float(s) for s in rec["spacing"]],
        "shape": [int(s) for s in rec["shape"]],
        "modality": rec.get("modality"),
        "modality_source": rec.get("modality_source"),
        "raw": _channel_samples(arr, samples, rng),
        "preprocessed": None,
        "preprocessed_channels": None,
    }
    if preprocessing is not None:
        post = preprocessing({image_key: image})
        post = post[image_key] if isinstance(post, Mapping) else post
        parr = _as_array(post)
        out["preprocessed"] = _channel_samples(parr, samples, rng)
        out["preprocessed_channels"] = int(parr.shape[0])
    return out


def entries_key(entries: Sequence[Mapping[str, Any]], image_key: str = "image", extra: Any = None) -> str:
    """A short hash of the image paths of ``entries`` (and ``extra``, e.g. the plan): is a record still current?"""
    names = [_name(e.get(image_key)) if isinstance(e, Mapping) else _name(e) for e in entries]
    text = json.dumps([names, extra], sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def training_domain_record(
    entries: Sequence[Mapping[str, Any]],
    preprocessing: Callable | None = None,
    spatial_dims: int | None = None,
    max_images: int = 200,
    samples_per_image: int = 5000,
    seed: int = 0,
    image_key: str = "image",
    tolerances: DomainTolerances | None = None,
    extra: Mapping[str, Any] | None = None,
    normalization: str | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fingerprint the training inputs of a model (see the module docstring).

    Args:
        entries: the training entries (``image``; ``modality`` when the datalist gives one).
        preprocessing: the deterministic preprocessing of the model (no augmentation), applied to
            ``{image_key: image}``; None: no statistics after preprocessing.
        spatial_dims: the model's dimensionality (checked against the images).
        max_images: at most this many images (evenly spread over ``entries``) are read.
        samples_per_image: voxels sampled per channel and image.
        seed: sampling seed.
        image_key: the image key.
        tolerances: the tolerances stored with the record (default :class:`DomainTolerances`).
        extra: further fields (the source datalist...).
        normalization: the intensity normalization of ``preprocessing`` (the plan's ``normalization``). With a
            per-image one (:data:`SCALE_INVARIANT_PRESETS`: ``zscore``, ``percentile``) the raw intensity scale does
            not reach the model (MR has no absolute units), so the record says ``raw_scale_checked: false`` and only
            the intensities after preprocessing are compared; otherwise (``scale255``, CT windows and clip + z-score
            with fixed statistics, none) the raw scale is compared too.

    Returns:
        The JSON-safe record.

    Raises:
        ValueError: for no entries, mixed dimensionalities or a ``spatial_dims`` mismatch.
        RuntimeError: when an image cannot be read or preprocessed (naming it).
    """
    if not entries:
        raise ValueError("no training entries to record the training domain of")
    n = len(entries)
    picked = sorted({int(i) for i in np.linspace(0, n - 1, num=min(n, int(max_images)))})
    loader = _loader(image_key)
    stats = []
    for i in picked:
        e = entries[i]
        try:
            stats.append(input_statistics(e, preprocessing, samples_per_image, seed + i, image_key, loader))
        except Exception as err:  # noqa: BLE001 - re-raised with the file named
            raise RuntimeError(f"{_name(e.get(image_key))}: cannot record the training domain: {err}") from err
    dims = Counter(s["spatial_dims"] for s in stats)
    if len(dims) > 1:
        raise ValueError(f"training images of mixed dimensionality: {dict(dims)}")
    sd = next(iter(dims))
    if spatial_dims is not None and int(spatial_dims) != sd:
        raise ValueError(f"the training images are {sd}D but the model is {spatial_dims}D")
    spacings = np.array([s["spacing"] for s in stats], dtype=np.float64)
    shapes = np.array([s["shape"] for s in stats], dtype=np.float64)
    modalities = Counter(str(s["modality"]) for s in stats)
    sources = Counter(str(s["modality_source"]) for s in stats)
    record: dict[str, Any] = {
        "version": RECORD_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_images": len(stats),
        "n_entries": n,
        "spatial_dims": int(sd),
        "channels": sorted({int(s["channels"]) for s in stats}),
        "preprocessed_channels": sorted({int(s["preprocessed_channels"]) for s in stats})
        if preprocessing is not None
        else None,
        "modality": {"counts": dict(modalities), "sources": dict(sources)},
        "spacing": {
            "min": spacings.min(0).tolist(),
            "median": np.median(spacings, 0).tolist(),
            "max": spacings.max(0).tolist(),
        },
        "shape": {
            "min": shapes.min(0).tolist(),
            "median": np.median(shapes, 0).tolist(),
            "max": shapes.max(0).tolist(),
        },
        "raw": _channel_record([s["raw"] for s in stats]),
        "preprocessed": _channel_record([s["preprocessed"] for s in stats]) if preprocessing is not None else None,
        "percentiles": list(PERCENTILES),
        "samples_per_image": int(samples_per_image),
        "seed": int(seed),
        "tolerances": asdict(tolerances or DomainTolerances()),
        "normalization": normalization,
        "raw_scale_checked": _preset(normalization) not in SCALE_INVARIANT_PRESETS,
    }
    record.update(dict(extra or {}))
    return record


def _preset(normalization: str | Mapping[str, Any] | None) -> str | None:
    if isinstance(normalization, Mapping):
        return str(normalization.get("preset")) if normalization.get("preset") is not None else None
    return None if normalization is None else str(normalization)


# ---------------------------------------------------------------------------------------------------- check
def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _range_problem(
    what: str, channel: int, n_channels: int, samples: np.ndarray, train: Mapping[str, Any], widen: float, tol: Any
) -> str | None:
    lo, hi = train.get("p0_5"), train.get("p99_5")
    if lo is None or hi is None or samples.size == 0:
        return None
    width = float(hi) - float(lo)
    if width <= 0:
        width = max(abs(float(hi)), 1.0)
    a, b = float(lo) - widen * width, float(hi) + widen * width
    outside = float(((samples < a) | (samples > b)).mean())
    if outside <= tol.max_outside_fraction:
        return None
    p5, p50, p95 = np.percentile(samples, (5, 50, 95))
    ch = f" (channel {channel})" if n_channels > 1 else ""
    return (
        f"{what} intensities{ch}: {outside:.0%} of the voxels lie outside the training range "
        f"[{_fmt(a)}, {_fmt(b)}] (training p0.5..p99.5 [{_fmt(lo)}, {_fmt(hi)}] widened by {widen:g} x its width; "
        f"at most {tol.max_outside_fraction:.0%} allowed); input p5/p50/p95 {_fmt(p5)}/{_fmt(p50)}/{_fmt(p95)}"
    )


def _spread_problem(
    channel: int, n_channels: int, samples: np.ndarray, train: Mapping[str, Any], tol: Any
) -> str | None:
    rng = (train.get("per_image") or {}).get("spread")
    if not rng or samples.size == 0:
        return None
    lo, hi = float(rng[0]), float(rng[1])
    q0, q1 = np.percentile(samples, (0.5, 99.5))
    spread = float(q1 - q0)
    ch = f" (channel {channel})" if n_channels > 1 else ""
    if lo > 0 and spread * tol.spread_factor < lo:
        side = "smaller"
    elif hi > 0 and spread > hi * tol.spread_factor:
        side = "larger"
    else:
        return None
    return (
        f"raw intensity spread{ch} (p99.5 - p0.5) {_fmt(spread)} is more than {tol.spread_factor:g} x {side} than "
        f"that of the training images ({_fmt(lo)} .. {_fmt(hi)})"
    )


def _modality_problem(record: Mapping[str, Any], stats: Mapping[str, Any]) -> str | None:
    mod = record.get("modality") or {}
    counts = {str(k) for k in (mod.get("counts") or {})}
    sources = set(mod.get("sources") or {})
    value, source = stats.get("modality"), stats.get("modality_source")
    if not counts or not sources <= _KNOWN_SOURCES or counts & _UNCOMPARED_MODALITIES:
        return None
    if value is None or source not in _KNOWN_SOURCES or str(value) in _UNCOMPARED_MODALITIES:
        return None
    if str(value) in counts:
        return None
    return f"modality {value} (from the {source}), the model was trained on {', '.join(sorted(counts))}"


def _spacing_note(record: Mapping[str, Any], stats: Mapping[str, Any], tol: DomainTolerances) -> str | None:
    sp = record.get("spacing") or {}
    lo, hi, s = sp.get("min"), sp.get("max"), stats.get("spacing")
    if not lo or not hi or not s or len(s) != len(lo):
        return None
    f = tol.spacing_factor
    if all(float(a) / f <= float(v) <= float(b) * f for v, a, b in zip(s, lo, hi, strict=True)):
        return None
    return f"spacing {[round(v, 4) for v in s]} mm is outside the training range {lo} .. {hi} by more than {f:g} x"


def check_input_domain(
    record: Mapping[str, Any],
    entry: Mapping[str, Any] | Any,
    preprocessing: Callable | None = None,
    tolerances: DomainTolerances | None = None,
    image_key: str = "image",
    stats: Mapping[str, Any] | None = None,
) -> list[str]:
    """The ways one input lies outside the training domain of ``record`` (an empty list: inside it).

    Args:
        record: a :func:`training_domain_record` (e.g. from :func:`load_training_domain`).
        entry: a datalist entry (``image``, optional ``modality``), or an image path / list of DICOM files.
        preprocessing: the model's deterministic preprocessing (the one the record was made with); None: the
            statistics after preprocessing are not compared.
        tolerances: default: the record's ``tolerances``, else :class:`DomainTolerances`.
        image_key: the image key.
        stats: the input's :func:`input_statistics`, when already computed.

    Returns:
        One message per problem, naming the statistic, the input's value and the training range.
    """
    tol = tolerances or DomainTolerances.from_mapping(record.get("tolerances"))
    s = stats if stats is not None else input_statistics(entry, preprocessing, image_key=image_key)
    problems: list[str] = []
    if int(record.get("spatial_dims", s["spatial_dims"])) != s["spatial_dims"]:
        problems.append(f"{s['spatial_dims']}D image, the model was trained on {record['spatial_dims']}D images")
    channels = [int(c) for c in record.get("channels") or []]
    if channels and s["channels"] not in channels:
        problems.append(f"{s['channels']} channel(s), the model was trained on images with {channels} channel(s)")
    post_channels = [int(c) for c in record.get("preprocessed_channels") or []]
    if post_channels and s["preprocessed_channels"] is not None and s["preprocessed_channels"] not in post_channels:
        problems.append(f"{s['preprocessed_channels']} channel(s) after preprocessing, the model takes {post_channels}")
    structural = bool(problems)  # another dimensionality or channel count: intensities are not comparable
    modality = _modality_problem(record, s)
    if modality:
        problems.append(modality)
    raw_train = record.get("raw") or []
    if not structural and record.get("raw_scale_checked", True) and len(raw_train) == len(s["raw"]):
        for c, (samples, train) in enumerate(zip(s["raw"], raw_train, strict=True)):
            problems += [
                p
                for p in (
                    _range_problem("raw", c, len(raw_train), samples, train, tol.raw_widen, tol),
                    _spread_problem(c, len(raw_train), samples, train, tol),
                )
                if p
            ]
    post_train = record.get("preprocessed") or []
    post = s.get("preprocessed")
    if not structural and post is not None and post_train and len(post_train) == len(post):
        for c, (samples, train) in enumerate(zip(post, post_train, strict=True)):
            p = _range_problem("preprocessed", c, len(post_train), samples, train, tol.post_widen, tol)
            if p:
                problems.append(p)
    note = _spacing_note(record, s, tol)
    if note:
        logger.warning(f"{s['name']}: {note} (not refused: the preprocessing resamples)")
    return problems


# ------------------------------------------------------------------------------------------------- files
def load_training_domain(path: PathLike | None) -> dict[str, Any] | None:
    """Read a record: ``path`` is the JSON file or the training output folder holding ``training_domain.json``.

    Returns:
        The record, or None when there is none (a model trained before records were written).

    Raises:
        ValueError: for a file that is not valid JSON or not a training-domain record, naming it.
    """
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        p = p / RECORD_FILE
    if not p.is_file():
        return None
    record = read_json(p, "training-domain record")
    if not isinstance(record, dict) or "spatial_dims" not in record or "raw" not in record:
        raise ValueError(f"{p}: not a medmonai training-domain record")
    record["_file"] = str(p)
    return record


def write_training_domain(path: PathLike, record: Mapping[str, Any]) -> Path:
    """Write a record atomically as JSON; returns the path."""
    return atomic_write_json(path, {k: v for k, v in record.items() if not k.startswith("_")})


def _plural(what: str, n: int) -> str:
    """``what`` in the plural when ``n != 1`` (``series`` is its own plural)."""
    return what if n == 1 or what.endswith("s") else what + "s"


def screen_inputs(
    record: Mapping[str, Any] | None,
    entries: Sequence[Mapping[str, Any] | Any],
    preprocessing: Callable | None = None,
    allow_out_of_distribution: bool = False,
    names: Sequence[str] | None = None,
    what: str = "input",
    image_key: str = "image",
    record_file: PathLike | None = None,
) -> list[list[str]]:
    """Check every input against the training domain, before anything is predicted or written.

    Args:
        record: the model's record; None (a model trained before records were written): a warning that the inputs
            are not checked, and no problems.
        entries: the inputs (datalist entries or image paths / DICOM file lists).
        preprocessing: the model's deterministic preprocessing.
        allow_out_of_distribution: process out-of-domain inputs (the caller marks them in its outputs) instead of
            refusing them.
        names: how to name each input in messages (default: its file).
        what: what the inputs are (``"series"``, ``"test image"``...), for messages.
        image_key: the image key.
        record_file: where the record is (default: its ``_file``), for messages.

    Returns:
        The problems of each input (empty lists for inputs inside the domain).

    Raises:
        OutOfDistributionError: when an input is outside the domain and ``allow_out_of_distribution`` is False,
            listing every such input, the statistic out of range, its value and the training range.
    """
    if record is None:
        where = f" ({record_file})" if record_file else ""
        logger.warning(
            f"no training-domain record{where} (the model was trained before medmonai recorded one): the "
            f"{len(entries)} {_plural(what, len(entries))} are NOT checked against the training data; retrain to get "
            "the check"
        )
        return [[] for _ in entries]
    found = []
    for i, e in enumerate(entries):
        name = names[i] if names is not None else _name(e.get(image_key) if isinstance(e, Mapping) else e)
        try:
            found.append((name, check_input_domain(record, e, preprocessing, image_key=image_key)))
        except Exception as err:  # noqa: BLE001 - an unreadable input: re-raised naming it
            cause = err.__cause__ if isinstance(err, RuntimeError) and err.__cause__ is not None else err
            raise ValueError(f"{what} {name}: cannot check it against the training domain: {cause}") from err
    bad = [(n, p) for n, p in found if p]
    source = record_file or record.get("_file") or "the training-domain record"
    if bad and not allow_out_of_distribution:
        lines = "".join(f"\n  {what} {n}: " + "; ".join(p) for n, p in bad)
        raise OutOfDistributionError(
            f"{len(bad)} of {len(entries)} {_plural(what, len(entries))} outside the training domain of the model "
            f"({source}), "
            f"refused:{lines}\nThe model's answer on such inputs is not reliable; to process them anyway, marked "
            "out of distribution in the outputs, pass --allow-out-of-distribution (bundle configs: "
            "allow_out_of_distribution=true)"
        )
    for n, p in bad:
        reasons = "; ".join(p)
        logger.warning(f"{what} {n} is outside the training domain (processed, marked out_of_distribution): {reasons}")
    return [p for _, p in found]


def screen_for_report(
    training_domain: PathLike | Mapping[str, Any] | None,
    entries: Sequence[Mapping[str, Any]],
    preprocessing: Callable | None = None,
    allow_out_of_distribution: bool = False,
    what: str = "test image",
    id_key: str = "case_id",
) -> dict[str, Any]:
    """:func:`screen_inputs` for an evaluation: the report's ``input_check`` field.

    Args:
        training_domain: the record, its file or the training output folder (None or missing: not checked, with a
            warning).
        entries: the entries evaluated.
        preprocessing: the model's deterministic preprocessing.
        allow_out_of_distribution: evaluate out-of-domain entries (listed in the result) instead of refusing.
        what: what the entries are, for messages.
        id_key: entry key naming a case (else its image).

    Returns:
        ``{"training_domain": file or None, "checked", "allow_out_of_distribution", "n_out_of_distribution",
        "out_of_distribution": [{"case_id", "index" (in entries), "reasons"}]}``.

    Raises:
        OutOfDistributionError: see :func:`screen_inputs`.
    """
    record = training_domain if isinstance(training_domain, Mapping) else load_training_domain(training_domain)
    source = None if isinstance(training_domain, Mapping) or training_domain is None else str(training_domain)
    names = [str(e.get(id_key) or _name(e.get("image"))) for e in entries]
    found = screen_inputs(
        record, entries, preprocessing, allow_out_of_distribution, names=names, what=what, record_file=source
    )
    bad = [{"case_id": n, "index": i, "reasons": p} for i, (n, p) in enumerate(zip(names, found, strict=True)) if p]
    return {
        "training_domain": (record or {}).get("_file", source) if record is not None else None,
        "checked": record is not None,
        "allow_out_of_distribution": bool(allow_out_of_distribution),
        "n_out_of_distribution": len(bad),
        "out_of_distribution": bad,
    }


def out_of_distribution_columns(input_check: Mapping[str, Any], n_cases: int) -> dict[str, list[str]]:
    """The per-case columns of an input check (:func:`screen_for_report`) for a per-case table.

    Args:
        input_check: the result of :func:`screen_for_report` over ``n_cases`` entries.
        n_cases: the number of screened entries (rows of the table, in entry order).

    Returns:
        ``{"out_of_distribution": ["true" | "false" | "" ...], "out_of_distribution_reasons": [...]}``: empty flags
        when the inputs were not checked (no training-domain record), reasons ``"; "``-joined.

    Raises:
        ValueError: when the check names a case outside ``0 .. n_cases - 1`` (it was made over other entries).
    """
    reasons = {int(c["index"]): list(c["reasons"]) for c in input_check.get("out_of_distribution", [])}
    if any(not 0 <= i < n_cases for i in reasons):
        raise ValueError(f"the input check names case(s) {sorted(reasons)} outside the {n_cases} cases evaluated")
    checked = bool(input_check.get("checked"))
    flags = [("true" if i in reasons else "false") if checked else "" for i in range(n_cases)]
    return {
        "out_of_distribution": flags,
        "out_of_distribution_reasons": ["; ".join(reasons.get(i, [])) for i in range(n_cases)],
    }
