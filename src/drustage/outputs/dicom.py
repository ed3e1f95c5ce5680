"""Results inside the source study: a DICOM Structured Report and a Secondary Capture of the overlay.

The SR follows TID 1500 (Measurement Report): one planar-ROI group per bone found, whose region is
its box drawn on the source image as a closed polyline, with the stage, phase and review flag as
qualitative evaluations, the confidences (and the expected stage) as measurements, and the bundle
as the algorithm identification. The bracing guidance, its disclaimer and the review reasons are
TEXT items of TID 1500's qualitative-evaluations container. Concepts without a standard code use the
private coding scheme ``99DRUSTAGE`` (``CODING_SCHEME``, documented in the README).

Both objects are new instances of a new series in the source's study and reference the source SOP
instance; their UIDs derive from the source SOP instance UID and the bundle fingerprint, so reading
one image twice with one bundle gives the same objects (a resend after a restart replaces, never
duplicates). Only the patient and study attributes the IODs require are copied from the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drustage.io_utils import atomic_path
from drustage.stages import BONES, DISCLAIMER

__all__ = ["CODING_SCHEME", "DicomOutputs", "RADIOGRAPH_SOP_CLASSES", "dataset_bytes", "dicom_outputs",
           "not_a_hand_radiograph", "output_bytes", "read_source_header", "read_structured_report", "source_reference",
           "write_dicom_outputs"]

CODING_SCHEME = "99DRUSTAGE"
MANUFACTURER = "drustage"
NOT_DIAGNOSIS = "Decision support, not diagnosis"

# The image storage classes drustage reads as radiographs (CR, DX, secondary capture of a film).
RADIOGRAPH_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
}
RADIOGRAPH_MODALITIES = ("CR", "DX", "OT")
# BodyPartExamined values of a hand or wrist film; an absent or empty value is accepted
HAND_BODY_PARTS = ("HAND", "WRIST", "FOREARM", "EXTREMITY", "UPPER EXTREMITY", "ARM")


@dataclass(frozen=True)
class DicomOutputs:
    structured_report: object  # pydicom Dataset (highdicom ComprehensiveSR)
    secondary_capture: object  # pydicom Dataset (highdicom SCImage)


def _copied_as_is(build):
    """``build`` with highdicom's doubts about source values (a one-part patient name) silenced:
    they are copied from the source as they are."""
    import functools

    @functools.wraps(build)
    def quiet(*args, **kwargs):
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="highdicom")
            try:
                return build(*args, **kwargs)
            except (AttributeError, TypeError, KeyError) as error:  # a source lacking what the IOD needs
                raise ValueError(f"no DICOM outputs: the source lacks what they need ({error})") from None

    return quiet


def _code(value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value, CODING_SCHEME, meaning)


def read_source_header(path: str | Path):
    """The header (no pixels) of a file already read as a DICOM radiograph (with or without the
    128-byte preamble); ``ValueError`` naming the file when it cannot be read."""
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except (OSError, ValueError, pydicom.errors.InvalidDicomError) as error:
        raise ValueError(f"{path}: unreadable DICOM header ({' '.join(str(error).split())})") from None


# What the SR and SC take from their source: the patient and study modules the IODs require, and
# the source's identity, side and orientation; ``source_reference`` keeps these and nothing else.
SOURCE_ATTRIBUTES = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
    "AccessionNumber", "ReferringPhysicianName", "Modality", "ImageLaterality", "PatientOrientation",
    "Rows", "Columns", "SamplesPerPixel", "PixelRepresentation",  # what makes it an image for an SR region
)


def source_reference(ds):
    """The source header cut down to ``SOURCE_ATTRIBUTES`` (what a service keeps to build the outputs later)."""
    from pydicom.dataset import Dataset

    kept = Dataset()
    for keyword in SOURCE_ATTRIBUTES:
        if keyword in ds:
            setattr(kept, keyword, ds.data_element(keyword).value)
    return kept


def dataset_bytes(ds) -> bytes:
    """A data set as explicit-VR little-endian bytes (no file meta); ``pydicom.dcmread(..., force=True)`` reads it."""
    import io

    from pydicom import dcmwrite

    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def not_a_hand_radiograph(ds) -> str | None:
    """Why a DICOM object is not a hand radiograph drustage reads, or None when it is."""
    sop_class = str(getattr(ds, "SOPClassUID", ""))
    if sop_class not in RADIOGRAPH_SOP_CLASSES:
        return f"SOP class {sop_class or '(none)'} is not a radiograph image"
    modality = str(getattr(ds, "Modality", "") or "")
    if modality and modality not in RADIOGRAPH_MODALITIES:
        return f"modality {modality} is not a radiograph"
    part = str(getattr(ds, "BodyPartExamined", "") or "").upper()
    if part and part not in HAND_BODY_PARTS:
        return f"body part {part} is not a hand or wrist"
    if getattr(ds, "Manufacturer", "") == MANUFACTURER:
        return "a drustage result, not a radiograph"
    for attribute in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not getattr(ds, attribute, None):
            return f"no {attribute}"
    return None


def _uid(source, fingerprint: str, kind: str) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(source.SOPInstanceUID), fingerprint, kind])


def _algorithm(report: dict, version: str):
    """drustage's version and the first 16 hex digits of the bundle fingerprint (the device
    observer's serial number carries all 64)."""
    from highdicom.sr import AlgorithmIdentification

    family = _code("DRU-CNN", "Luk DRU stage classifier")
    return AlgorithmIdentification(name="drustage", version=f"{version} model {report['model_fingerprint'][:16]}",
                                   family=family)


