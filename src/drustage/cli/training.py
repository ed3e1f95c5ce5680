"""Training and evaluation commands: classifiers, the detector, the paper's experiments, the demo."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from drustage.cli.common import (
    CommandError,
    add_device_argument,
    config_option,
    distributed_context,
    overrides,
    real_images,
    set_threads,
)

MIXED_PRECISION_HELP = ("train under autocast: on CUDA, and in bfloat16 on CPUs that compute it natively "
                        "(AVX-512 BF16, AMX); --no-mixed-precision trains in float32")


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
    return ClassifierConfig(**overrides(args, ClassifierConfig, skip=("per_class_cap",)), per_class_cap=caps)


def _aged_crops(dataset, config, args):
    """Aged crops of a dataset whose records carry an age and sex, split by the seeded
    sex-and-age stratification of ``data.aged_films`` (the test part is never trained on)."""
    from drustage.data.aged_films import AgedFilm, split_films
    from drustage.training.crop_sets import build_aged_crops

    films = [AgedFilm(r.image_id, dataset.path_of(r), r.sex, r.age_years) for r in dataset.records
             if r.age_years is not None]
    if not films:
        raise CommandError(f"{dataset.root}: no radiograph has an age_years value (needed by --aged)")
    return build_aged_crops(dataset, config, split_films(films, seed=config.seed), workers=args.workers,
                            progress=not args.quiet)


def _detector_config(args: argparse.Namespace):
    from drustage.models.config import DetectorConfig
    from drustage.training.config import DetectorTrainConfig

    return DetectorTrainConfig(model=DetectorConfig(**overrides(args, DetectorConfig)),
                               **overrides(args, DetectorTrainConfig, skip=("model",)))


def _detector_summary(metrics) -> str:
    parts = [f"n={metrics.n}"]
    for bone in ("radius", "ulna"):
        m = metrics.bone(bone)
        parts.append(f"{bone}: AP50 {m.ap_50:.3f}, AP {m.ap_50_95:.3f}, mean IoU {m.mean_iou:.3f}, "
                     f"found at IoU>=0.5 {m.detection_rate_iou50:.1%}, centred in the true box "
                     f"{m.centre_hit_rate:.1%}")
    return "; ".join(parts)


def _cmd_train_classifier(args: argparse.Namespace) -> int:
    from drustage.data.layout import read_dataset
    from drustage.training.classifier import train_classifier

    config = _classifier_config(args)
    config.validate()
    set_threads(args.threads)
    aged = None
    if args.aged:
        aged = _aged_crops(read_dataset(args.aged), config, args)
    with distributed_context(config.device) as distributed:
        result = train_classifier(read_dataset(args.dataset), config, args.out, workers=args.workers,
                                  progress=not args.quiet, aged=aged, distributed=distributed)
    if distributed.is_main:
        print(f"test {result.test.summary()}; wrote {args.out}/classifier.pt")
    return 0


def _cmd_evaluate_classifier(args: argparse.Namespace) -> int:
    from drustage.data.layout import read_dataset
    from drustage.training.classifier import evaluate_classifier

    metrics = evaluate_classifier(args.checkpoint, read_dataset(args.dataset), args.out,
                                  held_out_only=not args.all, workers=args.workers, progress=not args.quiet)
    print(f"{metrics.summary()}; wrote {args.out}")
    return 0


def _cmd_train_detector(args: argparse.Namespace) -> int:
    from drustage.data.layout import read_dataset
    from drustage.training.detector import train_detector

    config = _detector_config(args)
    config.validate()
    set_threads(args.threads)
    datasets = [read_dataset(path) for path in args.datasets]
    with distributed_context(config.device) as distributed:
        result = train_detector(datasets, config, args.out, workers=args.workers, progress=not args.quiet,
                                 distributed=distributed)
    if not distributed.is_main:
        return 0
    if len(result.by_dataset) > 1:
        for name, held_out in result.by_dataset.items():
            print(f"{name}: {_detector_summary(held_out)}")
    print(_detector_summary(result.test) + f"; wrote {args.out}/detector.pt")
    return 0


def _cmd_evaluate_detector(args: argparse.Namespace) -> int:
    from drustage.data.layout import read_dataset
    from drustage.evaluation.detection import evaluate_detector

    metrics = evaluate_detector(args.checkpoint, read_dataset(args.dataset), args.out, held_out_only=not args.all,
                                workers=args.workers, threshold=args.threshold, held_out_of=args.held_out_of)
    print(_detector_summary(metrics) + f"; wrote {args.out}")
    if args.real:
        from drustage.evaluation.detection import real_detection_sheet

        sheet = Path(args.out) / "real_detections.png"
        counts = real_detection_sheet(args.checkpoint, real_images(Path(args.real))[: args.real_count], sheet,
                                      args.threshold)
        print(f"real radiographs: both bones found on {counts['both_found']} of {counts['images']}; "
              f"check the boxes by eye in {sheet}")
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from drustage.demo import run_demo

    report = run_demo(args.out, quick=args.quick, real=Path(args.real) if args.real else None,
                      real_boxes=[Path(b) for b in args.real_boxes] if args.real_boxes else None,
                      workers=args.workers)
    print(f"demo report: {report}")
    return 0


def add_commands(sub) -> None:
    """This group's subcommands on ``sub`` (the configs are plain dataclasses, no torch: their
    defaults are the options' defaults)."""
    from drustage.models.config import BACKBONES
    from drustage.models.config import DetectorConfig
    from drustage.thresholds import DETECTION_THRESHOLD
    from drustage.training.config import OPTIMIZERS, ClassifierConfig
    from drustage.training.config import DetectorTrainConfig

    train = sub.add_parser("train-classifier", help="train a stage/phase classifier on DRU crops")
    train.add_argument("dataset", help="a drustage dataset with stages and boxes")
    train.add_argument("--out", required=True, help="run directory for checkpoint, metrics and plots")
    option = functools.partial(config_option, train, config_class=ClassifierConfig)
    option("--bone", choices=("radius", "ulna"))
    option("--scheme", help="stage, phase4 or phase3")
    option("--net", help="net1..net9, or custom with --conv and --fc")
    option("--conv", field="conv_spec", help="conv spec for --net custom, e.g. 32c3-64c3-64c3-128c3-128c3")
    option("--fc", field="fc_spec", help="fc spec for --net custom, e.g. 4096-1024")
    option("--dropout", type=float, help="dropout after each FC layer (0: none)")
    option("--standardize", action=argparse.BooleanOptionalAction,
           help="per-crop zero mean / unit variance at the network input (--no-standardize: raw crops)")
    option("--batch-norm", action=argparse.BooleanOptionalAction, help="a batch normalisation after each conv")
    option("--optimizer", choices=OPTIMIZERS)
    option("--lr", type=float)
    option("--lr-schedule", choices=("constant", "cosine"), help="cosine: annealed to zero over the run")
    option("--weight-decay", type=float)
    option("--batch-size", type=int)
    option("--epochs", type=int)
    option("--epoch-samples", type=int, help="labelled crops per epoch (unset: the balanced, augmented pool once)")
    option("--seed", type=int)
    option("--balance", action=argparse.BooleanOptionalAction, help="oversample minority classes to the majority count")
    option("--augment", type=int, help="epoch-size factor of shifted/scaled copies (1: none)")
    option("--max-rotation", type=float, help="augmentation: largest turn of a crop, degrees")
    option("--max-gamma", type=float, help="augmentation: exposure curves from gamma 1/G to G (1: none)")
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
    option("--aged-mixup", type=float,
           help="mixup of the --aged films within sex: crops, targets and ages blended in Beta(A, A) shares (0: off)")
    option("--off-bone-share", type=float,
           help="share of each --aged batch cut off the bones, read as no stage (fits a readability threshold)")
    option("--off-bone-other-bone", action=argparse.BooleanOptionalAction,
           help="each --aged film's other bone joins its off-bone crops (a box on the wrong bone)")
    option("--off-bone-strays", action=argparse.BooleanOptionalAction,
           help="the detector's stray candidates on each --aged film (its manifest's stray_boxes) join its "
                "off-bone crops")
    option("--calibrate", action=argparse.BooleanOptionalAction,
           help="fit a temperature on the validation crops after model selection")
    option("--mixed-precision", action=argparse.BooleanOptionalAction, help=MIXED_PRECISION_HELP)
    train.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_device_argument(train)
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
    model_option = functools.partial(config_option, detector, config_class=DetectorConfig)
    option = functools.partial(config_option, detector, config_class=DetectorTrainConfig)
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
    model_option("--roi-align-samples", type=int,
                 help="RoIAlign sample points per bin side (0: adaptive to the box)")
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
    option("--mixed-precision", action=argparse.BooleanOptionalAction, help=MIXED_PRECISION_HELP)
    detector.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_device_argument(detector)
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

    demo = sub.add_parser("demo", help="the whole method on phantoms: train, evaluate, predict, HTML report")
    demo.add_argument("--out", default="runs/demo", help="output directory (re-running reuses finished steps)")
    demo.add_argument("--quick", action="store_true", help="a small, fast run (about 2 minutes)")
    demo.add_argument("--real", help="folder of real radiographs to predict on (default: ../shared/data/real)")
    demo.add_argument("--real-boxes", nargs="+",
                      help="radius/ulna box files on those films for the detector to learn from, each a dataset of "
                           "its own (default: the box files of annotations/real in a source checkout)")
    demo.add_argument("--workers", type=int, help="processes for phantoms and image loading")
    demo.set_defaults(handler=_cmd_demo)
