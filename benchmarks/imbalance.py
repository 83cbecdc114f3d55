"""Imbalance benchmark: does class weighting, classical augmentation or GAN synthesis help a rare class?

Literature protocol: keep every majority-class training image and only ``n`` minority-class images (``n`` in
``--n-minority``, e.g. 10, 50, 100, 200, all; drawn per seed), leave validation and test unchanged, and compare
(test split touched once per run, model selection and threshold on validation):

* ``real``: the classification bundle, no class weights, no augmentation (a);
* ``weighted``: class-weighted loss (``class_weights: balanced``) and the class-balanced sampler (b);
* ``classical``: the ``medium`` classical augmentation preset (c);
* ``gan``: GAN images fill the minority class up to the majority (d): ``bundles/gan_augmentation`` trained on that
  run's training images only, then ``synthetic_mode: balance``;
* ``classical_gan``: (c) + (d) (e);
* ``feature_gan``: frozen ImageNet EfficientNet-Lite0 features, logistic regression on real + feature-GAN minority
  features (f) (:mod:`medmonai.engines.feature_gan`);
* ``features_real``: the same features and classifier without the feature GAN (the fair baseline of (f)).

Per run: test ACC, AUC, sensitivity and specificity for the rare class (``minority_recall`` / ``majority_recall``,
at the validation-chosen threshold; the report's own ``sensitivity`` is for class index 1), and DeLong's paired test of
the AUC against ``real`` on the same seed and ``n``. The table gives mean ± std over seeds and the number of seeds in
which the arm's AUC was significantly (p < 0.05) above / below ``real``. Target of the issue: at ``n = 50`` the best
arm reaches 95 % of the all-data AUC (``real`` with every minority image).

Works on a MedMNIST ``.npz`` (``--npz``; official splits) or on any medmonai datalist with ``training``,
``validation`` and ``test`` splits (``--datalist``, e.g. one built by ``medmonai datalist`` from an image folder).
Finished runs are reused on a re-run with the same ``--work`` (each run's ``result.json``); the JSON (``--out``) is
rewritten atomically after every run. A (n, seed) cell whose every arm is already in the existing ``--out`` JSON, run
with the same settings (:data:`REUSE_SETTINGS`), is taken from it as it stands, so a grid can be completed in several
sessions or on several machines (each cell's work folder is only needed until its cell is in the JSON); ``--merge``
names more such JSONs (e.g. from another machine) whose complete cells are taken too.

    PYTHONPATH=. python benchmarks/imbalance.py --npz ../shared/data/medmnist/breastmnist.npz --quick
    PYTHONPATH=. python benchmarks/imbalance.py --npz ../shared/data/medmnist/breastmnist.npz \\
        --n-minority 10,50,100,all --seeds 0,1,2 --out benchmarks/results/imbalance_breastmnist.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.medmnist import DeepFeatures, build_datalist  # noqa: E402
from medmonai.data.datalist import load_datalist, load_datalist_file, write_datalist  # noqa: E402
from medmonai.utils import atomic_write_json, read_json  # noqa: E402

__all__ = ["ARMS", "REUSE_SETTINGS", "gan_minutes", "minority_datalist", "previous_cells", "main"]

CLS = REPO / "bundles" / "classification" / "configs"  # in 2D, its default
GAN = REPO / "bundles" / "gan_augmentation" / "configs"
ARMS: tuple[str, ...] = ("real", "weighted", "classical", "gan", "classical_gan", "feature_gan", "features_real")
#: settings that must match for a cell of an existing ``--out`` JSON to be reused
REUSE_SETTINGS: tuple[str, ...] = (
    "network",
    "size",
    "feature_size",
    "max_epochs",
    "patience",
    "gan_epochs",
    "gan_epoch_length",
)
#: bundle overrides of the network arms (on top of the common ones)
NETWORK_ARMS: dict[str, dict[str, Any]] = {
    "real": {"class_weights": "none", "balanced_sampler": False, "augment_level": "none"},
    "weighted": {"class_weights": "balanced", "balanced_sampler": True, "augment_level": "none"},
    "classical": {"class_weights": "none", "balanced_sampler": False, "augment_level": "medium"},
    "gan": {"class_weights": "none", "balanced_sampler": False, "augment_level": "none", "synthetic_mode": "balance"},
    "classical_gan": {
        "class_weights": "none",
        "balanced_sampler": False,
        "augment_level": "medium",
        "synthetic_mode": "balance",
    },
}


def minority_datalist(base: Path, n: int | None, seed: int, minority: int) -> tuple[Path, dict[str, int]]:
    """A datalist beside ``base`` with every majority training entry and ``n`` (seeded) minority ones."""
    raw = load_datalist_file(base)
    train = load_datalist(base, "training")
    labels = np.asarray([int(e["label"]) for e in train])
    minority_idx = np.flatnonzero(labels == minority)
    if n is not None and n > len(minority_idx):
        raise ValueError(f"{base}: {n} minority images asked, the training split has {len(minority_idx)}")
    keep = np.flatnonzero(labels != minority)
    if n is None:
        keep = np.arange(len(train))
    else:
        pick = np.random.default_rng(seed).choice(minority_idx, size=n, replace=False)
        keep = np.sort(np.concatenate([keep, pick]))
    out = {k: v for k, v in raw.items() if k not in ("training", "validation", "test")}
    out["training"] = [train[i] for i in keep]
    for split in ("validation", "test"):
        out[split] = load_datalist(base, split)
    tag = "all" if n is None else str(n)
    path = base.with_name(f"datalist_minority{tag}_seed{seed}.json")
    write_datalist(path, out)
    counts = np.bincount(labels[keep], minlength=len(raw["classes"]))
    return path, {str(c): int(v) for c, v in zip(raw["classes"], counts)}


def _metrics(report: dict[str, Any]) -> dict[str, float | None]:
    return {m: (report["metrics"].get(m) or {}).get("value") for m in ("auc", "accuracy", "sensitivity", "specificity")}


def class_recalls(predictions: str | Path, minority: int) -> dict[str, float]:
    """Recall of the minority class (its sensitivity) and of the other class (its specificity), from predictions.csv.

    The reports' ``sensitivity``/``specificity`` refer to class index 1, which is not always the rare class (in
    BreastMNIST class 0, ``malignant``, is the rare one); these two always refer to the rare class.
    """
    from medmonai.metrics.compare import load_run_predictions

    pred = load_run_predictions(predictions)
    rare = pred["true_index"] == minority
    return {
        "minority_recall": float(pred["correct"][rare].mean()) if rare.any() else float("nan"),
        "majority_recall": float(pred["correct"][~rare].mean()) if (~rare).any() else float("nan"),
    }


def _bundle(configs: Sequence[Path], **overrides: Any) -> None:
    from monai.bundle import run

    run(config_file=[str(c) for c in configs], **overrides)


def run_network_arm(
    arm: str, datalist: Path, run_dir: Path, seed: int, args: argparse.Namespace, synthetic: Path | None
) -> dict[str, Any]:
    common = {
        "bundle_root": str(run_dir),
        "meta_file": str(CLS / "metadata.json"),
        "logging_file": str(CLS / "logging.conf"),
        "datalist": str(datalist),
        "seed": seed,
        "max_epochs": args.max_epochs,
        "patience": args.patience,
        "spatial_size": [args.size, args.size],
        "size_mode": "resize",
        "normalization": "scale255",
        "network_name": args.network,
        "resume": False,
        "leakage": "off",
        **NETWORK_ARMS[arm],
    }
    if synthetic is not None:
        common["synthetic_datalist"] = str(synthetic)
    if (run_dir / "runs").exists():
        shutil.rmtree(run_dir / "runs")
    t0 = time.perf_counter()
    _bundle([CLS / "train.yaml"], **common)
    train_s = time.perf_counter() - t0
    _bundle([CLS / "train.yaml", CLS / "evaluate.yaml"], **common)
    report = read_json(run_dir / "runs" / "eval" / "report.json")
    return {"metrics": _metrics(report), "train_seconds": train_s, "predictions": str(run_dir / "runs" / "eval")}


def gan_settings(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """What a GAN run depends on besides its datalist: a cached GAN or GAN arm is reused only when these match."""
    return {"seed": seed, "size": args.size, "gan_epochs": args.gan_epochs, "gan_epoch_length": args.gan_epoch_length}


def train_gan(datalist: Path, gan_dir: Path, seed: int, counts: dict[str, int], args: argparse.Namespace) -> Path:
    """The GAN bundle on this run's training images only; enough minority images to balance the classes.

    An interrupted GAN resumes from its last checkpoint; one trained with other settings (``gan_settings.json``) is
    discarded and trained again.
    """
    synthetic = gan_dir / "runs" / "synthetic" / "datalist.json"
    need = [max(counts.values()) - v for v in counts.values()]
    marker = gan_dir / "gan_settings.json"
    settings = gan_settings(seed, args)
    if marker.is_file() and read_json(marker) == settings:
        if synthetic.is_file() and read_json(synthetic).get("seed") == seed:
            have = np.bincount([e["label"] for e in read_json(synthetic)["training"]], minlength=len(need))
            if all(h >= n for h, n in zip(have, need)):
                return synthetic
    elif (gan_dir / "runs").exists():
        shutil.rmtree(gan_dir / "runs")
    atomic_write_json(marker, settings)
    common = {
        "bundle_root": str(gan_dir),
        "meta_file": str(GAN / "metadata.json"),
        "logging_file": str(GAN / "logging.conf"),
        "datalist": str(datalist),
        "seed": seed,
        "spatial_size": [args.size, args.size],
        "max_epochs": args.gan_epochs,
        "epoch_length": args.gan_epoch_length,
        "leakage": "off",
        "n_per_class": need,
        "generate_seed": seed,
    }
    if args.quick:
        common.update({"g_channels": 8, "d_channels": 8, "latent_dim": 16, "batch_size": 8})
    _bundle([GAN / "train.yaml"], **common)
    _bundle([GAN / "train.yaml", GAN / "generate.yaml"], **common)
    return synthetic


def gan_minutes(gan_dir: Path) -> float | None:
    """Wall-clock minutes a GAN run trained, from its TensorBoard events (so cached runs have it too).

    Every trainer process (a resumed run starts a new one) writes event files named
    ``events.out.tfevents.<start>.<host>.<pid>.<n>``; a process's time is the span of its summaries' wall times, and the
    run's time is the sum over processes. ``None`` when the run has no events.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    spans: dict[tuple[str, str], list[float]] = {}
    for f in sorted((gan_dir / "runs" / "tensorboard").glob("events.out.tfevents.*")):
        parts = f.name.split(".")
        times = [e.wall_time for e in EventFileLoader(str(f)).Load() if e.summary.value]  # not the file header
        if times:
            span = spans.setdefault((parts[3], parts[-2]), [min(times), max(times)])
            span[0], span[1] = min(span[0], *times), max(span[1], *times)
    return sum(b - a for a, b in spans.values()) / 60 if spans else None


