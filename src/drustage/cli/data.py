"""Data commands: phantoms, contact sheets, file metadata, importing a labelled folder, crops."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drustage.cli.common import EXIT_ERROR, real_images


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


def _cmd_sheet(args: argparse.Namespace) -> int:
    from drustage.data.layout import read_dataset
    from drustage.viz import side_by_side_sheet, stage_contact_sheet

    dataset = read_dataset(args.dataset)
    out = Path(args.out)
    if args.real:
        phantoms = [dataset.path_of(r) for r in dataset.records[: args.count]]
        real = real_images(Path(args.real))
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


def _cmd_crop(args: argparse.Namespace) -> int:
    from drustage.data.layout import read_dataset
    from drustage.inference.crop_dataset import write_crops

    report = write_crops(read_dataset(args.dataset), args.out, detector=args.detector, threshold=args.threshold,
                         progress=not args.quiet)
    print(report)
    return 0


def add_commands(sub) -> None:
    """This group's subcommands on ``sub`` (the configs are plain dataclasses, no torch: their
    defaults are the options' defaults)."""
    from drustage.thresholds import DETECTION_THRESHOLD

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

    crop = sub.add_parser("crop", help="write classifier-ready 128x96 crops from detected or ground-truth boxes")
    crop.add_argument("dataset")
    crop.add_argument("--out", required=True, help="a new dataset directory: same images, boxes from the detector")
    crop.add_argument("--detector", help="detector checkpoint (default: the dataset's own boxes)")
    crop.add_argument("--threshold", type=float, default=DETECTION_THRESHOLD,
                      help="score below which a bone is not found (default %(default)s)")
    crop.add_argument("--quiet", action="store_true")
    crop.set_defaults(handler=_cmd_crop)
