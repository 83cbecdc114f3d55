"""The ``medmonai`` command line: ``medmonai {phantoms,datalist,fingerprint,check,demo,cv,compare,...} ...``.

Each sub-command is a thin wrapper over a library function, so everything the CLI does is also available from
Python and from bundle configs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from medmonai import __version__
from medmonai.apps.auto import PORTFOLIO, train_auto
from medmonai.apps.crossval import CLASSIFIERS, run_crossval
from medmonai.apps.demo import run_demo
from medmonai.bundles import default_bundle_root, medmonai_home, parse_bundle, qualified_name, resolve_bundle
from medmonai.data import builders
from medmonai.data.datalist import SPLIT_KEYS, DatalistError, format_problems, write_datalist
from medmonai.data.dicom import is_dicom_file, list_folder_files
from medmonai.data.fingerprint import fingerprint_datalist, write_fingerprint
from medmonai.data.phantoms import PhantomConfig, generate_phantom_dataset
from medmonai.data.planning import PLAN_TASKS
from medmonai.data.preflight import PreflightError, preflight_datalist
from medmonai.data.splits import SCHEMES
from medmonai.data.synthetic import SYNTHETIC_MODES
from medmonai.deploy.dicomweb import DicomWebClient, make_client
from medmonai.deploy.models import load_clinical_model
from medmonai.deploy.onnx import export_onnx
from medmonai.deploy.pipeline import infer_dicom, result_files, watch_folder, watch_pacs
from medmonai.engines.synthetic_audit import audit_synthetic
from medmonai.handlers.mlflow import log_report
from medmonai.metrics.compare import compare_runs, format_p, write_comparison
from medmonai.transforms.augmentation import LEVELS, save_augmentation_preview

__all__ = ["main", "build_parser"]

logger = logging.getLogger("medmonai")


def _csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _float_list(value: str) -> list[float]:
    return [float(v) for v in _csv_list(value)]


# ---------------------------------------------------------------------------------------------------- phantoms
def _cmd_phantoms(args: argparse.Namespace) -> int:
    kwargs = {"spatial_dims": args.dims, "seed": args.seed}
    if args.small:
        config = PhantomConfig.small(args.dims)
        config.seed = args.seed
    else:
        config = PhantomConfig(**kwargs)
    if args.subjects is not None:
        config.n_subjects = args.subjects
    if args.images_per_subject is not None:
        ips = [int(v) for v in _csv_list(args.images_per_subject)]
        config.images_per_subject = ips[0] if len(ips) == 1 else (ips[0], ips[1])
    if args.classes is not None:
        config.classes = tuple(_csv_list(args.classes))
    if args.class_ratio is not None:
        config.class_ratio = tuple(_float_list(args.class_ratio))
    if args.difficulty is not None:
        config.difficulty = args.difficulty
    if args.test_fraction is not None:
        config.test_fraction = args.test_fraction
    if hasattr(config, "validate"):
        config.validate()
    formats = tuple(_csv_list(args.formats)) if args.formats else None
    out = generate_phantom_dataset(args.out, config, formats=formats, progress=not args.quiet)
    for fmt, path in out.items():
        print(f"{fmt:>8}: {path}")
    return 0


# ---------------------------------------------------------------------------------------------------- datalist
def _write_and_report(datalist: dict, out: Path, problems: Sequence = ()) -> int:
    path = write_datalist(out, datalist)
    counts = ", ".join(f"{k}={len(datalist[k])}" for k in SPLIT_KEYS if isinstance(datalist.get(k), list))
    print(f"wrote {path} ({counts})")
    if datalist.get("classes"):
        print(f"classes: {datalist['classes']}")
    if problems:
        print(f"\n{len(problems)} item(s) skipped:\n{format_problems(problems)}")
    return 0


def _cmd_datalist(args: argparse.Namespace) -> int:
    classes = _csv_list(args.classes) if getattr(args, "classes", None) else None
    src = args.source
    if src == "medmnist":
        out_dir = Path(args.out_dir) if args.out_dir else Path(args.out).parent
        dl = builders.datalist_from_medmnist(args.npz, out_dir, classes=classes, progress=not args.quiet)
        return _write_and_report(dl, Path(args.out))
    if src == "folder":
        dl = builders.datalist_from_image_folder(
            args.root, subject_regex=args.subject_regex, classes=classes, subjects_csv=args.subjects_csv
        )
        return _write_and_report(dl, Path(args.out))
    if src == "csv":
        dl = builders.datalist_from_csv(
            args.csv,
            path_col=args.path_col,
            label_col=args.label_col,
            subject_col=args.subject_col,
            classes=classes,
            split_col=args.split_col,
        )
        return _write_and_report(dl, Path(args.out))
    if src == "dicom":
        dl, problems = builders.datalist_from_dicom_folder(
            args.folder,
            labels_csv=args.labels_csv,
            key=args.key,
            label_col=args.label_col,
            classes=classes,
            on_error="skip" if args.skip_bad else "raise",
            progress=not args.quiet,
            pseudonym_key=builders.read_pseudonym_key(args.pseudonym_key_file) if args.pseudonym_key_file else None,
        )
        return _write_and_report(dl, Path(args.out), problems)
    if src == "msd":
        dl = builders.datalist_from_msd(args.folder)
        return _write_and_report(dl, Path(args.out))
    raise SystemExit(f"unknown datalist source {src!r}")


# ---------------------------------------------------------------------------------------------------- fingerprint
def _cmd_fingerprint(args: argparse.Namespace) -> int:
    result = fingerprint_datalist(args.datalist, key=args.key, progress=not args.quiet, task=args.task)
    out = Path(args.out) if args.out else Path(args.datalist).with_name("fingerprint.json")
    write_fingerprint(out, result)
    fp, plan = result["fingerprint"], result["plan"]
    print(f"fingerprint of {args.datalist} [{args.key}] -> {out}")
    for k in ("n_images", "n_subjects", "modality_counts", "class_counts", "median_spacing", "median_shape"):
        if k in fp:
            print(f"  {k:<16} {fp[k]}")
    print("plan:")
    for k, v in plan.items():
        if k != "reasons":
            print(f"  {k:<16} {json.dumps(v) if isinstance(v, dict | list) else v}")
    for r in plan.get("reasons", []):
        print(f"  - {r}")
    return 0


# ---------------------------------------------------------------------------------------------------- check
def _cmd_check(args: argparse.Namespace) -> int:
    keys = SPLIT_KEYS if args.key == "all" else (args.key,)
    try:
        preflight_datalist(
            args.datalist, None, spatial_dims=args.dims, keys=keys, decode=not args.no_decode, report=args.report
        )
    except PreflightError as e:
        print(e)
        return 1
    print(f"{args.datalist}: no problems found{'' if args.no_decode else ' (every image opened and decoded)'}")
    if args.report:
        print(f"report: {args.report}")
    return 0


# ---------------------------------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else str(medmonai_home() / "demo")
    run_demo(out, spatial_dims=args.dims, seed=args.seed, quick=args.quick, progress=not args.quiet)
    if args.mlflow_uri:
        params = {"spatial_dims": args.dims, "seed": args.seed, "quick": args.quick}
        _log_to_mlflow(Path(out) / "summary.json", args.mlflow_uri, args.mlflow_experiment or "demo", params)
    return 0


def _log_to_mlflow(report: Path, uri: str, experiment: str, params: dict[str, object]) -> None:
    """``--mlflow-uri``: the finished report and the files beside it as one MLflow run (docs/tracking.md)."""
    run_id = log_report(report, uri, experiment, params=params)
    print(f"MLflow: run {run_id} in experiment {experiment!r} of {uri}")


# ---------------------------------------------------------------------------------------------------- compare
# ------------------------------------------------------------------------------------------------------ train
def _cmd_train(args: argparse.Namespace) -> int:
    out = args.out or str(medmonai_home() / "train" / Path(args.datalist).resolve().parent.name)
    print(f"medmonai train: outputs in {out}", flush=True)
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()] if args.candidates else None
    train_auto(
        args.datalist, out, budget_min=args.budget_min, n_folds=args.folds, seed=args.seed,
        spatial_dims=args.spatial_dims, candidates=candidates, n_boot=args.n_boot, leakage=args.leakage,
    )  # fmt: skip
    return 0


# ------------------------------------------------------------------------------------------------------ cv
def _parse_value(text: str) -> object:
    """A ``--set`` value: JSON/YAML literal when it parses (numbers, lists, null...), else the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _cmd_cv(args: argparse.Namespace) -> int:
    overrides = _key_values(args.set, "--set")
    gan_overrides = _key_values(args.gan_set, "--gan-set")
    if args.datalist:
        overrides["datalist"] = str(Path(args.datalist).resolve())
    if args.seed is not None:
        overrides["seed"] = args.seed
    run_crossval(
        args.bundle, bundle_root=args.bundle_root, scheme=args.scheme, n_folds=args.folds, n_repeats=args.repeats,
        overrides=overrides, classifier=args.classifier, tta_flip_axes=_int_list(args.tta_flip_axes),
        export=not args.no_export, n_boot=args.n_boot, synthetic_mode=args.synthetic_mode,
        synthetic_ratio=args.synthetic_ratio, gan_bundle=args.gan_bundle, gan_overrides=gan_overrides,
        feature_gan=args.feature_gan, feature_gan_ratio=args.feature_gan_ratio,
    )  # fmt: skip
    if args.mlflow_uri:
        params = {k: v for k, v in vars(args).items() if k not in ("func", "set", "gan_set", "mlflow_uri")}
        folder, dims = _bundle_and_dims(args)
        experiment = args.mlflow_experiment or f"cv_{qualified_name(folder.name, dims)}"
        cv_dir = Path(str(overrides.get("cv_dir", Path(args.bundle_root) / "runs" / "cv")))  # crossval.yaml's cv_dir
        report = cv_dir / "cv_report.json"
        _log_to_mlflow(report, args.mlflow_uri, experiment, {**params, "overrides": overrides})
    return 0