def _bone_group(source, bone: str, result: dict, algorithm, needs_review: bool):
    from highdicom.sr import (CodedConcept, ImageRegion, Measurement, PlanarROIMeasurementsAndQualitativeEvaluations,
                              QualitativeEvaluation, SourceImageForRegion, TrackingIdentifier)
    from pydicom.sr.codedict import codes

    x1, y1, x2, y2 = result["box"]
    # a closed polyline (first point repeated): the box on the source image, in pixel columns/rows
    outline = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float32)
    region = ImageRegion("POLYLINE", outline, SourceImageForRegion.from_source_image(source))
    site = {"radius": CodedConcept("62413002", "SCT", "Bone structure of radius"),
            "ulna": CodedConcept("23416004", "SCT", "Bone structure of ulna")}[bone]
    evaluations = [QualitativeEvaluation(_code("PHASE", "Growth phase"),
                                         _code(f"PHASE-{result['phase'].upper()}", result["phase"]))]
    if result["scheme"] == "stage":
        stage = result["prediction"]
        evaluations.insert(0, QualitativeEvaluation(_code("DRU-STAGE", "Luk DRU stage"),
                                                    _code(stage, f"{bone} stage {stage}")))
    evaluations.append(QualitativeEvaluation(_code("REVIEW", "Needs human review"),
                                             codes.SCT.Yes if needs_review else codes.SCT.No))
    ratio = CodedConcept("1", "UCUM", "no units")
    measurements = [Measurement(_code("CONFIDENCE", "Confidence of the reading"), result["confidence"], ratio),
                    Measurement(_code("PHASE-CONFIDENCE", "Confidence of the growth phase"),
                                result["phase_confidence"], ratio)]
    if result.get("expected_stage") is not None:
        measurements.append(Measurement(_code("EXPECTED-STAGE", "Probability-weighted stage"),
                                        result["expected_stage"], CodedConcept("{stage}", "UCUM", "stage")))
    return PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=_uid(source, result["box_source"] + bone, "track"),
                                               identifier=bone),
        referenced_region=region, finding_type=site, algorithm_id=algorithm,
        qualitative_evaluations=evaluations, measurements=measurements)


def _text_items(report: dict):
    """The guidance, its disclaimer and the review reasons as a qualitative-evaluations container."""
    from highdicom.sr import CodedConcept, ContainerContentItem, TextContentItem

    texts = []
    guidance = report.get("guidance")
    if guidance:
        texts.append(("GUIDANCE", "Scoliosis bracing guidance", f"{guidance['rule']}: {guidance['wording']}"))
    texts += [("REVIEW-REASON", "Reason for review", reason[:1024]) for reason in report["review_reasons"]]
    texts.append(("DISCLAIMER", "Disclaimer", f"{NOT_DIAGNOSIS}. {DISCLAIMER}"[:1024]))
    container = ContainerContentItem(CodedConcept("C0034375", "UMLS", "Qualitative Evaluations"),
                                     relationship_type="CONTAINS")
    container.ContentSequence = [TextContentItem(_code(value, meaning), text, relationship_type="CONTAINS")
                                 for value, meaning, text in texts]
    return container


