"""Reading commands: bundles, ONNX export, predictions and their check on real films."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drustage.cli.common import CommandError, EXIT_ERROR, add_device_argument
from drustage.io_utils import printable


def _patients(args: argparse.Namespace, paths: list[Path]) -> dict | None:
    """Each input's sex and age for the plausibility checks: one --sex/--age for every input, or
    a sheet's rows (file, age, sex), the sheet winning where it names the file."""
    from drustage.growth import PatientInfo

    patients = {}
    if args.sex is not None or args.age is not None:
        common = PatientInfo(args.sex, args.age)
        patients = {path.name: common for path in paths}
    if args.patients:
        from drustage.data.aged_films import read_age_sheet

        films, problems = read_age_sheet(args.patients)
        for problem in problems:
            print(f"drustage: warning: {problem}", file=sys.stderr)
        patients.update({film.path.name: PatientInfo(film.sex, film.age_years) for film in films})
    return patients or None


def _cmd_bundle(args: argparse.Namespace) -> int:
    from drustage.inference.bundle import assemble_bundle, load_bundle

    out = assemble_bundle(args.out, args.detector, args.radius, args.ulna, archive=args.archive)
    bundle = load_bundle(out)
    print(f"wrote bundle {out} (fingerprint {bundle.fingerprint[:12]})" + (f" and {out.with_suffix('.zip')}"
                                                                           if args.archive else ""))
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from drustage.inference.bundle import load_bundle
    from drustage.inference.onnx import export_onnx

    out = export_onnx(load_bundle(args.bundle), args.out)
    print(f"wrote ONNX models to {out} (use --runtime onnx with predict or serve)")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from drustage.inference.bundle import load_bundle
    from drustage.batch import expand_inputs, predict_files
    from drustage.pipeline import Predictor

    predictor = Predictor(load_bundle(args.model), detection_threshold=args.threshold,
                          min_confidence=args.min_confidence, runtime=args.runtime,
                          review_detection_score=args.review_detection_score, device=args.device)
    paths, input_problems = expand_inputs(args.paths)
    for problem in input_problems:
        print(f"drustage: error: {printable(problem)}", file=sys.stderr)
    if not paths:
        raise CommandError(f"no radiographs found in {printable(' '.join(args.paths))}")
    boxes = None
    if args.boxes:
        from drustage.data.annotations import read_boxes

        boxes = read_boxes(args.boxes)
    patients = _patients(args, paths)
    if args.engine == "ray":
        if boxes is not None or patients is not None:
            raise CommandError("--engine ray reads with the detector and the DICOM headers' ages only: "
                               "drop --boxes, --sex/--age and --patients, or use --engine local")
        import importlib.util

        from drustage.batch import OutputOptions
        from drustage.scale import RayConfig, predict_with_ray

        if importlib.util.find_spec("ray") is None:
            raise CommandError("--engine ray needs Ray: pip install 'drustage[ray]'")

        options = OutputOptions(args.gradcam, Path(args.dicom_out) if args.dicom_out else None,
                                Path(args.fhir_out) if args.fhir_out else None)
        reports, failures = predict_with_ray(predictor, paths, args.out,
                                             RayConfig(actors=args.workers, address=args.ray_address), options,
                                             progress=not args.quiet)
    else:
        reports, failures = predict_files(predictor, paths, args.out, gradcam=args.gradcam, progress=not args.quiet,
                                          boxes=boxes, workers=args.workers, patients=patients,
                                          dicom_out=args.dicom_out, fhir_out=args.fhir_out)
    for report in reports:
        r, u = report["radius"], report["ulna"]
        flag = "  REVIEW: " + "; ".join(report["review_reasons"]) if report["needs_review"] else ""
        rule = (report["guidance"] or {}).get("rule", "no guidance")
        print(f"{printable(report['source'])}: radius {r['prediction']} ({r['phase']}), ulna {u['prediction']} "
              f"({u['phase']}) -> {rule}{flag}")
    print(f"wrote {len(reports)} result(s) and summary.csv to {args.out}")
    for failure in failures:
        print(f"drustage: error: {printable(failure)}", file=sys.stderr)
    failed = len(input_problems) + len(failures)
    if failed:
        print(f"drustage: {failed} of {len(paths) + len(input_problems)} input(s) failed", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    import json

    from drustage.data.aged_films import read_age_sheet
    from drustage.evaluation.maturity import readings_from_reports, write_validation

    films, problems = read_age_sheet(args.sheet, args.images_root)
    if not films:
        raise CommandError(f"{args.sheet}: no usable rows" + (f" ({problems[0]})" if problems else ""))
    if args.predictions:
        folder = Path(args.predictions)
        reports = []
        for path in sorted(folder.glob("*.json")):
            try:
                report = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                problems.append(f"{path}: not a prediction report ({error})")
                continue
            if isinstance(report, dict) and "radius" in report and "source" in report:
                reports.append(report)
        if not reports:
            raise CommandError(f"{folder}: no prediction reports (*.json written by drustage predict)")
    else:
        from drustage.growth import PatientInfo
        from drustage.inference.bundle import load_bundle
        from drustage.batch import predict_files
        from drustage.pipeline import Predictor

        predictor = Predictor(load_bundle(args.model), runtime=args.runtime, device=args.device)
        readable = [f for f in films if f.path.is_file()]
        problems += [f"{f.path}: image not found" for f in films if not f.path.is_file()]
        reports, failures = predict_files(predictor, [f.path for f in readable], Path(args.out) / "predictions",
                                          progress=not args.quiet, workers=args.workers,
                                          patients={f.path.name: PatientInfo(f.sex, f.age_years) for f in readable})
        problems += failures
    readings, unmatched = readings_from_reports(reports, films)
    metrics = write_validation(readings, problems + unmatched, args.out, title=Path(args.sheet).name)
    for bone, by_sex in metrics.bones.items():
        for sex, m in by_sex.items():
            spearman, confident = ("n/a" if v is None else f"{v:.3f}" for v in (m.spearman, m.spearman_confident_boxes))
            print(f"{bone} {sex}: n={m.n} spearman {spearman} ({confident} on the {m.confident_boxes} boxes needing "
                  f"no review), implausible {m.implausible} ({m.implausible_unflagged} not flagged)")
    print(f"implausible readings without a review flag: {metrics.implausible_unflagged_films} of "
          f"{metrics.films} films; wrote {args.out}/report.html")
    return 0


def add_commands(sub) -> None:
    """This group's subcommands on ``sub`` (the configs are plain dataclasses, no torch: their
    defaults are the options' defaults)."""
    from drustage.thresholds import DETECTION_THRESHOLD
    from drustage.thresholds import MIN_CONFIDENCE
    from drustage.thresholds import REVIEW_DETECTION_SCORE

    bundle = sub.add_parser("bundle", help="assemble a model bundle from trained checkpoints")
    bundle.add_argument("--detector", required=True)
    bundle.add_argument("--radius", required=True, help="radius classifier checkpoint")
    bundle.add_argument("--ulna", required=True, help="ulna classifier checkpoint")
    bundle.add_argument("--out", required=True, help="bundle directory")
    bundle.add_argument("--archive", action="store_true", help="also write BUNDLE.zip")
    bundle.set_defaults(handler=_cmd_bundle)

    export = sub.add_parser("export-onnx", help="export a bundle's detector and classifiers to ONNX")
    export.add_argument("bundle", help="bundle directory or .zip")
    export.add_argument("--out", help="folder for the .onnx files (default BUNDLE/onnx, or BUNDLE.onnx beside a .zip)")
    export.set_defaults(handler=_cmd_export_onnx)

    predict = sub.add_parser("predict", help="stage, phase and guidance for radiographs (files or folders)")
    predict.add_argument("paths", nargs="+")
    predict.add_argument("--model", required=True, help="bundle directory or .zip")
    predict.add_argument("--out", required=True, help="directory for JSON, overlays and summary.csv")
    predict.add_argument("--gradcam", action="store_true", help="Grad-CAM heatmaps on the crops in the overlay")
    predict.add_argument("--threshold", type=float, default=DETECTION_THRESHOLD,
                         help="detection score below which a bone is missing (default %(default)s)")
    predict.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE,
                         help="below this, flag for review (default %(default)s)")
    predict.add_argument("--review-detection-score", type=float,
                         help=f"flag found boxes scoring below this for review (default {REVIEW_DETECTION_SCORE})")
    predict.add_argument("--boxes", help="use these boxes instead of the detector (COCO .json, VOC .xml/folder, .csv)")
    predict.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                         help="run the networks with PyTorch, or ONNX Runtime (after drustage export-onnx)")
    predict.add_argument("--workers", type=int, default=1, help="processes, each with a share of the CPU threads")
    add_device_argument(predict)
    predict.add_argument("--sex", help="the patient's sex (F or M), for the plausibility checks of every input")
    predict.add_argument("--age", type=float, help="the patient's age in years (bone or chronological age)")
    predict.add_argument("--patients", help="sheet with file, age (age_years or age_months) and sex per input")
    predict.add_argument("--dicom-out", metavar="DIR",
                         help="for DICOM inputs: an SR and a Secondary Capture of the overlay, in the source's study")
    predict.add_argument("--fhir-out", metavar="DIR", help="FHIR R4 Observations (one per bone) per input")
    predict.add_argument("--engine", choices=("local", "ray"), default="local",
                         help="ray: Ray Data with --workers model actors (pip install 'drustage[ray]'); resumes")
    predict.add_argument("--ray-address", help="a Ray cluster to join (default: start a local Ray)")
    predict.add_argument("--quiet", action="store_true")
    predict.set_defaults(handler=_cmd_predict)

    validate = sub.add_parser("validate", help="check a bundle's readings on real films against known ages")
    validate.add_argument("--sheet", required=True,
                          help="films with file, age (age_years, age_months or boneage_months) and sex")
    validate.add_argument("--images-root", help="folder the sheet's files are relative to (default: its own)")
    source = validate.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", help="folder of drustage predict results (*.json)")
    source.add_argument("--model", help="bundle to run on the sheet's films")
    validate.add_argument("--out", required=True, help="folder for report.html, report.md, validation.json")
    validate.add_argument("--runtime", choices=("torch", "onnx"), default="torch")
    add_device_argument(validate)
    validate.add_argument("--workers", type=int, default=1)
    validate.add_argument("--quiet", action="store_true")
    validate.set_defaults(handler=_cmd_validate)
