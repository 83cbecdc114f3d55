"""``medmonai train``: the best small-data classifier a time budget buys, chosen by cross-validation.

The nnU-Net idea applied to small-data classification: from the data (the fingerprint's plan, the data size, the
measured cost of each network and the measured similarity of the images to ImageNet) :func:`plan_auto` plans, and says
why in ``plan.json``:

* a small **portfolio** of candidates (:data:`PORTFOLIO`): a CNN from scratch at the planned (native) resolution,
  a deeper net (ResNet-18, scratch), ImageNet EfficientNet-Lite0 as frozen features + a linear head, and
  EfficientNet-Lite0 fine-tuned in the transfer quadrant that the data size and the measured domain similarity choose
  (:func:`medmonai.networks.transfer.choose_strategy`); 2D only for the ImageNet ones;
* the input size of each (the plan's; at least 64 px for the ImageNet weights), the augmentation level, the
  test-time mirroring (the axis the training augmentation mirrors);
* a per-fold time cap from the budget (:class:`medmonai.handlers.time_budget.TimeBudget`, between epochs) and the
  candidates the budget can afford (the most expensive dropped first).

:func:`train_auto` then runs **successive halving** over the candidates on a subject-grouped, stratified k-fold of
the training data (the ``training`` split plus ``validation``, as ``medmonai cv`` pools them; the test split is
never looked at): rung 0 trains fold 0 of every candidate; the better half (by fold-0 out-of-fold AUC, as far as
the remaining budget affords their other folds, measured by rung 0) trains the remaining folds. The candidate with
the best out-of-fold (OOF) AUC wins; the mean of the two best is taken instead when its OOF AUC is higher (and
both share the preprocessing, so one model file serves them). Probabilities are temperature-calibrated when that
lowers the cross-fitted OOF log loss (:mod:`medmonai.metrics.calibration`), and the decision threshold (three or
more classes: the decision rule) is chosen on the OOF predictions. The test split is scored once, at the end.

Every fold is a normal run of ``bundles/classification`` (``train.yaml`` + ``crossval.yaml`` through
``monai.bundle.run``: checkpoints, TensorBoard, one log line per epoch). Output folder ``out``:

* ``plan.json`` — the plan with its reasons; ``auto_args.json`` — the arguments (a rerun with others is refused);
* ``candidates/<name>/runs/cv/`` — each candidate's cross-validation folder (``medmonai cv`` layout);
* ``final/`` — the chosen model as a cross-validation folder: ``cv_report.json`` (OOF and test reports with
  bootstrap CIs, threshold), ``ensemble/model.ts`` (all fold models, mirroring and calibration in one TorchScript
  module), ``ensemble/report.json`` + ROC / confusion-matrix PNGs, ``cv_settings.json``, ``fingerprint.json`` and
  ``training_domain.json``, so that ``medmonai infer bundles/classification --model out/final/ensemble/model.ts``
  uses it unchanged;
* ``auto_report.json`` — rung results, selection, calibration, the final metrics and the time spent.

An interrupted run resumes: finished folds are kept, an interrupted fold resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmonai.apps.crossval import fold_models, run_crossval
from medmonai.bundles import bundles_dir, parse_bundle
from medmonai.data.datalist import is_ordinal, load_datalist, load_datalist_file
from medmonai.data.splits import case_id
from medmonai.engines.crossval import (
    FOLD_PREDICTIONS,
    aggregate_crossval,
    export_ensemble,
    fold_dir,
    fold_done,
    load_fold_predictions,
    pool_oof,
    write_fold_predictions,
)
from medmonai.metrics.calibration import choose_calibration
from medmonai.metrics.clinical import classification_metrics
from medmonai.transforms.augmentation import LEVELS
from medmonai.utils import PathLike, atomic_write_json, read_json

__all__ = [
    "AutoTrainError",
    "Candidate",
    "PORTFOLIO",
    "MIN_EPOCHS",
    "check_inputs",
    "plan_auto",
    "train_auto",
]

logger = logging.getLogger(__name__)


class AutoTrainError(ValueError):
    """``medmonai train`` cannot run on this input; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One portfolio entry: bundle overrides and when it applies.

    Attributes:
        name: the candidate's name (its folder under ``candidates/``).
        overrides: ``bundles/classification`` overrides (network, pretrained weights, transfer strategy).
        imagenet: uses the ImageNet weights (2D only, input at least :data:`IMAGENET_MIN_SIZE`).
        what: one line for the plan.
    """

    name: str
    overrides: Mapping[str, Any]
    imagenet: bool = False
    what: str = ""


#: the portfolio, in the order the budget keeps them (the first is always kept)
PORTFOLIO: tuple[Candidate, ...] = (
    Candidate(
        "small_cnn",
        {"network_name": "small_cnn", "pretrained": None, "strategy": "scratch"},
        what="compact CNN from scratch at the planned resolution (the best single method on BreastMNIST)",
    ),
    Candidate(
        "resnet18",
        {"network_name": "resnet18", "pretrained": None, "strategy": "scratch"},
        what="a deeper net from scratch (MONAI ResNet-18), at the planned resolution",
    ),
    Candidate(
        "lite0_frozen",
        {"network_name": "efficientnet_lite0", "pretrained": "imagenet", "strategy": "feature_extractor"},
        imagenet=True,
        what="ImageNet EfficientNet-Lite0 as a frozen feature extractor + a new linear head",
    ),
    Candidate(
        "lite0_finetune",
        {"network_name": "efficientnet_lite0", "pretrained": "imagenet", "strategy": "auto"},
        imagenet=True,
        what="ImageNet EfficientNet-Lite0 fine-tuned in the quadrant chosen by data size and domain similarity",
    ),
)
#: the smallest input side the ImageNet candidates get (their features are poor at 28 px: docs/benchmarks.md)
IMAGENET_MIN_SIZE = 64
#: a candidate needs this many epochs per fold, at its measured pace, to stay in the portfolio
MIN_EPOCHS = 5
#: the share of the budget kept for predictions, aggregation and export
RESERVE_FRACTION = 0.1
_AUG_LEVEL = "light"


def _bundle() -> Path:
    return bundles_dir() / "classification"


def _progress(msg: str) -> None:
    print(f"[train] {msg}", flush=True)


def _bar(done: int, total: int, width: int = 20) -> str:
    n = 0 if total <= 0 else round(width * min(done, total) / total)
    return "[" + "#" * n + "." * (width - n) + "]"


# ------------------------------------------------------------------------------------------------- input checks
def check_inputs(
    datalist: PathLike, n_folds: int = 5, budget_min: float = 30.0, group_key: str = "subject"
) -> dict[str, Any]:
    """Refuse, before any training, input that ``medmonai train`` cannot use; return the pooled data's counts.

    Raises:
        AutoTrainError: no ``training`` split, an unlabelled entry, fewer than two classes, a class with fewer
            subjects than folds, ``n_folds < 2`` or a non-positive budget; each message names the fix.
        DatalistError / FileNotFoundError: an unreadable datalist (from :func:`load_datalist_file`).
    """
    path = Path(datalist)
    if not budget_min or budget_min <= 0:
        raise AutoTrainError(f"--budget-min must be positive (minutes of training), got {budget_min}")
    if n_folds < 2:
        raise AutoTrainError(f"--folds must be at least 2, got {n_folds}")
    raw = load_datalist_file(path)
    if not isinstance(raw.get("training"), list) or not raw["training"]:
        raise AutoTrainError(
            f"{path}: no 'training' split (or it is empty); medmonai train selects and trains on the training "
            "split (plus 'validation'), so the datalist needs one (see `medmonai datalist --help`)"
        )
    pool = load_datalist(path, "training")
    if isinstance(raw.get("validation"), list):
        pool += load_datalist(path, "validation")
    classes = [str(c) for c in (raw.get("classes") or [])]
    unlabelled = [case_id(e) for e in pool if not isinstance(e.get("label"), int) or isinstance(e["label"], bool)]
    if unlabelled:
        raise AutoTrainError(f"{path}: {len(unlabelled)} training entries without an integer label, e.g. "
                             f"{unlabelled[:3]}; label them or move them out of the training split")  # fmt: skip
    n_classes = max(len(classes), 1 + max(int(e["label"]) for e in pool))
    subjects: list[set[str]] = [set() for _ in range(n_classes)]
    for e in pool:
        subjects[int(e["label"])].add(str(e.get(group_key, case_id(e))))
    names = classes if len(classes) == n_classes else [str(i) for i in range(n_classes)]
    present = [i for i in range(n_classes) if subjects[i]]
    if len(present) < 2:
        raise AutoTrainError(f"{path}: the training data has only class {[names[i] for i in present]}; "
                             "a classifier needs at least two classes")  # fmt: skip
    few = [(names[i], len(subjects[i])) for i in range(n_classes) if len(subjects[i]) < n_folds]
    if few:
        listed = ", ".join(f"'{c}' {n}" for c, n in few)
        raise AutoTrainError(
            f"{path}: class(es) with fewer {group_key}s than the {n_folds} folds ({listed}): every fold needs each "
            f"class on both sides; use --folds {max(2, min(n for _, n in few))} or add data"
        )
    return {
        "n_pool": len(pool),
        "n_test": len(raw["test"]) if isinstance(raw.get("test"), list) else 0,
        "classes": names,
        "class_counts": [sum(int(e["label"]) == i for e in pool) for i in range(n_classes)],
        "subjects_per_class": [len(s) for s in subjects],
        "ordinal": is_ordinal(raw),
    }


# ------------------------------------------------------------------------------------------------- planning
def _common_overrides(datalist: Path, seed: int, spatial_dims: int, n_folds: int, leakage: str) -> dict[str, Any]:
    return {
        "datalist": str(datalist),
        "leakage": leakage,
        "seed": int(seed),
        "spatial_dims": int(spatial_dims),
        "n_folds": int(n_folds),
        "augment_level": _AUG_LEVEL,
    }


def _parse_candidate(root: Path, overrides: Mapping[str, Any]) -> Any:
    return parse_bundle(_bundle(), ("train", "crossval"), {"bundle_root": str(root), "fold": 0, **overrides})


def _flip_axes(level: str, spatial_dims: int) -> tuple[list[int], str]:
    lv = LEVELS[level]
    if lv.flip_prob <= 0:
        return [], f"augmentation '{level}' does not mirror, so neither does test-time augmentation"
    axes = list(range(spatial_dims)) if lv.flip_axes is None else [int(a) for a in lv.flip_axes]
    return axes, (
        f"the training augmentation '{level}' mirrors axis {axes} (p {lv.flip_prob}), so the models learn that "
        "mirrored images have the same class: test-time augmentation averages the image and its mirror"
    )


def _probe_seconds_per_epoch(parser: Any, n_train: int, n_val: int, repeats: int = 3) -> dict[str, float]:
    """Measured cost of one epoch of this candidate: a few training steps and forward passes at its input size."""
    net = parser.get_parsed_content("network_def")
    groups = parser.get_parsed_content("param_groups")  # applies the transfer strategy (frozen layers)
    device = parser.get_parsed_content("device")
    plan = parser.get_parsed_content("plan")
    batch = int(parser.get_parsed_content("batch_size"))
    channels = int(parser.get_parsed_content("in_channels"))
    x = torch.randn(batch, channels, *[int(s) for s in plan["spatial_size"]], device=device)
    y = torch.randint(0, int(parser.get_parsed_content("num_classes")), (batch,), device=device)
    net = net.to(device).train()
    opt = torch.optim.AdamW(groups, lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    t_step = (time.perf_counter() - t0) / repeats
    net.eval()
    with torch.no_grad():
        net(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            net(x)
        t_fwd = (time.perf_counter() - t0) / repeats
    # data loading / augmentation on top of the steps: +30 % (CacheDataset keeps the preprocessed images)
    epoch = 1.3 * (math.ceil(n_train / batch) * t_step + math.ceil(max(n_val, 1) / batch) * t_fwd)
    return {"step_s": t_step, "forward_s": t_fwd, "epoch_s": epoch, "batch_size": batch}


def plan_auto(
    datalist: PathLike,
    out: PathLike,
    budget_min: float = 30.0,
    n_folds: int = 5,
    seed: int = 0,
    spatial_dims: int = 2,
    candidates: Sequence[str] | None = None,
    leakage: str = "error",
) -> dict[str, Any]:
    """Plan the portfolio, input sizes, test-time mirroring and per-fold time cap; write ``out/plan.json``.

    Args:
        datalist: the datalist (``training`` [+ ``validation``] pooled for cross-validation; ``test`` held out).
        out: the output folder.
        budget_min: the wall-clock budget of the whole run, minutes.
        n_folds: folds of the cross-validation (and models in the final ensemble).
        seed: seed of the folds and of training.
        spatial_dims: 2 (images) or 3 (volumes: no ImageNet candidates).
        candidates: restrict the portfolio to these names (default: all that apply).
        leakage: the bundle's leakage guard for a subject or an identical image in two splits: ``error``
            (default), ``drop`` (left out of training, reported) or ``off``.

    Returns:
        The plan (also in ``out/plan.json``).

    Raises:
        AutoTrainError: bad input (see :func:`check_inputs`), an unknown candidate, or a budget too small for even
            the cheapest candidate's folds (the message gives the smallest budget that works).
    """
    datalist = Path(datalist).resolve()
    out = Path(out)
    data = check_inputs(datalist, n_folds, budget_min)
    known = [c.name for c in PORTFOLIO]
    if candidates is not None:
        unknown = sorted(set(candidates) - set(known))
        if unknown or not candidates:
            raise AutoTrainError(f"unknown candidate(s) {unknown or candidates}; choose from {known}")
    if leakage not in ("error", "drop", "off"):
        raise AutoTrainError(f"leakage must be 'error', 'drop' or 'off', got {leakage!r}")
    common = _common_overrides(datalist, seed, spatial_dims, n_folds, leakage)
    flip, flip_reason = _flip_axes(_AUG_LEVEL, spatial_dims)
    rows: list[dict[str, Any]] = []
    for cand in PORTFOLIO:
        if candidates is not None and cand.name not in candidates:
            continue
        row: dict[str, Any] = {"name": cand.name, "what": cand.what, "overrides": dict(cand.overrides)}
        if cand.imagenet and spatial_dims != 2:
            row.update(included=False, reason="ImageNet weights are 2D; this data is 3D")
            rows.append(row)
            continue
        root = out / "candidates" / cand.name
        ov = {**common, **cand.overrides}
        parser = _parse_candidate(root, ov)
        size = [int(s) for s in parser.get_parsed_content("plan")["spatial_size"]]
        reasons = [f"input {'x'.join(map(str, size))} from the fingerprint's plan"]
        if cand.imagenet and min(size) < IMAGENET_MIN_SIZE:
            side = max(IMAGENET_MIN_SIZE, max(size))
            ov.update(spatial_size=[side] * spatial_dims, size_mode="resize")
            reasons = [f"input resized to {side}x{side}: ImageNet features need at least {IMAGENET_MIN_SIZE} px "
                       f"(the plan's {'x'.join(map(str, size))} is too small for them)"]  # fmt: skip
            parser = _parse_candidate(root, ov)
            size = [side] * spatial_dims
        split = parser.get_parsed_content("split")
        n_train, n_val = len(split["training"]), len(split["validation"])
        if cand.overrides.get("strategy") == "auto":
            parser.get_parsed_content("param_groups")
            info = dict(parser.get_parsed_content("network_def").transfer_info)
            strategy = str(info["strategy"])
            reason = str(info["reason"])
            if strategy == "feature_extractor":
                strategy = "finetune_late"
                reason += "; the frozen quadrant is the lite0_frozen candidate, so this one fine-tunes the late stage"
            ov["strategy"] = strategy
            row["similarity"] = info.get("similarity")
            reasons.append(f"strategy {strategy}: {reason}")
            parser = _parse_candidate(root, ov)
        cost = _probe_seconds_per_epoch(parser, n_train, n_val)
        row.update(
            included=True, overrides={k: v for k, v in ov.items() if k not in common}, spatial_size=size,
            n_train_fold=n_train, n_val_fold=n_val, cost=cost, reason="; ".join(reasons),
        )  # fmt: skip
        rows.append(row)
    budget = _budget_rule(rows, budget_min, n_folds)
    plan = {
        "datalist": str(datalist),
        "data": data,
        "budget_min": float(budget_min),
        "n_folds": int(n_folds),
        "seed": int(seed),
        "spatial_dims": int(spatial_dims),
        "common_overrides": common,
        "augment_level": {
            "value": _AUG_LEVEL,
            "reason": "the bundle's default level (mirroring of axis 0, "
            "rotation/scaling), the one the MedMNIST benchmarks measured",
        },  # fmt: skip
        "tta_flip_axes": {"value": flip, "reason": flip_reason},
        "selection": "successive halving: rung 0 = fold 0 of every candidate; the better half by fold-0 out-of-fold "
        "AUC trains the other folds (the rest too, best first, when the budget left by early stopping affords their "
        "folds at the pace measured in rung 0); the winner by out-of-fold AUC over all folds (the test split is not "
        "used)",
        "candidates": rows,
        **budget,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "plan.json", plan)
    return plan


def _budget_rule(rows: list[dict[str, Any]], budget_min: float, n_folds: int) -> dict[str, Any]:
    """The per-fold time cap, and the candidates the budget affords (in place: ``included`` / ``reason``).

    With ``C`` candidates, successive halving trains ``C`` folds in rung 0 and ``ceil(C / 2) * (k - 1)`` after it,
    so each fold run gets ``(1 - reserve) * budget / (C + ceil(C / 2) * (k - 1))``. A candidate whose measured
    epoch does not fit :data:`MIN_EPOCHS` times into that cap is dropped (the most expensive first) and the cap
    recomputed for the rest.
    """
    usable = budget_min * (1.0 - RESERVE_FRACTION)
    live = [r for r in rows if r.get("included")]
    while live:
        runs = len(live) + math.ceil(len(live) / 2) * (n_folds - 1)
        cap = usable / runs
        worst = max(live, key=lambda r: r["cost"]["epoch_s"])
        if worst["cost"]["epoch_s"] * MIN_EPOCHS <= cap * 60 or len(live) == 1:
            break
        worst.update(
            included=False,
            reason=f"dropped by the budget: {MIN_EPOCHS} epochs at a measured {worst['cost']['epoch_s']:.1f} s "
            f"do not fit the {cap:.2f} min per fold that {budget_min:g} min give {len(live)} candidates",
        )
        live.remove(worst)
    if not live:
        raise AutoTrainError("no candidate applies to this data (see the plan's reasons)")
    runs = len(live) + math.ceil(len(live) / 2) * (n_folds - 1)
    cap = usable / runs
    need = live[0]["cost"]["epoch_s"] * MIN_EPOCHS
    if need > cap * 60:
        smallest = need * n_folds / 60 / (1.0 - RESERVE_FRACTION)
        raise AutoTrainError(
            f"a budget of {budget_min:g} min is too small: the cheapest candidate ({live[0]['name']}) needs "
            f"{MIN_EPOCHS} epochs x {n_folds} folds at a measured {live[0]['cost']['epoch_s']:.1f} s per epoch; give "
            f"--budget-min {math.ceil(smallest)} or more (or fewer --folds)"
        )
    for r in live:
        r["reason"] += f"; at most {cap:.2f} min per fold (about {cap * 60 / r['cost']['epoch_s']:.0f} epochs)"
    return {
        "fold_minutes": {
            "value": round(cap, 4),
            "reason": f"{RESERVE_FRACTION:.0%} of the {budget_min:g} min kept for predictions and export; the rest "
            f"over {runs} fold runs ({len(live)} candidates in rung 0 + {math.ceil(len(live) / 2)} x "
            f"{n_folds - 1} later folds)",
        },
        "portfolio": [r["name"] for r in live],
    }


# ------------------------------------------------------------------------------------------------- training
def _auc(labels: np.ndarray, probs: np.ndarray) -> float:
    score = probs[:, 1] if probs.shape[1] == 2 else probs
    auc = classification_metrics(labels, score)["auc"]
    return float("-inf") if auc is None or not np.isfinite(auc) else float(auc)


class _Clock:
    """Budget accounting that survives a resume (seconds spent are kept in ``out/auto_state.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state: dict[str, Any] = read_json(path) if path.is_file() else {"spent_s": 0.0, "fold_s": {}}
        self.mark = time.perf_counter()

    def tick(self) -> float:
        now = time.perf_counter()
        self.state["spent_s"] += now - self.mark
        self.mark = now
        atomic_write_json(self.path, self.state)
        return float(self.state["spent_s"])

    def record(self, name: str, fold: int, seconds: float) -> None:
        self.state["fold_s"].setdefault(name, {})[str(fold)] = seconds
        self.tick()

    def fold_seconds(self, name: str) -> list[float]:
        return [float(v) for v in self.state["fold_s"].get(name, {}).values()]


def _run_folds(
    row: Mapping[str, Any], plan: Mapping[str, Any], out: Path, folds: Sequence[int] | None, n_boot: int
) -> dict[str, Any]:
    overrides = {**plan["common_overrides"], **row["overrides"], "time_budget_min": plan["fold_minutes"]["value"]}
    return run_crossval(
        _bundle(), bundle_root=out / "candidates" / row["name"], n_folds=int(plan["n_folds"]), overrides=overrides,
        tta_flip_axes=plan["tta_flip_axes"]["value"], export=False, n_boot=n_boot, folds=folds,
    )  # fmt: skip


def _cv_dir(out: Path, name: str) -> Path:
    return out / "candidates" / name / "runs" / "cv"


def _oof(cv_dir: Path, n_folds: int) -> dict[str, Any]:
    """Pooled OOF predictions of a finished candidate (splits order, the fold of each case) and its fold files."""
    preds = [load_fold_predictions(fold_dir(cv_dir, k) / FOLD_PREDICTIONS) for k in range(n_folds)]
    pooled = pool_oof(preds, read_json(cv_dir / "splits.json")["case_ids"], source=str(cv_dir))
    return {**pooled, "fold_predictions": preds}


def _args_record(**kwargs: Any) -> dict[str, Any]:
    return json.loads(json.dumps(kwargs, default=str))


def train_auto(
    datalist: PathLike,
    out: PathLike,
    budget_min: float = 30.0,
    n_folds: int = 5,
    seed: int = 0,
    spatial_dims: int = 2,
    candidates: Sequence[str] | None = None,
    n_boot: int = 1000,
    leakage: str = "error",
) -> dict[str, Any]:
    """Plan, select by cross-validation within the budget, and build the final calibrated fold ensemble.

    See the module docstring. Arguments as :func:`plan_auto`; ``n_boot``: bootstrap resamples of the reports.

    Returns:
        The ``auto_report.json`` content.

    Raises:
        AutoTrainError: bad input or budget (before any training), or ``out`` holding a run with other arguments.
    """
    t_start = time.perf_counter()
    datalist = Path(datalist).resolve()
    out = Path(out).resolve()
    args = _args_record(
        datalist=str(datalist), budget_min=float(budget_min), n_folds=int(n_folds), seed=int(seed),
        spatial_dims=int(spatial_dims), candidates=list(candidates) if candidates else None, leakage=leakage,
    )  # fmt: skip
    args_file = out / "auto_args.json"
    if args_file.is_file() and read_json(args_file) != args:
        raise AutoTrainError(
            f"{out} holds a medmonai train run with other arguments ({read_json(args_file)}); use another --out or "
            f"delete {out}"
        )
    plan_file = out / "plan.json"
    check_inputs(datalist, n_folds, budget_min)  # bad input: refused before anything is written
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock(out / "auto_state.json")  # planning (fingerprint, cost probes) counts towards the budget
    if args_file.is_file() and plan_file.is_file():
        plan = read_json(plan_file)
        _progress(f"resuming the run in {out} (plan.json kept)")
    else:
        _progress(f"planning: fingerprint, candidates, measured cost per epoch ({budget_min:g} min budget)")
        try:
            plan = plan_auto(datalist, out, budget_min, n_folds, seed, spatial_dims, candidates, leakage)
        except AutoTrainError:
            if created:  # e.g. a budget too small: no half-made run folder is left behind
                shutil.rmtree(out, ignore_errors=True)
            raise
        atomic_write_json(args_file, args)
    clock.tick()
    budget_s = float(budget_min) * 60.0
    rows = {r["name"]: r for r in plan["candidates"] if r.get("included")}
    names = list(plan["portfolio"])
    total_runs = len(names) + math.ceil(len(names) / 2) * (n_folds - 1)
    for r in plan["candidates"]:
        _progress(f"  {r['name']}: {'in' if r.get('included') else 'out'} - {r.get('reason', '')}")
    _progress(f"per fold at most {plan['fold_minutes']['value']:.2f} min; test-time mirroring axes "
              f"{plan['tta_flip_axes']['value']}")  # fmt: skip
    runs_done = sum(fold_done(_cv_dir(out, n), k) for n in names for k in range(n_folds))

    def run_one(name: str, k: int) -> None:
        nonlocal runs_done
        if fold_done(_cv_dir(out, name), k):
            return
        spent = clock.tick()
        _progress(f"{_bar(runs_done, total_runs)} {runs_done}/{total_runs} fold runs, {spent / 60:.1f} of "
                  f"{budget_min:g} min | {name}: fold {k + 1}/{n_folds}")  # fmt: skip
        t0 = time.perf_counter()
        _run_folds(rows[name], plan, out, [k], n_boot)
        clock.record(name, k, time.perf_counter() - t0)
        runs_done += 1

    # rung 0: fold 0 of every candidate
    for name in names:
        run_one(name, 0)
    rung0 = {}
    for name in names:
        p = load_fold_predictions(fold_dir(_cv_dir(out, name), 0) / "fold_predictions.npz")
        rung0[name] = _auc(p["val_labels"], p["val_probs"])
    ranked = sorted(names, key=lambda n: -rung0[n])
    _progress("rung 0 (fold-0 out-of-fold AUC): " + ", ".join(f"{n} {rung0[n]:.3f}" for n in ranked))
    # rung 1: the better half, as far as the remaining budget affords (the measured fold-0 time per later fold)
    keep = max(1, math.ceil(len(names) / 2))
    survivors: list[str] = []
    remaining = budget_s * (1.0 - RESERVE_FRACTION) - clock.tick()
    pruned: dict[str, str] = {}
    for name in ranked:
        t_fold = max(clock.fold_seconds(name) or [plan["fold_minutes"]["value"] * 60])
        left = sum(not fold_done(_cv_dir(out, name), k) for k in range(1, n_folds))
        cost = t_fold * left
        if survivors and cost > remaining:
            pruned[name] = (f"its {left} remaining folds (~{cost / 60:.1f} min at its measured pace) do not fit the "
                            f"{remaining / 60:.1f} min left")  # fmt: skip
            if len(survivors) >= keep:
                pruned[name] = f"successive halving: not in the best {keep} of rung 0, and {pruned[name]}"
        else:  # the better half; the others too when the budget left by early stopping affords them
            survivors.append(name)
            remaining -= cost
    for name, why in pruned.items():
        _progress(f"pruned {name}: {why}")
    total_runs = len(names) + len(survivors) * (n_folds - 1)
    for name in survivors:
        for k in range(1, n_folds):
            run_one(name, k)
    clock.tick()
    _progress(f"{_bar(total_runs, total_runs)} fold runs finished; aggregating the cross-validations")
    reports = {}
    for name in survivors:
        reports[name] = _run_folds(rows[name], plan, out, None, n_boot)  # all folds done: aggregates only
    final = _finalize(out, plan, survivors, reports, n_boot)
    spent = clock.tick()
    report = {
        "plan": str(plan_file),
        "arguments": args,
        "rung0_fold0_oof_auc": rung0,
        "pruned": pruned,
        "survivors": survivors,
        "oof_auc": {n: reports[n]["oof"]["metrics"]["auc"]["value"] for n in survivors},
        **final,
        "fold_seconds": clock.state["fold_s"],
        "minutes": {
            "spent": spent / 60,
            "budget": float(budget_min),
            "this_call": (time.perf_counter() - t_start) / 60,
        },
    }
    atomic_write_json(out / "auto_report.json", report)
    _progress(_summary(report, out))
    return report


def _finalize(
    out: Path, plan: Mapping[str, Any], survivors: Sequence[str], reports: Mapping[str, Any], n_boot: int
) -> dict[str, Any]:
    """Choose single vs blend on OOF AUC, calibrate on OOF log loss, write ``out/final`` and export the model."""
    n_folds = int(plan["n_folds"])
    rows = {r["name"]: r for r in plan["candidates"]}
    oof = {n: _oof(_cv_dir(out, n), n_folds) for n in survivors}
    auc = {n: float(reports[n]["oof"]["metrics"]["auc"]["value"] or float("-inf")) for n in survivors}
    ranked = sorted(survivors, key=lambda n: -auc[n])
    chosen = [ranked[0]]
    why = f"{ranked[0]} has the best out-of-fold AUC ({auc[ranked[0]]:.4f})"
    if len(ranked) >= 2:
        a, b = ranked[:2]
        same_input = rows[a]["spatial_size"] == rows[b]["spatial_size"] and read_json(
            _cv_dir(out, a) / "fingerprint.json"
        ).get("plan") == read_json(_cv_dir(out, b) / "fingerprint.json").get("plan")
        blend_auc = _auc(oof[a]["labels"], (oof[a]["probs"] + oof[b]["probs"]) / 2)
        if not same_input:
            why += f"; the blend with {b} is not tried: their preprocessing differs (one model file needs one input)"
        elif blend_auc > auc[a]:
            chosen = [a, b]
            why = (f"the mean of {a} and {b} has a higher out-of-fold AUC ({blend_auc:.4f}) than {a} alone "
                   f"({auc[a]:.4f})")  # fmt: skip
        else:
            why += f"; the mean with {b} is not better out-of-fold ({blend_auc:.4f})"
    _progress(f"selected: {' + '.join(chosen)} ({why})")
    first = oof[chosen[0]]
    labels, folds = first["labels"], first["fold"]
    probs = np.mean([oof[n]["probs"] for n in chosen], axis=0)
    calibration = choose_calibration(labels, probs, folds)
    temperature = calibration["temperature"] if calibration["calibrate"] else 1.0
    _progress(f"calibration: {calibration['reason']}")

    final = out / "final"
    if final.exists():
        shutil.rmtree(final)
    final.mkdir(parents=True)
    src = _cv_dir(out, chosen[0])
    for name in ("splits.json", "fingerprint.json", "cv_settings.json"):
        shutil.copy2(src / name, final / name)
    domain = fold_dir(src, 0) / "training_domain.json"
    if domain.is_file():
        shutil.copy2(domain, final / "training_domain.json")
    for k in range(n_folds):
        parts = [oof[n]["fold_predictions"][k] for n in chosen]
        p0 = parts[0]
        if any(p["val_ids"].tolist() != p0["val_ids"].tolist() for p in parts):
            raise RuntimeError(f"{out}: the candidates' fold {k} differ; they must share splits.json")
        # uncalibrated; aggregate_crossval applies the temperature (to the ensemble after the fold mean)
        val = np.mean([p["val_probs"] for p in parts], axis=0)
        test = np.mean([p["test_probs"] for p in parts], axis=0) if len(p0["test_ids"]) else None
        fold_out = fold_dir(final, k)
        fold_out.mkdir(parents=True, exist_ok=True)
        write_fold_predictions(fold_out, p0["val_ids"].tolist(), p0["val_labels"], val, p0["test_ids"].tolist(),
                               p0["test_labels"] if test is not None else None, test)  # fmt: skip
    parser = _parse_candidate(out / "candidates" / chosen[0],
                              {**plan["common_overrides"], **rows[chosen[0]]["overrides"]})  # fmt: skip
    classes = [str(c) for c in parser.get_parsed_content("classes")]
    extra = {"what": "medmonai train", "members": chosen, "selection": why, "calibration": calibration}
    cv_report = aggregate_crossval(
        final, classes, n_boot=n_boot, seed=int(plan["seed"]), extra=extra, ordinal=bool(plan["data"]["ordinal"]),
        class_weights=parser.get_parsed_content("class_weights"),
        balanced_sampler=bool(parser.get_parsed_content("balanced_sampler")), temperature=temperature,
    )  # fmt: skip
    model = _export_final(out, plan, chosen, rows, temperature, final)
    cv_report["ensemble_model"] = str(model)
    atomic_write_json(final / "cv_report.json", cv_report)
    return {
        "selected": chosen,
        "selection_reason": why,
        "calibration": calibration,
        "final_dir": str(final),
        "model": str(model),
        "threshold": cv_report.get("threshold"),
        "decision_rule": cv_report.get("decision_rule"),
        "oof": cv_report["oof"]["metrics"],
        "test": (cv_report.get("ensemble") or {}).get("metrics"),
        "n_test": (cv_report.get("ensemble") or {}).get("n", 0),
    }


def _export_final(
    out: Path, plan: Mapping[str, Any], chosen: Sequence[str], rows: Mapping[str, Any], temperature: float, final: Path
) -> Path:
    models: list[torch.nn.Module] = []
    example = None
    for name in chosen:
        common = {"bundle_root": str(out / "candidates" / name), **plan["common_overrides"], **rows[name]["overrides"]}
        nets, sample = fold_models(_bundle(), common, _cv_dir(out, name), int(plan["n_folds"]))
        models += nets
        example = sample if example is None else example
    assert example is not None
    return export_ensemble(models, final / "ensemble" / "model.ts", example,
                           flip_axes=plan["tta_flip_axes"]["value"], temperature=temperature)  # fmt: skip


def _summary(report: Mapping[str, Any], out: Path) -> str:
    def ci(m: Mapping[str, Any] | None) -> str:
        if not m or m.get("value") is None:
            return "n/a"
        return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"

    test = report.get("test") or {}
    oof = report.get("oof") or {}
    lines = [
        f"selected {' + '.join(report['selected'])} ({report['minutes']['spent']:.1f} of "
        f"{report['minutes']['budget']:g} min)",
        f"  out-of-fold: AUC {ci(oof.get('auc'))}, ACC {ci(oof.get('accuracy'))}",
    ]
    if test:
        lines.append(f"  test (n={report['n_test']}, scored once): AUC {ci(test.get('auc'))}, "
                     f"ACC {ci(test.get('accuracy'))}")  # fmt: skip
    lines.append(
        f"  model: {report['model']}; use it with: medmonai infer bundles/classification --bundle-root {out} "
        f"--model {report['model']} STUDY_DIR --out RESULTS"
    )
    return "\n".join(lines)
