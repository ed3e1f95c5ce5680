"""``drustage demo``: phantoms -> detector and classifiers -> evaluation -> predictions -> HTML report.

When the shared real radiographs and the project's boxes on them (``annotations/real``) are both
at hand, the detector also learns from the boxed real films, holding 40% of them out for its
evaluation and for the real predictions shown. The shared films with a bone age are then boxed by
that detector, and the classifiers learn from their training part as weak supervision (the stage
distribution the growth table gives each age); the test part of ``annotations/real/
maturity_split.csv`` is read by the finished bundle and checked as ``drustage validate`` does.

Each step writes its outputs plus a ``.done.json`` holding the settings it ran with; a re-run
skips a step whose settings are unchanged, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from drustage.io_utils import atomic_write_text
from drustage.models.config import DetectorConfig
from drustage.synth.morphology import ULNA_MIN_ASPECT
from drustage.training.config import ClassifierConfig, DetectorTrainConfig

if TYPE_CHECKING:
    from drustage.evaluation.detection import DetectionMetrics
    from drustage.evaluation.maturity import MaturityValidation


@dataclass(frozen=True)
class DemoConfig:
    """The demo's phantoms and models, as overrides of the library's configs."""

    phantoms: int
    image_scale: float
    detector: DetectorTrainConfig  # on phantoms; boxed real films add their held-out shares and batch shares
    classifier: ClassifierConfig  # both bones (the bone is set per run)
    predict_phantoms: int
    predict_real: int
    aged_films: int | None = None  # films with a bone age to box (None: all; an even spread of them)
    real_batch_share: float = 1 / 3  # of the detector's batches, when boxed real films are at hand
    real_test_fraction: float = 0.4  # of each box file given with --real-boxes
    # largest turn (degrees) of boxed real films in the detector's augmentation (phantoms keep the
    # detector config's): one real film in twenty lies turned 17 degrees or more, the most 87
    real_rotation: float = 30.0
    seed: int = 0  # of the phantoms


# Fewer boxed real films than this cannot be split into training, validation and test usefully.
MIN_REAL_FILMS = 15


# The full demo takes about 17-19 minutes on 2 CPU cores with bfloat16 training (about 28 in float32,
# estimated; the detector more than half of it), which leaves the detector 1,600 iterations (ulna boxes
# fit better than after 1,200: held-out real mean IoU 0.79 -> 0.82, README); the detector's box
# head uses 1024 units instead of the paper's 4096 because it trains about twice as fast (bench/bench_detector.py),
# RoIAlign instead of RoI max pooling because its boxes are tighter (mean IoU 0.82 -> 0.88), with
# one sample point per bin instead of torchvision's 2 (training 9% and reading 21% faster), and
# twice the paper's learning rate because at 0.01 the ulna is still half-learnt after 1,200
# iterations from scratch (held-out real ulnae found: 60% at 0.01; 74-92% in three runs at 0.02).
# The classifiers are a network smaller than the paper's net7/net8 (4x the training speed on CPU,
# measured: 228 against 58 crops/s), trained 12 epochs of 1500 phantom crops, each batch of 16
# joined by 32 real films with a bone age, weighted 3, and a within-sex ranking loss on their
# expected stage, weighted 5, when they are at hand (the best of the recipes bench/real_maturity.py
# measured on the real validation films: ulna Spearman 0.83 -> 0.87, radius unchanged). A batch
# normalisation after each conv lets them learn at 1e-3 on a cosine schedule, and crops turned up
# to 15 degrees with their exposure curve bent (gamma 1/1.8-1.8) over twice the phantoms: held-out
# real films read from the project's checked boxes rank by age radius 0.85 / 0.84 -> 0.89 / 0.88,
# ulna 0.78 / 0.84 -> 0.86 / 0.90 (girls / boys; validation no worse), phantom phase accuracy
# radius 90% -> 89-96%, ulna 84% -> 89-93% (README, bench/real_maturity.py). Each film's other bone
# joins the off-bone crops: a box on the wrong bone is withheld instead of read (the other bone's
# crops of the held-out films read 59% / 91% -> 2% / 1%, radius / ulna). The real films are
# mixed up within sex (Beta(0.4, 0.4)): read from the project's checked boxes the held-out test films
# rank as well or better in all 8 bone x sex x seed cells (+0.00 to +0.03; README). The detector's
# stray candidates on each film (fingertips, the thumb, the carpus) join its off-bone crops: such
# crops of the held-out films read 67-73% / 44-52% -> 12-13% (radius / ulna; two seeds), and the
# wrong boxes that held the girls' radius figure down are withheld (seed 0: test 0.80 -> 0.93;
# seed 1 still reads one of them; README). Twelve epochs instead of sixteen keep the demo within 20
# minutes on a machine that ran it in 20 min 41 s: validation Spearman as good on two seeds, phantom
# phase accuracy 0.4 points lower on average (README).
DEMO = DemoConfig(
    phantoms=800, image_scale=0.6,
    detector=DetectorTrainConfig(model=DetectorConfig(min_size=384, max_size=512, representation_size=1024,
                                                      roi_pool="roialign", roi_align_samples=1),
                                 iterations=1600, lr=0.02, validate_every=400),
    # stages, the phase read from them (see the README's figures); the paper's phase3 has no
    # pre-peak class, so a young child's ulna would be forced into peak or later (seen on the real
    # radiographs): every scheme here covers all stages
    classifier=ClassifierConfig(scheme="stage", net="custom", conv_spec="16c3-32c3-64c3-64c3-128c3", fc_spec="512",
                                batch_norm=True, lr=1e-3, lr_schedule="cosine",
                                epochs=12, epoch_samples=1500, augment=5, val_fraction=0.15,
                                max_shift=0.1, scale_range=(0.85, 1.15), max_rotation=15.0, max_gamma=1.8,
                                aged_weight=3.0, aged_batch=32, aged_rank_weight=5.0, aged_mixup=0.4,
                                off_bone_share=0.25, off_bone_other_bone=True, off_bone_strays=True),
    predict_phantoms=6, predict_real=8)
# --quick only shows every step working: its models are far too briefly trained to be right.
QUICK = DemoConfig(
    phantoms=40, image_scale=0.4,
    detector=DetectorTrainConfig(model=DetectorConfig(min_size=224, max_size=288, representation_size=256,
                                                      roi_pool="roialign"),
                                 iterations=60, validate_every=20),
    classifier=ClassifierConfig(scheme="stage", net="net1", epochs=3, augment=2, val_fraction=0.15,
                                off_bone_share=0.25),
    predict_phantoms=3, predict_real=2, aged_films=60)


def default_real_folder() -> Path | None:
    """``../shared/data/real`` beside the current directory or beside the source checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base.parent / "shared" / "data" / "real"
        if candidate.is_dir():
            return candidate
    return None


