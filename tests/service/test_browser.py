"""The web page in real headless Chromium (Debian's package, driven by Playwright): read a
phantom and check the boxes and stages it shows; label an image and check the saved file."""

from __future__ import annotations

import shutil
from contextlib import contextmanager

import pytest

from drustage.data.layout import read_dataset
from drustage.imaging import load_radiograph
from drustage.inference.bundle import load_bundle
from drustage.pipeline import Predictor
from drustage.stages import BONES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed")


@contextmanager
def browser_page(url: str):
    """A headless Chromium page opened at ``url``."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(url)
        yield page
        browser.close()


@pytest.fixture
def page(live_server):
    with browser_page(live_server) as opened:
        yield opened


def _percent(style: str) -> float:
    return float(style.rstrip("%"))


def test_the_patients_age_on_the_page_flags_an_implausible_reading(page, trained):
    root, bundle = trained
    path = sorted((root / "old" / "images").glob("*.png"))[1]
    phase = Predictor(load_bundle(bundle), detection_threshold=0.0).predict(load_radiograph(path)).radius.phase
    page.select_option("#sex", "F")
    page.fill("#age", "18" if phase in ("pre-peak", "peak") else "5")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#review:not([hidden])")
    assert "implausible for the patient's age" in page.locator("#review").inner_text()


def test_result_page_shows_the_boxes_and_stages(page, trained):
    root, bundle = trained
    path = sorted((root / "old" / "images").glob("*.png"))[1]
    expected = Predictor(load_bundle(bundle), detection_threshold=0.0).predict(load_radiograph(path)).to_dict()
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#result:not([hidden])")
    height, width = expected["image_size"]
    for bone in BONES:
        box = page.locator(f"#viewer .box[data-bone={bone}]")
        x1, y1, x2, y2 = expected[bone]["box"]
        assert _percent(box.evaluate("n => n.style.left")) == pytest.approx(100 * x1 / width, abs=0.01)
        assert _percent(box.evaluate("n => n.style.top")) == pytest.approx(100 * y1 / height, abs=0.01)
        assert _percent(box.evaluate("n => n.style.width")) == pytest.approx(100 * (x2 - x1) / width, abs=0.01)
        card = page.locator(f"#card-{bone}")
        assert card.locator("[data-field=prediction]").inner_text() == expected[bone]["prediction"]
        assert card.locator(".bar.top").get_attribute("data-class") == expected[bone]["prediction"]
    assert page.locator("[data-field=action]").inner_text() == expected["guidance"]["action"]
    # the radiograph and the crops really loaded; Grad-CAM swaps the crops
    page.wait_for_function("document.getElementById('radiograph').naturalWidth > 0")
    page.check("#gradcam")
    page.wait_for_function("[...document.querySelectorAll('img.crop')].every(i => i.src.includes('gradcam=true') "
                           "&& i.complete && i.naturalWidth === 96)")
    assert page.locator("#download").get_attribute("href").startswith("blob:")


def test_a_withheld_reading_shows_its_box_and_says_it_was_not_read(trained, withheld_bundle, label_dir, serve):
    from drustage.service.app import ServiceConfig, create_app

    root, _ = trained
    path = sorted((root / "old" / "images").glob("*.png"))[1]
    expected = Predictor(load_bundle(withheld_bundle), detection_threshold=0.0).predict(load_radiograph(path)).to_dict()
    app = create_app(ServiceConfig(model=withheld_bundle, label_dir=label_dir, detection_threshold=0.0))
    with serve(app) as url, browser_page(url) as page:
        page.set_input_files("#file", str(path))
        page.wait_for_selector("#result:not([hidden])")
        radius, ulna = page.locator("#card-radius"), page.locator("#card-ulna")
        assert radius.locator("[data-field=prediction]").inner_text() == "not read"
        assert "reading withheld" in radius.inner_text() and radius.locator(".bar").count() == 0
        # the detector's ulna box, chosen as the radius's partner, is withheld with it
        assert expected["ulna"]["prediction"] is None and expected["ulna"]["found"]
        assert ulna.locator("[data-field=prediction]").inner_text() == "not read"
        assert page.locator("#viewer .box[data-bone=radius] .tag").inner_text() == "radius not read"
        review = page.locator("#review").inner_text()
        assert "radius box shows no readable bone" in review and "ulna reading withheld with the radius's" in review
        assert page.locator("#guidance").inner_text() == "No guidance: both bones must be staged."
        page.wait_for_function("[...document.querySelectorAll('#past option')].length > 1")
        assert "radius not read" in page.locator("#past option").nth(1).inner_text()


def test_result_page_reports_a_bad_file(page, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("plain text")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#status.error")
    assert "not a PNG" in page.locator("#status").inner_text()


def test_labelling_page_saves_drawn_boxes_and_stages(page, label_dir):
    page.click("#tab-label")
    page.wait_for_function("document.getElementById('label-image').naturalWidth > 0")
    image_id = page.locator("#label-select").input_value()
    item = page.evaluate("label.item")
    rect = page.locator("#label-image").bounding_box()
    to_image = rect["width"] / item["width"]

    def drag(x1, y1, x2, y2):
        page.mouse.move(rect["x"] + x1 * to_image, rect["y"] + y1 * to_image)
        page.mouse.down()
        page.mouse.move(rect["x"] + x2 * to_image, rect["y"] + y2 * to_image, steps=5)
        page.mouse.up()

    # proposals cover the bones; draw fresh boxes away from them in empty corners
    page.keyboard.press("r")
    page.evaluate("label.boxes = {}; drawLabelBoxes()")
    drag(40, 60, 160, 200)
    page.keyboard.press("u")
    drag(200, 70, 260, 190)
    page.select_option("#stage-radius", "R7")
    page.select_option("#stage-ulna", "U4")
    page.locator("#stage-ulna").blur()
    page.keyboard.press("]")  # ulna is selected: U4 -> U5
    page.select_option("#laterality", "L")
    page.locator("#laterality").blur()
    page.keyboard.press("s")
    page.wait_for_function("document.getElementById('label-status').textContent.startsWith('saved')")
    record = {r.image_id: r for r in read_dataset(label_dir).records}[image_id]
    assert record.stages["radius"].code == "R7" and record.stages["ulna"].code == "U5"
    assert record.laterality == "L"
    tolerance = 2 / to_image  # two screen pixels
    assert record.boxes["radius"] == pytest.approx((40, 60, 160, 200), abs=tolerance)
    assert record.boxes["ulna"] == pytest.approx((200, 70, 260, 190), abs=tolerance)
    # saving moved on to the next unlabelled radiograph and counted the saved one
    opened = page.locator("#label-select").input_value()
    assert opened != image_id
    assert page.locator("#label-progress").inner_text().startswith("1 of 4")
    # n skips to the next unlabelled radiograph, never the saved one
    page.keyboard.press("n")
    page.wait_for_function(f"document.getElementById('label-select').value !== {opened!r}")
    assert page.locator("#label-select").input_value() not in (image_id, opened)