def _key_values(items: list[str] | None, option: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = _parse_value(value)
    return out


def _int_list(value: str | None) -> list[int]:
    return [int(v) for v in (value or "").split(",") if v.strip()]


# ------------------------------------------------------------------------------------------------- compare
def _cmd_compare(args: argparse.Namespace) -> int:
    res = compare_runs(args.run_a, args.run_b, n_boot=args.n_boot, seed=args.seed)
    auc, dl, bs, mc = res["auc"], res["delong"], res["bootstrap"], res["mcnemar"]

    def num(v: float | None, fmt: str = ".3f") -> str:
        return "n/a" if v is None else format(v, fmt)

    def ci(t: dict) -> str:
        ok = t.get("applicable") and t.get("ci_low") is not None
        return f"{t['ci_low']:+.3f}..{t['ci_high']:+.3f}" if ok else "n/a"

    print(f"A: {res['run_a']['predictions']}")
    print(f"B: {res['run_b']['predictions']}")
    pos = f", positive class '{res['positive_class_name']}'" if res["task"] == "binary" else ""
    print(f"{res['n']} paired cases, {res['task']}{pos}; differences are A - B\n")
    rows = [("", "A", "B", "A - B", "95% CI", "p", "test")]
    rows.append(
        (
            auc["metric"],
            num(auc["a"]),
            num(auc["b"]),
            num(auc["difference"], "+.3f"),
            ci(dl),
            format_p(dl.get("p_value")),
            "DeLong",
        )
    )
    rows.append(("", "", "", "", ci(bs), format_p(bs.get("p_value")), f"paired bootstrap ({args.n_boot})"))
    rows.append(
        (
            "accuracy",
            num(mc["accuracy_a"]),
            num(mc["accuracy_b"]),
            num(mc["difference"], "+.3f"),
            "",
            format_p(mc["p_value"]),
            f"McNemar {mc['method']} (b={mc['b']}, c={mc['c']})",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r[:6], widths))) + "  " + r[6])
    for name, t in (("DeLong", dl), ("paired bootstrap", bs)):
        if not t.get("applicable"):
            print(f"\n{name}: not applicable ({t['reason']})")
    print(f"\n{res['conclusion']}")
    if args.out:
        print(f"wrote {write_comparison(args.out, res)}")
    return 0