# The project's box files on the shared real films (annotations/real) and the share of each held
# out of the detector's training: 40% of the first two as before, so their figures stay comparable,
# a quarter of the 600 films boxed later (about 140 held out, enough to measure on), and a tenth
# of the 19 hard films drawn last (2 held out: they are few, and the detector most needs them).
PROJECT_BOX_FILES = (("boxes.csv", 0.4), ("extra_boxes.csv", 0.4), ("rsna_extra_boxes.csv", 0.25),
                     ("hard_boxes.csv", 0.1))


def default_real_boxes() -> list[tuple[Path, float]]:
    """The project's box files on the shared real radiographs in a source checkout, with the
    share of each held out of training (none outside a checkout)."""
    folder = Path(__file__).resolve().parents[2] / "annotations" / "real"
    return [(folder / name, share) for name, share in PROJECT_BOX_FILES if (folder / name).is_file()]


def real_folder_name(index: int, boxes: Path) -> str:
    """``real`` for the first box file (as before), ``real_<stem>`` for the others."""
    return "real" if index == 0 else f"real_{boxes.stem}"


def prepare_real(out: Path, real: Path, boxes: Path, log=print, name: str = "real"):
    """The real films linked into ``out/name`` with their boxes; None (and a message) when too
    few of them carry both boxes to train on."""
    from drustage.data.importer import import_dataset
    from drustage.data.layout import read_dataset
    from drustage.io_utils import file_sha256
    from drustage.data.detection import boxed_records

    settings = {"real": str(real.resolve()), "boxes_sha256": file_sha256(boxes)}
    if _step(out, name, settings, log):
        import_dataset(real, out / name, boxes=boxes, link=True)
        _finish(out, name, settings)
    dataset = read_dataset(out / name)
    boxed = len(boxed_records(dataset))
    if boxed < MIN_REAL_FILMS:
        log(f"[{name}] {boxed} of {len(dataset.records)} real films carry both boxes (at least {MIN_REAL_FILMS} "
            f"needed): the detector does not learn from {boxes.name}")
        return None
    return dataset