class Features:
    """ImageNet EfficientNet-Lite0 features of every image of the base datalist, extracted once (cached) by
    :class:`benchmarks.medmnist.DeepFeatures`, looked up by image path for the derived datalists."""

    def __init__(self, base: Path, size: int, work: Path) -> None:
        deep = DeepFeatures(base, size, work)
        self.by_image: dict[str, np.ndarray] = {}
        for split in ("training", "validation", "test"):
            entries = load_datalist(base, split)
            self.by_image.update({str(e["image"]): f for e, f in zip(entries, deep.features[split])})

    def split(self, datalist: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        entries = load_datalist(datalist, split)
        x = np.stack([self.by_image[str(e["image"])] for e in entries])
        return x, np.asarray([int(e["label"]) for e in entries]), [f"case_{i:05d}" for i in range(len(entries))]


def run_feature_arm(arm: str, feats: Features, datalist: Path, run_dir: Path, seed: int) -> dict[str, Any]:
    from medmonai.engines.classical import fit_classical
    from medmonai.engines.feature_gan import fit_classical_with_feature_gan
    from medmonai.metrics.report import write_classification_report
    from medmonai.metrics.threshold import choose_threshold

    x_tr, y_tr, _ = feats.split(datalist, "training")
    x_va, y_va, _ = feats.split(datalist, "validation")
    x_te, y_te, ids = feats.split(datalist, "test")
    t0 = time.perf_counter()
    if arm == "feature_gan":
        clf = fit_classical_with_feature_gan(x_tr, y_tr, model="logreg_l2", mode="balance", seed=seed)
    else:
        clf = fit_classical(x_tr, y_tr, model="logreg_l2", seed=seed)
    fit_s = time.perf_counter() - t0
    threshold = choose_threshold(y_va, clf.predict_proba(x_va), method="youden")
    classes = [str(c) for c in load_datalist_file(datalist)["classes"]]
    report = write_classification_report(
        run_dir / "eval", y_te, clf.predict_proba(x_te), case_ids=ids, classes=classes, threshold=threshold,
        n_boot=200, seed=seed, extra={"arm": arm, "C": clf.best_params_},
    )  # fmt: skip
    return {"metrics": _metrics(report), "train_seconds": fit_s, "predictions": str(run_dir / "eval")}


def previous_cells(
    out: Path, name: str, minority: int, settings: dict[str, Any], arms: Sequence[str]
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """The complete (n, seed) cells of an existing result JSON that was run with the same settings.

    Args:
        out: the ``--out`` JSON (absent: nothing to reuse).
        name: the data set's name; a JSON of another data set is not reused.
        minority: the minority class index; it must match.
        settings: this run's settings; :data:`REUSE_SETTINGS` must match.
        arms: the arms of this run; a cell is reused only when it holds every one of them.

    Returns:
        ``{(n_minority as written in the JSON, seed): [records in arm order]}``.
    """
    if not out.is_file():
        return {}
    prev = read_json(out)
    old = prev.get("settings", {})
    if prev.get("dataset") != name or prev.get("minority_class") != minority:
        return {}
    if any(old.get(k) != settings.get(k) for k in REUSE_SETTINGS):
        return {}
    cells: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for rec in prev.get("runs", []):
        cells.setdefault((str(rec["n_minority"]), int(rec["seed"])), {})[rec["arm"]] = rec
    return {k: [v[a] for a in arms] for k, v in cells.items() if all(a in v for a in arms)}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted(
        {(r["n_minority"], r["arm"]) for r in runs},
        key=lambda k: (k[0] == "all", 0 if k[0] == "all" else int(k[0]), k[1]),
    )
    for n, arm in keys:
        rs = [r for r in runs if r["n_minority"] == n and r["arm"] == arm]
        row: dict[str, Any] = {"n_minority": n, "arm": arm, "seeds": [r["seed"] for r in rs]}
        for m in ("auc", "accuracy", "minority_recall", "majority_recall"):
            vals = [r["metrics"][m] for r in rs if r["metrics"].get(m) is not None]
            row[m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))} if vals else None
        ps = [r["vs_real"] for r in rs if r.get("vs_real")]
        row["better"] = sum(1 for p in ps if p["p"] < 0.05 and p["diff"] > 0)
        row["worse"] = sum(1 for p in ps if p["p"] < 0.05 and p["diff"] < 0)
        row["train_minutes"] = float(np.mean([r["train_seconds"] for r in rs])) / 60
        gan = [r["gan_minutes"] for r in rs if r.get("gan_minutes") is not None]
        row["gan_minutes"] = float(np.mean(gan)) if gan else None
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    def cell(v: dict[str, float] | None) -> str:
        return "n/a" if v is None else f"{v['mean']:.3f} ± {v['std']:.3f}"

    print("\n| n minority | arm | seeds | test AUC | ACC | minority recall | majority recall | vs real (p<.05) | min |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        vs = "" if r["arm"] == "real" else f"{r['better']} better / {r['worse']} worse"
        gan = "" if r.get("gan_minutes") is None else f" (+ GAN {r['gan_minutes']:.1f})"
        print(
            f"| {r['n_minority']} | {r['arm']} | {len(r['seeds'])} | {cell(r['auc'])} | {cell(r['accuracy'])} | "
            f"{cell(r['minority_recall'])} | {cell(r['majority_recall'])} | {vs} | {r['train_minutes']:.1f}{gan} |"
        )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; returns the JSON-able result."""
    from medmonai.metrics.compare import compare_runs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--npz", type=Path, help="MedMNIST .npz (official splits)")
    src.add_argument("--datalist", type=Path, help="medmonai datalist with training/validation/test splits")
    p.add_argument("--n-minority", default="10,50,100,200,all", help="minority training images kept, or 'all'")
    p.add_argument("--minority-class", type=int, default=None, help="class index (default: the rarest in training)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {', '.join(ARMS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--network", default="small_cnn", help="network of the bundle arms")
    p.add_argument("--size", type=int, default=28, help="input size of the bundle and GAN arms")
    p.add_argument("--feature-size", type=int, default=64, help="input size of the ImageNet feature arms")
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--gan-epochs", type=int, default=20, help="GAN epochs of --gan-epoch-length iterations (batch 32)")
    p.add_argument("--gan-epoch-length", type=int, default=50)
    p.add_argument("--work", type=Path, default=None, help="work folder (default /tmp/medmonai_imbalance_<name>)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--merge", default="", help="comma list of more result JSONs whose complete cells are reused (same settings)"
    )
    p.add_argument("--quick", action="store_true", help="smoke test: n=10, one seed, 1 epoch, a tiny GAN")
    args = p.parse_args(argv)
    if args.quick:
        args.n_minority, args.seeds, args.max_epochs, args.patience = "10", "0", 1, 1
        args.gan_epochs, args.gan_epoch_length = 1, 2
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        p.error(f"unknown arms {unknown}; valid: {list(ARMS)}")
    merge = [Path(m.strip()) for m in args.merge.split(",") if m.strip()]
    missing = [str(m) for m in merge if not m.is_file()]
    if missing:
        p.error(f"--merge: no such result JSON: {', '.join(missing)}")
    if "real" not in arms:
        arms.insert(0, "real")  # every comparison is against it
    name = (args.npz or args.datalist).stem.lower()
    work = args.work or Path(f"/tmp/medmonai_imbalance_{name}{'_quick' if args.quick else ''}")
    # a --quick smoke test writes into the work folder, never into benchmarks/results
    out = args.out or (
        work / "result.json" if args.quick else REPO / "benchmarks" / "results" / f"imbalance_{name}.json"
    )
    base = build_datalist(args.npz, work) if args.npz else args.datalist.resolve()
    for split in ("training", "validation", "test"):
        if not isinstance(load_datalist_file(base).get(split), list):
            p.error(f"{base}: needs a '{split}' split")
    labels = np.asarray([int(e["label"]) for e in load_datalist(base, "training")])
    if len(np.unique(labels)) != 2:
        p.error(f"{base}: the imbalance protocol here is binary; the training split has classes {np.unique(labels)}")
    minority = args.minority_class if args.minority_class is not None else int(np.argmin(np.bincount(labels)))
    ns = [None if v.strip() == "all" else int(v) for v in args.n_minority.split(",") if v.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result: dict[str, Any] = {"dataset": name, "base_datalist": str(base), "minority_class": minority}
    result["settings"] = settings
    result["protocol"] = "all majority + n minority training images; validation/test unchanged; test used once per run"
    reuse: dict[tuple[str, int], list[dict[str, Any]]] = {}
    if not args.quick:
        for prev in [out, *merge]:
            reuse = previous_cells(prev, name, minority, settings, arms) | reuse  # --out first, then --merge order
    result["runs"] = []
    feats: Features | None = None
    for n in ns:
        for seed in seeds:
            tag = f"n{'all' if n is None else n}_seed{seed}"
            cell = ("all" if n is None else str(n), seed)
            if cell in reuse:
                print(f"--> {tag}: reused from an earlier result JSON")
                result["runs"].extend(reuse[cell])
                result["summary"] = summarise(result["runs"])
                atomic_write_json(out, result)
                continue
            datalist, counts = minority_datalist(base, n, seed, minority)
            synthetic = None
            real_dir = None
            for arm in arms:
                run_dir = work / "runs" / f"{arm}_{tag}"
                done = run_dir / "result.json"
                key = {"arm": arm, "n": n, "seed": seed, **{k: settings[k] for k in ("network", "size", "max_epochs")}}
                if "synthetic_mode" in NETWORK_ARMS.get(arm, {}):
                    key["gan"] = gan_settings(seed, args)
                if done.is_file() and read_json(done).get("key") == key:
                    rec = read_json(done)["record"]
                else:
                    print(f"\n=== {name} {arm} n_minority={n if n is not None else 'all'} seed {seed} {counts}")
                    if arm in NETWORK_ARMS:
                        if "synthetic_mode" in NETWORK_ARMS[arm] and synthetic is None:
                            synthetic = train_gan(datalist, work / "gan" / tag, seed, counts, args)
                        rec = run_network_arm(arm, datalist, run_dir, seed, args, synthetic)
                    else:
                        feats = feats or Features(base, args.feature_size, work)
                        rec = run_feature_arm(arm, feats, datalist, run_dir, seed)
                    atomic_write_json(done, {"key": key, "record": rec})
                rec["metrics"].update(class_recalls(rec["predictions"], minority))
                if "synthetic_mode" in NETWORK_ARMS.get(arm, {}):
                    rec["gan_minutes"] = gan_minutes(work / "gan" / tag)  # shared by the GAN arms of this (n, seed)
                if arm == "real":
                    real_dir = rec["predictions"]
                elif real_dir is not None:
                    cmp = compare_runs(rec["predictions"], real_dir, n_boot=200, seed=seed)
                    dl = cmp["delong"]
                    if dl.get("applicable"):
                        rec["vs_real"] = {"diff": dl["difference"], "p": dl["p_value"]}
                rec = {"arm": arm, "n_minority": "all" if n is None else n, "seed": seed, "counts": counts, **rec}
                print(f"--> {arm} {tag}: {rec['metrics']}  vs real: {rec.get('vs_real')}")
                result["runs"].append(rec)
                result["summary"] = summarise(result["runs"])
                atomic_write_json(out, result)
    print_table(result["summary"])
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