@_copied_as_is
def structured_report(source, report: dict, version: str):
    """The TID 1500 Comprehensive SR of ``report`` (a ``StageReport`` dict) on ``source`` (its header)."""
    from highdicom.sr import (ComprehensiveSR, DeviceObserverIdentifyingAttributes, MeasurementReport,
                              ObservationContext, ObserverContext)
    from pydicom.sr.codedict import codes

    fingerprint = report["model_fingerprint"]
    algorithm = _algorithm(report, version)
    device = ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=(
        DeviceObserverIdentifyingAttributes(uid=_uid(source, fingerprint, "device"), name="drustage",
                                            manufacturer_name=MANUFACTURER, model_name=f"drustage {version}",
                                            serial_number=fingerprint[:64])))
    groups = [_bone_group(source, bone, report[bone], algorithm, report["needs_review"])
              for bone in BONES if report[bone]["found"] and report[bone]["phase"]]
    content = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=device),
        procedure_reported=_code("DRU-ASSESSMENT", "Skeletal maturity of the distal radius and ulna"),
        imaging_measurements=groups or None, referenced_images=None if groups else [source])
    content[0].ContentSequence.append(_text_items(report))
    sr = ComprehensiveSR(
        evidence=[source], content=content[0],
        series_instance_uid=_uid(source, fingerprint, "sr-series"), series_number=9901,
        sop_instance_uid=_uid(source, fingerprint, "sr"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description="drustage DRU maturity (decision support)")
    sr.SoftwareVersions = version
    sr.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the guidance and reasons hold dashes and signs like ≥
    sr.CodingSchemeIdentificationSequence = [_private_scheme()]
    return sr


def _private_scheme():
    from pydicom.dataset import Dataset

    scheme = Dataset()
    scheme.CodingSchemeDesignator = CODING_SCHEME
    scheme.CodingSchemeName = "drustage DRU maturity concepts"
    scheme.CodingSchemeResponsibleOrganization = "drustage project"
    return scheme


@_copied_as_is
def secondary_capture(source, overlay_rgb: np.ndarray, report: dict, version: str):
    """The overlay as a derived Secondary Capture image in the source's study."""
    from highdicom.sc import SCImage
    from pydicom.dataset import Dataset

    fingerprint = report["model_fingerprint"]
    laterality = getattr(source, "ImageLaterality", None) or report.get("laterality")
    sc = SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=np.ascontiguousarray(overlay_rgb, dtype=np.uint8),
        photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
        series_instance_uid=_uid(source, fingerprint, "sc-series"), series_number=9902,
        sop_instance_uid=_uid(source, fingerprint, "sc"), instance_number=1, manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"), laterality=laterality if laterality in ("L", "R") else None)
    # the overlay keeps the source's orientation, which the source may not state (then left empty)
    sc.PatientOrientation = list(getattr(source, "PatientOrientation", None) or [])
    if "Laterality" not in sc:
        sc.Laterality = ""
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.BurnedInAnnotation = "YES"
    sc.SeriesDescription = "drustage overlay (decision support)"
    sc.DerivationDescription = f"drustage {version} overlay of the DRU reading. {NOT_DIAGNOSIS}."
    sc.ImageComments = NOT_DIAGNOSIS
    sc.SoftwareVersions = version
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [reference]
    return sc


def dicom_outputs(source, report: dict, overlay_rgb: np.ndarray, version: str) -> DicomOutputs:
    return DicomOutputs(structured_report(source, report, version),
                        secondary_capture(source, overlay_rgb, report, version))


def output_bytes(dataset) -> bytes:
    """An SR or SC as DICOM file bytes (for a download)."""
    import io

    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_dicom_outputs(outputs: DicomOutputs, out: Path, stem: str) -> list[Path]:
    """``<stem>.sr.dcm`` and ``<stem>.sc.dcm`` in ``out``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, dataset in (("sr", outputs.structured_report), ("sc", outputs.secondary_capture)):
        path = out / f"{stem}.{suffix}.dcm"
        with atomic_path(path) as tmp:
            dataset.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


def _items(container):
    for item in getattr(container, "ContentSequence", []):
        yield item
        yield from _items(item)


def _concept_value(item) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def read_structured_report(sr) -> dict:
    """The reading a drustage SR holds, in the JSON report's terms: per bone its prediction (stage
    or phase), phase, confidences, expected stage and box; the review flag, review reasons and
    guidance rule; the algorithm version and the model fingerprint."""
    bones: dict[str, dict] = {}
    texts: dict[str, list[str]] = {}
    for group in _items(sr):
        if getattr(group, "ValueType", "") == "TEXT":
            texts.setdefault(_concept_value(group), []).append(str(group.TextValue))
        if getattr(group, "ValueType", "") != "CONTAINER" or _concept_value(group) != "125007":  # Measurement Group
            continue
        reading: dict = {}
        for item in group.ContentSequence:
            name, kind = _concept_value(item), item.ValueType
            if name == "112039":  # Tracking Identifier
                bone = str(item.TextValue)
            elif kind == "CODE" and name in ("DRU-STAGE", "PHASE", "REVIEW"):
                code = item.ConceptCodeSequence[0]
                reading[name] = str(code.CodeValue) if name != "PHASE" else str(code.CodeMeaning)
            elif kind == "NUM":
                reading[name] = float(item.MeasuredValueSequence[0].NumericValue)
            elif kind == "SCOORD":
                points = np.asarray(item.GraphicData, dtype=float).reshape(-1, 2)
                reading["box"] = [float(points[:, 0].min()), float(points[:, 1].min()),
                                  float(points[:, 0].max()), float(points[:, 1].max())]
        bones[bone] = {"prediction": reading.get("DRU-STAGE", reading.get("PHASE")), "phase": reading.get("PHASE"),
                       "confidence": reading.get("CONFIDENCE"), "phase_confidence": reading.get("PHASE-CONFIDENCE"),
                       "expected_stage": reading.get("EXPECTED-STAGE"), "box": reading.get("box"),
                       "needs_review": reading.get("REVIEW") == "373066001"}  # SCT Yes
    guidance = texts.get("GUIDANCE", [None])[0]
    return {"bones": bones, "review_reasons": texts.get("REVIEW-REASON", []),
            "guidance_rule": guidance.split(":", 1)[0] if guidance else None,
            "model_fingerprint": texts.get("121016", [None])[0],  # Device Observer Serial Number
            "software_version": str(getattr(sr, "SoftwareVersions", ""))}
