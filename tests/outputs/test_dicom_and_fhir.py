"""DICOM SR + Secondary Capture in the source study, and FHIR Observations: built from a real
prediction on a DX phantom, validated by dcmtk/dicom3tools where installed, read back to the JSON."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from PIL import Image

from drustage.inference.bundle import load_bundle
from drustage.batch import predict_files
from drustage.pipeline import Predictor


@pytest.fixture(scope="module")
def dx_study(tmp_path_factory):
    """Two DX phantoms (one study each) and their predictions with DICOM and FHIR outputs."""
    from drustage.synth.writer import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("dx")
    generate_dataset(root / "films", SynthConfig(count=2, seed=5, image_scale=0.4, image_format="dicom"),
                     workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def predicted(dx_study, trained):
    predictor = Predictor(load_bundle(trained[1]), detection_threshold=0.0)
    paths = sorted((dx_study / "films/images").glob("*.dcm"))
    out = dx_study / "out"
    reports, failures = predict_files(predictor, paths, out, progress=False, dicom_out=out / "dicom",
                                      fhir_out=out / "fhir")
    assert failures == []
    return predictor, paths, out, reports


def test_structured_report_reads_back_to_the_json(predicted):
    from drustage.outputs.dicom import read_structured_report

    _, paths, out, reports = predicted
    for path, report in zip(paths, reports):
        source = pydicom.dcmread(path)
        sr = pydicom.dcmread(out / "dicom" / report["files"]["structured_report"])
        assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
        assert sr.SeriesInstanceUID != source.SeriesInstanceUID and sr.SOPInstanceUID != source.SOPInstanceUID
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        back = read_structured_report(sr)
        assert back["model_fingerprint"] == report["model_fingerprint"]
        assert back["guidance_rule"] == (report["guidance"] or {}).get("rule")
        assert back["review_reasons"] == report["review_reasons"]
        for bone in ("radius", "ulna"):
            expected, read = report[bone], back["bones"][bone]
            assert read["prediction"] == expected["prediction"] and read["phase"] == expected["phase"]
            assert read["confidence"] == pytest.approx(expected["confidence"])
            assert read["phase_confidence"] == pytest.approx(expected["phase_confidence"])
            assert read["needs_review"] == report["needs_review"]
            np.testing.assert_allclose(read["box"], expected["box"], rtol=1e-5)


def test_secondary_capture_is_the_overlay_marked_derived(predicted):
    _, paths, out, reports = predicted
    source = pydicom.dcmread(paths[0])
    sc = pydicom.dcmread(out / "dicom" / reports[0]["files"]["secondary_capture"])
    assert sc.StudyInstanceUID == source.StudyInstanceUID and sc.SeriesInstanceUID != source.SeriesInstanceUID
    assert list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"] and sc.BurnedInAnnotation == "YES"
    assert "not diagnosis" in sc.ImageComments
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    overlay = np.asarray(Image.open(out / reports[0]["files"]["overlay"]).convert("RGB"))
    np.testing.assert_array_equal(sc.pixel_array, overlay)


def test_outputs_are_the_same_objects_when_read_again(predicted, tmp_path):
    """UIDs derive from the source and the bundle: a resend replaces, never duplicates."""
    predictor, paths, out, reports = predicted
    again, _ = predict_files(predictor, paths[:1], tmp_path, progress=False, dicom_out=tmp_path)
    for kind in ("structured_report", "secondary_capture"):
        first = pydicom.dcmread(out / "dicom" / reports[0]["files"][kind])
        second = pydicom.dcmread(tmp_path / again[0]["files"][kind])
        assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (second.SOPInstanceUID, second.SeriesInstanceUID)


@pytest.mark.parametrize("tool", ["dciodvfy", "dsrdump"])
def test_structured_report_validates(predicted, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian: dicom3tools / dcmtk)")
    _, _, out, reports = predicted
    for report in reports:
        result = subprocess.run([tool, str(out / "dicom" / report["files"]["structured_report"])],
                                capture_output=True, text=True, timeout=60)
        lines = (result.stdout + result.stderr).splitlines()
        assert result.returncode == 0 and not [line for line in lines if line.startswith("Error")], lines
        if tool == "dsrdump":
            assert "Imaging Measurement Report" in result.stdout and report["radius"]["prediction"] in result.stdout


def test_fhir_observations_carry_the_reading_and_no_identifier(predicted):
    from fhir.resources.R4B.bundle import Bundle

    _, paths, out, reports = predicted
    text = (out / "fhir" / reports[0]["files"]["fhir"]).read_text()
    bundle = Bundle.model_validate_json(text)
    observations = {entry.resource.bodySite.coding[0].display.split()[-1]: entry.resource for entry in bundle.entry}
    assert set(observations) == {"radius", "ulna"}
    for bone, observation in observations.items():
        result = reports[0][bone]
        stage_code = result["prediction"] if result["scheme"] == "stage" else f"PHASE-{result['phase'].upper()}"
        assert observation.valueCodeableConcept.coding[0].code == stage_code
        components = {c.code.coding[0].code: c for c in observation.component}
        assert components["PHASE"].valueCodeableConcept.text == reports[0][bone]["phase"]
        assert float(components["CONFIDENCE"].valueQuantity.value) == pytest.approx(result["confidence"])
        assert observation.contained[0].identifier[0].value == reports[0]["model_fingerprint"]
        assert observation.subject is None
    assert pydicom.dcmread(paths[0]).StudyInstanceUID in text
    assert "PHANTOM" not in text and pydicom.dcmread(paths[0]).PatientID not in text


def test_non_dicom_inputs_get_no_dicom_outputs(trained, tmp_path):
    predictor = Predictor(load_bundle(trained[1]), detection_threshold=0.0)
    png = sorted((trained[0] / "young/images").glob("*.png"))[0]
    reports, failures = predict_files(predictor, [png], tmp_path / "out", progress=False,
                                      dicom_out=tmp_path / "dicom")
    assert failures == [] and "structured_report" not in reports[0]["files"]
    assert not (tmp_path / "dicom").exists()


def test_a_structured_report_as_input_is_refused_in_one_line(predicted, tmp_path):
    predictor, _, out, reports = predicted
    sr_path = out / "dicom" / reports[0]["files"]["structured_report"]
    reports, failures = predict_files(predictor, [sr_path], tmp_path, progress=False, dicom_out=tmp_path)
    assert reports == [] and len(failures) == 1 and "\n" not in failures[0]
    assert sr_path.name in failures[0]
    assert not list(tmp_path.glob("*.json"))


def test_cli_writes_dicom_and_fhir_outputs(predicted, trained, tmp_path):
    from drustage.cli import main

    _, paths, _, _ = predicted
    assert main(["predict", str(paths[0]), "--model", str(trained[1]), "--out", str(tmp_path / "o"),
                 "--threshold", "0", "--dicom-out", str(tmp_path / "d"), "--fhir-out", str(tmp_path / "f"),
                 "--quiet"]) == 0
    report = json.loads((tmp_path / "o" / f"{paths[0].stem}.json").read_text())
    assert (tmp_path / "d" / report["files"]["structured_report"]).is_file()
    assert (tmp_path / "f" / report["files"]["fhir"]).is_file()


@pytest.mark.parametrize("changes,reason", [
    ({"Modality": "CT"}, "modality CT"), ({"BodyPartExamined": "CHEST"}, "body part CHEST"),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.88.33"}, "not a radiograph image"),
    ({"Manufacturer": "drustage"}, "a drustage result"), ({"StudyInstanceUID": ""}, "no StudyInstanceUID"),
    ({"SeriesInstanceUID": ""}, "no SeriesInstanceUID"),
])
def test_what_is_not_a_hand_radiograph(dx_study, changes, reason):
    from drustage.outputs.dicom import not_a_hand_radiograph

    ds = pydicom.dcmread(next((dx_study / "films/images").glob("*.dcm")), stop_before_pixels=True)
    assert not_a_hand_radiograph(ds) is None
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    assert reason in not_a_hand_radiograph(ds)


def test_an_anonymised_source_gives_outputs_or_a_one_line_refusal(predicted):
    """Anonymised exports drop patient and study attributes: never an AttributeError (a traceback)."""
    from drustage.outputs.dicom import secondary_capture, structured_report

    _, paths, _, reports = predicted
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    for keyword in ("PatientName", "PatientBirthDate", "StudyDate", "StudyTime", "ReferringPhysicianName"):
        delattr(ds, keyword)
    for build in (lambda: structured_report(ds, reports[0], "0"),
                  lambda: secondary_capture(ds, np.zeros((8, 8, 3), np.uint8), reports[0], "0")):
        try:
            assert build().StudyInstanceUID == ds.StudyInstanceUID
        except ValueError as error:
            assert "\n" not in str(error) and "no DICOM outputs" in str(error)
