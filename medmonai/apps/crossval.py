"""Cross-validation runner: every fold of a bundle through MONAI's bundle workflow, then the OOF and ensemble reports.

``medmonai cv BUNDLE`` (:func:`run_crossval`) does, for a bundle folder holding ``configs/train.yaml`` and
``configs/crossval.yaml`` (classification; for segmentation bundles see the end of this docstring):

1. resolves the folds once (``<bundle_root>/runs/cv/splits.json``, reused when present, with the leakage guard);
2. trains each fold with ``monai.bundle.run`` on ``train.yaml`` + ``crossval.yaml`` and ``fold=k`` — the same
   configs a user runs by hand, not a second copy of the training code; each fold has its own early stopping (on
   that fold's validation part), checkpoints and TensorBoard folder; finished folds (``fold_predictions.npz``
   present) are skipped, and an interrupted fold resumes from its last checkpoint;
3. aggregates the folds (:func:`medmonai.engines.crossval.aggregate_crossval`): OOF report, per-fold metrics and
   their mean ± std, the fold ensemble's test report with bootstrap CIs;
4. exports the ensemble as one TorchScript module (``runs/cv/ensemble/model.ts``), checked against the eager one.

With ``classifier`` (``logreg_l2``, ``logreg_l1``, ``linear_svm``) it takes the **deep-features path** instead:
the bundle's network (e.g. the ImageNet EfficientNet-Lite0 with ``--set pretrained=imagenet``) and preprocessing
extract features of the pool and of the test split **once** (cached), and each fold fits a scikit-learn classifier
(regularisation tuned by an inner, subject-grouped CV on the fold's training part). This makes leave-one-out
practical on CPU.

With ``synthetic_mode`` (``balance`` or ``fraction``, network path) each fold first trains the class-conditional GAN
bundle (``bundles/gan_augmentation``) on **that fold's training part only** (``<fold>/gan/datalist.json``), generates
the synthetic images the fold needs, and passes them to the fold's training as ``synthetic_datalist``; the
classification bundle refuses them if the GAN saw a case of the fold's validation part or of the test split.

For a **segmentation** bundle (``bundles/segmentation``, recognised by ``label_names`` in its config)
the folds are trained the same way; each fold evaluates its validation part in the original geometry
(``fold<k>/eval_validation/report.json``) and :func:`medmonai.engines.crossval.aggregate_segmentation_crossval`
writes the per-class Dice / HD95 of every fold, their mean ± std across folds and the pooled out-of-fold summary
(``cv_report.json``, ``oof/``); ``tta_flip_axes`` mirrors the fold evaluations. The fingerprint plan is made once
for all folds (``cv_dir/fingerprint.json``). The classification-only options (``classifier``, synthetic images,
feature GAN) are refused, and no fold ensemble is exported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmonai.bundles import bundle_configs, parse_bundle, run_bundle, task_type
from medmonai.data.datalist import is_ordinal, load_datalist, load_datalist_file, write_datalist
from medmonai.data.splits import case_id
from medmonai.data.synthetic import SYNTHETIC_MODES, synthetic_counts
from medmonai.engines.classical import fit_classical
from medmonai.engines.crossval import (
    aggregate_crossval,
    aggregate_segmentation_crossval,
    export_ensemble,
    fold_dir,
    fold_done,
    segmentation_fold_done,
    write_fold_predictions,
)
from medmonai.engines.evaluation import load_weights
from medmonai.engines.feature_gan import FeatureGAN, fit_classical_with_feature_gan
from medmonai.engines.features import extract_features
from medmonai.utils import PathLike, atomic_write_json, read_json

__all__ = ["CLASSIFIERS", "fold_gan", "fold_models", "run_crossval"]

logger = logging.getLogger(__name__)

#: classical classifiers of the deep-features path
CLASSIFIERS: tuple[str, ...] = ("logreg_l2", "logreg_l1", "linear_svm")


def _cv_configs(bundle: PathLike) -> dict[str, Path]:
    """The config files of a bundle used by cross-validation (train, crossval, metadata, logging)."""
    return bundle_configs(bundle, ("train", "crossval"))


def _parse_cv(bundle: PathLike, overrides: Mapping[str, Any]) -> Any:
    """A MONAI ``ConfigParser`` over the bundle's ``train.yaml`` + ``crossval.yaml`` with ``overrides`` applied."""
    return parse_bundle(bundle, ("train", "crossval"), overrides)


