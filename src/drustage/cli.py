"""The ``drustage`` command: thin subcommands over the library.

Heavy modules (numpy, torch, pandas) are imported inside the handlers so ``drustage --help``
starts instantly.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import sys
from pathlib import Path

from drustage.io_utils import printable

EXIT_ERROR = 1


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def _cmd_synth(args: argparse.Namespace) -> int:
    import time

    from drustage.data.layout import read_dataset
    from drustage.synth.writer import generate_dataset, get_preset, stage_counts, with_overrides
    from drustage.viz import stage_contact_sheet

    config = with_overrides(get_preset(args.preset), count=args.count, seed=args.seed,
                            image_scale=args.scale, image_format=args.format, tilt_deg=args.tilt)
    start = time.perf_counter()
    records = generate_dataset(args.out, config, workers=args.workers, progress=not args.quiet, preset=args.preset)
    elapsed = time.perf_counter() - start
    print(f"wrote {len(records)} phantoms to {args.out} in {elapsed:.1f} s")
    print("stage counts: " + ", ".join(f"{k} {v}" for k, v in stage_counts(records).items()))
    if not args.no_sheet:
        sheet = stage_contact_sheet(read_dataset(args.out), Path(args.out) / "stage_sheet.png")
        print(f"stage contact sheet: {sheet}")
    return 0


def _real_images(folder: Path) -> list[Path]:
    from drustage.data.labels import list_images

    return list_images(folder)


def _cmd_sheet(args: argparse.Namespace) -> int:
    from drustage.data.layout import read_dataset
    from drustage.viz import side_by_side_sheet, stage_contact_sheet

    dataset = read_dataset(args.dataset)
    out = Path(args.out)
    if args.real:
        phantoms = [dataset.path_of(r) for r in dataset.records[: args.count]]
        real = _real_images(Path(args.real))
        step = max(1, len(real) // args.count)
        path = side_by_side_sheet(phantoms, real[::step][: args.count], out)
    else:
        path = stage_contact_sheet(dataset, out)
    print(f"wrote {path}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from drustage.imaging import load_radiograph

    status = 0
    for path in args.paths:
        try:
            radiograph = load_radiograph(path)
        except ValueError as error:
            print(f"drustage: error: {error}", file=sys.stderr)
            status = EXIT_ERROR
            continue
        image = radiograph.image
        info = radiograph.meta.to_dict() | {"min": float(image.min()), "max": float(image.max()),
                                             "mean": round(float(image.mean()), 4)}
        print(json.dumps(info, allow_nan=False))
    return status


def _cmd_import(args: argparse.Namespace) -> int:
    from drustage.data.importer import import_dataset

    report = import_dataset(
        images=Path(args.images), out=Path(args.out), labels=Path(args.labels) if args.labels else None,
        key=[k.strip() for k in args.key.split(",")] if args.key else None,
        radius_column=args.radius_column, ulna_column=args.ulna_column,
        boxes=Path(args.boxes) if args.boxes else None, link=args.link,
    )
    print(report.summary())
    return EXIT_ERROR if report.failed else 0


def _field_default(config_class, name: str):
    field = next(f for f in dataclasses.fields(config_class) if f.name == name)
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def _config_option(parser: argparse.ArgumentParser, flag: str, config_class, help: str = "",
                   field: str | None = None, **kwargs) -> None:
    """An option for a field of ``config_class``, left unset unless given: the dataclass keeps the
    one default, and the help shows it."""
    name = field or flag.lstrip("-").replace("-", "_")
    default = _field_default(config_class, name)
    shown = "" if default is None else f"(default {default})"
    parser.add_argument(flag, dest=name, default=None, help=" ".join(part for part in (help, shown) if part),
                        **kwargs)


def _overrides(args: argparse.Namespace, config_class, skip: tuple[str, ...] = ()) -> dict:
    """The fields of ``config_class`` given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)
            if f.name not in skip and getattr(args, f.name, None) is not None}


def _classifier_config(args: argparse.Namespace):
    from drustage.training.config import ClassifierConfig

    caps = None
    if args.per_class_cap:
        caps = {}
        for item in args.per_class_cap.split(","):
            name, _, count = item.partition("=")
            if not count.isdigit():
                raise CommandError(f"--per-class-cap: expected class=count, got {item!r}")
            caps[name.strip()] = int(count)
    return ClassifierConfig(**_overrides(args, ClassifierConfig, skip=("per_class_cap",)), per_class_cap=caps)


