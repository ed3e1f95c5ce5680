import re
from dataclasses import replace

import pytest

from drustage.demo import MIN_REAL_FILMS, QUICK, default_real_boxes, prepare_real, run_demo
from drustage.training.checkpoint import load_checkpoint


def test_quick_demo_end_to_end_and_resume(tmp_path, real_folder_or_none, monkeypatch):
    monkeypatch.setattr("drustage.demo.QUICK", replace(QUICK, detector_lr=0.005))
    messages = []
    real = real_folder_or_none
    report = run_demo(tmp_path / "demo", quick=True, real=real, workers=2, log=messages.append)
    assert load_checkpoint(tmp_path / "demo/detector/detector.pt", "detector")["config"]["lr"] == 0.005
    html = report.read_text()
    for heading in ("Detector (held-out phantoms", "Classifiers (held-out phantoms)", "Predictions on held-out phantoms",
                    "Real radiographs"):
        assert heading in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert any("confusion" in s for s in sources) and any("curves" in s for s in sources)
    for source in sources:  # every picture the report shows exists
        assert (report.parent / source).is_file(), source
    predicted = list((tmp_path / "demo/predictions/phantoms").glob("*.json"))
    assert len(predicted) == QUICK.predict_phantoms
    steps = 4
    if real is not None:
        # the detector learned from the boxed real films too; the real predictions shown are held-out ones
        steps = 5
        checkpoint = load_checkpoint(tmp_path / "demo/detector/detector.pt", "detector")
        assert checkpoint["data"]["datasets"] == ["phantoms", "real"]
        held_out = {i.split("-", 1)[1] for i in checkpoint["data"]["test_ids_by_dataset"]["real"]}
        overlays = list((tmp_path / "demo/predictions/real").glob("*.overlay.png"))
        assert len(overlays) == QUICK.predict_real
        assert {p.name.removesuffix(".overlay.png") for p in overlays} <= held_out
        assert "Detector (held-out real films" in html and "none of them seen by the detector" in html
    assert all("running" in m for m in messages if m.startswith("[")) and len(messages) == steps

    again = []
    run_demo(tmp_path / "demo", quick=True, real=real, workers=2, log=again.append)
    assert len(again) == steps and all("already done" in m for m in again)


@pytest.mark.real
def test_too_few_boxed_real_films_leave_the_detector_to_phantoms(tmp_path, real_data):
    messages = []
    boxes = default_real_boxes()
    assert boxes is not None  # the project's annotations, in this source checkout
    # ten films of which fewer than MIN_REAL_FILMS are boxed
    assert prepare_real(tmp_path, real_data / "unlabelled-examples", boxes, messages.append) is None
    assert f"(at least {MIN_REAL_FILMS} needed): the detector learns from phantoms only" in messages[-1]
    linked = sorted((tmp_path / "real/images").iterdir())
    assert len(linked) == 10 and all(p.is_symlink() for p in linked)

