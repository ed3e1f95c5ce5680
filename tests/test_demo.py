import json
import re
from dataclasses import replace

import numpy as np
import pytest

from drustage.demo import (
    MIN_REAL_FILMS,
    PROJECT_BOX_FILES,
    QUICK,
    default_real_boxes,
    prepare_real,
    real_folder_name,
    run_demo,
)
from drustage.inference.checkpoints import load_checkpoint


@pytest.mark.slow
def test_quick_demo_end_to_end_and_resume(tmp_path, real_folder_or_none, monkeypatch):
    monkeypatch.setattr("drustage.demo.QUICK", replace(QUICK, detector=replace(QUICK.detector, lr=0.005)))
    messages = []
    real = real_folder_or_none
    report = run_demo(tmp_path / "demo", quick=True, real=real, workers=2, log=messages.append)
    assert load_checkpoint(tmp_path / "demo/detector/detector.pt", "detector")["config"]["lr"] == 0.005
    html = report.read_text()
    for heading in ("Detector (held-out phantoms", "Classifiers (held-out phantoms)",
                    "Predictions on held-out phantoms",
                    "Real radiographs"):
        assert heading in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert any("confusion" in s for s in sources) and any("curves" in s for s in sources)
    for source in sources:  # every picture the report shows exists
        assert (report.parent / source).is_file(), source
    predicted = list((tmp_path / "demo/predictions/phantoms").glob("*.json"))
    assert len(predicted) == QUICK.predict_phantoms
    steps = ["phantoms", "detector", "radius", "ulna"]
    if real is not None:
        # the detector learned from the boxed real films too; the real predictions shown are held-out ones
        real_sets = [real_folder_name(i, boxes) for i, (boxes, _) in enumerate(default_real_boxes())]
        assert real_sets[0] == "real" and len(real_sets) == len(PROJECT_BOX_FILES)  # each box file a dataset
        steps = ["phantoms", *real_sets, "detector", "aged", "radius", "ulna"]
        # the quick detector boxes too few films with a bone age for the classifiers to learn from
        assert "learn from phantoms only" in messages[steps.index("aged") + 1]
        messages.pop(steps.index("aged") + 1)
        checkpoint = load_checkpoint(tmp_path / "demo/detector/detector.pt", "detector")
        assert checkpoint["data"]["datasets"] == ["phantoms", *real_sets]
        # real films turn further in augmentation than phantoms
        assert checkpoint["config"]["rotation"] == [QUICK.detector.rotation, *([QUICK.real_rotation] * len(real_sets))]
        held_out = {i.split("-", 1)[1] for name in real_sets for i in checkpoint["data"]["test_ids_by_dataset"][name]}
        overlays = list((tmp_path / "demo/predictions/real").glob("*.overlay.png"))
        assert len(overlays) == QUICK.predict_real
        assert {p.name.removesuffix(".overlay.png") for p in overlays} <= held_out
        assert "Detector (held-out real films" in html and "none of them seen by the detector" in html
    assert messages == [f"[{step}] running ..." for step in steps]
    assert "Maturity on real films: unchecked" in html  # no classifier here learned from real films

    again = []
    run_demo(tmp_path / "demo", quick=True, real=real, workers=2, log=again.append)
    again = [m for m in again if "learn from phantoms only" not in m]
    assert len(again) == len(steps) and all("already done" in m for m in again)


def test_detector_figures_combine_over_the_real_box_files_by_film_count():
    from drustage.evaluation.detection import BoneDetectionMetrics, DetectionMetrics, combined_detection_metrics

    def evaluation(n, centred):
        return DetectionMetrics(n, 0.9, 0.5, *(BoneDetectionMetrics(0.9, 0.5, 0.8, 1.0, centred) for _ in range(2)))

    every = combined_detection_metrics([evaluation(60, 1.0), evaluation(140, 0.9)])
    assert every.n == 200 and every.ulna.centre_hit_rate == pytest.approx((60 + 126) / 200)
    assert every.radius.mean_iou == pytest.approx(0.8) and np.isnan(every.radius.ap_50)


def test_the_report_shows_the_real_film_validation(tmp_path, aged_case):
    from drustage.demo import write_report
    from drustage.evaluation.maturity import readings_from_reports, write_validation

    films, reports = aged_case()
    validation = write_validation(*readings_from_reports(reports, films), tmp_path / "validation_real")
    from drustage.evaluation.classification import classification_metrics
    from drustage.training.classifier import ClassifierTrainResult

    phase = classification_metrics([0, 1, 2, 3], [0, 1, 2, 2], "abcd", [0.8] * 4)  # 75%, ECE 0.05
    test = replace(classification_metrics([0, 1, 0, 1], [0, 0, 0, 0], "ab", [0.6] * 4), phase=phase)
    for bone in ("radius", "ulna"):
        (tmp_path / bone).mkdir()
        (tmp_path / bone / "metrics.json").write_text(json.dumps({"test": ClassifierTrainResult(test, 3).to_dict()}))
    from drustage.evaluation.detection import BoneDetectionMetrics, DetectionMetrics

    detector = DetectionMetrics(1, 1, 1, *(BoneDetectionMetrics(1, 1, 1, 1, 1) for _ in range(2)))
    report = write_report(tmp_path, QUICK, detector, {}, [], [], [], {}, 1.0, {}, True, validation)
    html = report.read_text()
    assert "Maturity on held-out real films" in html and "implausible, not flagged" in html
    assert "75.0% (ECE 0.050)" in html
    for source in re.findall(r'<img src="(validation_real/[^"]+)"', html):
        assert (tmp_path / source).is_file(), source
    assert len(re.findall(r'<img src="validation_real/', html)) == 3


@pytest.mark.real
def test_too_few_boxed_real_films_leave_the_detector_to_phantoms(tmp_path, real_data):
    messages = []
    boxes = default_real_boxes()[0][0]  # the project's annotations, in this source checkout
    # ten films of which fewer than MIN_REAL_FILMS are boxed
    assert prepare_real(tmp_path, real_data / "unlabelled-examples", boxes, messages.append) is None
    assert f"(at least {MIN_REAL_FILMS} needed): the detector does not learn from boxes.csv" in messages[-1]
    linked = sorted((tmp_path / "real/images").iterdir())
    assert len(linked) == 10 and all(p.is_symlink() for p in linked)