def _set_threads(threads: int | None) -> None:
    """torch's CPU threads for this process: a choice of the command, never of the library."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _cmd_train_classifier(args: argparse.Namespace) -> int:
    from drustage.data.layout import read_dataset
    from drustage.training.classifier import train_classifier

    config = _classifier_config(args)
    config.validate()
    _set_threads(args.threads)
    aged = None
    if args.aged:
        aged = _aged_crops(read_dataset(args.aged), config, args)
    with _distributed(config.device) as distributed:
        result = train_classifier(read_dataset(args.dataset), config, args.out, workers=args.workers,
                                  progress=not args.quiet, aged=aged, distributed=distributed)
    if distributed.is_main:
        print(f"test {result.test.summary()}; wrote {args.out}/classifier.pt")
    return 0


@contextlib.contextmanager
def _distributed(device: str):
    """Under ``torchrun``: this process's place in the process group, closed at the end."""
    from drustage.training.distributed import from_environment

    context = from_environment(device)
    try:
        yield context
    finally:
        if context.enabled:
            import torch.distributed

            torch.distributed.destroy_process_group()


def _aged_crops(dataset, config, args):
    """Aged crops of a dataset whose records carry an age and sex, split by the seeded
    sex-and-age stratification of ``data.aged_films`` (the test part is never trained on)."""
    from drustage.data.aged_films import AgedFilm, split_films
    from drustage.training.classifier import build_aged_crops

    films = [AgedFilm(r.image_id, dataset.path_of(r), r.sex, r.age_years) for r in dataset.records
             if r.age_years is not None]
    if not films:
        raise CommandError(f"{dataset.root}: no radiograph has an age_years value (needed by --aged)")
    return build_aged_crops(dataset, config, split_films(films, seed=config.seed), workers=args.workers,
                            progress=not args.quiet)


def _cmd_evaluate_classifier(args: argparse.Namespace) -> int:
    from drustage.data.layout import read_dataset
    from drustage.training.classifier import evaluate_classifier

    metrics = evaluate_classifier(args.checkpoint, read_dataset(args.dataset), args.out,
                                  held_out_only=not args.all, workers=args.workers, progress=not args.quiet)
    print(f"{metrics.summary()}; wrote {args.out}")
    return 0


def _detector_config(args: argparse.Namespace):
    from drustage.models.config import DetectorConfig
    from drustage.training.config import DetectorTrainConfig

    return DetectorTrainConfig(model=DetectorConfig(**_overrides(args, DetectorConfig)),
                               **_overrides(args, DetectorTrainConfig, skip=("model",)))


def _cmd_train_detector(args: argparse.Namespace) -> int:
    from drustage.data.layout import read_dataset
    from drustage.training.detector import train_detector

    config = _detector_config(args)
    config.validate()
    _set_threads(args.threads)
    datasets = [read_dataset(path) for path in args.datasets]
    with _distributed(config.device) as distributed:
        result = train_detector(datasets, config, args.out, workers=args.workers, progress=not args.quiet,
                                 distributed=distributed)
    if not distributed.is_main:
        return 0
    if len(result.by_dataset) > 1:
        for name, held_out in result.by_dataset.items():
            print(f"{name}: {_detector_summary(held_out)}")
    print(_detector_summary(result.test) + f"; wrote {args.out}/detector.pt")
    return 0


def _detector_summary(metrics) -> str:
    parts = [f"n={metrics.n}"]
    for bone in ("radius", "ulna"):
        m = metrics.bone(bone)
        parts.append(f"{bone}: AP50 {m.ap_50:.3f}, AP {m.ap_50_95:.3f}, mean IoU {m.mean_iou:.3f}, "
                     f"found at IoU>=0.5 {m.detection_rate_iou50:.1%}, centred in the true box "
                     f"{m.centre_hit_rate:.1%}")
    return "; ".join(parts)


def _cmd_evaluate_detector(args: argparse.Namespace) -> int:
    from drustage.data.layout import read_dataset
    from drustage.evaluation.detection import evaluate_detector

    metrics = evaluate_detector(args.checkpoint, read_dataset(args.dataset), args.out, held_out_only=not args.all,
                                workers=args.workers, threshold=args.threshold, held_out_of=args.held_out_of)
    print(_detector_summary(metrics) + f"; wrote {args.out}")
    if args.real:
        from drustage.evaluation.detection import real_detection_sheet

        sheet = Path(args.out) / "real_detections.png"
        counts = real_detection_sheet(args.checkpoint, _real_images(Path(args.real))[: args.real_count], sheet,
                                      args.threshold)
        print(f"real radiographs: both bones found on {counts['both_found']} of {counts['images']}; "
              f"check the boxes by eye in {sheet}")
    return 0


