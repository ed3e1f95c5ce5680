import re

from drustage.demo import QUICK, run_demo


def test_quick_demo_end_to_end_and_resume(tmp_path, real_folder_or_none):
    messages = []
    real = real_folder_or_none / "unlabelled-examples" if real_folder_or_none else None
    report = run_demo(tmp_path / "demo", quick=True, real=real, workers=2, log=messages.append)
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
    if real is not None:
        assert len(list((tmp_path / "demo/predictions/real").glob("*.overlay.png"))) == QUICK.predict_real
    assert all("running" in m for m in messages if m.startswith("[")) and len(messages) == 4

    again = []
    run_demo(tmp_path / "demo", quick=True, real=real, workers=2, log=again.append)
    assert len(again) == 4 and all("already done" in m for m in again)