# --------------------------------------------------------------------------------------------- augment-preview
def _cmd_augment_preview(args: argparse.Namespace) -> int:
    size = [int(v) for v in _csv_list(args.size)] if args.size else None
    res = save_augmentation_preview(
        args.datalist, args.out, preset=args.preset, spatial_dims=args.dims, n_images=args.n, n_draws=args.draws,
        key=args.key, seed=args.seed, spatial_size=size,
    )  # fmt: skip
    print(f"wrote {res['out']} ({res['n_images']} images x (original + {res['n_draws']} '{res['preset']}' draws))")
    return 0


# --------------------------------------------------------------------------------------------- audit-synthetic
def _cmd_audit_synthetic(args: argparse.Namespace) -> int:
    rep = audit_synthetic(
        args.real_datalist, args.synthetic_datalist, args.out, real_key=args.real_key,
        synthetic_key=args.synthetic_key, spatial_dims=args.dims, k=args.k, reference_percentile=args.percentile,
        copy_ratio=args.ratio, image_size=args.image_size, pixel_size=args.pixel_size, n_pairs=args.pairs,
        device=args.device,
    )  # fmt: skip
    mem = rep["memorization"]
    print(f"{rep['n_synthetic']} synthetic vs {rep['n_real']} real ({rep['real_key']}) images")
    print(f"FID {rep['fid']:.2f}  precision {rep['precision']:.3f}  recall {rep['recall']:.3f} (k={rep['k']})")
    for name, value in (rep.get("fid_per_class") or {}).items():
        print(f"  FID {name}: {'n/a' if value is None else f'{value:.2f}'}")
    print(
        f"near-copies of training images: {mem['n_flagged']} ({100 * mem['fraction_flagged']:.1f} %; at most "
        f"{mem['reference_percentile']:g} % per space expected by chance)"
    )
    for r in mem["flagged"][:20]:
        print(f"  {r['image']}  ~  {r['nearest_real_pixel']['image']}  (score {r['score']:.2f})")
    print(f"wrote {rep['report']} and {rep['closest_pairs_png']}")
    return 1 if args.fail_on_copies and mem["n_flagged"] else 0


# ------------------------------------------------------------------------------------- infer / watch / pacs
def _clinical_overrides(items: list[str] | None) -> dict[str, object]:
    return _key_values(items, "--set")


def _load_clinical(args: argparse.Namespace):  # noqa: ANN202 - a ClinicalModel
    return load_clinical_model(
        args.bundle, bundle_root=args.bundle_root, model=args.model, overrides=_clinical_overrides(args.set),
        device=args.device, threshold=args.threshold, runtime=getattr(args, "runtime", "torch"),
        onnx_model=getattr(args, "onnx_model", None),
    )  # fmt: skip


def _cmd_export(args: argparse.Namespace) -> int:
    rep = export_onnx(
        args.bundle, args.bundle_root, args.out, model=args.model, overrides=_clinical_overrides(args.set),
        fmt=args.format, n_samples=args.n_samples, opset=args.opset, atol=args.atol, rtol=args.rtol,
    )  # fmt: skip
    chk = rep["check"]
    print(
        f"wrote {args.out} ({args.format}), checked against {rep['model']['weights']} on {chk['inputs']['n']} "
        f"{chk['inputs']['source'].split(' ')[0]} input(s): max |diff| {chk['max_abs_diff']:.3g} "
        f"(atol {chk['atol']:g}, rtol {chk['rtol']:g}); report {args.out}.json"
    )
    return 0


def _infer_kwargs(args: argparse.Namespace) -> dict[str, object]:
    return {
        "series": args.series,
        "series_uids": args.series_uid or None,
        "modalities": _csv_list(args.modality) if args.modality else None,
        "min_slices": args.min_slices,
        "nifti": not args.no_nifti,
        "allow_out_of_distribution": args.allow_out_of_distribution,
    }


def _client(args: argparse.Namespace, target: str, move_port: int | None = None):  # noqa: ANN202
    """A DIMSE PacsClient for ``AET@HOST:PORT``, a DICOMweb client for an ``http(s)://`` URL."""
    return make_client(
        target, calling_aet=args.calling_aet, move_port=move_port, username=args.dicomweb_user, ca_bundle=args.ca_bundle
    )


def _cmd_infer(args: argparse.Namespace) -> int:
    model = _load_clinical(args)
    result = infer_dicom(model, args.input, args.out, **_infer_kwargs(args))
    for r in result["results"]:
        what = r.get("predicted") or ", ".join(f"{k} {v:.0f} mm3" for k, v in r.get("volume_mm3", {}).items())
        reasons = "; ".join(r.get("out_of_distribution_reasons") or [])
        ood = f" (OUT OF DISTRIBUTION: {reasons})" if r.get("out_of_distribution") else ""
        print(f"{r['SeriesInstanceUID']}: {what}{ood}")
    print(infer_summary(result, args.out))
    if args.send_to:
        stored = _client(args, args.send_to).store(result_files(result, args.out))  # C-STORE, or STOW-RS for a URL
        print(f"stored {len(stored)} result object(s) in {args.send_to}")
    return 0