def _step(out: Path, name: str, settings: dict, log) -> bool:
    """True when step ``name`` must run (no record of it, or it ran with other settings)."""
    marker = out / name / ".done.json"
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        log(f"[{name}] already done with these settings: reusing {out / name}")
        return False
    log(f"[{name}] running ...")
    return True


def _what_trains(config: dict) -> dict:
    """A training config as plain JSON data without its device: where a step ran is not a reason to redo it."""
    return {k: v for k, v in json.loads(json.dumps(config)).items() if k != "device"}


def _finish(out: Path, name: str, settings: dict) -> None:
    atomic_write_text(out / name / ".done.json", json.dumps(settings, sort_keys=True))


def run_demo(out: str | Path, quick: bool = False, real: Path | None = None, workers: int | None = None,
             log=print, real_boxes: list[Path] | None = None) -> Path:
    from drustage.data.layout import read_dataset
    from drustage.inference.bundle import assemble_bundle, load_bundle
    from drustage.inference.checkpoints import load_checkpoint
    from drustage.batch import predict_files
    from drustage.pipeline import Predictor
    from drustage.synth.writer import SynthConfig, generate_dataset
    from drustage.training.classifier import train_classifier
    from drustage.training.crop_sets import build_aged_crops
    from drustage.data.detection import boxed_records
    from drustage.evaluation.detection import evaluate_detector, held_out_ids
    from drustage.training.detector import train_detector

    config = QUICK if quick else DEMO
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    started = time.perf_counter()
    timings: dict[str, float] = {}

    # the phantom ulna box's convention too: phantoms drawn before ULNA_MIN_ASPECT are drawn again,
    # and the models trained on them trained again
    phantom_settings = {"count": config.phantoms, "scale": config.image_scale, "seed": config.seed,
                        "ulna_min_aspect": ULNA_MIN_ASPECT}
    if _step(out, "phantoms", phantom_settings, log):
        t = time.perf_counter()
        generate_dataset(out / "phantoms", SynthConfig(count=config.phantoms, seed=config.seed,
                                                       image_scale=config.image_scale), workers=workers,
                         progress=True, preset="demo-quick" if quick else "demo")
        _finish(out, "phantoms", phantom_settings)
        timings["phantoms"] = time.perf_counter() - t
    dataset = read_dataset(out / "phantoms")
    real = real if real is not None else default_real_folder()
    box_files = (default_real_boxes() if real_boxes is None
                 else [(path, config.real_test_fraction) for path in real_boxes])
    real_sets: list[tuple[str, object, float]] = []  # (folder name, dataset, held-out share)
    if real is not None and real.is_dir():
        for index, (boxes, share) in enumerate(box_files):
            name = real_folder_name(index, boxes)
            if (boxed_set := prepare_real(out, real, boxes, log, name)) is not None:
                real_sets.append((name, boxed_set, share))

    detector_config = config.detector
    detector_data = [dataset, *(boxed_set for _, boxed_set, _ in real_sets)]
    if real_sets:
        # the real share of the batches is split between the box files by their boxed films
        boxed = [len(boxed_records(boxed_set)) for _, boxed_set, _ in real_sets]
        detector_config = replace(
            detector_config, test_fraction=[detector_config.test_fraction, *(share for _, _, share in real_sets)],
            rotation=[detector_config.rotation, *(config.real_rotation for _ in real_sets)],
            dataset_weights=[1 - config.real_batch_share, *(config.real_batch_share * n / sum(boxed) for n in boxed)])
    settings = {"phantoms": phantom_settings, "real_films": {name: len(s.records) for name, s, _ in real_sets} or None,
                **_what_trains(detector_config.to_dict())}
    if _step(out, "detector", settings, log):
        t = time.perf_counter()
        train_detector(detector_data, detector_config, out / "detector", workers=workers)
        _finish(out, "detector", settings)
        timings["detector"] = time.perf_counter() - t

    aged_dataset, aged_splits = None, {}
    if real is not None and real.is_dir():
        t = time.perf_counter()
        aged_dataset, aged_splits = prepare_aged(out, real, log, config.aged_films)
        timings["aged"] = time.perf_counter() - t

    for bone in ("radius", "ulna"):
        classifier_config = demo_classifier_config(bone, config)
        settings = {"phantoms": phantom_settings, **_what_trains(classifier_config.to_dict()),
                    "aged": None if aged_dataset is None else json.loads((out / "aged" / ".done.json").read_text())}
        if _step(out, bone, settings, log):
            t = time.perf_counter()
            aged = None if aged_dataset is None else build_aged_crops(aged_dataset, classifier_config, aged_splits,
                                                                      workers=workers)
            train_classifier(dataset, classifier_config, out / bone, workers=workers, aged=aged)
            _finish(out, bone, settings)
            timings[bone] = time.perf_counter() - t

    assemble_bundle(out / "bundle", out / "detector/detector.pt", out / "radius/classifier.pt",
                    out / "ulna/classifier.pt")
    predictor = Predictor(load_bundle(out / "bundle"))
    detector_metrics = evaluate_detector(out / "detector/detector.pt", dataset, out / "detector_eval")
    real_metrics = {name: evaluate_detector(out / "detector/detector.pt", boxed_set, out / f"detector_eval_{name}")
                    for name, boxed_set, _ in real_sets}
    detector_payload = load_checkpoint(out / "detector/detector.pt", "detector")
    test_ids = held_out_ids(detector_payload, dataset)
    phantom_paths = [dataset.path_of(r) for r in dataset.records if r.image_id in test_ids][: config.predict_phantoms]
    t = time.perf_counter()
    phantom_reports, _ = predict_files(predictor, phantom_paths, out / "predictions/phantoms", gradcam=True)
    real_reports, real_failures = [], []
    if real is not None and real.is_dir():
        from drustage.data.labels import list_images

        if not real_sets:
            images = list_images(real)
        else:  # only films the detector did not learn from, under their own names
            images = []
            for _, boxed_set, _ in real_sets:
                real_test_ids = held_out_ids(detector_payload, boxed_set)
                images += [boxed_set.path_of(r).resolve() for r in boxed_set.records if r.image_id in real_test_ids]
        step = max(1, len(images) // max(config.predict_real, 1))
        real_reports, real_failures = predict_files(predictor, images[::step][: config.predict_real],
                                                    out / "predictions/real", gradcam=True)
    timings["predict"] = time.perf_counter() - t
    validation = None
    if aged_dataset is not None:
        t = time.perf_counter()
        validation = validate_aged_test(predictor, aged_dataset, aged_splits, out, workers)
        timings["validate"] = time.perf_counter() - t
    truth = {dataset.path_of(r).name: r for r in dataset.records}
    report = write_report(out, config, detector_metrics, real_metrics, phantom_reports, real_reports, real_failures,
                          truth, time.perf_counter() - started, timings, quick, validation)
    return report


def demo_classifier_config(bone: str, config: DemoConfig = DEMO) -> ClassifierConfig:
    return replace(config.classifier, bone=bone)


def prepare_aged(out: Path, real: Path, log=print, limit: int | None = None):
    """The shared films with a bone age (``limit``: that many, evenly spread), boxed by the demo's
    detector, and their split by image id."""
    from drustage.data.aged_films import default_split_file, read_split, shared_aged_films
    from drustage.data.layout import read_dataset
    from drustage.io_utils import file_sha256
    from drustage.training.aged import detect_aged_films, image_id_splits

    films = shared_aged_films(real)
    if limit is not None and limit < len(films):
        films = films[:: -(-len(films) // limit)]
    split_file = default_split_file()
    # "stray_boxes": folders boxed before the detector's stray candidates were recorded are boxed again
    settings = {"films": len(films), "split_sha256": file_sha256(split_file),
                "detector_sha256": file_sha256(out / "detector" / "detector.pt"), "stray_boxes": True}
    if _step(out, "aged", settings, log):
        _, problems = detect_aged_films(out / "detector" / "detector.pt", films, out / "aged")
        for problem in problems:
            log(f"[aged] skipped: {problem}")
        _finish(out, "aged", settings)
    dataset = read_dataset(out / "aged")
    splits = image_id_splits(dataset, read_split(split_file))
    boxed = {part: sum(1 for r in dataset.records if r.boxes and splits.get(r.image_id) == part)
             for part in ("train", "validation")}
    if min(boxed.values()) < MIN_REAL_FILMS:
        log(f"[aged] the detector boxed {boxed['train']} training and {boxed['validation']} validation films "
            f"(at least {MIN_REAL_FILMS} each needed): the classifiers learn from phantoms only")
        return None, {}
    return dataset, splits


def validate_aged_test(predictor, aged_dataset, splits: dict[str, str], out: Path, workers: int
                       ) -> MaturityValidation:
    """The bundle read on the aged test films (never trained on), checked against their ages."""
    from drustage.data.aged_films import AgedFilm
    from drustage.growth import PatientInfo
    from drustage.batch import predict_files
    from drustage.evaluation.maturity import readings_from_reports, write_validation

    test = [r for r in aged_dataset.records if splits.get(r.image_id) == "test"]
    films = [AgedFilm(r.image_id, aged_dataset.path_of(r), r.sex, r.age_years) for r in test]
    patients = {f.path.name: PatientInfo(f.sex, f.age_years) for f in films}
    reports, failures = predict_files(predictor, [f.path for f in films], out / "predictions" / "aged_test",
                                      patients=patients, workers=min(workers, 2))
    readings, problems = readings_from_reports(reports, films)
    return write_validation(readings, failures + problems, out / "validation_real",
                            title="held-out real films (demo bundle)")


def _img(path: str, caption: str) -> str:
    return (f'<figure><img src="{html.escape(path)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _detector_table(metrics: DetectionMetrics) -> str:
    rows = []
    for bone in ("radius", "ulna"):
        m = metrics.bone(bone)
        rows.append(f"<tr><td>{bone}</td><td>{m.ap_50:.3f}</td><td>{m.ap_50_95:.3f}</td>"
                    f"<td>{m.mean_iou:.3f}</td><td>{m.detection_rate_iou50:.1%}</td>"
                    f"<td>{m.centre_hit_rate:.1%}</td></tr>")
    return ("<table><tr><th>bone</th><th>AP@0.5</th><th>AP@[.5:.95]</th><th>mean IoU</th>"
            f"<th>found at IoU ≥ 0.5</th><th>centred in the true box</th></tr>{''.join(rows)}</table>")


def write_report(out: Path, config: DemoConfig, detector_metrics: DetectionMetrics,
                 real_metrics: dict[str, DetectionMetrics],
                 phantom_reports: list[dict], real_reports: list[dict], real_failures: list[str], truth: dict,
                 seconds: float, timings: dict[str, float], quick: bool,
                 validation: MaturityValidation | None = None) -> Path:
    """``report.html``: metrics, confusion matrices, learning curves and example overlays."""
    from drustage.evaluation.detection import combined_detection_metrics
    from drustage.stages import get_scheme
    from drustage.training.classifier import ClassifierTrainResult
    from drustage.evaluation.maturity import validation_html

    classifier_rows = []
    for bone in ("radius", "ulna"):
        m = ClassifierTrainResult.read(out / bone).test
        low, high = m.accuracy_ci95
        phase_text = f"{m.phase.accuracy:.1%} (ECE {m.phase.ece:.3f})" if m.phase else "—"
        classifier_rows.append(
            f"<tr><td>{bone}</td><td>{html.escape(', '.join(m.classes))}</td><td>{m.n}</td>"
            f"<td>{m.accuracy:.1%} ({low:.1%}–{high:.1%})</td><td>{m.within_one_accuracy:.1%}</td>"
            f"<td>{m.kappa:.3f}</td><td>{m.kappa_quadratic:.3f}</td><td>{m.ece:.3f}</td>"
            f"<td>{phase_text}</td></tr>")
    if validation is not None:
        real_maturity = ("<h2>Maturity on held-out real films (bone age known, stages unknown)</h2>"
                         "<p class='note'>The test part of annotations/real/maturity_split.csv: films the classifiers "
                         "never trained on, read by the demo's bundle with each patient's sex and bone age given, "
                         "checked as <code>drustage validate</code> does.</p>"
                         + validation_html(validation, prefix="validation_real/"))
    else:
        real_maturity = ("<h2>Maturity on real films: unchecked</h2><p class='note'>No real films with a known age "
                         "were at hand (../shared/data/real): the classifiers learned from phantoms alone and their "
                         "readings on real radiographs are unchecked. Check a bundle on your own films with "
                         "<code>drustage validate</code> before using it.</p>")
    phantom_rows = []
    for report in phantom_reports:
        record = truth.get(report["source"])
        expected = []
        for bone in ("radius", "ulna"):
            scheme = get_scheme(report[bone]["scheme"], bone)
            cls = scheme.class_of(record.stages[bone]) if record and bone in record.stages else None
            expected.append(f"{record.stages[bone].code} → {scheme.classes[cls] if cls is not None else 'n/a'}"
                            if record and bone in record.stages else "?")
        phantom_rows.append(
            f"<tr><td>{html.escape(report['source'])}</td><td>{html.escape(expected[0])}</td>"
            f"<td>{report['radius']['prediction'] or '—'}</td><td>{html.escape(expected[1])}</td>"
            f"<td>{report['ulna']['prediction'] or '—'}</td><td>{(report['guidance'] or {}).get('rule', '—')}</td>"
            f"<td>{'yes' if report['needs_review'] else 'no'}</td></tr>")
    overlays = [_img(f"predictions/phantoms/{r['files']['overlay']}", r["source"]) for r in phantom_reports]
    real_overlays = [_img(f"predictions/real/{r['files']['overlay']}", r["source"]) for r in real_reports]
    timing_text = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) or "all steps reused"
    data_text = f"Phantom data only: {config.phantoms} synthetic radiographs."
    real_detector_section, real_choice = "", ""
    if real_metrics:
        data_text = (f"{config.phantoms} synthetic radiographs; the detector also learned from real films boxed "
                     "by the project (annotations/real).")
        every = combined_detection_metrics(list(real_metrics.values()))
        parts = "".join(
            f"<h3>{html.escape(name)} (n={m.n})</h3>{_detector_table(m)}"
            f"{_img(f'detector_eval_{name}/detections.png', f'{name}: predicted (colour) against drawn (green)')}"
            for name, m in real_metrics.items())
        rows = "".join(f"<tr><td>{bone}</td><td>{every.bone(bone).mean_iou:.3f}</td>"
                       f"<td>{every.bone(bone).detection_rate_iou50:.1%}</td>"
                       f"<td>{every.bone(bone).centre_hit_rate:.1%}</td></tr>"
                       for bone in ("radius", "ulna"))
        real_detector_section = (
            f"<h2>Detector (held-out real films, n={every.n}, boxes drawn or checked by eye)</h2>"
            "<table><tr><th>bone</th><th>mean IoU</th><th>found at IoU ≥ 0.5</th><th>centred in the true box</th></tr>"
            f"{rows}</table>{parts}")
        real_choice = ", none of them seen by the detector in training"
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>drustage demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 1400px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; }}
td, th {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }}
figure {{ display: inline-block; margin: 0.4rem; vertical-align: top; }}
figure img {{ max-height: 460px; border: 1px solid #999; }}
.note {{ color: #666; font-size: 0.9rem; }}
</style></head><body>
<h1>drustage demo{' (quick)' if quick else ''}</h1>
<p class="note">{data_text} Decision support, not diagnosis.
Total {seconds:.0f} s ({html.escape(timing_text)}).</p>
<h2>Detector (held-out phantoms, n={detector_metrics.n})</h2>
{_detector_table(detector_metrics)}
{_img('detector_eval/detections.png', 'predicted boxes (colour) against true boxes (green)')}
{real_detector_section}
<h2>Classifiers (held-out phantoms)</h2>
<table><tr><th>bone</th><th>classes</th><th>n</th><th>accuracy (95% CI)</th><th>within one</th><th>kappa</th>
<th>quadratic kappa</th><th>ECE</th><th>phase accuracy (ECE)</th></tr>{''.join(classifier_rows)}</table>
{_img('radius/confusion.png', 'radius confusion matrix')}{_img('ulna/confusion.png', 'ulna confusion matrix')}
{_img('radius/curves.png', 'radius learning curves')}{_img('ulna/curves.png', 'ulna learning curves')}
<h2>Predictions on held-out phantoms</h2>
<table><tr><th>file</th><th>radius truth</th><th>radius predicted</th><th>ulna truth</th><th>ulna predicted</th>
<th>guidance rule</th><th>review</th></tr>{''.join(phantom_rows)}</table>
{''.join(overlays)}
<h2>Real radiographs</h2>
<p class="note">{len(real_reports)} real radiograph(s) from the shared folder{real_choice} (no stages exist for
them); {len(real_failures)} failed to load.</p>
{''.join(real_overlays) or '<p>No real radiographs found.</p>'}
{real_maturity}
</body></html>
"""
    path = out / "report.html"
    atomic_write_text(path, body)
    atomic_write_text(out / "demo_config.json", json.dumps(asdict(config), indent=2) + "\n")
    return path