def _progress(msg: str) -> None:
    print(f"[cv] {msg}", flush=True)


def _train_folds(
    files: dict[str, Path],
    common: dict[str, Any],
    cv_dir: Path,
    n_folds: int,
    per_fold: Callable[[int], dict[str, Any]] | None = None,
    done: Callable[[Path, int], bool] | None = None,
    only: Sequence[int] | None = None,
) -> None:
    is_done = done or fold_done
    wanted = range(n_folds) if only is None else sorted(set(int(k) for k in only))
    todo = [k for k in wanted if not is_done(cv_dir, k)]
    if len(todo) < len(wanted):
        _progress(f"{len(wanted) - len(todo)} of {len(wanted)} folds already finished: skipped")
    extra = {"meta_file": str(files["meta"])} if files["meta"].is_file() else {}
    if files["logging"].is_file():
        extra["logging_file"] = str(files["logging"])
    t_start = time.perf_counter()
    for i, k in enumerate(todo):
        eta = ""
        if i:
            fold_s = (time.perf_counter() - t_start) / i
            eta = f", about {fold_s * (len(todo) - i) / 60:.1f} min left"
        fold_extra = per_fold(k) if per_fold is not None else {}
        _progress(f"fold {k + 1}/{n_folds}: training ({i} of {len(todo)} to do finished{eta})")
        run_bundle([str(files["train"]), str(files["crossval"])], fold=k, **common, **extra, **fold_extra)
        if not is_done(cv_dir, k):
            raise RuntimeError(f"fold {k} finished without writing its results in {cv_dir / f'fold{k}'}")