def _cmd_crop(args: argparse.Namespace) -> int:
    from drustage.data.layout import read_dataset
    from drustage.inference.crop_dataset import write_crops

    report = write_crops(read_dataset(args.dataset), args.out, detector=args.detector, threshold=args.threshold,
                         progress=not args.quiet)
    print(report)
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    from drustage.inference.bundle import assemble_bundle, load_bundle

    out = assemble_bundle(args.out, args.detector, args.radius, args.ulna, archive=args.archive)
    bundle = load_bundle(out)
    print(f"wrote bundle {out} (fingerprint {bundle.fingerprint[:12]})" + (f" and {out.with_suffix('.zip')}"
                                                                           if args.archive else ""))
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
    for bone, by_sex in metrics["bones"].items():
        for sex, m in by_sex.items():
            spearman = "n/a" if m["spearman"] is None else f"{m['spearman']:.3f}"
            print(f"{bone} {sex}: n={m['n']} spearman {spearman}, implausible {m['implausible']} "
                  f"({m['implausible_unflagged']} not flagged)")
    print(f"implausible readings without a review flag: {metrics['implausible_unflagged_films']} of "
          f"{metrics['films']} films; wrote {args.out}/report.html")
    return 0


def _cmd_experiments(args: argparse.Namespace) -> int:
    from drustage.experiments import BUDGETS, EXPERIMENTS, run_experiments

    data = Path(args.data)
    if not (data / "labels.csv").is_file():
        if data.exists() and any(data.iterdir()):
            raise CommandError(f"{data}: not a drustage dataset (no labels.csv) and not empty")
        from drustage.synth.writer import generate_dataset, get_preset

        print(f"generating the phantom paper dataset in {data} (about 4 minutes on 2 cores)")
        generate_dataset(data, get_preset("paper"), workers=args.workers, progress=not args.quiet, preset="paper")
    budget = BUDGETS[args.budget]
    if args.seeds:
        from dataclasses import replace

        budget = replace(budget, seeds=args.seeds)
    report = run_experiments(data, args.out, budget, tuple(args.only or EXPERIMENTS), workers=args.workers,
                             progress=not args.quiet)
    print(f"experiments report: {report} (and report.html, results.csv)")
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from drustage.inference.bundle import load_bundle
    from drustage.inference.onnx import export_onnx

    out = export_onnx(load_bundle(args.bundle), args.out)
    print(f"wrote ONNX models to {out} (use --runtime onnx with predict or serve)")
    return 0


def _default_state_dir() -> Path:
    import os

    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local/state") / "drustage"


def _cmd_serve(args: argparse.Namespace) -> int:
    import os
    import secrets

    import uvicorn

    from drustage.service.app import ServiceConfig, create_app
    from drustage.service.guard import LOOPBACK_NAMES, is_loopback

    token = os.environ.get("DRUSTAGE_TOKEN") or None
    hosts = (*LOOPBACK_NAMES, *(h.lower() for h in args.allow_host or ()))
    if not is_loopback(args.host):
        token = token or secrets.token_urlsafe(24)
        print(f"drustage: warning: listening on {args.host}, beyond this machine: every request needs the access "
              "token (set DRUSTAGE_TOKEN to choose it); put TLS in front of it (a reverse proxy) on a network",
              file=sys.stderr)
        if not args.allow_host:
            print("drustage: warning: no --allow-host given: only requests naming localhost are answered",
                  file=sys.stderr)
    config = ServiceConfig(model=Path(args.model), label_dir=Path(args.label_dir) if args.label_dir else None,
                           max_upload_bytes=args.max_upload_mb << 20, detection_threshold=args.threshold,
                           review_detection_score=args.review_detection_score, inference_slots=args.slots,
                           runtime=args.runtime, allowed_hosts=hosts, token=token, device=args.device,
                           state_dir=None if args.state_dir == "none" else Path(args.state_dir))
    app = create_app(config)
    query = f"?token={token}" if token else ""
    print(f"drustage: serving {args.model} on http://{args.host}:{args.port}/{query} (API docs at /docs)")
    # no access log: request paths carry result and image ids
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info", access_log=False)
    return 0