def infer_summary(result: dict, out: str | Path) -> str:
    """One line that sums up an ``infer`` result: series, studies, outcome counts, skipped, where written.

    (Out-of-distribution series are refused before anything is written unless allowed, so a written result only has
    allowed ones, counted here.)
    """
    records = result["results"]
    studies = {r.get("StudyInstanceUID") for r in records}
    ood = sum(bool(r.get("out_of_distribution")) for r in records)
    counts: dict[str, int] = {}
    for r in records:
        if r.get("predicted") is not None:
            counts[str(r["predicted"])] = counts.get(str(r["predicted"]), 0) + 1
    outcome = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or f"{len(records)} segmented"
    skipped = len(result.get("skipped_series") or [])
    return (
        f"infer: {len(records)} series of {len(studies)} stud{'y' if len(studies) == 1 else 'ies'} -> {outcome}; "
        f"{ood} out of distribution, {skipped} series skipped; results in {Path(out) / 'results.json'} "
        f"(and results.csv), {result.get('seconds', 0):.1f} s"
    )


def _cmd_watch(args: argparse.Namespace) -> int:
    if args.dicomweb and not args.dicomweb.lower().startswith(("http://", "https://")):
        raise ValueError(f"--dicomweb expects an http(s):// URL, got {args.dicomweb!r}")
    model = _load_clinical(args)
    common = {"state_file": args.state, "interval_s": args.interval, "once": args.once, **_infer_kwargs(args)}
    common["retry_failed"] = args.retry_failed
    if args.folder:
        summary = watch_folder(model, args.folder, args.out, min_age_s=args.min_age, **common)
    else:
        client = _client(args, args.pacs or args.dicomweb, move_port=args.move_port)  # DIMSE or DICOMweb
        query = {k: str(v) for k, v in _clinical_overrides(args.query).items()}
        summary = watch_pacs(
            model, client, args.out, store_results=not args.no_store, stable_polls=args.stable_polls, query=query,
            **common,
        )  # fmt: skip
    print(", ".join(f"{k}: {len(v)}" for k, v in summary.items()))
    return 0


def _cmd_pacs(args: argparse.Namespace) -> int:
    client = _client(args, args.node, move_port=args.move_port)
    web = isinstance(client, DicomWebClient)
    if args.action == "move" and web:
        raise ValueError(f"medmonai pacs move: C-MOVE is DIMSE only; use 'get' (WADO-RS) with {args.node}")
    if args.action == "echo":
        client.echo()
        print(f"{args.node}: {'QIDO-RS' if web else 'C-ECHO'} ok")
    elif args.action == "store":
        files = []
        for item in args.paths:  # files are sent as given; from folders, the DICOM files (suffix or DICM marker)
            p = Path(item)
            files += [f for f in list_folder_files(p, recursive=True) if is_dicom_file(f)] if p.is_dir() else [p]
        print(f"stored {len(client.store(files))} instance(s) in {args.node}")
    elif args.action == "find":
        rows = client.find_series(args.study_uid) if args.study_uid else client.find_studies()
        print(json.dumps(rows, indent=2))
    else:
        if not args.study_uid:
            raise ValueError(f"medmonai pacs {args.action}: --study-uid is required")
        retrieve = client.move_study if args.action == "move" else client.get_study
        files = retrieve(args.study_uid, args.out, series_uids=args.series_uid or None)
        how = "WADO-RS" if web else "C-MOVE" if args.action == "move" else "C-GET"
        print(f"retrieved {len(files)} instance(s) into {args.out} ({how})")
    return 0


def _mlflow_options(p: argparse.ArgumentParser, what: str, experiment: str) -> None:
    p.add_argument(
        "--mlflow-uri", default=None, metavar="URI",
        help=f"log the settings, the metrics and {what} to MLflow, e.g. sqlite:////abs/path/mlruns.db "
        "(pip install 'medmonai[mlflow]'; docs/tracking.md)",
    )  # fmt: skip
    p.add_argument("--mlflow-experiment", default=None, help=f"MLflow experiment name (default: {experiment})")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with the defaults shown (where there is one worth showing) and no reST markup."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").replace("``", "")
        if "%(default)" in text or "default:" in text or "default " in text:
            return text
        if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"

    def _format_text(self, text: str) -> str:
        return super()._format_text(text.replace("``", ""))