def fold_gan(
    bundle: PathLike,
    gan_bundle: PathLike,
    common: Mapping[str, Any],
    cv_dir: Path,
    fold: int,
    mode: str,
    ratio: float,
    gan_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the GAN bundle on one fold's training part and generate what the fold needs.

    Returns the fold's classification overrides: ``synthetic_datalist`` (``<fold>/gan/runs/synthetic/datalist.json``)
    with ``synthetic_mode``/``synthetic_ratio``, or ``synthetic_mode: none`` when the fold needs no synthetic sample.
    A finished fold GAN (its datalist present) is reused; an interrupted one resumes from its last checkpoint.
    """
    parser = _parse_cv(bundle, {**common, "fold": fold})
    classes = [str(c) for c in parser.get_parsed_content("classes")]
    split = parser.get_parsed_content("split")
    real = [0] * len(classes)
    for e in split["training"]:
        real[int(e["label"])] += 1
    want = synthetic_counts(real, mode, ratio)
    if sum(want) == 0:
        _progress(f"fold {fold + 1}: classes already at the requested ratio, no synthetic samples needed")
        return {"synthetic_mode": "none"}
    root = fold_dir(cv_dir, fold) / "gan"
    synthetic = root / "runs" / "synthetic" / "datalist.json"
    if not synthetic.is_file():
        root.mkdir(parents=True, exist_ok=True)
        fold_list = write_datalist(
            root / "datalist.json",
            {
                "name": f"fold{fold}",
                "classes": classes,
                "training": split["training"],
                "validation": split["validation"],
            },
        )
        files = bundle_configs(gan_bundle, ("train", "generate"))
        overrides: dict[str, Any] = {"bundle_root": str(root), "datalist": str(fold_list), "n_per_class": want}
        if "seed" in common:
            overrides["seed"] = common["seed"]
        plan = parser.get_parsed_content("plan")
        size = plan.get("spatial_size") if isinstance(plan, Mapping) else None
        if size and all(int(v) % 4 == 0 for v in size):
            overrides["spatial_size"] = [int(v) for v in size]  # the classifier's input size
            overrides["spatial_dims"] = len(size)
        if files["meta"].is_file():
            overrides["meta_file"] = str(files["meta"])
        if files["logging"].is_file():
            overrides["logging_file"] = str(files["logging"])
        overrides.update(gan_overrides or {})
        _progress(f"fold {fold + 1}: training the GAN on the fold's {len(split['training'])} training images, "
                  f"then {dict(zip(classes, want))} synthetic samples")  # fmt: skip
        run_bundle([str(files["train"])], **overrides)
        run_bundle([str(files["train"]), str(files["generate"])], **overrides)
        if not synthetic.is_file():
            raise RuntimeError(f"fold {fold}: the GAN bundle finished without writing {synthetic}")
    return {"synthetic_datalist": str(synthetic), "synthetic_mode": mode, "synthetic_ratio": ratio}


def _feature_folds(
    bundle: PathLike,
    common: dict[str, Any],
    cv_dir: Path,
    splits: dict[str, Any],
    classifier: str,
    seed: int,
    feature_gan: str = "none",
    feature_gan_ratio: float = 1.0,
    feature_gan_options: Mapping[str, Any] | None = None,
) -> None:
    """Deep-features path: extract pool and test features once, then one classical fit per fold.

    With ``feature_gan`` (``balance``/``fraction``), each fold's classifier is fitted on real + synthetic features
    from a feature GAN trained on that fold's training features only
    (:func:`medmonai.engines.feature_gan.fit_classical_with_feature_gan`).
    """
    parser = _parse_cv(bundle, {**common, "fold": 0})
    datalist_file = parser.get_parsed_content("datalist_file")
    raw = load_datalist_file(datalist_file)
    pool = load_datalist(datalist_file, "training")
    if parser.get_parsed_content("pool_validation") and isinstance(raw.get("validation"), list):
        pool += load_datalist(datalist_file, "validation")
    by_id = {case_id(e): e for e in pool}
    missing = [c for c in splits["case_ids"] if c not in by_id]
    if missing:
        raise ValueError(f"{cv_dir / 'splits.json'}: {len(missing)} case ids are not in {datalist_file}")
    entries = [by_id[c] for c in splits["case_ids"]]
    test = load_datalist(datalist_file, "test") if isinstance(raw.get("test"), list) else []
    network = parser.get_parsed_content("network_def").eval()
    transform = parser.get_parsed_content("preprocessing")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    feats, _ = extract_features(network, entries + test, transform, cache_dir=cv_dir / "features", device=device)
    _progress(f"features {feats.shape[1]}-D of {len(entries) + len(test)} images in {time.perf_counter() - t0:.0f} s")
    x_pool, x_test = feats[: len(entries)], feats[len(entries) :]
    y_pool = np.asarray([int(e["label"]) for e in entries])
    y_test = np.asarray([int(e.get("label", -1)) for e in test])
    group_key = parser.get_parsed_content("group_key")
    groups = np.asarray([str(e.get(group_key, case_id(e))) for e in entries])
    index = {c: i for i, c in enumerate(splits["case_ids"])}
    test_ids = [f"case_{i:05d}" for i in range(len(test))]
    n_folds = len(splits["folds"])
    t0 = time.perf_counter()
    for k, fold in enumerate(splits["folds"]):
        if fold_done(cv_dir, k):
            continue
        tr = np.asarray([index[c] for c in fold["train"]])
        va = np.asarray([index[c] for c in fold["val"]])
        n_groups = len(set(groups[tr].tolist()))
        inner = min(5, n_groups, *np.bincount(y_pool[tr]).tolist())
        if feature_gan == "none":
            clf = fit_classical(
                x_pool[tr], y_pool[tr], groups=groups[tr], model=classifier, cv=max(2, inner), seed=seed
            )  # fmt: skip
        else:
            clf = fit_classical_with_feature_gan(
                x_pool[tr], y_pool[tr], groups=groups[tr], model=classifier, mode=feature_gan,
                ratio=feature_gan_ratio, cv=max(2, inner), seed=seed + k,
                gan=FeatureGAN(seed=seed + k, **dict(feature_gan_options or {})),
            )  # fmt: skip
        out = fold_dir(cv_dir, k)
        out.mkdir(parents=True, exist_ok=True)
        pt = clf.predict_proba(x_test) if len(test) else None
        write_fold_predictions(
            out, fold["val"], y_pool[va], clf.predict_proba(x_pool[va]), test_ids, y_test if len(test) else None, pt
        )
        if (k + 1) % max(1, n_folds // 10) == 0 or k + 1 == n_folds:
            _progress(f"fold {k + 1}/{n_folds} fitted ({time.perf_counter() - t0:.0f} s)")


def fold_models(
    bundle: PathLike, common: Mapping[str, Any], cv_dir: Path, n_folds: int
) -> tuple[list[torch.nn.Module], torch.Tensor]:
    """The k trained fold networks of a cross-validation (best checkpoints loaded) and one preprocessed input.

    Args:
        bundle: the bundle folder.
        common: the overrides the folds were trained with (``bundle_root`` included).
        cv_dir: the cross-validation folder.
        n_folds: number of folds.

    Returns:
        The networks and an example batch ``(1, C, *spatial)`` (the first validation image of fold 0).
    """
    models = []
    for k in range(n_folds):
        net = _parse_cv(bundle, {**common, "fold": k}).get_parsed_content("network_def", instantiate=True)
        load_weights(net, fold_dir(cv_dir, k) / "checkpoints" / "model.pt")
        models.append(net)
    parser = _parse_cv(bundle, {**common, "fold": 0})
    transform = parser.get_parsed_content("preprocessing")
    sample = transform({"image": parser.get_parsed_content("split")["validation"][0]["image"]})["image"]
    return models, torch.as_tensor(sample).unsqueeze(0).float()


def _export(bundle: PathLike, common: dict[str, Any], cv_dir: Path, n_folds: int, flip_axes: Sequence[int]) -> Path:
    """Load the k fold checkpoints into one TorchScript ensemble (``cv_dir/ensemble/model.ts``)."""
    models, example = fold_models(bundle, common, cv_dir, n_folds)
    return export_ensemble(models, cv_dir / "ensemble" / "model.ts", example, flip_axes=flip_axes)


def run_crossval(
    bundle: PathLike,
    bundle_root: PathLike = ".",
    scheme: str = "kfold",
    n_folds: int = 5,
    n_repeats: int = 1,
    overrides: Mapping[str, Any] | None = None,
    classifier: str | None = None,
    tta_flip_axes: Sequence[int] = (),
    export: bool = True,
    n_boot: int = 1000,
    synthetic_mode: str = "none",
    synthetic_ratio: float = 1.0,
    gan_bundle: PathLike | None = None,
    gan_overrides: Mapping[str, Any] | None = None,
    feature_gan: str = "none",
    feature_gan_ratio: float = 1.0,
    feature_gan_options: Mapping[str, Any] | None = None,
    folds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a cross-validation of a classification or segmentation bundle and write its reports.

    Args:
        bundle: the bundle folder (e.g. ``bundles/classification`` or ``bundles/segmentation``; the pre-merge
            names map).
        bundle_root: the bundle's ``bundle_root`` (outputs go to ``<bundle_root>/runs/cv``, default data to
            ``<bundle_root>/data``), as with ``python -m monai.bundle run``.
        scheme: ``kfold``, ``repeated_kfold``, ``loo``, ``loso``, ``groupkfold`` or ``holdout``.
        n_folds: number of folds (k-fold schemes).
        n_repeats: repeats of ``repeated_kfold``.
        overrides: more bundle overrides (``datalist``, ``max_epochs``, ``network_name``, ``group_key``...).
        classifier: None to train the bundle's network per fold; or a classical classifier on deep features.
        tta_flip_axes: test-time mirroring axes for the fold predictions and the exported ensemble.
        export: write the TorchScript ensemble (network path only).
        n_boot: bootstrap resamples of the reports.
        synthetic_mode: ``none``, or ``balance``/``fraction`` to add GAN images trained per fold (see the module
            docstring and :func:`medmonai.data.synthetic.add_synthetic`); network path only.
        synthetic_ratio: the ratio of ``synthetic_mode``.
        gan_bundle: the GAN augmentation bundle folder (default: ``gan_augmentation`` beside ``bundle``).
        gan_overrides: overrides of the GAN bundle (``max_epochs``, ``epoch_length``, ``g_channels``...).
        feature_gan: deep-features path only: ``balance``/``fraction`` adds synthetic *feature vectors* from a
            feature-level GAN trained per fold on that fold's training features
            (:mod:`medmonai.engines.feature_gan`); ``none`` (default) does not.
        feature_gan_ratio: the ratio of ``feature_gan``.
        feature_gan_options: :class:`medmonai.engines.feature_gan.FeatureGAN` settings (``steps``, ``hidden``...).
        folds: train only these folds (classification network path), e.g. ``[0]`` for the first rung of
            :mod:`medmonai.apps.auto`; nothing is aggregated then. A later call with the same settings and no
            ``folds`` skips the finished ones and writes the reports.

    Returns:
        The ``cv_report.json`` content; with ``folds``: ``{"partial": True, "cv_dir": ..., "folds_done": [...]}``.
    """
    if classifier is not None and classifier not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {classifier!r}; choose from {CLASSIFIERS}")
    if synthetic_mode not in SYNTHETIC_MODES:
        raise ValueError(f"unknown synthetic_mode {synthetic_mode!r}; choose from {SYNTHETIC_MODES}")
    if synthetic_mode != "none" and classifier is not None:
        raise ValueError("synthetic images (synthetic_mode) apply to the network path, not to --classifier")
    if feature_gan not in SYNTHETIC_MODES:
        raise ValueError(f"unknown feature_gan {feature_gan!r}; choose from {SYNTHETIC_MODES}")
    if feature_gan != "none" and classifier is None:
        raise ValueError("the feature GAN (feature_gan) applies to the deep-features path: give a classifier")
    if folds is not None and (classifier is not None or synthetic_mode != "none"):
        raise ValueError("folds= (a partial cross-validation) applies to the plain network path only")
    files = _cv_configs(bundle)
    gan_root = Path(gan_bundle) if gan_bundle is not None else Path(bundle).parent / "gan_augmentation"
    if synthetic_mode != "none":
        bundle_configs(gan_root, ("train", "generate"))
    common: dict[str, Any] = {
        "bundle_root": str(bundle_root),
        "scheme": scheme,
        "n_folds": n_folds,
        "n_repeats": n_repeats,
        "tta_flip_axes": list(tta_flip_axes),
        **dict(overrides or {}),
    }
    parser = _parse_cv(bundle, {**common, "fold": 0})
    segmentation = task_type(parser) == "segmentation"
    if segmentation:
        refused = {
            "folds": folds is not None,
            "classifier": classifier is not None,
            "synthetic_mode": synthetic_mode != "none",
            "feature_gan": feature_gan != "none",
        }
        if any(refused.values()):
            names = ", ".join(k for k, v in refused.items() if v)
            raise ValueError(f"{bundle} is a segmentation bundle: {names} apply to classification bundles only")
    cv_dir = Path(parser.get_parsed_content("cv_dir"))
    settings_file = cv_dir / "cv_settings.json"
    settings = {k: v for k, v in common.items() if k != "bundle_root"}
    settings["classifier"] = classifier
    if synthetic_mode != "none":
        settings["synthetic"] = {"mode": synthetic_mode, "ratio": synthetic_ratio, "gan": dict(gan_overrides or {})}
    if feature_gan != "none":
        settings["feature_gan"] = {
            "mode": feature_gan,
            "ratio": feature_gan_ratio,
            "options": dict(feature_gan_options or {}),
        }
    if settings_file.is_file() and read_json(settings_file) != settings:
        raise ValueError(
            f"{settings_file}: this cross-validation folder was made with other settings "
            f"({read_json(settings_file)}); use another --bundle-root or delete {cv_dir}"
        )
    parser.get_parsed_content("split")  # resolves (or reuses) splits.json, with the leakage guard
    splits = read_json(cv_dir / "splits.json")
    atomic_write_json(settings_file, settings)
    n = len(splits["folds"])
    _progress(f"{scheme}: {n} folds over {len(splits['case_ids'])} pooled cases; results in {cv_dir}")
    seed = int(parser.get_parsed_content("seed"))
    if folds is not None:
        bad = [k for k in folds if not 0 <= int(k) < n]
        if bad:
            raise ValueError(f"folds {bad} out of range: this cross-validation has folds 0..{n - 1}")
        _train_folds(files, common, cv_dir, n, only=folds)
        return {"partial": True, "cv_dir": str(cv_dir), "folds_done": [k for k in range(n) if fold_done(cv_dir, k)]}
    if segmentation:
        _train_folds(files, common, cv_dir, n, done=segmentation_fold_done)
        extra = {"bundle": str(bundle), "network": parser.get_parsed_content("network_name"), "settings": settings}
        report = aggregate_segmentation_crossval(cv_dir, n, extra=extra)
        _progress(summary_text(report))
        return report
    if classifier is None:
        per_fold = None
        if synthetic_mode != "none":

            def per_fold(k: int) -> dict[str, Any]:
                return fold_gan(bundle, gan_root, common, cv_dir, k, synthetic_mode, synthetic_ratio, gan_overrides)

        _train_folds(files, common, cv_dir, n, per_fold)
    else:
        _feature_folds(
            bundle, common, cv_dir, splits, classifier, seed, feature_gan, feature_gan_ratio, feature_gan_options
        )
    classes = parser.get_parsed_content("classes")
    extra = {"bundle": str(bundle), "classifier": classifier, "settings": settings}
    if classifier is None:
        extra["network"] = parser.get_parsed_content("network_name")
    # the class prior the fold models were trained for (three or more classes: the OOF decision rule undoes it)
    weighting: dict[str, Any] = {}
    if classifier is None:
        weighting = {
            "class_weights": parser.get_parsed_content("class_weights"),
            "balanced_sampler": bool(parser.get_parsed_content("balanced_sampler")),
        }
    ordinal = is_ordinal(parser.get_parsed_content("datalist_file"))
    report = aggregate_crossval(cv_dir, classes, n_boot=n_boot, seed=seed, extra=extra, ordinal=ordinal, **weighting)
    if export and classifier is None:
        path = _export(bundle, common, cv_dir, n, tta_flip_axes)
        report["ensemble_model"] = str(path)
        atomic_write_json(cv_dir / "cv_report.json", report)
    _progress(summary_text(report))
    return report


def summary_text(report: Mapping[str, Any]) -> str:
    """A few readable lines: across-fold mean ± std, OOF and ensemble metrics with CIs."""

    def ci(m: Mapping[str, Any] | None) -> str:
        if not m or m.get("value") is None:
            return "n/a"
        return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"

    if report.get("task") == "segmentation":
        lines = [f"cross-validation ({report.get('settings', {}).get('scheme')}, {report.get('n_folds')} folds)"]
        for m, unit in (("dice", ""), ("hd95", " mm")):
            stats = report.get("across_folds", {}).get(m, {})
            cells = [
                f"{name} {v['mean']:.3f} ± {v['std']:.3f}{unit}"
                for name, v in stats.items()
                if v and v.get("mean") is not None
            ]
            if cells:
                lines.append(f"  per fold, {m}: " + ", ".join(cells))
        oof = report.get("oof", {}).get("summary", {}).get("dice", {})
        cells = [f"{n} {v['mean']:.3f} ± {v['std']:.3f}" for n, v in oof.items() if v and v.get("mean") is not None]
        lines.append(f"  out-of-fold (n={report.get('oof', {}).get('n')}), Dice: " + ", ".join(cells))
        return "\n".join(lines)
    lines = [f"cross-validation ({report.get('scheme')}, {report.get('n_folds')} folds)"]
    for part in ("validation", "test"):
        stats = report.get("across_folds", {}).get(part)
        if stats:
            cells = [
                f"{m} {v['mean']:.3f} ± {v['std']:.3f}" for m, v in stats.items() if v and m in ("auc", "accuracy")
            ]
            lines.append(f"  per fold, {part}: " + ", ".join(cells))
    oof = report.get("oof", {}).get("metrics", {})
    lines.append(f"  out-of-fold (n={report.get('oof', {}).get('n')}): AUC {ci(oof.get('auc'))}")
    ens = report.get("ensemble")
    if ens:
        m = ens["metrics"]
        lines.append(f"  ensemble on test (n={ens['n']}): AUC {ci(m.get('auc'))}, ACC {ci(m.get('accuracy'))}")
    for name, part in (("out-of-fold", report.get("oof") or {}), ("ensemble", ens or {})):
        lines += [f"  WARNING ({name}): {w}" for w in part.get("warnings", [])]
    return "\n".join(lines)