def _cmd_listen(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from drustage.inference.bundle import load_bundle
    from drustage.pacs.node import DicomNode, ListenConfig
    from drustage.pipeline import Predictor

    # a long-running node: every line with its time
    logging.basicConfig(level=logging.WARNING, force=True,
                        format="%(asctime)s drustage listen %(levelname)s %(message)s")
    config = ListenConfig(spool=Path(args.spool), destination=args.send_to, ae_title=args.ae_title, host=args.host,
                          port=args.port, max_attempts=args.max_attempts).checked()
    thresholds = {} if args.threshold is None else {"detection_threshold": args.threshold}
    node = DicomNode(config, Predictor(load_bundle(args.model), device=args.device, **thresholds))
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    node.start()
    print(f"drustage: listening as {config.ae_title} on {config.host}:{config.port}; results to {node.destination}",
          flush=True)
    stopped.wait()
    node.stop()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from drustage.demo import run_demo

    report = run_demo(args.out, quick=args.quick, real=Path(args.real) if args.real else None,
                      real_boxes=[Path(b) for b in args.real_boxes] if args.real_boxes else None,
                      workers=args.workers)
    print(f"demo report: {report}")
    return 0


def _add_device_argument(parser: argparse.ArgumentParser) -> None:
    from drustage.inference.device import DEFAULT_DEVICE, DEVICE_CHOICES

    parser.add_argument("--device", default=DEFAULT_DEVICE,
                        help=f"where the networks run: {DEVICE_CHOICES} (auto: CUDA when present; "
                             "mixed precision on CUDA)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drustage",
        description="Skeletal maturity from hand radiographs: Luk DRU stages of the distal radius and ulna.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # the configs are plain dataclasses (no torch): their defaults are the options' defaults
    from drustage.models.config import BACKBONES, DetectorConfig
    from drustage.thresholds import DETECTION_THRESHOLD, MIN_CONFIDENCE, REVIEW_DETECTION_SCORE
    from drustage.training.config import ClassifierConfig, DetectorTrainConfig

    synth = sub.add_parser("synth", help="generate a phantom radiograph dataset and its stage contact sheet")
    synth.add_argument("--preset", default="quick",
                       help="quick (tests, 12 half-size images), paper (1101), or detector (1200: ages 1-18.5 and "
                            "the wide film variety: small hands in film frames, wrist views, dark films)")
    synth.add_argument("--out", required=True, help="dataset directory to write")
    synth.add_argument("--count", type=int, help="override the number of radiographs")
    synth.add_argument("--seed", type=int, help="override the seed")
    synth.add_argument("--scale", type=float, help="image size factor (1.0: 900-1500 x 1000-1800 px)")
    synth.add_argument("--format", choices=("png", "dicom"), help="image format (default 16-bit PNG)")
    synth.add_argument("--tilt", type=float, help="standard deviation of the forearm's angle in degrees (default 6)")
    synth.add_argument("--workers", type=int, help="processes (default: all cores)")
    synth.add_argument("--no-sheet", action="store_true", help="skip the stage contact sheet")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(handler=_cmd_synth)

    sheet = sub.add_parser("sheet", help="contact sheet: stages of a dataset, or phantoms beside real radiographs")
    sheet.add_argument("dataset", help="a drustage dataset directory")
    sheet.add_argument("--real", help="folder of real radiographs to show beside the phantoms")
    sheet.add_argument("--count", type=int, default=12, help="radiographs per side (with --real)")
    sheet.add_argument("--out", required=True, help="PNG to write")
    sheet.set_defaults(handler=_cmd_sheet)

    info = sub.add_parser("info", help="load radiographs and print their (non-identifying) metadata as JSON")
    info.add_argument("paths", nargs="+")
    info.set_defaults(handler=_cmd_info)

    imp = sub.add_parser("import", help="build a drustage dataset from an image folder, a label sheet and boxes")
    imp.add_argument("images", help="folder of radiographs")
    imp.add_argument("--out", required=True, help="dataset directory to write")
    imp.add_argument("--labels", help="label sheet (.csv, .xlsx, .xls)")
    imp.add_argument("--key", help="comma-separated sheet column(s) that identify the image, e.g. date,serial")
    imp.add_argument("--radius-column", default="radius_stage", help="sheet column with radius stages")
    imp.add_argument("--ulna-column", default="ulna_stage", help="sheet column with ulna stages")
    imp.add_argument("--boxes", help="boxes: COCO .json, VOC .xml or folder, or .csv")
    imp.add_argument("--link", action="store_true", help="link to the images instead of copying them")
    imp.set_defaults(handler=_cmd_import)

    train = sub.add_parser("train-classifier", help="train a stage/phase classifier on DRU crops")
    train.add_argument("dataset", help="a drustage dataset with stages and boxes")
    train.add_argument("--out", required=True, help="run directory for checkpoint, metrics and plots")
    option = functools.partial(_config_option, train, config_class=ClassifierConfig)
    option("--bone", choices=("radius", "ulna"))
    option("--scheme", help="stage, phase4 or phase3")
    option("--net", help="net1..net9, or custom with --conv and --fc")
    option("--conv", field="conv_spec", help="conv spec for --net custom, e.g. 32c3-64c3-64c3-128c3-128c3")
    option("--fc", field="fc_spec", help="fc spec for --net custom, e.g. 4096-1024")
    option("--dropout", type=float, help="dropout after each FC layer (0: none)")
    option("--standardize", action=argparse.BooleanOptionalAction,
           help="per-crop zero mean / unit variance at the network input (--no-standardize: raw crops)")
    option("--optimizer", choices=("adam", "sgd"))
    option("--lr", type=float)
    option("--batch-size", type=int)
    option("--epochs", type=int)
    option("--epoch-samples", type=int, help="labelled crops per epoch (unset: the balanced, augmented pool once)")
    option("--seed", type=int)
    option("--balance", action=argparse.BooleanOptionalAction, help="oversample minority classes to the majority count")
    option("--augment", type=int, help="epoch-size factor of shifted/scaled copies (1: none)")
    option("--test-per-class", type=int, help="hold out this many per class (paper: 25 radius, 50 ulna)")
    option("--test-fraction", type=float, help="held-out fraction when no count is given")
    option("--val-fraction", type=float, help="validation fraction of the training part")
    option("--min-stage", help="leave out earlier stages, e.g. R5 (the paper's radius set)")
    train.add_argument("--per-class-cap", help="subsample classes, e.g. pre-peak=75,peak=75")
    train.add_argument("--aged", help="dataset of real films with age_years, sex and boxes but no stages: "
                                      "weak supervision from the growth table's stage distribution per age")
    option("--aged-weight", type=float, help="weight of the --aged films' loss")
    option("--aged-batch", type=int, help="--aged films beside each labelled batch")
    option("--aged-rank-weight", type=float,
           help="weight of a within-sex ranking loss on the --aged films' expected stage (older reads more mature)")
    option("--calibrate", action=argparse.BooleanOptionalAction,
           help="fit a temperature on the validation crops after model selection")
    train.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    _add_device_argument(train)
    train.add_argument("--workers", type=int, default=1, help="processes for crop extraction")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(handler=_cmd_train_classifier)

    evaluate = sub.add_parser("evaluate-classifier", help="metrics and confusion matrix of a classifier checkpoint")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("dataset")
    evaluate.add_argument("--out", required=True)
    evaluate.add_argument("--all", action="store_true", help="use every labelled crop, not only the held-out test")
    evaluate.add_argument("--workers", type=int, default=1)
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(handler=_cmd_evaluate_classifier)

    detector = sub.add_parser("train-detector", help="train the Faster R-CNN radius/ulna detector")
    detector.add_argument("datasets", nargs="+", metavar="dataset",
                          help="drustage dataset(s) with radius and ulna boxes, e.g. phantoms and boxed real films")
    detector.add_argument("--out", required=True, help="run directory")
    model_option = functools.partial(_config_option, detector, config_class=DetectorConfig)
    option = functools.partial(_config_option, detector, config_class=DetectorTrainConfig)
    model_option("--backbone", choices=BACKBONES, help="zfnet is the paper's")
    option("--schedule", choices=("joint", "alternating"),
           help="end-to-end, or the paper's 4-step RPN / Fast R-CNN alternation")
    option("--iterations", type=int)
    option("--batch-size", type=int)
    option("--lr", type=float, help="SGD learning rate")
    model_option("--min-size", type=int, help="shorter image side the detector sees")
    model_option("--max-size", type=int, help="longer image side the detector sees")
    model_option("--representation-size", type=int,
                 help="units of the two FC layers of the box head (the paper's 4096; 1024 trains ~2x faster)")
    model_option("--roi-pool", choices=("roipool", "roialign"),
                 help="zfnet box pooling: the paper's RoI max pooling, or RoIAlign")
    option("--weights", help="start from a local state dict or detector checkpoint (never downloaded)")
    option("--dataset-weights", type=float, nargs="+",
           help="share of training batches from each dataset (unset: every image equally often)")
    option("--val-fraction", type=float, nargs="+",
           help="validation fraction: one for all datasets, or one per dataset")
    option("--test-fraction", type=float, nargs="+",
           help="held-out test fraction: one for all datasets, or one per dataset")
    option("--validate-every", type=int)
    option("--augment", action=argparse.BooleanOptionalAction)
    option("--rotation", type=float, nargs="+",
           help="largest random turn in degrees: one for all datasets, or one per dataset")
    option("--min-scale", type=float, nargs="+",
           help="smallest random zoom (below 1 shrinks the film in its frame): one, or one per dataset")
    option("--seed", type=int)
    detector.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    _add_device_argument(detector)
    detector.add_argument("--workers", type=int, default=1, help="processes for image loading")
    detector.add_argument("--quiet", action="store_true")
    detector.set_defaults(handler=_cmd_train_detector)

    evaluate_det = sub.add_parser("evaluate-detector", help="AP, mean IoU, detection rate and a contact sheet")
    evaluate_det.add_argument("checkpoint")
    evaluate_det.add_argument("dataset")
    evaluate_det.add_argument("--out", required=True)
    evaluate_det.add_argument("--all", action="store_true", help="every boxed radiograph, not only the held-out test")
    evaluate_det.add_argument("--threshold", type=float, default=DETECTION_THRESHOLD,
                              help="score below which a bone is not found (default %(default)s)")
    evaluate_det.add_argument("--held-out-of", help="evaluate on the test images this other checkpoint held out "
                                                    "(e.g. the run a fine-tune started from, on its dataset)")
    evaluate_det.add_argument("--workers", type=int, default=1)
    evaluate_det.add_argument("--real", help="folder of unlabelled real radiographs for a detection contact sheet")
    evaluate_det.add_argument("--real-count", type=int, default=48, help="at most this many real radiographs")
    evaluate_det.set_defaults(handler=_cmd_evaluate_detector)

    crop = sub.add_parser("crop", help="write classifier-ready 128x96 crops from detected or ground-truth boxes")
    crop.add_argument("dataset")
    crop.add_argument("--out", required=True, help="a new dataset directory: same images, boxes from the detector")
    crop.add_argument("--detector", help="detector checkpoint (default: the dataset's own boxes)")
    crop.add_argument("--threshold", type=float, default=DETECTION_THRESHOLD,
                      help="score below which a bone is not found (default %(default)s)")
    crop.add_argument("--quiet", action="store_true")
    crop.set_defaults(handler=_cmd_crop)

    bundle = sub.add_parser("bundle", help="assemble a model bundle from trained checkpoints")
    bundle.add_argument("--detector", required=True)
    bundle.add_argument("--radius", required=True, help="radius classifier checkpoint")
    bundle.add_argument("--ulna", required=True, help="ulna classifier checkpoint")
    bundle.add_argument("--out", required=True, help="bundle directory")
    bundle.add_argument("--archive", action="store_true", help="also write BUNDLE.zip")
    bundle.set_defaults(handler=_cmd_bundle)

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
    _add_device_argument(predict)
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
    _add_device_argument(validate)
    validate.add_argument("--workers", type=int, default=1)
    validate.add_argument("--quiet", action="store_true")
    validate.set_defaults(handler=_cmd_validate)

    experiments = sub.add_parser("experiments", help="the paper's classifier experiments over seeds, with a report")
    experiments.add_argument("--data", default="data/paper", help="phantom paper dataset (generated when absent)")
    experiments.add_argument("--out", default="runs/experiments", help="results, report; re-running resumes")
    experiments.add_argument("--budget", choices=("smoke", "cpu", "full"), default="cpu",
                             help="cpu: under an hour on 2 cores; full: the paper's length, for a GPU")
    experiments.add_argument("--seeds", type=int, help="override the budget's number of seeds")
    experiments.add_argument("--only", nargs="+", choices=("balance", "augmentation", "networks", "optimizer",
                                                           "dropout", "input", "stage"), help="run a subset")
    experiments.add_argument("--workers", type=int, default=2, help="processes for phantoms and crops")
    experiments.add_argument("--quiet", action="store_true")
    experiments.set_defaults(handler=_cmd_experiments)

    export = sub.add_parser("export-onnx", help="export a bundle's detector and classifiers to ONNX")
    export.add_argument("bundle", help="bundle directory or .zip")
    export.add_argument("--out", help="folder for the .onnx files (default BUNDLE/onnx, or BUNDLE.onnx beside a .zip)")
    export.set_defaults(handler=_cmd_export_onnx)

    from drustage.pacs.node import ListenConfig

    listen = sub.add_parser("listen", help="DICOM node: read the radiographs a PACS sends, send SR and SC back")
    listen.add_argument("--model", required=True, help="bundle directory or .zip")
    listen.add_argument("--spool", required=True, help="folder for received images, results and the job queue")
    listen.add_argument("--send-to", required=True, metavar="AE@HOST:PORT|URL",
                        help="where SR and SC go: a DICOM node, or a DICOMweb base URL (STOW-RS)")
    listen.add_argument("--ae-title", default=ListenConfig.ae_title, help="this node's AE title")
    listen.add_argument("--host", default=ListenConfig.host, help="address to listen on")
    listen.add_argument("--port", type=int, default=ListenConfig.port)
    listen.add_argument("--max-attempts", type=int, default=ListenConfig.max_attempts,
                        help="sends tried per image before it ends as an error")
    listen.add_argument("--threshold", type=float, help="detection score below which a bone is missing "
                        "(default: the predictor's)")
    _add_device_argument(listen)
    listen.add_argument("--quiet", action="store_true", help="log warnings only")
    listen.set_defaults(handler=_cmd_listen)

    serve = sub.add_parser("serve", help="web page and REST API for predictions, and labelling of a folder")
    serve.add_argument("--model", required=True, help="bundle directory or .zip")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--allow-host", action="append", metavar="NAME",
                       help="a host name the page is reached by, beside localhost (repeat for more)")
    serve.add_argument("--label-dir", help="folder of radiographs (or a drustage dataset) to label in the page")
    serve.add_argument("--state-dir", default=str(_default_state_dir()),
                       help="past results (SQLite) and the audit log; 'none' keeps results in memory only "
                            "(default: %(default)s)")
    serve.add_argument("--max-upload-mb", type=int, default=64, help="largest upload accepted")
    serve.add_argument("--threshold", type=float, default=DETECTION_THRESHOLD,
                       help="detection score below which a bone is missing (default %(default)s)")
    serve.add_argument("--review-detection-score", type=float,
                       help=f"flag found boxes scoring below this for review (default {REVIEW_DETECTION_SCORE})")
    serve.add_argument("--slots", type=int, default=1, help="radiographs run through the models at once")
    serve.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                       help="torch, or onnx (after drustage export-onnx)")
    _add_device_argument(serve)
    serve.add_argument("--quiet", action="store_true", help="log warnings only")
    serve.set_defaults(handler=_cmd_serve)

    demo = sub.add_parser("demo", help="the whole method on phantoms: train, evaluate, predict, HTML report")
    demo.add_argument("--out", default="runs/demo", help="output directory (re-running reuses finished steps)")
    demo.add_argument("--quick", action="store_true", help="a small, fast run (about 2 minutes)")
    demo.add_argument("--real", help="folder of real radiographs to predict on (default: ../shared/data/real)")
    demo.add_argument("--real-boxes", nargs="+",
                      help="radius/ulna box files on those films for the detector to learn from, each a dataset of "
                           "its own (default: the box files of annotations/real in a source checkout)")
    demo.add_argument("--workers", type=int, help="processes for phantoms and image loading")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    parser = build_parser()
    args = parser.parse_args(argv)
    # drustage's own progress lines at INFO, skipped items as warnings (--quiet: warnings only);
    # other libraries' warnings only
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("drustage").setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    try:
        return args.handler(args)
    except (CommandError, ValueError, OSError, RuntimeError) as error:
        # Library errors carry the file and the problem in one line.
        print(f"drustage: error: {printable(' '.join(str(error).split()))}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:  # a bug: still one line, never a traceback at the user
        print(f"drustage: error: internal error ({type(error).__name__}: {printable(error)}); please report it",
              file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("drustage: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