def _set_formatter(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and all its sub-command parsers the :class:`_HelpFormatter`."""
    parser.formatter_class = _HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _set_formatter(sub)


def _default_bundle_root(args: argparse.Namespace) -> None:
    """Fill ``--bundle-root`` when not given: the bundle configs' default, $MEDMONAI_HOME/<bundle>_<dims>d."""
    if getattr(args, "bundle_root", "") is not None or not getattr(args, "bundle", None):
        return
    folder, dims = _bundle_and_dims(args)
    args.bundle_root = default_bundle_root(folder.name, dims)


def _bundle_and_dims(args: argparse.Namespace) -> tuple[Path, int | None]:
    """The bundle folder of ``args.bundle`` and its ``spatial_dims``: ``--set``, an old name's, else the default."""
    folder, implied = resolve_bundle(args.bundle)
    dims = _key_values(getattr(args, "set", None), "--set").get("spatial_dims", implied.get("spatial_dims"))
    if dims is None:
        dims = parse_bundle(folder).get("spatial_dims")  # the bundle's default (a plain number in train.yaml)
    return folder, None if dims is None else int(str(dims))


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``medmonai`` command."""
    p = argparse.ArgumentParser(prog="medmonai", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"medmonai {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    ph = sub.add_parser("phantoms", help="generate the synthetic phantom data set (NIfTI / DICOM / PNG + datalist)")
    ph.add_argument("out", help="output folder")
    ph.add_argument("--dims", type=int, choices=(2, 3), default=3, help="2D images or 3D volumes")
    ph.add_argument("--seed", type=int, default=0, help="random seed (the data set is deterministic per seed)")
    ph.add_argument("--subjects", type=int, default=None, help="number of subjects")
    ph.add_argument("--images-per-subject", default=None, help="N or MIN,MAX")
    ph.add_argument("--classes", default=None, help="comma-separated class names (2 or 3)")
    ph.add_argument("--class-ratio", default=None, help="comma-separated class proportions, e.g. 0.8,0.2")
    ph.add_argument("--difficulty", type=float, default=None, help="0 (separable) .. 1 (overlapping classes)")
    ph.add_argument("--test-fraction", type=float, default=None, help="subject-level held-out test split")
    ph.add_argument("--formats", default=None, help="comma-separated: nifti,dicom,png (png: 2D only)")
    ph.add_argument("--small", action="store_true", help="tiny preset (for tests)")
    ph.set_defaults(func=_cmd_phantoms)

    dl = sub.add_parser("datalist", help="build a datalist JSON from a data source")
    dsub = dl.add_subparsers(dest="source", required=True)
    m = dsub.add_parser("medmnist", help="MedMNIST .npz (2D/3D, grey/RGB): writes image files + datalist")
    m.add_argument("npz", help="the MedMNIST .npz file (docs/data.md)")
    m.add_argument("--out", required=True, help="datalist JSON to write")
    m.add_argument("--out-dir", default=None, help="folder for the image files (default: the datalist's folder)")
    m.add_argument(
        "--classes", default=None, help="comma-separated class names in label order (default: from the data)"
    )
    f = dsub.add_parser("folder", help="image folder tree: [split/]class/image")
    f.add_argument("root", help="root folder of the image tree")
    f.add_argument("--out", required=True, help="datalist JSON to write")
    f_subj = f.add_mutually_exclusive_group()
    f_subj.add_argument(
        "--subject-regex",
        default=None,
        help="group images into subjects: regex searched in the path relative to ROOT (then in the file name); its "
        "group 'subject' (or first group) is the subject id. Default: one subject per file",
    )
    f_subj.add_argument("--subjects-csv", default=None, help="group images into subjects: CSV with path,subject")
    f.add_argument(
        "--classes", default=None, help="comma-separated class names in label order (default: from the data)"
    )
    c = dsub.add_parser("csv", help="CSV with path,label[,subject] columns")
    c.add_argument("csv", help="the CSV file (paths relative to its folder)")
    c.add_argument("--out", required=True, help="datalist JSON to write")
    c.add_argument("--path-col", default="path", help="column of the image paths")
    c.add_argument("--label-col", default="label", help="column of the labels")
    c.add_argument("--subject-col", default="subject", help="column of the subject (patient) ids, when present")
    c.add_argument("--split-col", default=None, help="column naming each row's split (training/validation/test)")
    c.add_argument(
        "--classes", default=None, help="comma-separated class names in label order (default: from the data)"
    )
    d = dsub.add_parser("dicom", help="folder of DICOM files: one entry per series")
    d.add_argument("folder", help="folder searched recursively for DICOM files")
    d.add_argument("--out", required=True, help="datalist JSON to write")
    d.add_argument("--labels-csv", default=None, help="CSV with the key column and a label column")
    d.add_argument(
        "--key", default="PatientID", choices=("PatientID", "StudyInstanceUID", "SeriesInstanceUID"),
        help="DICOM attribute that the labels CSV's key column holds",
    )  # fmt: skip
    d.add_argument("--label-col", default="label", help="label column of the labels CSV")
    d.add_argument(
        "--classes", default=None, help="comma-separated class names in label order (default: from the data)"
    )
    d.add_argument("--skip-bad", action="store_true", help="skip bad files/series and report them instead of failing")
    d.add_argument(
        "--pseudonym-key-file",
        default=None,
        help="file holding a secret key: subject = keyed pseudonym (HMAC-SHA256) of the PatientID, not the PatientID",
    )
    s = dsub.add_parser("msd", help="Medical Segmentation Decathlon layout (dataset.json, imagesTr, labelsTr)")
    s.add_argument("folder", help="the task folder (holding dataset.json)")
    s.add_argument("--out", required=True, help="datalist JSON to write")
    dl.set_defaults(func=_cmd_datalist)

    fp = sub.add_parser("fingerprint", help="dataset fingerprint and preprocessing plan (nnU-Net style)")
    fp.add_argument("datalist", help="datalist JSON")
    fp.add_argument("--key", default="training", help="split to analyse (training/validation/test/all)")
    fp.add_argument("--out", default=None, help="JSON output (default: fingerprint.json beside the datalist)")
    fp.add_argument(
        "--task", default=None, choices=PLAN_TASKS,
        help="plan with the task's rules, as its bundle does (classification: a 2D input budget of 48 x 48 px)",
    )  # fmt: skip
    fp.set_defaults(func=_cmd_fingerprint)

    ck = sub.add_parser(
        "check",
        help="pre-flight check of a datalist: every image and mask opened and decoded, labels, classes (exit 1 on "
        "problems)",
    )
    ck.add_argument("datalist", help="datalist JSON")
    ck.add_argument("--key", default="all", help="split to check: training/validation/test, or all (default)")
    ck.add_argument("--dims", type=int, choices=(2, 3), default=None, help="expected spatial dimensions of the images")
    ck.add_argument("--no-decode", action="store_true", help="only check paths and labels (fast)")
    ck.add_argument("--report", default=None, help="write the problems as JSON to this file")
    ck.set_defaults(func=_cmd_check)

    de = sub.add_parser("demo", help="end-to-end demo on the embedded phantom data")
    de.add_argument(
        "--out", default=None,
        help="output folder: phantoms, runs, summary, plots (default: $MEDMONAI_HOME/demo, i.e. ~/.medmonai/demo)",
    )  # fmt: skip
    de.add_argument("--dims", type=int, choices=(2, 3), default=3, help="dimensions of the baseline's phantoms")
    de.add_argument("--seed", type=int, default=0, help="random seed of data and training")
    de.add_argument("--quick", action="store_true", help="smaller data set (for tests)")
    _mlflow_options(de, "summary.json and the plots", "demo")
    de.set_defaults(func=_cmd_demo)

    tr = sub.add_parser(
        "train",
        help="the best classifier the time budget buys: a portfolio selected by cross-validation, the fold ensemble",
    )
    tr.add_argument("datalist", help="datalist JSON: training [+ validation] for selection, test scored once")
    tr.add_argument("--budget-min", type=float, default=30.0, help="wall-clock budget of the whole run, minutes")
    tr.add_argument(
        "--out", default=None,
        help="output folder (default: $MEDMONAI_HOME/train/<the datalist's folder name>); a rerun resumes",
    )  # fmt: skip
    tr.add_argument("--folds", type=int, default=5, help="cross-validation folds = models in the final ensemble")
    tr.add_argument("--seed", type=int, default=0, help="random seed of folds and training")
    tr.add_argument("--spatial-dims", type=int, choices=(2, 3), default=2, help="2: images, 3: volumes")
    tr.add_argument(
        "--candidates", default=None,
        help=f"restrict the portfolio, comma list of {', '.join(c.name for c in PORTFOLIO)} (default: all that apply)",
    )  # fmt: skip
    tr.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the reports")
    tr.add_argument(
        "--leakage", default="error", choices=("error", "drop", "off"),
        help="a subject or an identical image in two splits: stop, leave it out of training (reported), or ignore",
    )  # fmt: skip
    tr.set_defaults(func=_cmd_train)

    cv = sub.add_parser(
        "cv", help="cross-validate a bundle: folds, OOF report (classification: fold ensemble; segmentation: Dice)"
    )
    cv.add_argument("bundle", help="bundle folder, e.g. bundles/classification")
    cv.add_argument(
        "--scheme", default="kfold", choices=SCHEMES,
        help="split scheme: stratified k-fold, repeated k-fold, leave-one-out, leave-one-subject-out, group "
        "k-fold, holdout",
    )  # fmt: skip
    cv.add_argument("--folds", type=int, default=5, help="number of folds (k-fold schemes)")
    cv.add_argument("--repeats", type=int, default=1, help="repeats of repeated_kfold")
    cv.add_argument(
        "--bundle-root", default=None,
        help="the bundle's bundle_root: outputs in BUNDLE_ROOT/runs/cv (default: the bundle's, "
        "$MEDMONAI_HOME/<bundle>_<dims>d)",
    )  # fmt: skip
    cv.add_argument("--datalist", default=None, help="datalist JSON (default: the bundle's phantom data)")
    cv.add_argument("--seed", type=int, default=None, help="random seed of splits and training (default: the bundle's)")
    cv.add_argument(
        "--classifier", default=None, choices=CLASSIFIERS,
        help="deep-features path: features from the bundle's network once, this classifier per fold (fast LOO)",
    )  # fmt: skip
    cv.add_argument("--tta-flip-axes", default=None, help="test-time mirroring axes, e.g. 0")
    cv.add_argument("--no-export", action="store_true", help="do not export the TorchScript ensemble")
    cv.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the reports")
    cv.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="bundle override (repeatable), e.g. --set max_epochs=20 --set group_key=site",
    )  # fmt: skip
    cv.add_argument(
        "--synthetic-mode", default="none", choices=SYNTHETIC_MODES,
        help="add GAN images to each fold's training part; the GAN is trained per fold on that part only",
    )  # fmt: skip
    cv.add_argument(
        "--synthetic-ratio", type=float, default=1.0,
        help="balance: fill classes up to RATIO x the largest; fraction: add RATIO x the real count",
    )  # fmt: skip
    cv.add_argument("--gan-bundle", default=None, help="GAN bundle folder (default: gan_augmentation beside BUNDLE)")
    cv.add_argument(
        "--gan-set", action="append", metavar="KEY=VALUE",
        help="GAN bundle override (repeatable), e.g. --gan-set max_epochs=50",
    )  # fmt: skip
    cv.add_argument(
        "--feature-gan", default="none", choices=SYNTHETIC_MODES,
        help="with --classifier: add synthetic feature vectors from a feature GAN trained per fold",
    )  # fmt: skip
    cv.add_argument("--feature-gan-ratio", type=float, default=1.0, help="the ratio of --feature-gan")
    _mlflow_options(cv, "cv_report.json and the files beside it", "cv_<bundle>_<dims>d, e.g. cv_classification_2d")
    cv.set_defaults(func=_cmd_cv)

    ap = sub.add_parser("augment-preview", help="PNG grid of an augmentation preset applied to a datalist's images")
    ap.add_argument("datalist", help="datalist JSON")
    ap.add_argument(
        "--preset", default="medium", choices=tuple(LEVELS), help="augmentation level (docs/augmentation.md)"
    )
    ap.add_argument("--dims", type=int, choices=(2, 3), default=2, help="spatial dimensions of the images")
    ap.add_argument("--n", type=int, default=8, help="images (rows): the first N of the split")
    ap.add_argument("--draws", type=int, default=4, help="augmented draws per image (columns after the original)")
    ap.add_argument("--key", default="training", help="datalist split")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the draws")
    ap.add_argument("--size", default=None, help="centre crop/pad to this size, e.g. 64,64")
    ap.add_argument("--out", default="augmentation_preview.png", help="PNG to write")
    ap.set_defaults(func=_cmd_augment_preview)

    au = sub.add_parser(
        "audit-synthetic", help="FID, precision/recall and near-copy check of synthetic images against real ones"
    )
    au.add_argument("real_datalist", help="the real datalist (the generator's training data)")
    au.add_argument("synthetic_datalist", help="the synthetic datalist (e.g. runs/synthetic/datalist.json)")
    au.add_argument("--out", required=True, help="folder for audit.json and closest_pairs.png")
    au.add_argument("--real-key", default="training", help="split of the real datalist")
    au.add_argument("--synthetic-key", default="training", help="split of the synthetic datalist")
    au.add_argument("--dims", type=int, choices=(2, 3), default=None, help="default: from the datalists")
    au.add_argument("--k", type=int, default=3, help="neighbourhood size of precision/recall")
    au.add_argument(
        "--percentile", type=float, default=1.0, help="near-copy threshold: percentile of real-real NN distances"
    )
    au.add_argument("--ratio", type=float, default=0.5, help="near-copy threshold: factor on that percentile")
    au.add_argument("--image-size", type=int, default=112, help="input size of the feature network")
    au.add_argument("--pixel-size", type=int, default=32, help="size per axis of the pixel-space comparison")
    au.add_argument("--pairs", type=int, default=16, help="closest pairs shown in the PNG")
    au.add_argument("--device", default="cpu", help="device of the feature network, e.g. cpu, cuda:0")
    au.add_argument("--fail-on-copies", action="store_true", help="exit status 1 when a near-copy is flagged")
    au.set_defaults(func=_cmd_audit_synthetic)

    co = sub.add_parser("compare", help="paired comparison of two runs on the same test cases (DeLong, McNemar)")
    co.add_argument("run_a", help="run A: predictions.csv, an eval folder, or a run folder (eval/, runs/eval/...)")
    co.add_argument("run_b", help="run B, likewise")
    co.add_argument("--n-boot", type=int, default=2000, help="paired bootstrap resamples")
    co.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    co.add_argument("--out", default=None, help="write the full result as JSON to this file")
    co.set_defaults(func=_cmd_compare)

    def dicomweb_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--dicomweb-user", default=None,
            help="DICOMweb basic authentication user (password in $MEDMONAI_DICOMWEB_PASSWORD; without a user, a "
            "bearer token in $MEDMONAI_DICOMWEB_TOKEN is sent when set)",
        )  # fmt: skip
        sp.add_argument("--ca-bundle", default=None, help="DICOMweb over https: CA certificate file")

    def clinical_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("bundle", help="bundle folder, e.g. bundles/classification")
        sp.add_argument("--out", required=True, help="output folder")
        sp.add_argument(
            "--bundle-root", default=None,
            help="the bundle_root the bundle was trained with (default: the bundle's, $MEDMONAI_HOME/<bundle>_<dims>d)",
        )  # fmt: skip
        sp.add_argument(
            "--model", default=None,
            help="weights: a checkpoint .pt (default runs/checkpoints/model.pt) or TorchScript .ts (e.g. the "
            "fold ensemble runs/cv/ensemble/model.ts)",
        )  # fmt: skip
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="bundle override used in training")
        sp.add_argument("--device", default=None, help="e.g. cpu, cuda:0 (default: the bundle's)")
        sp.add_argument(
            "--threshold", type=float, default=None,
            help="binary decision threshold (default: chosen on validation / out-of-fold data, else 0.5)",
        )  # fmt: skip
        sp.add_argument("--series", default="all", choices=("all", "largest"), help="series rule (docs/deploy.md)")
        sp.add_argument("--series-uid", action="append", default=None, help="process this series (repeatable)")
        sp.add_argument("--modality", default=None, help="allowed modalities, e.g. CT,MR")
        sp.add_argument("--min-slices", type=int, default=2, help="3D bundles: fewest slices of a series")
        sp.add_argument("--no-nifti", action="store_true", help="segmentation: no NIfTI copy of the mask")
        sp.add_argument(
            "--allow-out-of-distribution", action="store_true",
            help="process series outside the model's training domain (refused by default), marked out of "
            "distribution in the SR and the result tables",
        )  # fmt: skip
        sp.add_argument("--calling-aet", default="MEDMONAI", help="our AE title towards the PACS")
        sp.add_argument(
            "--runtime", default="torch", choices=("torch", "onnx"),
            help="forward pass in PyTorch or in ONNX Runtime (CPU; the onnx extra) (default: %(default)s)",
        )  # fmt: skip
        sp.add_argument(
            "--onnx-model", default=None,
            help="--runtime onnx: the model exported by `medmonai export` (default: exported on the fly into a "
            "temporary folder, checked against the checkpoint)",
        )  # fmt: skip
        dicomweb_args(sp)

    inf = sub.add_parser("infer", help="run a trained bundle on a DICOM study folder: DICOM SR / SEG + results.json")
    clinical_args(inf)
    inf.add_argument("input", help="DICOM study folder (searched recursively)")
    inf.add_argument(
        "--send-to", default=None, metavar="AET@HOST:PORT|URL",
        help="store the SR/SEG results there: C-STORE to a DICOM node, STOW-RS to a DICOMweb URL",
    )  # fmt: skip
    inf.set_defaults(func=_cmd_infer)

    wa = sub.add_parser("watch", help="process each new study of a folder or a PACS once (state file)")
    clinical_args(wa)
    src = wa.add_mutually_exclusive_group(required=True)
    src.add_argument("--folder", default=None, help="inbox folder: one study per sub-folder")
    src.add_argument("--pacs", default=None, metavar="AET@HOST:PORT", help="PACS to poll (C-FIND, C-GET/C-MOVE)")
    src.add_argument(
        "--dicomweb", default=None, metavar="URL",
        help="DICOMweb service to poll (QIDO-RS, WADO-RS; results stored with STOW-RS), e.g. "
        "http://127.0.0.1:8042/dicom-web",
    )  # fmt: skip
    wa.add_argument(
        "--move-port", type=int, default=None, help="PACS: retrieve by C-MOVE to our storage SCP on this port"
    )
    wa.add_argument("--state", default=None, help="state file (default OUT/watch_state.json)")
    wa.add_argument("--interval", type=float, default=30.0, help="seconds between polls")
    wa.add_argument("--once", action="store_true", help="one poll, then exit")
    wa.add_argument("--min-age", type=float, default=30.0, help="folder: quiet seconds before a study counts")
    wa.add_argument("--stable-polls", type=int, default=1, help="PACS: polls with an unchanged instance count")
    wa.add_argument("--query", action="append", metavar="KEY=VALUE", help="PACS: C-FIND matching key (repeatable)")
    wa.add_argument("--no-store", action="store_true", help="PACS: do not store the results back")
    wa.add_argument("--retry-failed", action="store_true", help="process failed studies again")
    wa.set_defaults(func=_cmd_watch)

    pa = sub.add_parser(
        "pacs", help="DICOM network: echo, store, find, get, move (DIMSE with pynetdicom, or DICOMweb for a URL)"
    )
    pa.add_argument("action", choices=("echo", "store", "find", "get", "move"), help="the DICOM service to use")
    pa.add_argument(
        "node", metavar="AET@HOST:PORT|URL",
        help="the PACS, e.g. ORTHANC@127.0.0.1:4242 (DIMSE), or a DICOMweb URL, e.g. http://127.0.0.1:8042/dicom-web "
        "(QIDO-RS find, WADO-RS get, STOW-RS store)",
    )  # fmt: skip
    pa.add_argument("paths", nargs="*", help="store: files or folders")
    pa.add_argument("--study-uid", default=None, help="find: list this study's series; get/move: the study")
    pa.add_argument("--series-uid", action="append", default=None, help="get/move: only these series")
    pa.add_argument("--out", default="retrieved", help="get/move: output folder")
    pa.add_argument("--calling-aet", default="MEDMONAI", help="our AE title")
    dicomweb_args(pa)
    pa.add_argument(
        "--move-port", type=int, default=None, help="move: our storage SCP's port, as registered at the PACS"
    )
    pa.set_defaults(func=_cmd_pacs)

    ex = sub.add_parser(
        "export", help="export a trained bundle's network to ONNX (or TorchScript), checked against the checkpoint"
    )
    ex.add_argument("bundle", help="bundle folder, e.g. bundles/classification")
    ex.add_argument(
        "--bundle-root", default=None,
        help="the bundle_root the bundle was trained with (default: the bundle's, $MEDMONAI_HOME/<bundle>_<dims>d)",
    )  # fmt: skip
    ex.add_argument("--out", required=True, help="output file, e.g. model.onnx (report beside it: OUT.json)")
    ex.add_argument("--format", default="onnx", choices=("onnx", "torchscript"), help="default: %(default)s")
    ex.add_argument("--model", default=None, help="checkpoint .pt (default: runs/checkpoints/model.pt)")
    ex.add_argument("--set", action="append", metavar="KEY=VALUE", help="bundle override used in training")
    ex.add_argument("--n-samples", type=int, default=3, help="validation inputs of the check (default: %(default)s)")
    ex.add_argument("--opset", type=int, default=18, help="ONNX opset (default: %(default)s)")
    ex.add_argument("--atol", type=float, default=1e-4, help="check: absolute tolerance (default: %(default)s)")
    ex.add_argument("--rtol", type=float, default=1e-3, help="check: relative tolerance (default: %(default)s)")
    ex.set_defaults(func=_cmd_export)
    _set_formatter(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medmonai`` console script.

    Library errors about bad input (files, datalists, DICOM series) are printed as one clear message and exit
    with status 2 instead of a traceback, and so is a missing optional extra (the message names the ``pip install``);
    ``-v`` shows the traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        _default_bundle_root(args)
        return int(args.func(args) or 0)
    except (DatalistError, ValueError, FileNotFoundError, RuntimeError, ImportError) as e:  # ImportError: an extra
        if args.verbose:
            raise
        print(f"medmonai {args.command}: error: {_root_cause(e)}", file=sys.stderr)
        return 2


def _root_cause(e: BaseException) -> BaseException:
    """The innermost medmonai error of a chain, else its innermost exception.

    MONAI's config parser and ``LoadImage`` wrap our errors in ``RuntimeError``; our errors (which name the file and
    the problem) may in turn chain the library error they explain (a ``JSONDecodeError``, SimpleITK's message), which
    must not replace them.
    """
    chain = [e]
    while chain[-1].__cause__ is not None and all(chain[-1].__cause__ is not c for c in chain):
        chain.append(chain[-1].__cause__)
    ours = [c for c in chain if type(c).__module__.split(".")[0] == "medmonai"]
    return ours[-1] if ours else chain[-1]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
